//! `recsys train retriever`: contrastive fine-tuning of the encoder on
//! `processed/training_pairs.parquet` (MultipleNegativesRankingLoss, in-batch negatives with
//! same-item masking, optional triplet negatives), AdamW with linear warm-up/decay and
//! gradient-norm clipping, evaluation on a fixed sample of valid queries against all items,
//! the best checkpoint kept, resumable.
//!
//! Output directory (default `models/{base}-finetuned-{YYYYMMDD-HHMMSS}/`):
//! the best model in Hugging Face / sentence-transformers layout, `training_args.json`,
//! `metrics.jsonl` (one line per evaluation), `trainer_state.json`, and while the run is not
//! finished `checkpoint-{step}/` (the weights, `optimizer.safetensors`, `trainer_state.json`)
//! from which `--resume` continues.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Tensor;
use polars::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::checkpoint::{
    TrainingArgs, checkpoints, last_checkpoint, log_metrics, resolve_run, save_checkpoint,
    truncate_metrics,
};
use super::evaluate::{eval_set, evaluate};
use super::loss;
use super::optim::{AdamW, AdamWParams};
use super::scaler::LossScale;
use super::schedule::{clip_grad_norm, item_distinct_batches, linear_warmup_decay};
use super::state::{EvalPoint, TrainerState};
use crate::cols;
use crate::context::Ctx;
use crate::encoder::{Encoder, EncoderArgs, Precision};
use crate::io::{self, thousands, write_json};

pub use super::config::RetrieverConfig;

/// Bumped when a change to this stage's logic changes what it writes: the pipeline's records
/// made with another version are stale, so the stage runs again.
pub const CODE_VERSION: u32 = 1;

#[derive(Debug)]
pub struct TrainSummary {
    pub output: PathBuf,
    pub rows: usize,
    pub steps_done: usize,
    pub total_steps: usize,
    pub resumed_from: Option<usize>,
    pub epochs: f64,
    pub batch_size: usize,
    pub eval_queries: usize,
    pub base: Option<EvalPoint>,
    pub best: Option<EvalPoint>,
    pub last: Option<EvalPoint>,
    pub finished: bool,
    pub train_s: f64,
    pub steps_per_s: f64,
    /// Where and in what precision it trained, e.g. `cpu, f32`.
    pub runtime: String,
    /// Steps skipped by f16 loss scaling (inf/NaN gradients), and the final scale.
    pub loss_scale: Option<LossScale>,
}

impl fmt::Display for TrainSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "train retriever: {} of {} steps{} ({:.3} epochs of {} pairs, batch {}) in {:.1}s \
             ({:.2} steps/s) on {}",
            self.steps_done,
            self.total_steps,
            self.resumed_from
                .map(|s| format!(", resumed at step {s}"))
                .unwrap_or_default(),
            self.epochs,
            thousands(self.rows),
            self.batch_size,
            self.train_s,
            self.steps_per_s,
            self.runtime
        )?;
        if let Some(s) = &self.loss_scale {
            write!(
                f,
                "\n  f16 loss scaling: {} step{} skipped (inf/NaN gradients), scale now {}",
                s.skipped,
                if s.skipped == 1 { "" } else { "s" },
                s.scale
            )?;
        }
        let p = |e: &EvalPoint| format!("R@10 {:.4}  MRR {:.4}", e.recall_at_10, e.mrr);
        if let Some(b) = &self.base {
            write!(
                f,
                "\n  valid ({} queries) base model:   {}",
                thousands(self.eval_queries),
                p(b)
            )?;
        }
        if let Some(l) = &self.last {
            write!(
                f,
                "\n  valid ({} queries) after step {}: {}",
                thousands(self.eval_queries),
                l.step,
                p(l)
            )?;
        }
        if let Some(b) = &self.best {
            write!(f, "\n  best: step {} ({})", b.step, p(b))?;
        }
        if self.finished {
            write!(f, "\n  model → {}", self.output.display())
        } else {
            write!(
                f,
                "\n  stopped early; continue with `recsys train retriever --resume --output {}`",
                self.output.display()
            )
        }
    }
}

/// Training rows, as read from the pairs file.
struct Rows {
    queries: Vec<String>,
    positives: Vec<String>,
    items: Vec<u64>,
    negatives: Vec<Option<(String, u64)>>,
}

/// `recsys train retriever`.
pub fn run(ctx: &Ctx, cli: &RetrieverConfig) -> Result<TrainSummary> {
    let (cfg, output, seed) = resolve_run(cli, ctx.seed, &ctx.layout.root)?;
    anyhow::ensure!(cfg.batch_size > 0, "--batch-size must be at least 1");
    anyhow::ensure!(
        cfg.epochs > 0 || cfg.max_steps.is_some(),
        "--epochs must be at least 1"
    );
    let enc = Encoder::load_trainable(&EncoderArgs {
        model: cfg.base_model.clone(),
        runtime: cfg.runtime,
        ..Default::default()
    })?;
    let q_len = enc.length_within(cfg.max_query_len);
    let d_len = enc.length_within(cfg.max_doc_len);
    let pairs_path = cfg
        .pairs
        .clone()
        .unwrap_or_else(|| ctx.layout.training_pairs());
    let rows = read_rows(&pairs_path, cfg.no_negatives)?;
    anyhow::ensure!(
        !rows.queries.is_empty(),
        "{}: no training rows",
        pairs_path.display()
    );
    let per_epoch = rows.queries.len().div_ceil(cfg.batch_size);
    let total_steps = cfg.max_steps.map_or(per_epoch * cfg.epochs, |m| {
        m.min(per_epoch * cfg.epochs.max(1)).max(1)
    });
    let epochs_needed = total_steps.div_ceil(per_epoch);
    let warmup = (total_steps as f64 * cfg.warmup_ratio).ceil() as usize;
    let eval_set = if cfg.eval_queries > 0 {
        Some(eval_set(ctx, &cfg, &enc, q_len, d_len, seed)?)
    } else {
        None
    };

    let named: Vec<(String, candle_core::Var)> = enc
        .varmap
        .as_ref()
        .context("trainable encoder")?
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut opt = AdamW::new(
        named,
        AdamWParams {
            weight_decay: cfg.weight_decay,
            ..Default::default()
        },
    )?;
    let vars = opt.vars();

    // Fresh start or resume.
    let f16 = enc.runtime.precision == Precision::F16;
    let mut state = TrainerState {
        step: 0,
        total_steps,
        base: None,
        best: None,
        finished: false,
        loss_scale: f16.then(LossScale::default),
    };
    let mut resumed_from = None;
    if cli.resume {
        let (ckpt, st) = last_checkpoint(&output)?.with_context(|| {
            format!(
                "{}: no checkpoint-*/ to resume from (none was written yet: --save-steps {})",
                output.display(),
                cfg.save_steps
            )
        })?;
        let mut vm = enc.varmap.clone().context("trainable encoder")?;
        vm.load(ckpt.join("model.safetensors"))
            .with_context(|| format!("loading {}", ckpt.display()))?;
        opt.load(&ckpt.join("optimizer.safetensors"))?;
        anyhow::ensure!(
            opt.steps + st.skipped_steps() == st.step,
            "{}: the optimizer state is at step {} ({} skipped), trainer_state.json says {}",
            ckpt.display(),
            opt.steps,
            st.skipped_steps(),
            st.step
        );
        truncate_metrics(&output.join("metrics.jsonl"), st.step)?;
        resumed_from = Some(st.step);
        state = st;
    } else {
        std::fs::create_dir_all(&output)
            .with_context(|| format!("creating {}", output.display()))?;
        write_json(
            &output.join("training_args.json"),
            &TrainingArgs {
                recsys_version: env!("CARGO_PKG_VERSION").to_string(),
                args: cfg.clone(),
                seed,
                base_model: enc.info.clone(),
                runtime: enc.runtime.info(),
                pairs: pairs_path.clone(),
                pairs_rows: rows.queries.len(),
                data_dir: ctx.layout.root.clone(),
                effective_max_query_len: q_len,
                effective_max_doc_len: d_len,
                total_steps,
                warmup_steps: warmup,
                started: chrono::Local::now().to_rfc3339(),
            },
        )?;
        let _ = std::fs::remove_file(output.join("metrics.jsonl"));
        if let Some(es) = &eval_set {
            let e = evaluate(&enc, es, &cfg, 0, ctx.quiet)?;
            log_metrics(&output, &e, None, 0.0)?;
            state.base = Some(e);
        }
    }

    let mask_same = !cfg.no_mask_same_item;
    let start_step = state.step;
    let pb = train_progress(total_steps, start_step, ctx.quiet);
    let t0 = Instant::now();
    let (mut loss_sum, mut loss_n) = (0f64, 0usize);
    let mut last_eval: Option<EvalPoint> = None;
    let mut step = 0usize;
    let mut halted = false;
    'epochs: for epoch in 0..epochs_needed {
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(epoch as u64));
        let batches = item_distinct_batches(&rows.items, cfg.batch_size, &mut rng);
        for batch in batches {
            if step >= total_steps {
                break 'epochs;
            }
            step += 1;
            if step <= start_step {
                continue;
            }
            let lr = linear_warmup_decay(cfg.lr, step - 1, warmup, total_steps);
            let mut loss = train_step(&enc, &rows, &batch, q_len, d_len, cfg.scale, mask_same)?;
            if cfg.inject_nonfinite_at == Some(step) {
                loss = (loss * f64::INFINITY)?;
            }
            let loss_v = loss.to_scalar::<f32>()? as f64;
            // the gradients of the loss, or none when f16 loss scaling skips the step (a loss
            // or gradient that is not finite: the scale halves)
            let grads = match &mut state.loss_scale {
                Some(ls) if !loss_v.is_finite() => {
                    ls.skip();
                    None
                }
                Some(ls) => {
                    let mut grads = (loss * ls.scale)?.backward()?;
                    ls.unscale(&mut grads, &vars)?.then_some(grads)
                }
                None => {
                    anyhow::ensure!(
                        loss_v.is_finite(),
                        "step {step}: the loss is {loss_v} (try a lower --lr)"
                    );
                    Some(loss.backward()?)
                }
            };
            if let Some(mut grads) = grads {
                if cfg.max_grad_norm > 0.0 {
                    clip_grad_norm(&mut grads, &vars, cfg.max_grad_norm)?;
                }
                opt.step(&grads, lr)?;
                loss_sum += loss_v;
                loss_n += 1;
            }
            state.step = step;
            pb.set_message(format!("loss {:.4} lr {lr:.2e}", loss_sum / loss_n as f64));
            pb.inc(1);

            let eval_now =
                cfg.eval_steps > 0 && step.is_multiple_of(cfg.eval_steps) || step == total_steps;
            if let (true, Some(es)) = (eval_now, &eval_set) {
                let e = pb.suspend(|| evaluate(&enc, es, &cfg, step, ctx.quiet))?;
                log_metrics(&output, &e, Some(loss_sum / loss_n.max(1) as f64), lr)?;
                (loss_sum, loss_n) = (0.0, 0);
                if state.best.is_none_or(|b| e.recall_at_10 > b.recall_at_10) {
                    enc.write_files(&output)?;
                    state.best = Some(e);
                }
                last_eval = Some(e);
            }
            // A checkpoint every --save-steps and after every evaluation (so the best model on
            // disk never belongs to a step later than the last checkpoint).
            let save = cfg.save_steps > 0 && step.is_multiple_of(cfg.save_steps)
                || eval_now && eval_set.is_some();
            if step < total_steps && save {
                save_checkpoint(&enc, &opt, &state, &output)?;
            }
            // --halt-after: stop like a killed process would (nothing saved beyond this point).
            if cfg.halt_after == Some(step) && step < total_steps {
                halted = true;
                break 'epochs;
            }
        }
    }
    pb.finish_and_clear();
    if !halted {
        if eval_set.is_none() {
            enc.write_files(&output)?;
        }
        state.finished = true;
        write_json(
            &output.join("trainer_state.json"),
            &serde_json::to_value(&state)?,
        )?;
        for (dir, _) in checkpoints(&output)? {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(TrainSummary {
        output,
        rows: rows.queries.len(),
        steps_done: state.step,
        total_steps: state.total_steps,
        resumed_from,
        epochs: state.step as f64 / per_epoch as f64,
        batch_size: cfg.batch_size,
        eval_queries: eval_set.as_ref().map_or(0, |e| e.query_ids.len()),
        base: state.base,
        best: state.best,
        last: last_eval,
        finished: state.finished,
        train_s: secs,
        steps_per_s: (state.step - start_step) as f64 / secs.max(1e-9),
        runtime: format!("{}, {}", enc.runtime.name, enc.runtime.precision),
        loss_scale: state.loss_scale,
    })
}

fn train_progress(total: usize, done: usize, quiet: bool) -> indicatif::ProgressBar {
    let pb = io::progress(total as u64, "", quiet);
    if !quiet {
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "train [{bar:30}] {pos}/{len} steps ({per_sec}, eta {eta}) {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
    }
    pb.set_position(done as u64);
    pb.reset_eta();
    pb
}

/// Reads the training rows; `parent_asin` values become small integer ids for the batch mask.
fn read_rows(path: &Path, no_negatives: bool) -> Result<Rows> {
    let df = io::read_parquet(path).with_context(|| {
        format!(
            "{}: run `recsys train pairs` first (or pass --pairs)",
            path.display()
        )
    })?;
    let col_str = |name: &str| -> Result<StringChunked> {
        let c = df.column(name).map_err(|_| {
            anyhow::anyhow!(
                "{}: column `{name}` missing (expected query, positive, parent_asin[, negative, \
                 negative_parent_asin])",
                path.display()
            )
        })?;
        Ok(c.str()
            .map_err(|_| anyhow::anyhow!("{}: column `{name}` is not text", path.display()))?
            .clone())
    };
    let (q, p, a) = (
        col_str(cols::QUERY)?,
        col_str(cols::POSITIVE)?,
        col_str(cols::PARENT_ASIN)?,
    );
    let negs = if !no_negatives && df.column(cols::NEGATIVE).is_ok() {
        Some((
            col_str(cols::NEGATIVE)?,
            col_str(cols::NEGATIVE_PARENT_ASIN)?,
        ))
    } else {
        None
    };
    let mut ids: HashMap<String, u64> = HashMap::new();
    let mut id = |s: &str| {
        let n = ids.len() as u64;
        *ids.entry(s.to_string()).or_insert(n)
    };
    let mut rows = Rows {
        queries: Vec::with_capacity(df.height()),
        positives: Vec::with_capacity(df.height()),
        items: Vec::with_capacity(df.height()),
        negatives: Vec::with_capacity(df.height()),
    };
    for i in 0..df.height() {
        let field = |c: &StringChunked, name: &str| -> Result<String> {
            c.get(i)
                .map(str::to_string)
                .with_context(|| format!("{}: row {i}: `{name}` is null", path.display()))
        };
        rows.queries.push(field(&q, cols::QUERY)?);
        rows.positives.push(field(&p, cols::POSITIVE)?);
        rows.items.push(id(&field(&a, cols::PARENT_ASIN)?));
        rows.negatives.push(match &negs {
            Some((n, na)) => match (n.get(i), na.get(i)) {
                (Some(t), Some(a)) => Some((t.to_string(), id(a))),
                _ => None,
            },
            None => None,
        });
    }
    Ok(rows)
}

/// The loss of one batch of rows (forward in training mode; the caller runs backward).
fn train_step(
    enc: &Encoder,
    rows: &Rows,
    batch: &[usize],
    q_len: usize,
    d_len: usize,
    scale: f64,
    mask_same: bool,
) -> Result<Tensor> {
    let queries: Vec<&str> = batch.iter().map(|&r| rows.queries[r].as_str()).collect();
    let mut docs: Vec<&str> = batch.iter().map(|&r| rows.positives[r].as_str()).collect();
    let query_items: Vec<u64> = batch.iter().map(|&r| rows.items[r]).collect();
    let mut doc_items = query_items.clone();
    for &r in batch {
        if let Some((t, it)) = &rows.negatives[r] {
            docs.push(t);
            doc_items.push(*it);
        }
    }
    let qi = enc.tokenize_max(&queries, q_len)?;
    let di = enc.tokenize_max(&docs, d_len)?;
    let q = enc.embed(&enc.batch(&qi.iter().map(Vec::as_slice).collect::<Vec<_>>())?)?;
    let d = enc.embed(&enc.batch(&di.iter().map(Vec::as_slice).collect::<Vec<_>>())?)?;
    let b = batch.len();
    let positives = d.narrow(0, 0, b)?;
    let negatives = if docs.len() > b {
        Some(d.narrow(0, b, docs.len() - b)?)
    } else {
        None
    };
    let mask = loss::same_item_mask(&query_items, &doc_items, mask_same, d.dtype(), d.device())?;
    Ok(loss::mnrl(
        &q,
        &positives,
        negatives.as_ref(),
        &mask,
        scale,
    )?)
}
