//! The pipeline's fine-tuning stage: a run directory left by an interrupted run of the same
//! settings is continued from its last checkpoint; one of other settings is removed first; one
//! whose record cannot be read stops the pipeline and nothing is deleted.

use std::path::Path;

use anyhow::{Context, Result};

use crate::context::Ctx;
use crate::train;

/// Fine-tuning into the stage's output directory: continues an interrupted run of the same
/// settings from its last checkpoint, else starts afresh (removing what an earlier run left).
pub(super) fn stage_train(ctx: &Ctx, cfg: &train::retriever::RetrieverConfig) -> Result<String> {
    let mut cfg = cfg.clone();
    let out = cfg.output.clone().context("the pipeline sets the output")?;
    let args = out.join("training_args.json");
    if args.exists() {
        // An unreadable record of the run there says nothing about it: stop, delete nothing.
        let same = same_training(&out, &cfg, ctx.seed).with_context(|| {
            format!(
                "{}: unreadable, so whether {} holds this fine-tuning run is unknown; nothing was \
                 deleted: repair the file, or remove {} to fine-tune afresh",
                args.display(),
                out.display(),
                out.display()
            )
        })?;
        let checkpoint = train::checkpoint::checkpoints(&out).is_ok_and(|c| !c.is_empty());
        if same && checkpoint {
            eprintln!(
                "[pipeline] continuing the interrupted fine-tuning in {} from its last checkpoint",
                out.display()
            );
            cfg.resume = true;
        } else {
            eprintln!(
                "[pipeline] removing {} ({}) to fine-tune afresh",
                out.display(),
                if same {
                    "a finished or unrecorded run with no checkpoint to continue from"
                } else {
                    "a run with other settings"
                }
            );
            std::fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
        }
    }
    Ok(train::retriever::run(ctx, &cfg)?.to_string())
}

/// Whether the run in `out` was started with these settings and seed.
fn same_training(out: &Path, cfg: &train::retriever::RetrieverConfig, seed: u64) -> Result<bool> {
    let was = train::checkpoint::TrainingArgs::read(out)?;
    let mut now = cfg.clone();
    now.resume = false;
    Ok(serde_json::to_value(&was.args)? == serde_json::to_value(&now)? && was.seed == seed)
}
