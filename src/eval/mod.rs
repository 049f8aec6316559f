//! Evaluation of candidate files (stage 1) and re-ranked files (stage 2): metrics and reports
//! (table, JSON, Recall@K plot).

pub mod plot;

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cols;
use crate::context::Ctx;
use crate::io;
use crate::layout::Split;
use crate::metrics::{KS, Metrics};
use crate::retrieve::{AnnRecall, CandidatesRecord};

/// Bumped when a change to this stage's logic changes what it writes: the pipeline's records
/// made with another version are stale, so the stage runs again.
pub const CODE_VERSION: u32 = 1;

/// Which stage(s) `eval` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Both tables (stage 2 when reranked_{split}.parquet exists)
    #[default]
    All,
    /// Stage 1: every candidates_{split}*.parquet
    Retrieve,
    /// Stage 2: reranked_{split}.parquet, stage-1 order vs re-ranked order
    Rerank,
}

/// `recsys eval`
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct EvalConfig {
    /// Split whose candidate files are scored (every candidates_{split}*.parquet)
    #[arg(long, value_enum, default_value_t = Split::Test)]
    pub split: Split,
    /// Which stage to report
    #[arg(long, value_enum, default_value_t = Stage::All)]
    pub stage: Stage,
}

/// Stage 2: the same candidates in stage-1 order and in re-ranked order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RerankEval {
    pub file: PathBuf,
    pub stage1: Metrics,
    pub reranked: Metrics,
}

/// The metrics of one candidates file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// File name without `candidates_{split}` and `.parquet` ("" for the default dense run).
    pub name: String,
    pub file: PathBuf,
    pub retriever: String,
    pub model: String,
    #[serde(flatten)]
    pub metrics: Metrics,
    /// The same over every review of the split (unqueried reviews count as misses), when the
    /// candidates record says how many reviews the split had.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub over_all: Option<Metrics>,
    /// `over_all` is an estimate: the run sampled its queries (`--max-queries`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
    /// For `retrieve --ann` runs: the ANN top-K's recall of the exact top-K on a sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ann: Option<AnnRecall>,
}

impl Run {
    /// Its table rows: over all reviews ("all", or "all (est.)" for a sampled run) when known,
    /// then over the findable ones.
    pub fn rows(&self) -> Vec<(&'static str, &Metrics)> {
        let mut rows = vec![("findable", &self.metrics)];
        if let Some(all) = &self.over_all {
            rows.insert(0, (if self.estimated { "all (est.)" } else { "all" }, all));
        }
        rows
    }

    pub fn label(&self) -> String {
        let mut l = self.retriever.clone();
        if !self.model.is_empty() {
            l = format!("{l} · {}", self.model);
        }
        let plain = self.name.is_empty() || self.name == self.retriever;
        if !plain {
            l = format!("{} ({l})", self.name);
        }
        l
    }
}

/// What `metrics_{split}.json` holds (the report reads it back).
#[derive(Debug, Serialize, Deserialize)]
pub struct EvalReport {
    pub split: String,
    pub runs: Vec<Run>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerank: Option<RerankEval>,
    #[serde(skip)]
    pub json: PathBuf,
    #[serde(skip)]
    pub plot: PathBuf,
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .runs
            .iter()
            .map(|r| r.label().chars().count())
            .max()
            .unwrap_or(0)
            .max(9);
        if !self.runs.is_empty() {
            writeln!(
                f,
                "eval {} — stage 1 (retrieval); over: all = every review of the split (an item not \
                 in the index is a miss), findable = reviews whose item is in the index",
                self.split
            )?;
            write!(f, "{:<width$}  {:<8}  {:>8}", "run", "over", "queries")?;
            for k in KS {
                write!(f, "  {:>14}", format!("R@{k}"))?;
            }
            writeln!(f, "  {:>7}", "MRR")?;
            for r in &self.runs {
                let label = r.label();
                for (i, (over, m)) in r.rows().into_iter().enumerate() {
                    let name = if i == 0 { label.as_str() } else { "" };
                    write!(
                        f,
                        "{name:<width$}  {over:<8}  {:>8}",
                        io::thousands(m.queries)
                    )?;
                    for k in KS {
                        match m.recall.iter().find(|x| x.k == k) {
                            Some(x) => {
                                write!(f, "  {:>14}", format!("{:.4} ({})", x.recall, x.hits))?
                            }
                            None => write!(f, "  {:>14}", "-")?,
                        }
                    }
                    writeln!(f, "  {:>7.4}", m.mrr)?;
                }
            }
            for r in &self.runs {
                if let Some(a) = r.ann {
                    writeln!(
                        f,
                        "{}: ANN top-K holds {:.2}% of the exact top-K ({} sampled queries)",
                        r.label(),
                        100.0 * a.ann_recall_vs_exact,
                        a.sampled_queries
                    )?;
                }
            }
        }
        if let Some(r) = &self.rerank {
            writeln!(
                f,
                "eval {} — stage 2 (re-ranking {}, the same candidates)",
                self.split,
                r.file.display()
            )?;
            writeln!(
                f,
                "{:<14}  {:>8}  {:>7}  {:>7}  {:>7}  {:>7}  {:>7}",
                "order", "queries", "NDCG@5", "R@1", "R@5", "R@10", "MRR"
            )?;
            for (name, m) in [("stage 1", &r.stage1), ("re-ranked", &r.reranked)] {
                let at = |k| m.recall_at(k).unwrap_or(0.0);
                writeln!(
                    f,
                    "{:<14}  {:>8}  {:>7.4}  {:>7.4}  {:>7.4}  {:>7.4}  {:>7.4}",
                    name,
                    io::thousands(m.queries),
                    m.ndcg_at_5,
                    at(1),
                    at(5),
                    at(10),
                    m.mrr
                )?;
            }
        }
        write!(
            f,
            "(hits in parentheses) → {} and {}",
            self.json.display(),
            self.plot.display()
        )
    }
}

/// The candidate files of a split, default run first, then by name.
pub fn candidate_files(ctx: &Ctx, split: Split) -> Result<Vec<(String, PathBuf)>> {
    let dir = ctx.layout.evaluation_dir();
    let stem = format!("candidates_{split}");
    let mut out = Vec::new();
    if dir.is_dir() {
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            let fname = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let Some(rest) = fname
                .strip_prefix(&stem)
                .and_then(|r| r.strip_suffix(".parquet"))
            else {
                continue;
            };
            if rest.is_empty() {
                out.push((String::new(), p));
            } else if let Some(name) = rest.strip_prefix('_') {
                out.push((name.to_string(), p));
            }
        }
    }
    out.sort();
    anyhow::ensure!(
        !out.is_empty(),
        "no {}/{stem}*.parquet: run `recsys retrieve --split {split}` first",
        dir.display()
    );
    Ok(out)
}

/// The rank (in column `rank_col`) of each query's target, None when it is not among the
/// candidates; with the first `retriever` and `model` of each query.
fn target_ranks(file: &Path, rank_col: &str) -> Result<(Vec<Option<usize>>, DataFrame)> {
    let df = io::scan_parquet(file)?
        .group_by([col(cols::REVIEW_ID)])
        .agg([
            col(rank_col)
                .filter(col(cols::PARENT_ASIN).eq(col(cols::TARGET_PARENT_ASIN)))
                .min()
                .alias("hit_rank"),
            col(cols::RETRIEVER).first(),
            col(cols::MODEL).first(),
        ])
        .collect();
    let df = Context::with_context(df, || format!("scoring {}", file.display()))?;
    let ranks: Vec<Option<usize>> = df
        .column("hit_rank")?
        .cast(&DataType::UInt64)?
        .u64()?
        .iter()
        .map(|r| r.map(|r| r as usize))
        .collect();
    Ok((ranks, df))
}

/// Scores one candidates file: the best rank of each query's target (None: not retrieved).
pub fn score_file(name: &str, file: &Path) -> Result<Run> {
    let (ranks, df) = target_ranks(file, cols::RANK)?;
    let first = |c: &str| -> Result<String> {
        Ok(df
            .column(c)?
            .str()?
            .iter()
            .flatten()
            .next()
            .unwrap_or("")
            .to_string())
    };
    let record = CandidatesRecord::read_optional(file)?;
    let ann = record.as_ref().and_then(|r| r.ann);
    let counts = record.and_then(|r| r.reviews.zip(r.findable));
    let estimated = counts.is_some_and(|(_, findable)| ranks.len() < findable);
    let over_all = counts.map(|(reviews, findable)| {
        // Reviews not queried (empty query, item not in the index); scaled to the sample's size
        // when the run sampled its queries.
        let unqueried = reviews.saturating_sub(findable) as f64;
        let extra = (unqueried * ranks.len() as f64 / findable.max(1) as f64).round() as usize;
        let mut all = ranks.clone();
        all.extend(std::iter::repeat_n(None, extra));
        Metrics::from_ranks(&all, &KS)
    });
    Ok(Run {
        name: name.to_string(),
        file: file.to_path_buf(),
        retriever: first(cols::RETRIEVER)?,
        model: first(cols::MODEL)?,
        metrics: Metrics::from_ranks(&ranks, &KS),
        over_all,
        estimated,
        ann,
    })
}

/// `recsys eval`: metrics of every candidates file of the split, as a table, JSON and a plot.
pub fn run(ctx: &Ctx, cfg: &EvalConfig) -> Result<EvalReport> {
    let runs = if cfg.stage == Stage::Rerank {
        Vec::new()
    } else {
        candidate_files(ctx, cfg.split)?
            .iter()
            .map(|(name, file)| score_file(name, file))
            .collect::<Result<Vec<_>>>()?
    };
    let reranked = ctx.layout.reranked(cfg.split);
    let rerank = match cfg.stage {
        Stage::Retrieve => None,
        Stage::All if !reranked.is_file() => None,
        _ => {
            anyhow::ensure!(
                reranked.is_file(),
                "{} not found: run `recsys rerank --split {}` first",
                reranked.display(),
                cfg.split
            );
            let (stage1, _) = target_ranks(&reranked, cols::RANK)?;
            let (after, _) = target_ranks(&reranked, cols::RERANK_RANK)?;
            Some(RerankEval {
                file: reranked,
                stage1: Metrics::from_ranks(&stage1, &KS),
                reranked: Metrics::from_ranks(&after, &KS),
            })
        }
    };
    let report = EvalReport {
        split: cfg.split.to_string(),
        runs,
        rerank,
        json: ctx.layout.metrics(cfg.split),
        plot: ctx.layout.recall_plot(cfg.split),
    };
    let json = serde_json::to_string_pretty(&report)?;
    io::write_atomic(&report.json, |tmp| {
        std::fs::write(tmp, &json).with_context(|| format!("writing {}", tmp.display()))
    })?;
    let svg = plot::recall_svg(&format!("Recall@K — {} split", cfg.split), &report.runs);
    io::write_atomic(&report.plot, |tmp| {
        std::fs::write(tmp, &svg).with_context(|| format!("writing {}", tmp.display()))
    })?;
    Ok(report)
}
