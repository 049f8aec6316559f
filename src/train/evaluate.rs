//! Training's evaluation: a fixed, seeded sample of valid queries against every item of
//! items.parquet, encoded with the current weights and searched exactly (the stage-1 dense
//! search); Recall@10 and MRR over the top 100.

use std::collections::HashMap;

use anyhow::{Context, Result};

use super::config::RetrieverConfig;
use super::state::EvalPoint;
use crate::cols;
use crate::context::Ctx;
use crate::encoder::Encoder;
use crate::io;
use crate::layout::Split;
use crate::metrics::{KS, Metrics};
use crate::retrieve::QueryType;
use crate::retrieve::dense::exact_topk;
use crate::retrieve::query::{QuerySettings, sample_indices};

/// The fixed evaluation set: item texts and valid queries, tokenized once.
pub struct EvalSet {
    pub asins: Vec<String>,
    pub item_ids: Vec<Vec<u32>>,
    pub query_ids: Vec<Vec<u32>>,
    pub targets: Vec<u32>,
}

/// Items (all of items.parquet) and a seeded sample of valid queries whose item is among them.
pub fn eval_set(
    ctx: &Ctx,
    cfg: &RetrieverConfig,
    enc: &Encoder,
    q_len: usize,
    d_len: usize,
    seed: u64,
) -> Result<EvalSet> {
    anyhow::ensure!(
        cfg.eval_query_type != QueryType::Both,
        "--eval-query-type both: pick review-text or keywords"
    );
    let (asins, texts) = crate::etl::build_items::item_texts(&ctx.layout)?;
    let pos: HashMap<&str, u32> = asins
        .iter()
        .enumerate()
        .map(|(i, a)| (a.as_str(), i as u32))
        .collect();
    let settings = QuerySettings {
        query_type: cfg.eval_query_type,
        max_keywords: cfg.eval_max_keywords,
    };
    let df = settings.queries(&ctx.layout, Split::Valid)?.collect();
    let df = Context::with_context(df, || "reading the valid queries".to_string())?;
    let (qs, ts) = (
        df.column(cols::QUERY)?.str()?,
        df.column(cols::PARENT_ASIN)?.str()?,
    );
    let mut cand: Vec<(&str, u32)> = Vec::new();
    for (q, t) in qs.iter().zip(ts.iter()) {
        let (Some(q), Some(t)) = (q, t) else { continue };
        if let (false, Some(&i)) = (q.trim().is_empty(), pos.get(t)) {
            cand.push((q.trim(), i));
        }
    }
    anyhow::ensure!(
        !cand.is_empty(),
        "no valid query to evaluate on (pass --eval-queries 0 to train without evaluation)"
    );
    let pick = sample_indices(cand.len(), cfg.eval_queries, seed);
    let queries: Vec<&str> = pick.iter().map(|&i| cand[i].0).collect();
    Ok(EvalSet {
        item_ids: enc.tokenize_max(&texts, d_len)?,
        query_ids: enc.tokenize_max(&queries, q_len)?,
        targets: pick.iter().map(|&i| cand[i].1).collect(),
        asins,
    })
}

/// Recall@10 and MRR of the evaluation sample with the current weights.
pub fn evaluate(
    enc: &Encoder,
    es: &EvalSet,
    cfg: &RetrieverConfig,
    step: usize,
    quiet: bool,
) -> Result<EvalPoint> {
    let n = (es.item_ids.len() + es.query_ids.len()) as u64;
    let pb = io::progress(n, &format!("eval step {step}"), quiet);
    let items = enc.encode_ids(&es.item_ids, cfg.eval_batch_size, &pb)?;
    let queries = enc.encode_ids(&es.query_ids, cfg.eval_batch_size, &pb)?;
    let top = exact_topk(
        &queries,
        &items,
        &es.asins,
        100,
        enc.device(),
        &indicatif::ProgressBar::hidden(),
    )?;
    pb.finish_and_clear();
    let ranks: Vec<Option<usize>> = top
        .iter()
        .zip(&es.targets)
        .map(|(list, &t)| list.iter().position(|(i, _)| *i == t).map(|p| p + 1))
        .collect();
    let m = Metrics::from_ranks(&ranks, &KS);
    Ok(EvalPoint {
        step,
        recall_at_10: m.recall_at(10).unwrap_or(0.0),
        mrr: m.mrr,
    })
}
