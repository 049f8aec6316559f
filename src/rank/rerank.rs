//! `recsys rerank`: a saved ranker scores a split's candidates →
//! `evaluation/reranked_{split}.parquet`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use polars::prelude::*;
use xgb::Booster;

use super::booster::{dmatrix, xgb_err};
use super::features::{self, FEATURES};
use super::{RankerInfo, candidates_path};
use crate::cols::{self, RERANK_RANK, RERANK_SCORE};
use crate::context::Ctx;
use crate::index::ItemIndex;
use crate::io::{self, thousands};
use crate::layout::{self, MODELS_DIR, Split};
use crate::retrieve::rank_order;

#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct RerankConfig {
    /// Split whose candidates are re-ranked
    #[arg(long, value_enum, default_value_t = Split::Test)]
    pub split: Split,
    /// Ranker directory [default: the newest models/ranker-*]
    #[arg(long)]
    pub model: Option<PathBuf>,
}

#[derive(Debug)]
pub struct RerankSummary {
    pub split: Split,
    pub queries: usize,
    pub rows: usize,
    pub model: PathBuf,
    pub out: PathBuf,
    pub secs: f64,
}

impl fmt::Display for RerankSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rerank {}: {} queries, {} candidates scored with {} in {:.1}s → {}",
            self.split,
            thousands(self.queries),
            thousands(self.rows),
            self.model.display(),
            self.secs,
            self.out.display()
        )
    }
}

/// Loads a ranker directory; its feature list must be this build's [`FEATURES`].
pub fn load(dir: &Path) -> Result<(Booster, RankerInfo)> {
    let info_path = dir.join("ranker.json");
    let info: RankerInfo = serde_json::from_str(
        &std::fs::read_to_string(&info_path)
            .with_context(|| format!("reading {}", info_path.display()))?,
    )
    .with_context(|| format!("{}: not a ranker record", info_path.display()))?;
    if info.features != features::names() {
        bail!(
            "{}: the model was trained on features {:?}, this build computes {:?}; retrain with \
             `recsys train ranker`",
            info_path.display(),
            info.features,
            features::names()
        );
    }
    let model = Booster::load(dir.join("model.json"))
        .map_err(xgb_err)
        .with_context(|| format!("loading {}", dir.join("model.json").display()))?;
    Ok((model, info))
}

/// `recsys rerank`.
pub fn rerank(ctx: &Ctx, cfg: &RerankConfig) -> Result<RerankSummary> {
    let t0 = Instant::now();
    let dir = match &cfg.model {
        Some(d) => d.clone(),
        None => layout::newest_model_dir("ranker-", |p| p.join("ranker.json").is_file())
            .with_context(|| {
                format!(
                    "no {MODELS_DIR}/ranker-*/: run `recsys train ranker` first, or pass --model"
                )
            })?,
    };
    let (model, info) = load(&dir)?;
    let index = ItemIndex::open(ctx)?.info;
    anyhow::ensure!(
        index.weights_blake3 == info.index_weights_blake3,
        "{}: the ranker learnt from item vectors of {} but the index now holds {}'s; \
         re-index with that model or retrain the ranker",
        dir.display(),
        info.index_model,
        index.name
    );
    let path = candidates_path(ctx, cfg.split, info.candidates.as_deref())?;
    let base = features::base_run(ctx, cfg.split, &path)?.map(|(_, m)| m);
    anyhow::ensure!(
        base == info.base_run_model,
        "{}: the ranker learnt with base-run scores of {} but the {} candidates have {}: \
         run (or remove) `recsys retrieve --split {}` with the base model, or retrain",
        dir.display(),
        info.base_run_model.as_deref().unwrap_or("no model"),
        cfg.split,
        base.as_deref().unwrap_or("none"),
        cfg.split
    );
    let df = features::build(ctx, cfg.split, &path)?;
    let scores = if df.height() > 0 {
        model
            .predict(&dmatrix(&df, false, None)?)
            .map_err(xgb_err)?
    } else {
        Vec::new()
    };
    let ranks = ranks_within(&df, &scores)?;
    let queries = df.column(cols::REVIEW_ID)?.n_unique()?;
    let rows = df.height();
    let mut keep: Vec<PlSmallStr> = io::scan_parquet(&path)?
        .collect_schema()?
        .iter_names()
        .cloned()
        .collect();
    keep.extend(FEATURES.iter().map(|f| PlSmallStr::from(f.name)));
    let mut out = df.select(keep)?;
    out.with_column(Column::new(RERANK_SCORE.into(), scores))?;
    out.with_column(Column::new(RERANK_RANK.into(), ranks))?;
    let mut out = out
        .lazy()
        .sort(
            [cols::REVIEW_ID, RERANK_RANK],
            SortMultipleOptions::default(),
        )
        .collect()?;
    let dest = ctx.layout.reranked(cfg.split);
    io::write_parquet(&mut out, &dest)?;
    Ok(RerankSummary {
        split: cfg.split,
        queries,
        rows,
        model: dir,
        out: dest,
        secs: t0.elapsed().as_secs_f64(),
    })
}

/// 1-based rank of every row within its query by `scores` (desc, then `parent_asin`).
pub(super) fn ranks_within(df: &DataFrame, scores: &[f32]) -> Result<Vec<u32>> {
    let asins: Vec<&str> = df
        .column(cols::PARENT_ASIN)?
        .str()?
        .iter()
        .map(|s| s.unwrap_or(""))
        .collect();
    let mut ranks = vec![0u32; df.height()];
    let mut start = 0;
    for g in features::groups(df)? {
        let end = start + g as usize;
        let mut idx: Vec<usize> = (start..end).collect();
        idx.sort_by(|&a, &b| rank_order((scores[a], asins[a]), (scores[b], asins[b])));
        for (r, i) in idx.into_iter().enumerate() {
            ranks[i] = r as u32 + 1;
        }
        start = end;
    }
    Ok(ranks)
}
