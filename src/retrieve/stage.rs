//! `recsys retrieve`: top-K candidate items for every review of a split →
//! `evaluation/candidates_{split}[_{name}].parquet` and its [`CandidatesRecord`].

use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use polars::prelude::*;

use super::query::sample_indices;
use super::{
    AnnRecall, CandidatesRecord, Catalog, QuerySettings, QueryType, Ranked, RetrieverKind,
};
use crate::cols;
use crate::context::Ctx;
use crate::encoder::QueryEncoderArgs;
use crate::index::{AnnParams, ItemIndex};
use crate::io::{self, thousands};
use crate::layout::Split;

#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct RetrieveConfig {
    /// Split whose reviews are the queries
    #[arg(long, value_enum, default_value_t = Split::Test)]
    pub split: Split,
    /// How candidates are found
    #[arg(long, value_enum, default_value_t = RetrieverKind::Dense)]
    pub retriever: RetrieverKind,
    #[command(flatten)]
    pub encoder: QueryEncoderArgs,
    /// Candidates per query
    #[arg(long, default_value_t = 100, value_parser = crate::cli::count)]
    pub top_k: usize,
    #[command(flatten)]
    pub query: QuerySettings,
    /// Use a seeded random sample of this many queries (quick runs)
    #[arg(long, value_parser = crate::cli::count)]
    pub max_queries: Option<usize>,
    /// Dense search through a LanceDB IVF-PQ vector index (built on first use) instead of the
    /// exact search; the summary and `eval` report its recall against the exact top-K on a
    /// sample of up to 1,000 queries
    #[arg(long)]
    pub ann: bool,
    /// --ann: IVF partitions probed per query
    #[arg(long, default_value_t = 20, value_parser = crate::cli::count)]
    pub nprobes: usize,
    /// --ann: re-score refine-factor × top-K PQ candidates with the exact vectors (0: off)
    #[arg(long, default_value_t = 4, value_parser = crate::cli::count_u32)]
    pub refine_factor: u32,
    /// Output name: candidates_{split}_{name}.parquet [default: none for dense, else the retriever]
    #[arg(long)]
    pub name: Option<String>,
}

crate::cli::clap_default!(RetrieveConfig);

impl RetrieveConfig {
    pub fn ann_params(&self) -> AnnParams {
        AnnParams {
            nprobes: self.nprobes,
            refine_factor: self.refine_factor,
        }
    }
}

impl RetrieveConfig {
    /// The run's name in its file name: `--name`, else none for an exact dense run, else the
    /// retriever's (`bm25`, `dense_ann`, …).
    pub fn run_name(&self) -> Option<String> {
        self.name
            .clone()
            .or_else(|| match (self.retriever, self.ann) {
                (RetrieverKind::Dense, false) => None,
                (r, true) => Some(format!("{}_ann", r.as_str())),
                (r, false) => Some(r.as_str().to_string()),
            })
    }
}

#[derive(Debug)]
pub struct RetrieveSummary {
    pub split: Split,
    pub retriever: RetrieverKind,
    pub model: String,
    pub reviews: usize,
    pub queries: usize,
    pub empty_queries: usize,
    pub not_in_index: usize,
    pub sampled: bool,
    pub top_k: usize,
    pub encode_s: f64,
    pub texts_per_s: f64,
    pub search_s: f64,
    /// `--ann`: overlap of the ANN top-K with the exact top-K, and the queries it was measured on.
    pub ann_recall: Option<AnnRecall>,
    pub out: PathBuf,
}

impl fmt::Display for RetrieveSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "retrieve {} ({}{}): {} queries{} from {} reviews; not queried: {} empty, {} whose \
             item is not in the index; top {}",
            self.split,
            self.retriever.as_str(),
            if self.model.is_empty() {
                String::new()
            } else {
                format!(", {}", self.model)
            },
            thousands(self.queries),
            if self.sampled { " (seeded sample)" } else { "" },
            thousands(self.reviews),
            thousands(self.empty_queries),
            thousands(self.not_in_index),
            self.top_k,
        )?;
        if self.encode_s > 0.0 {
            write!(
                f,
                "; queries encoded in {:.1}s ({:.1} texts/s)",
                self.encode_s, self.texts_per_s
            )?;
        }
        if let Some(a) = self.ann_recall {
            write!(
                f,
                "; ANN recall vs exact top-{} = {:.4} on {} queries",
                self.top_k, a.ann_recall_vs_exact, a.sampled_queries
            )?;
        }
        write!(f, "; search {:.1}s → {}", self.search_s, self.out.display())
    }
}

/// One query: the review and its target.
struct Query {
    review_id: u64,
    user_id: String,
    target: String,
    text: String,
}

/// `recsys retrieve`.
pub fn run(ctx: &Ctx, cfg: &RetrieveConfig) -> Result<RetrieveSummary> {
    anyhow::ensure!(cfg.top_k > 0, "--top-k must be at least 1");
    if cfg.query.query_type == QueryType::Both {
        bail!("--query-type both: pick review-text or keywords (one query per review)");
    }
    let index = ItemIndex::open(ctx)?;
    let items = Catalog::open(&index, cfg.retriever.needs_vectors())?;

    let df = cfg.query.queries(&ctx.layout, cfg.split)?.collect();
    let df = Context::with_context(df, || format!("reading the {} queries", cfg.split))?;
    let reviews = df.height();
    let (mut queries, mut empty, mut missing) = (Vec::new(), 0, 0);
    let ids = df.column(cols::REVIEW_ID)?.u64()?;
    let users = df.column(cols::USER_ID)?.str()?;
    let targets = df.column(cols::PARENT_ASIN)?.str()?;
    let texts = df.column(cols::QUERY)?.str()?;
    for i in 0..reviews {
        let text = texts.get(i).unwrap_or("").trim();
        let target = targets.get(i).unwrap_or("");
        if text.is_empty() {
            empty += 1;
        } else if items.position(target).is_none() {
            missing += 1;
        } else {
            queries.push(Query {
                review_id: ids.get(i).unwrap_or(0),
                user_id: users.get(i).unwrap_or("").to_string(),
                target: target.to_string(),
                text: text.to_string(),
            });
        }
    }
    let findable = queries.len();
    let sampled = cfg.max_queries.is_some_and(|n| n < queries.len());
    if let Some(n) = cfg.max_queries.filter(|_| sampled) {
        let mut keep = vec![false; queries.len()];
        sample_indices(queries.len(), n, ctx.seed)
            .into_iter()
            .for_each(|i| keep[i] = true);
        let mut it = keep.into_iter();
        queries.retain(|_| it.next().unwrap_or(false));
    }
    anyhow::ensure!(
        !queries.is_empty(),
        "no {} query to run ({reviews} reviews: {empty} empty, {missing} of items not in the index)",
        cfg.split
    );

    let mut retriever = cfg.retriever.open(ctx, &index, &items, cfg)?;
    let t_search = Instant::now();
    let texts: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
    let lists = retriever.search(&texts, cfg.top_k, ctx.quiet)?;
    let stats = retriever.stats();
    let search_s = t_search.elapsed().as_secs_f64() - stats.encode_s;
    let model = retriever.model().to_string();

    let out = ctx.layout.candidates(cfg.split, cfg.run_name().as_deref());
    let mut df = candidates_frame(&queries, &lists, &items.asins, retriever.name(), &model)?;
    io::write_parquet(&mut df, &out)?;
    let record = CandidatesRecord {
        retriever: cfg.retriever,
        model: model.clone(),
        top_k: cfg.top_k,
        query: cfg.query,
        ann: stats.ann_recall,
        reviews: Some(reviews),
        findable: Some(findable),
    };
    io::write_json(&CandidatesRecord::path(&out), &record)?;
    Ok(RetrieveSummary {
        split: cfg.split,
        retriever: cfg.retriever,
        model,
        reviews,
        queries: queries.len(),
        empty_queries: empty,
        not_in_index: missing,
        sampled,
        top_k: cfg.top_k,
        encode_s: stats.encode_s,
        texts_per_s: stats.texts_per_s,
        search_s,
        ann_recall: stats.ann_recall,
        out,
    })
}

/// The candidates table: one row per (query, candidate); a query with no candidate keeps one
/// row with null rank / parent_asin / score, so it still counts as a miss.
fn candidates_frame(
    queries: &[Query],
    lists: &[Ranked],
    asins: &[String],
    retriever: &str,
    model: &str,
) -> Result<DataFrame> {
    let rows: usize = lists.iter().map(|l| l.len().max(1)).sum();
    let mut review_id = Vec::with_capacity(rows);
    let mut user_id = Vec::with_capacity(rows);
    let mut target = Vec::with_capacity(rows);
    let mut rank: Vec<Option<u32>> = Vec::with_capacity(rows);
    let mut item: Vec<Option<&str>> = Vec::with_capacity(rows);
    let mut score: Vec<Option<f32>> = Vec::with_capacity(rows);
    for (q, list) in queries.iter().zip(lists) {
        let n = list.len().max(1);
        review_id.extend(std::iter::repeat_n(q.review_id, n));
        user_id.extend(std::iter::repeat_n(q.user_id.as_str(), n));
        target.extend(std::iter::repeat_n(q.target.as_str(), n));
        if list.is_empty() {
            rank.push(None);
            item.push(None);
            score.push(None);
        }
        for (r, &(i, s)) in list.iter().enumerate() {
            rank.push(Some(r as u32 + 1));
            item.push(Some(asins[i as usize].as_str()));
            score.push(Some(s));
        }
    }
    let n = review_id.len();
    Ok(DataFrame::new(
        n,
        vec![
            Column::new(cols::REVIEW_ID.into(), review_id),
            Column::new(cols::USER_ID.into(), user_id),
            Column::new(cols::TARGET_PARENT_ASIN.into(), target),
            Column::new(cols::RANK.into(), rank),
            Column::new(cols::PARENT_ASIN.into(), item),
            Column::new(cols::SCORE.into(), score),
            Column::new(cols::RETRIEVER.into(), vec![retriever; n]),
            Column::new(cols::MODEL.into(), vec![model; n]),
        ],
    )?)
}
