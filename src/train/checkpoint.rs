//! Run directories of `train retriever`: where a run goes, its checkpoints (written whole, then
//! renamed), `--resume`, and the records (`training_args.json`, `metrics.jsonl`,
//! `trainer_state.json`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::config::RetrieverConfig;
use super::optim::AdamW;
use super::state::{EvalPoint, TrainerState};
use serde::{Deserialize, Serialize};

use crate::encoder::{Encoder, ModelInfo, RuntimeInfo};
use crate::io::{self, write_json};
use crate::layout::{self, MODELS_DIR};

/// `training_args.json`: how a run was started (written once, read by `--resume` and by the
/// pipeline to tell whether a run directory holds the run it would start).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingArgs {
    pub recsys_version: String,
    pub args: RetrieverConfig,
    pub seed: u64,
    pub base_model: ModelInfo,
    pub runtime: RuntimeInfo,
    pub pairs: PathBuf,
    pub pairs_rows: usize,
    pub data_dir: PathBuf,
    pub effective_max_query_len: usize,
    pub effective_max_doc_len: usize,
    pub total_steps: usize,
    pub warmup_steps: usize,
    /// RFC 3339, local time.
    pub started: String,
}

impl TrainingArgs {
    /// The record of the run in `output`, or an error naming the file and what is wrong.
    pub fn read(output: &Path) -> Result<TrainingArgs> {
        let p = output.join("training_args.json");
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a training_args.json record", p.display()))
    }
}

/// One line of `metrics.jsonl`: an evaluation on the VALID sample during fine-tuning.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricsLine {
    pub step: usize,
    /// Mean training loss since the last line (`None` before the first step).
    pub train_loss: Option<f64>,
    pub lr: f64,
    pub valid_recall_at_10: f64,
    pub valid_mrr: f64,
    /// RFC 3339, local time.
    pub time: String,
}

/// The lines of a run's `metrics.jsonl` (none when it has no file).
pub fn read_metrics(output: &Path) -> Result<Vec<MetricsLine>> {
    let p = output.join("metrics.jsonl");
    let Ok(text) = std::fs::read_to_string(&p) else {
        return Ok(Vec::new());
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{} line {}: not a metrics line", p.display(), i + 1))
        })
        .collect()
}

/// The effective configuration, output directory and seed: a fresh run's own, or on `--resume`
/// the interrupted run's (from its training_args.json).
pub(super) fn resolve_run(
    cli: &RetrieverConfig,
    seed: u64,
    data_dir: &Path,
) -> Result<(RetrieverConfig, PathBuf, u64)> {
    if !cli.resume {
        let output = cli.output.clone().unwrap_or_else(|| {
            let base = crate::encoder::model_name(&cli.base_model);
            layout::new_model_dir(&format!("{base}-finetuned"))
        });
        if output.join("training_args.json").exists() {
            bail!(
                "{} already holds a training run: pass --resume to continue it, or another --output",
                output.display()
            );
        }
        return Ok((cli.clone(), output, seed));
    }
    let output = match &cli.output {
        Some(o) => o.clone(),
        None => layout::newest_model_dir("-finetuned-", |p| {
            checkpoints(p).is_ok_and(|c| !c.is_empty())
        })
        .with_context(|| {
            format!("--resume: no {MODELS_DIR}/*-finetuned-*/ with a checkpoint; pass --output DIR")
        })?,
    };
    let rec = TrainingArgs::read(&output).context("--resume")?;
    let mut cfg = rec.args.clone();
    let base = rec.base_model;
    let weights = crate::encoder::ModelFiles::find(&cfg.base_model)?.weights;
    anyhow::ensure!(
        crate::encoder::hash_file(&weights)? == base.weights_blake3,
        "--resume: the base model {} changed since the run started (weights hash differs)",
        cfg.base_model.display()
    );
    let st: Option<TrainerState> = std::fs::read_to_string(output.join("trainer_state.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    if st.is_some_and(|s| s.finished) {
        bail!(
            "{}: this run has finished; nothing to resume",
            output.display()
        );
    }
    cfg.resume = true;
    cfg.output = Some(output.clone());
    cfg.halt_after = cli.halt_after;
    cfg.inject_nonfinite_at = cli.inject_nonfinite_at;
    anyhow::ensure!(
        rec.data_dir == data_dir,
        "--resume: the run in {} trained on --data-dir {}, not {}",
        output.display(),
        rec.data_dir.display(),
        data_dir.display()
    );
    // the run's own seed: the batches and the evaluation sample must be the same ones
    let seed = rec.seed;
    Ok((cfg, output, seed))
}

/// Complete checkpoints of a run, `(dir, step)`, oldest first.
pub fn checkpoints(output: &Path) -> Result<Vec<(PathBuf, usize)>> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(output) else {
        return Ok(out);
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(step) = name
            .strip_prefix("checkpoint-")
            .and_then(|s| s.parse::<usize>().ok())
        {
            out.push((e.path(), step));
        }
    }
    out.sort_by_key(|c| c.1);
    Ok(out)
}

pub(super) fn last_checkpoint(output: &Path) -> Result<Option<(PathBuf, TrainerState)>> {
    let Some((dir, _)) = checkpoints(output)?.pop() else {
        return Ok(None);
    };
    let f = dir.join("trainer_state.json");
    let st = serde_json::from_str(
        &std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?,
    )
    .with_context(|| format!("{}: not a trainer state", f.display()))?;
    Ok(Some((dir, st)))
}

/// Writes `checkpoint-{step}/` (into a temporary directory, renamed when complete), then
/// removes older checkpoints.
pub(super) fn save_checkpoint(
    enc: &Encoder,
    opt: &AdamW,
    st: &TrainerState,
    output: &Path,
) -> Result<()> {
    let dir = output.join(format!("checkpoint-{}", st.step));
    let tmp = output.join(format!(".checkpoint-{}.tmp", st.step));
    let _ = std::fs::remove_dir_all(&tmp);
    enc.write_files(&tmp)?;
    opt.save(&tmp.join("optimizer.safetensors"))?;
    write_json(&tmp.join("trainer_state.json"), &serde_json::to_value(st)?)?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
    for (old, step) in checkpoints(output)? {
        if step < st.step {
            std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
        }
    }
    Ok(())
}

/// Keeps the metrics lines up to `step` (a resumed run logs the later ones again).
pub(super) fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    io::write_atomic(path, |tmp| {
        std::fs::write(tmp, kept).with_context(|| format!("writing {}", tmp.display()))
    })
}

pub(super) fn log_metrics(output: &Path, e: &EvalPoint, loss: Option<f64>, lr: f64) -> Result<()> {
    let path = output.join("metrics.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let line = serde_json::to_string(&MetricsLine {
        step: e.step,
        train_loss: loss,
        lr,
        valid_recall_at_10: e.recall_at_10,
        valid_mrr: e.mrr,
        time: chrono::Local::now().to_rfc3339(),
    })?;
    writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))
}
