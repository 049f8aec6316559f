//! Stage 2: the XGBoost re-ranker. `train ranker` learns `rank:ndcg` over the features of
//! [`features`] on the candidates of the VALID split — queries whose items were described
//! before them, exactly like the test queries it serves — with early stopping on NDCG@5 of the
//! latest part of VALID in time (`--holdout`); `rerank --split S` scores a split's candidates →
//! `evaluation/reranked_{S}.parquet`. `--ablation` retrains once without each feature.
//!
//! TRAIN queries are not learnt from: their own review is part of their target's
//! `embedding_text` and keywords, so the text-match features of a train query's target are
//! inflated in a way no served query ever sees.
//!
//! Model directory `models/ranker-{YYYYMMDD-HHMMSS}/`: `model.json` (XGBoost's JSON format),
//! `ranker.json` (the ordered feature list, the training record, the gain importance) and, with
//! `--ablation`, `ablation.json`.

pub mod as_of;
mod booster;
pub mod catalog;
pub mod features;
mod rerank;
pub mod text;

use booster::{Boosting, Fit, dmatrix, fit, gain_importance, xgb_err};
use rerank::ranks_within;
pub use rerank::{RerankConfig, RerankSummary, load, rerank};

use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use xgb::Booster;

use crate::cols::{self, LABEL};
use crate::context::Ctx;
use crate::index::ItemIndex;
use crate::io::{self, thousands};
use crate::layout::{self, Split};
use crate::metrics::ndcg_at;
use crate::retrieve::{CandidatesRecord, QuerySettings};
use features::FEATURES;

/// Bumped when a change to the ranker's training (features included) changes what it writes:
/// the pipeline's records made with another version are stale, so the stage runs again.
pub const TRAIN_CODE_VERSION: u32 = 1;
/// Bumped when a change to re-ranking (features included) changes what it writes: the
/// pipeline's records made with another version are stale, so the stage runs again.
pub const RERANK_CODE_VERSION: u32 = 1;

#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct RankerConfig {
    /// Candidates run to learn from and to re-rank: candidates_{split}[_{name}].parquet
    /// [default: the dense run]
    #[arg(long)]
    pub candidates: Option<String>,
    /// Share of the VALID queries, the latest in time, held out for early stopping (the model
    /// learns from the earlier ones)
    #[arg(long, default_value_t = 0.25, value_parser = crate::cli::open_fraction)]
    pub holdout: f64,
    /// Boosting rounds at most
    #[arg(long, default_value_t = 500, value_parser = crate::cli::count)]
    pub num_rounds: usize,
    /// Stop when held-out NDCG@5 has not improved for this many rounds (the best round is kept)
    #[arg(long, default_value_t = 30, value_parser = crate::cli::count)]
    pub early_stopping_rounds: usize,
    /// Tree depth (2: the best held-out NDCG@5 of depths 2–8 on the demo and on real reviews)
    #[arg(long, default_value_t = 2, value_parser = crate::cli::depth)]
    pub max_depth: u32,
    /// Learning rate (shrinkage)
    #[arg(long, default_value_t = 0.1, value_parser = crate::cli::positive)]
    pub eta: f64,
    /// Also retrain once without each feature (its column missing) and report what held-out
    /// and test NDCG@5 lose: a table, and ablation.json beside the model
    #[arg(long)]
    pub ablation: bool,
    /// Output directory [default: models/ranker-{YYYYMMDD-HHMMSS}]
    #[arg(long)]
    pub output: Option<PathBuf>,
}

crate::cli::clap_default!(RankerConfig, RerankConfig);

/// What `ranker.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RankerInfo {
    pub features: Vec<String>,
    pub candidates: Option<String>,
    /// The query settings of the training candidates (as recorded with them by `retrieve`).
    pub query: QuerySettings,
    /// The model of the index whose item vectors the features read (name, blake3 of weights).
    pub index_model: String,
    pub index_weights_blake3: String,
    /// The model of the base dense run whose scores are features (`base_dense_*`), if any.
    #[serde(default)]
    pub base_run_model: Option<String>,
    /// VALID queries learnt from (target among the candidates), before `holdout_from`.
    pub learn_queries: usize,
    /// VALID queries held out for early stopping, from `holdout_from` on.
    pub holdout_queries: usize,
    /// VALID queries left out: target not among the candidates.
    pub queries_dropped: usize,
    pub holdout: f64,
    /// The hold-out's first query time (ms since the epoch) and as a UTC date.
    pub holdout_from_ms: i64,
    pub holdout_from: String,
    pub best_round: usize,
    pub rounds_run: usize,
    pub holdout_ndcg_at_5: f64,
    pub num_rounds: usize,
    pub max_depth: u32,
    pub eta: f64,
    pub seed: u64,
    /// (feature, average gain, total gain, splits), by average gain.
    pub importance: Vec<(String, f64, f64, usize)>,
}

/// One row of the ablation: the ranker retrained without `feature`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AblationRow {
    /// `(all features)` for the full model.
    pub feature: String,
    pub holdout_ndcg_at_5: f64,
    /// Over the TEST queries of the candidates run (when its candidates exist).
    pub test_ndcg_at_5: Option<f64>,
    pub best_round: usize,
}

#[derive(Debug)]
pub struct RankerSummary {
    pub info: RankerInfo,
    pub ablation: Vec<AblationRow>,
    pub dir: PathBuf,
    pub secs: f64,
}

impl fmt::Display for RankerSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.info;
        writeln!(
            f,
            "train ranker: rank:ndcg on {} valid queries before {}, early stopping on the {} \
             from then on ({:.0} %); {} dropped (target not among the candidates)",
            thousands(i.learn_queries),
            i.holdout_from,
            thousands(i.holdout_queries),
            100.0 * i.holdout,
            thousands(i.queries_dropped)
        )?;
        writeln!(
            f,
            "  best round {} of {} run (max {}): held-out NDCG@5 {:.4}; {:.1}s",
            i.best_round, i.rounds_run, i.num_rounds, i.holdout_ndcg_at_5, self.secs
        )?;
        writeln!(f, "  feature importance (gain = average gain per split):")?;
        for (name, gain, total, splits) in &i.importance {
            writeln!(
                f,
                "    {name:<22} gain {gain:>9.3}  total {total:>11.1}  splits {splits:>6}"
            )?;
        }
        if let Some((full, rest)) = self.ablation.split_first() {
            writeln!(
                f,
                "  ablation (retrained without the feature; Δ = NDCG@5 lost, > 0: the feature helps):"
            )?;
            writeln!(
                f,
                "    {:<22} {:>9} {:>9} {:>9} {:>9} {:>6}",
                "feature", "held-out", "Δ", "test", "Δ", "round"
            )?;
            let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
            writeln!(
                f,
                "    {:<22} {:>9.4} {:>9} {:>9} {:>9} {:>6}",
                full.feature,
                full.holdout_ndcg_at_5,
                "",
                opt(full.test_ndcg_at_5),
                "",
                full.best_round
            )?;
            for r in rest {
                let dt = full
                    .test_ndcg_at_5
                    .zip(r.test_ndcg_at_5)
                    .map(|(a, b)| a - b);
                writeln!(
                    f,
                    "    {:<22} {:>9.4} {:>+9.4} {:>9} {:>9} {:>6}",
                    r.feature,
                    r.holdout_ndcg_at_5,
                    full.holdout_ndcg_at_5 - r.holdout_ndcg_at_5,
                    opt(r.test_ndcg_at_5),
                    dt.map_or("-".to_string(), |d| format!("{d:+.4}")),
                    r.best_round
                )?;
            }
        }
        write!(f, "  model → {}", self.dir.display())
    }
}

/// Candidates file of a split for the configured run.
fn candidates_path(ctx: &Ctx, split: Split, name: Option<&str>) -> Result<PathBuf> {
    let p = ctx.layout.candidates(split, name);
    anyhow::ensure!(
        p.is_file(),
        "{} not found: run `recsys retrieve --split {split}{}` first",
        p.display(),
        name.map(|n| format!(" --name {n}")).unwrap_or_default()
    );
    Ok(p)
}

/// The VALID features for training: only queries whose target is among the candidates,
/// cut in time into the part learnt from and the later hold-out.
struct TrainingData {
    learn: DataFrame,
    holdout: DataFrame,
    learn_queries: usize,
    holdout_queries: usize,
    dropped: usize,
    holdout_from_ms: i64,
    query: QuerySettings,
    base_run_model: Option<String>,
}

fn training_data(ctx: &Ctx, cfg: &RankerConfig) -> Result<TrainingData> {
    anyhow::ensure!(
        cfg.holdout > 0.0 && cfg.holdout < 1.0,
        "--holdout {}: must be between 0 and 1",
        cfg.holdout
    );
    let path = candidates_path(ctx, Split::Valid, cfg.candidates.as_deref())?;
    let query = CandidatesRecord::read(&path)?.query;
    let df = features::build(ctx, Split::Valid, &path)?;
    let all = df.column(cols::REVIEW_ID)?.n_unique()?;
    let kept = df
        .lazy()
        .filter(col(LABEL).sum().over([col(cols::REVIEW_ID)])?.gt(lit(0.0)))
        .collect()?;
    // the queries' times, sorted: the latest `holdout` share is held out
    let times = kept
        .clone()
        .lazy()
        .group_by([col(cols::REVIEW_ID)])
        .agg([col(cols::TIMESTAMP).first()])
        .sort([cols::TIMESTAMP], SortMultipleOptions::default())
        .collect()?;
    let ts: Vec<i64> = times
        .column(cols::TIMESTAMP)?
        .i64()?
        .iter()
        .flatten()
        .collect();
    let n = ts.len();
    anyhow::ensure!(
        n >= 2,
        "{}: {n} valid queries have their target among the candidates; the re-ranker needs \
         at least 2 (one to learn from, one to stop on)",
        path.display()
    );
    let cut = ((n as f64 * (1.0 - cfg.holdout)).round() as usize).clamp(1, n - 1);
    let from = ts[cut];
    let part = |held: bool| -> Result<DataFrame> {
        let c = col(cols::TIMESTAMP).gt_eq(lit(from));
        Ok(kept
            .clone()
            .lazy()
            .filter(if held { c } else { c.not() })
            .collect()?)
    };
    let (learn, holdout) = (part(false)?, part(true)?);
    let (lq, hq) = (
        learn.column(cols::REVIEW_ID)?.n_unique()?,
        holdout.column(cols::REVIEW_ID)?.n_unique()?,
    );
    anyhow::ensure!(
        lq > 0 && hq > 0,
        "{}: every valid query has the same time; no later part to hold out",
        path.display()
    );
    Ok(TrainingData {
        learn,
        holdout,
        learn_queries: lq,
        holdout_queries: hq,
        dropped: all - n,
        holdout_from_ms: from,
        query,
        base_run_model: features::base_run(ctx, Split::Valid, &path)?.map(|(_, m)| m),
    })
}

impl RankerConfig {
    fn boosting(&self) -> Boosting {
        Boosting {
            num_rounds: self.num_rounds,
            early_stopping_rounds: self.early_stopping_rounds,
            max_depth: self.max_depth,
            eta: self.eta,
        }
    }
}

/// `recsys train ranker`.
pub fn train(ctx: &Ctx, cfg: &RankerConfig) -> Result<RankerSummary> {
    let t0 = Instant::now();
    let data = training_data(ctx, cfg)?;
    let index = ItemIndex::open(ctx)?.info;
    let pb = io::progress(cfg.num_rounds as u64, "boosting", ctx.quiet);
    let full = fit(
        &data.learn,
        &data.holdout,
        &cfg.boosting(),
        ctx.seed,
        None,
        &pb,
    )?;
    pb.finish_and_clear();
    let importance = gain_importance(&full.model)?;

    let dir = cfg
        .output
        .clone()
        .unwrap_or_else(|| layout::new_model_dir("ranker"));
    let info = RankerInfo {
        features: features::names().iter().map(|s| s.to_string()).collect(),
        candidates: cfg.candidates.clone(),
        query: data.query,
        index_model: index.name.clone(),
        index_weights_blake3: index.weights_blake3.clone(),
        base_run_model: data.base_run_model.clone(),
        learn_queries: data.learn_queries,
        holdout_queries: data.holdout_queries,
        queries_dropped: data.dropped,
        holdout: cfg.holdout,
        holdout_from_ms: data.holdout_from_ms,
        holdout_from: io::utc(data.holdout_from_ms),
        best_round: full.best_round,
        rounds_run: full.rounds,
        holdout_ndcg_at_5: full.best,
        num_rounds: cfg.num_rounds,
        max_depth: cfg.max_depth,
        eta: cfg.eta,
        seed: ctx.seed,
        importance,
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let model_path = dir.join("model.json");
    io::write_atomic(&model_path, |tmp| {
        // XGBoost picks the format from the extension
        let tmp_json = tmp.with_extension("json");
        full.model.save(&tmp_json).map_err(xgb_err)?;
        std::fs::rename(&tmp_json, tmp).with_context(|| format!("writing {}", tmp.display()))
    })?;
    io::write_json(&dir.join("ranker.json"), &info)?;
    let ablation = if cfg.ablation {
        let rows = ablation(ctx, cfg, &data, &full)?;
        io::write_json(&dir.join("ablation.json"), &rows)?;
        rows
    } else {
        Vec::new()
    };
    Ok(RankerSummary {
        info,
        ablation,
        dir,
        secs: t0.elapsed().as_secs_f64(),
    })
}

/// The full model, then one retrained without each feature: held-out NDCG@5 (what early
/// stopping saw) and TEST NDCG@5 over the test candidates of the same run, when they exist.
fn ablation(
    ctx: &Ctx,
    cfg: &RankerConfig,
    data: &TrainingData,
    full: &Fit,
) -> Result<Vec<AblationRow>> {
    let test_path = ctx
        .layout
        .candidates(Split::Test, cfg.candidates.as_deref());
    let test = if test_path.is_file() {
        Some(features::build(ctx, Split::Test, &test_path)?)
    } else {
        eprintln!(
            "ablation: {} not found: test NDCG@5 left out",
            test_path.display()
        );
        None
    };
    let test_ndcg = |model: &Booster, without: Option<usize>| -> Result<Option<f64>> {
        let Some(df) = &test else { return Ok(None) };
        let scores = model
            .predict(&dmatrix(df, false, without)?)
            .map_err(xgb_err)?;
        Ok(Some(ndcg_at_5(df, &scores)?))
    };
    let mut rows = vec![AblationRow {
        feature: "(all features)".into(),
        holdout_ndcg_at_5: full.best,
        test_ndcg_at_5: test_ndcg(&full.model, None)?,
        best_round: full.best_round,
    }];
    let pb = io::progress(FEATURES.len() as u64, "ablation", ctx.quiet);
    for (j, f) in FEATURES.iter().enumerate() {
        pb.set_message(f.name);
        let fit = fit(
            &data.learn,
            &data.holdout,
            &cfg.boosting(),
            ctx.seed,
            Some(j),
            &indicatif::ProgressBar::hidden(),
        )?;
        rows.push(AblationRow {
            feature: f.name.to_string(),
            holdout_ndcg_at_5: fit.best,
            test_ndcg_at_5: test_ndcg(&fit.model, Some(j))?,
            best_round: fit.best_round,
        });
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(rows)
}

/// NDCG@5 of the order `scores` gives, over every query of the frame (0 when its target is
/// not among its candidates).
fn ndcg_at_5(df: &DataFrame, scores: &[f32]) -> Result<f64> {
    let ranks = ranks_within(df, scores)?;
    let labels = df.column(LABEL)?.f32()?;
    let sum: f64 = labels
        .iter()
        .zip(&ranks)
        .filter(|(l, _)| l.is_some_and(|l| l > 0.0))
        .map(|(_, &r)| ndcg_at(r as usize, 5))
        .sum();
    let queries = features::groups(df)?.len();
    Ok(if queries == 0 {
        0.0
    } else {
        sum / queries as f64
    })
}
