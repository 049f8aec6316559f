//! Stage-1 evaluation: candidates (`retrieve`), metrics, reports (table, JSON, Recall@K plot).

pub mod metrics;
pub mod plot;
pub mod retrieve;

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use polars::prelude::*;
use serde::Serialize;

use crate::cols;
use crate::context::Ctx;
use crate::io;
use crate::layout::Split;
use metrics::{KS, Metrics};

/// `recsys eval`
#[derive(Debug, Clone, clap::Args)]
pub struct EvalConfig {
    /// Split whose candidate files are scored (every candidates_{split}*.parquet)
    #[arg(long, value_enum, default_value_t = Split::Test)]
    pub split: Split,
}

/// The metrics of one candidates file.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// File name without `candidates_{split}` and `.parquet` ("" for the default dense run).
    pub name: String,
    pub file: PathBuf,
    pub retriever: String,
    pub model: String,
    #[serde(flatten)]
    pub metrics: Metrics,
    /// For `retrieve --ann` runs: the ANN top-K's recall of the exact top-K on a sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ann: Option<retrieve::AnnRecall>,
}

impl Run {
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

#[derive(Debug, Serialize)]
pub struct EvalReport {
    pub split: String,
    pub runs: Vec<Run>,
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
        writeln!(f, "eval {} — stage 1 (retrieval)", self.split)?;
        write!(f, "{:<width$}  {:>8}", "run", "queries")?;
        for k in KS {
            write!(f, "  {:>14}", format!("R@{k}"))?;
        }
        writeln!(f, "  {:>7}", "MRR")?;
        for r in &self.runs {
            write!(
                f,
                "{:<width$}  {:>8}",
                r.label(),
                io::thousands(r.metrics.queries)
            )?;
            for k in KS {
                match r.metrics.recall.iter().find(|x| x.k == k) {
                    Some(x) => write!(f, "  {:>14}", format!("{:.4} ({})", x.recall, x.hits))?,
                    None => write!(f, "  {:>14}", "-")?,
                }
            }
            writeln!(f, "  {:>7.4}", r.metrics.mrr)?;
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

/// Scores one candidates file: the best rank of each query's target (None: not retrieved).
pub fn score_file(name: &str, file: &Path) -> Result<Run> {
    let df = io::scan_parquet(file)?
        .group_by([col(cols::REVIEW_ID)])
        .agg([
            col(cols::RANK)
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
    let sidecar = retrieve::ann_sidecar(file);
    let ann = if sidecar.is_file() {
        let text = std::fs::read_to_string(&sidecar)
            .with_context(|| format!("reading {}", sidecar.display()))?;
        Some(
            serde_json::from_str(&text)
                .with_context(|| format!("{}: not an ANN recall record", sidecar.display()))?,
        )
    } else {
        None
    };
    Ok(Run {
        name: name.to_string(),
        file: file.to_path_buf(),
        retriever: first(cols::RETRIEVER)?,
        model: first(cols::MODEL)?,
        metrics: Metrics::from_ranks(&ranks, &KS),
        ann,
    })
}

/// `recsys eval`: metrics of every candidates file of the split, as a table, JSON and a plot.
pub fn run(ctx: &Ctx, cfg: &EvalConfig) -> Result<EvalReport> {
    let runs = candidate_files(ctx, cfg.split)?
        .iter()
        .map(|(name, file)| score_file(name, file))
        .collect::<Result<Vec<_>>>()?;
    let report = EvalReport {
        split: cfg.split.to_string(),
        runs,
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
