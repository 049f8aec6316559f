//! Stage 2: the XGBoost re-ranker. `train ranker` learns `rank:ndcg` over the features of
//! [`features`] on the candidates of the TRAIN split (early stopping on VALID, NDCG@5);
//! `rerank --split S` scores a split's candidates → `evaluation/reranked_{S}.parquet`.
//!
//! Model directory `models/ranker-{YYYYMMDD-HHMMSS}/`: `model.json` (XGBoost's JSON format) and
//! `ranker.json` (the ordered feature list, the training record, the gain importance).

pub mod features;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use xgb::{Booster, DMatrix};

use crate::cols::{self, LABEL, RERANK_RANK, RERANK_SCORE};
use crate::context::Ctx;
use crate::io::{self, thousands};
use crate::layout::{self, MODELS_DIR, Split};
use crate::retrieve::{CandidatesRecord, QuerySettings, rank_order};
use features::FEATURES;

fn xgb_err(e: xgb::XGBError) -> anyhow::Error {
    anyhow::anyhow!("XGBoost: {e}")
}

#[derive(Debug, Clone, clap::Args)]
pub struct RankerConfig {
    /// Candidates run to learn from and to re-rank: candidates_{split}[_{name}].parquet
    /// [default: the dense run]
    #[arg(long)]
    pub candidates: Option<String>,
    /// Split whose candidates are the training data (`retrieve --split train --max-queries N`)
    #[arg(long, value_enum, default_value_t = Split::Train)]
    pub train_split: Split,
    /// Boosting rounds at most
    #[arg(long, default_value_t = 300)]
    pub num_rounds: usize,
    /// Stop when valid NDCG@5 has not improved for this many rounds (the best round is kept)
    #[arg(long, default_value_t = 30)]
    pub early_stopping_rounds: usize,
    /// Tree depth
    #[arg(long, default_value_t = 6)]
    pub max_depth: u32,
    /// Learning rate (shrinkage)
    #[arg(long, default_value_t = 0.1)]
    pub eta: f64,
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
    pub train_split: Split,
    pub train_queries: usize,
    pub train_queries_dropped: usize,
    pub valid_queries: usize,
    pub valid_queries_dropped: usize,
    pub best_round: usize,
    pub rounds_run: usize,
    pub valid_ndcg_at_5: f64,
    pub num_rounds: usize,
    pub max_depth: u32,
    pub eta: f64,
    pub seed: u64,
    /// (feature, average gain, total gain, splits), by average gain.
    pub importance: Vec<(String, f64, f64, usize)>,
}

#[derive(Debug)]
pub struct RankerSummary {
    pub info: RankerInfo,
    pub dir: PathBuf,
    pub secs: f64,
}

impl fmt::Display for RankerSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.info;
        writeln!(
            f,
            "train ranker: rank:ndcg on {} {} queries ({} dropped: target not among the \
             candidates), early stopping on {} valid queries ({} dropped)",
            thousands(i.train_queries),
            i.train_split,
            thousands(i.train_queries_dropped),
            thousands(i.valid_queries),
            thousands(i.valid_queries_dropped)
        )?;
        writeln!(
            f,
            "  best round {} of {} run (max {}): valid NDCG@5 {:.4}; {:.1}s",
            i.best_round, i.rounds_run, i.num_rounds, i.valid_ndcg_at_5, self.secs
        )?;
        writeln!(f, "  feature importance (gain = average gain per split):")?;
        for (name, gain, total, splits) in &i.importance {
            writeln!(
                f,
                "    {name:<18} gain {gain:>9.3}  total {total:>11.1}  splits {splits:>6}"
            )?;
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

/// Features of a split for training: only queries whose target is among the candidates.
/// Returns (frame, queries kept, queries dropped, the candidates' query settings).
fn training_frame(
    ctx: &Ctx,
    split: Split,
    cfg: &RankerConfig,
) -> Result<(DataFrame, usize, usize, QuerySettings)> {
    let path = candidates_path(ctx, split, cfg.candidates.as_deref())?;
    let query = CandidatesRecord::read(&path)?.query;
    let df = features::build(ctx, split, &path)?;
    let all = df.column(cols::REVIEW_ID)?.n_unique()?;
    let kept = df
        .lazy()
        .filter(col(LABEL).sum().over([col(cols::REVIEW_ID)])?.gt(lit(0.0)))
        .collect()?;
    let n = kept.column(cols::REVIEW_ID)?.n_unique()?;
    anyhow::ensure!(
        n > 0,
        "{}: no query has its target among the candidates",
        path.display()
    );
    Ok((kept, n, all - n, query))
}

/// XGBoost logs to stderr by default (deprecation notices of the C API the `xgb` crate calls);
/// keep it to errors.
fn quiet_xgboost() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let cfg = std::ffi::CString::new(r#"{"verbosity": 0}"#).expect("no NUL");
        // SAFETY: a NUL-terminated JSON string that outlives the call.
        unsafe {
            xgboost_lib_sys::XGBSetGlobalConfig(cfg.as_ptr());
        }
    });
}

fn dmatrix(df: &DataFrame, with_labels: bool) -> Result<DMatrix> {
    quiet_xgboost();
    let x = features::matrix(df)?;
    let mut m = DMatrix::from_dense(&x, df.height()).map_err(xgb_err)?;
    m.set_group(&features::groups(df)?).map_err(xgb_err)?;
    if with_labels {
        let y: Vec<f32> = df
            .column(LABEL)?
            .f32()?
            .iter()
            .map(|v| v.unwrap_or(0.0))
            .collect();
        m.set_labels(&y).map_err(xgb_err)?;
    }
    Ok(m)
}

/// `recsys train ranker`.
pub fn train(ctx: &Ctx, cfg: &RankerConfig) -> Result<RankerSummary> {
    let t0 = Instant::now();
    anyhow::ensure!(
        cfg.train_split != Split::Valid,
        "--train-split valid: valid is the early-stopping split"
    );
    let (train_df, train_q, train_drop, query) = training_frame(ctx, cfg.train_split, cfg)?;
    let (valid_df, valid_q, valid_drop, _) = training_frame(ctx, Split::Valid, cfg)?;
    let dtrain = dmatrix(&train_df, true)?;
    let dvalid = dmatrix(&valid_df, true)?;

    let mut booster = Booster::new_with_cached_dmats(&Default::default(), &[&dtrain, &dvalid])
        .map_err(xgb_err)?;
    for (k, v) in [
        ("objective", "rank:ndcg".to_string()),
        ("eval_metric", "ndcg@5".to_string()),
        ("max_depth", cfg.max_depth.to_string()),
        ("eta", cfg.eta.to_string()),
        ("seed", ctx.seed.to_string()),
        ("tree_method", "hist".to_string()),
        ("lambdarank_pair_method", "topk".to_string()),
        ("verbosity", "0".to_string()),
    ] {
        booster.set_param(k, &v).map_err(xgb_err)?;
    }
    let pb = io::progress(cfg.num_rounds as u64, "boosting", ctx.quiet);
    let (mut best, mut best_round, mut rounds) = (f64::NEG_INFINITY, 0usize, 0usize);
    for round in 0..cfg.num_rounds {
        booster.update(&dtrain, round as i32).map_err(xgb_err)?;
        rounds = round + 1;
        let m = booster.evaluate(&dvalid).map_err(xgb_err)?;
        let ndcg = m
            .iter()
            .find(|(k, _)| k.contains("ndcg@5"))
            .map(|(_, v)| *v as f64)
            .context("XGBoost reported no ndcg@5")?;
        if ndcg > best {
            (best, best_round) = (ndcg, rounds);
        }
        pb.set_message(format!("valid ndcg@5 {ndcg:.4}"));
        pb.inc(1);
        if rounds - best_round >= cfg.early_stopping_rounds {
            break;
        }
    }
    pb.finish_and_clear();
    let model = booster.slice(0, best_round as i32).map_err(xgb_err)?;
    let importance = gain_importance(&model)?;

    let dir = cfg
        .output
        .clone()
        .unwrap_or_else(|| layout::new_model_dir("ranker"));
    let info = RankerInfo {
        features: features::names().iter().map(|s| s.to_string()).collect(),
        candidates: cfg.candidates.clone(),
        query,
        train_split: cfg.train_split,
        train_queries: train_q,
        train_queries_dropped: train_drop,
        valid_queries: valid_q,
        valid_queries_dropped: valid_drop,
        best_round,
        rounds_run: rounds,
        valid_ndcg_at_5: best,
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
        model.save(&tmp_json).map_err(xgb_err)?;
        std::fs::rename(&tmp_json, tmp).with_context(|| format!("writing {}", tmp.display()))
    })?;
    io::write_json(&dir.join("ranker.json"), &info)?;
    Ok(RankerSummary {
        info,
        dir,
        secs: t0.elapsed().as_secs_f64(),
    })
}

/// Average and total split gain per feature, from the model dump (XGBoost's "gain" and
/// "total_gain" importance), by average gain.
fn gain_importance(model: &Booster) -> Result<Vec<(String, f64, f64, usize)>> {
    let mut total = vec![0f64; FEATURES.len()];
    let mut count = vec![0usize; FEATURES.len()];
    for tree in model.dump_model_vec(true).map_err(xgb_err)? {
        for line in tree.lines() {
            // "  3:[f4<0.5] yes=7,no=8,missing=7,gain=12.5,cover=30"
            let Some(feat) = line.split_once("[f").and_then(|(_, r)| {
                r.split(['<', ']'])
                    .next()
                    .and_then(|n| n.parse::<usize>().ok())
            }) else {
                continue;
            };
            let gain = line
                .split(',')
                .find_map(|kv| kv.trim().strip_prefix("gain="))
                .and_then(|g| g.parse::<f64>().ok())
                .unwrap_or(0.0);
            if feat < FEATURES.len() {
                total[feat] += gain;
                count[feat] += 1;
            }
        }
    }
    let mut out: Vec<(String, f64, f64, usize)> = FEATURES
        .iter()
        .enumerate()
        .map(|(j, f)| {
            let avg = if count[j] > 0 {
                total[j] / count[j] as f64
            } else {
                0.0
            };
            (f.name.to_string(), avg, total[j], count[j])
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(out)
}

#[derive(Debug, Clone, clap::Args)]
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
    let path = candidates_path(ctx, cfg.split, info.candidates.as_deref())?;
    let df = features::build(ctx, cfg.split, &path)?;
    let scores = if df.height() > 0 {
        model.predict(&dmatrix(&df, false)?).map_err(xgb_err)?
    } else {
        Vec::new()
    };
    let asins: Vec<String> = df
        .column(cols::PARENT_ASIN)?
        .str()?
        .iter()
        .map(|s| s.unwrap_or("").to_string())
        .collect();
    // rank within each query: score desc, then parent_asin asc (groups are contiguous)
    let mut ranks = vec![0u32; df.height()];
    let mut start = 0;
    for g in features::groups(&df)? {
        let end = start + g as usize;
        let mut idx: Vec<usize> = (start..end).collect();
        idx.sort_by(|&a, &b| rank_order((scores[a], &asins[a]), (scores[b], &asins[b])));
        for (r, i) in idx.into_iter().enumerate() {
            ranks[i] = r as u32 + 1;
        }
        start = end;
    }
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
