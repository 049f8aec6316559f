//! `recsys debug probe …` (hidden): the encoder measured and dumped by the binary itself, for
//! machines without a Rust toolchain (the GPU check, `scripts/device_check.sh`):
//!
//! - `encode`: sentence vectors of a JSON list of texts → `--out` (JSON rows), texts/s;
//! - `grads`: the gradient of every parameter for one fixed loss over those texts → `--out`
//!   (safetensors, f32; compared across devices by the check);
//! - `forward`: inference forward of `--batch` × `--tokens` ids (those of benches/encoder.rs);
//! - `train-step`: forward of `--batch` queries × `--tokens` + `--batch` item texts ×
//!   `--doc-tokens`, the in-batch contrastive loss and the backward pass (no optimizer update,
//!   as benches/encoder_torch.py's step).
//!
//! Timed parts print `RESULT {json}` (median and minimum seconds over `--runs` after `--warmup`),
//! the same fields as the criterion bench's lines.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{D, Tensor};

use super::{DeviceArgs, Encoder, EncoderArgs};
use crate::train::loss::{DEFAULT_SCALE, mnrl, same_item_mask};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeKind {
    Encode,
    Grads,
    Forward,
    TrainStep,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ProbeConfig {
    /// What to run
    #[arg(value_enum)]
    pub what: ProbeKind,
    /// Encoder directory (Hugging Face layout)
    #[arg(long)]
    pub model: PathBuf,
    /// JSON list of texts (encode, grads)
    #[arg(long)]
    pub texts: Option<PathBuf>,
    /// Where encode / grads write their output
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Sequences per batch (forward, train-step; encode's batch size)
    #[arg(long, default_value_t = 32, value_parser = crate::cli::count)]
    pub batch: usize,
    /// Tokens per sequence (forward; train-step's queries); truncation for encode / grads
    #[arg(long, default_value_t = 128, value_parser = crate::cli::tokens)]
    pub tokens: usize,
    /// Tokens per item text in train-step [default: --tokens]
    #[arg(long, value_parser = crate::cli::tokens)]
    pub doc_tokens: Option<usize>,
    #[arg(long, default_value_t = 3, value_parser = crate::cli::count0)]
    pub warmup: usize,
    #[arg(long, default_value_t = 10, value_parser = crate::cli::count)]
    pub runs: usize,
    #[command(flatten)]
    pub runtime: DeviceArgs,
}

/// Row `r` of `len` tokens: [CLS] w… [SEP] with deterministic ids (benches/encoder.rs and
/// benches/encoder_torch.py build the same rows) for a vocabulary of 29,000 or more, else ids
/// folded into it; `(cls, sep)` are the model's special ids.
pub fn row(r: usize, len: usize, (cls, sep): (u32, u32), vocab: usize) -> Vec<u32> {
    let (base, span) = if vocab >= 29_000 {
        (1000, 28_000)
    } else {
        (3, vocab.saturating_sub(3).max(1))
    };
    let mut v = vec![cls];
    v.extend((1..len.max(2) - 1).map(|i| (base + (r * 7919 + i * 104_729) % span) as u32));
    v.push(sep);
    v
}

fn texts(cfg: &ProbeConfig) -> Result<Vec<String>> {
    let p = cfg.texts.as_ref().context("--texts FILE.json is needed")?;
    let s = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&s).with_context(|| format!("{}: not a JSON list of texts", p.display()))
}

/// Median and minimum seconds of `runs` runs of `f` after `warmup` untimed ones.
pub fn timed<E>(
    warmup: usize,
    runs: usize,
    mut f: impl FnMut() -> std::result::Result<(), E>,
) -> std::result::Result<(f64, f64), E> {
    for _ in 0..warmup {
        f()?;
    }
    let mut t = Vec::with_capacity(runs.max(1));
    for _ in 0..runs.max(1) {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok((t[t.len() / 2], t[0]))
}

/// Runs the probe; returns the line to print.
pub fn run(cfg: &ProbeConfig) -> Result<String> {
    let args = EncoderArgs {
        model: cfg.model.clone(),
        max_length: Some(cfg.tokens.max(cfg.doc_tokens.unwrap_or(0))),
        batch_size: cfg.batch.max(1),
        runtime: cfg.runtime,
        ..EncoderArgs::default()
    };
    let trainable = matches!(cfg.what, ProbeKind::Grads | ProbeKind::TrainStep);
    let enc = if trainable {
        Encoder::load_trainable(&args)?
    } else {
        Encoder::load(&args)?
    };
    let special = |s: &str, or: u32| enc.tokenizer.token_to_id(s).unwrap_or(or);
    let (cls, sep) = match enc.config.architecture {
        super::Architecture::Bert => (special("[CLS]", 101), special("[SEP]", 102)),
        super::Architecture::XlmRoberta => (special("<s>", 0), special("</s>", 2)),
    };
    let vocab = enc.config.vocab_size;
    let rows = |n: usize, len: usize, off: usize| -> Vec<Vec<u32>> {
        (0..n)
            .map(|r| row(r + off, len, (cls, sep), vocab))
            .collect()
    };
    let sync = || enc.device().synchronize();
    let result = |part: &str, (median, min): (f64, f64), extra: serde_json::Value| {
        let mut o = serde_json::json!({
            "side": "candle", "part": part, "device": enc.runtime.name,
            "precision": enc.runtime.precision, "batch": cfg.batch, "tokens": cfg.tokens,
            "median_s": median, "min_s": min, "runs": cfg.runs,
        });
        if let (Some(o), Some(e)) = (o.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        format!("RESULT {o}")
    };
    match cfg.what {
        ProbeKind::Encode => {
            let texts = texts(cfg)?;
            let pb = indicatif::ProgressBar::hidden();
            let t0 = Instant::now();
            let v = enc.encode(&texts, cfg.batch.max(1), &pb)?;
            let s = t0.elapsed().as_secs_f64();
            if let Some(out) = &cfg.out {
                let rows: Vec<&[f32]> = (0..v.len()).map(|i| v.row(i)).collect();
                crate::io::write_json(out, &rows)?;
            }
            Ok(result(
                "encode",
                (s, s),
                serde_json::json!({"texts": texts.len(), "texts_per_s": texts.len() as f64 / s}),
            ))
        }
        ProbeKind::Grads => {
            let texts = texts(cfg)?;
            let tok = enc.tokenize(&texts)?;
            let refs: Vec<&[u32]> = tok.iter().map(Vec::as_slice).collect();
            let v = enc.embed(&enc.batch(&refs)?)?;
            // a loss that depends on every coordinate (tests/encoder.rs's)
            let w = Tensor::arange(0f32, v.dim(D::Minus1)? as f32, enc.device())?.sin()?;
            let grads = v.broadcast_mul(&w)?.sum_all()?.backward()?;
            let vars = enc.varmap.as_ref().context("trainable encoder")?;
            let mut out: HashMap<String, Tensor> = HashMap::new();
            for (name, var) in vars.data().lock().expect("varmap lock").iter() {
                let g = grads
                    .get(var.as_tensor())
                    .with_context(|| format!("no gradient for {name}"))?;
                out.insert(name.clone(), g.to_device(&candle_core::Device::Cpu)?);
            }
            let path = cfg
                .out
                .as_ref()
                .context("--out FILE.safetensors is needed")?;
            candle_core::safetensors::save(&out, path)?;
            Ok(format!(
                "grads: {} parameters → {}",
                out.len(),
                path.display()
            ))
        }
        ProbeKind::Forward => {
            let ids = rows(cfg.batch, cfg.tokens, 0);
            let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
            let batch = enc.batch(&refs)?;
            let t = timed(cfg.warmup, cfg.runs, || -> Result<()> {
                super::ops::no_grad(|| enc.embed(&batch))?;
                Ok(sync()?)
            })?;
            Ok(result("forward", t, serde_json::json!({})))
        }
        ProbeKind::TrainStep => {
            let d_len = cfg.doc_tokens.unwrap_or(cfg.tokens);
            // item texts: the queries reversed (benches/encoder.rs), or rows of their own length
            let q = rows(cfg.batch, cfg.tokens, 0);
            let d = if d_len == cfg.tokens {
                q.iter().rev().cloned().collect()
            } else {
                rows(cfg.batch, d_len, cfg.batch)
            };
            let qb = enc.batch(&q.iter().map(Vec::as_slice).collect::<Vec<_>>())?;
            let db = enc.batch(&d.iter().map(Vec::as_slice).collect::<Vec<_>>())?;
            let items: Vec<u64> = (0..cfg.batch as u64).collect();
            let mask = same_item_mask(&items, &items, true, candle_core::DType::F32, enc.device())?;
            let t = timed(cfg.warmup, cfg.runs, || -> Result<()> {
                let (qv, dv) = (enc.embed(&qb)?, enc.embed(&db)?);
                let loss = mnrl(&qv, &dv, None, &mask, DEFAULT_SCALE)?;
                drop(loss.backward()?);
                Ok(sync()?)
            })?;
            Ok(result(
                "train_step",
                t,
                serde_json::json!({"doc_tokens": d_len}),
            ))
        }
    }
}
