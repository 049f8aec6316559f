//! The flags of `train retriever` (also recorded in `training_args.json`, from which
//! `--resume` restores them).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::loss::DEFAULT_SCALE;
use crate::encoder::{DEFAULT_MODEL, DeviceArgs};
use crate::retrieve::QueryType;
use crate::retrieve::query::DEFAULT_MAX_KEYWORDS;

#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct RetrieverConfig {
    /// Encoder to start from (Hugging Face layout directory)
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub base_model: PathBuf,
    /// Training rows (query, positive, parent_asin[, negative, negative_parent_asin])
    /// [default: DATA_DIR/processed/training_pairs.parquet; `train mine-negatives` writes
    /// training_pairs_mined.parquet]
    #[arg(long)]
    pub pairs: Option<PathBuf>,
    /// Output directory [default: models/{base-name}-finetuned-{YYYYMMDD-HHMMSS}]
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Passes over the training rows
    #[arg(long, default_value_t = 1, value_parser = crate::cli::count)]
    pub epochs: usize,
    /// Stop after this many optimizer steps (the schedule is laid out over them)
    #[arg(long, value_parser = crate::cli::count)]
    pub max_steps: Option<usize>,
    /// Training rows per step (the in-batch negatives of each query)
    #[arg(long, default_value_t = 16, value_parser = crate::cli::count)]
    pub batch_size: usize,
    /// Peak learning rate
    #[arg(long, default_value_t = 2e-5, value_parser = crate::cli::positive)]
    pub lr: f64,
    /// Share of the steps spent warming the learning rate up linearly from 0 (then it decays
    /// linearly to 0)
    #[arg(long, default_value_t = 0.1, value_parser = crate::cli::fraction)]
    pub warmup_ratio: f64,
    /// AdamW decoupled weight decay (not applied to biases and LayerNorm weights)
    #[arg(long, default_value_t = 0.01, value_parser = crate::cli::non_negative)]
    pub weight_decay: f64,
    /// Clip the global gradient L2 norm to this value (0: no clipping)
    #[arg(long, default_value_t = 1.0, value_parser = crate::cli::non_negative)]
    pub max_grad_norm: f64,
    /// Cosine-similarity scale of the loss (1 / temperature)
    #[arg(long, default_value_t = DEFAULT_SCALE, value_parser = crate::cli::positive)]
    pub scale: f64,
    /// Treat other rows of the same item in a batch as negatives (plain MNRL, for comparison)
    #[arg(long)]
    pub no_mask_same_item: bool,
    /// Ignore the pairs file's negative column (in-batch negatives only)
    #[arg(long)]
    pub no_negatives: bool,
    /// Truncate queries to this many tokens (capped at the model's max_seq_length)
    #[arg(long, default_value_t = 256, value_parser = crate::cli::tokens)]
    pub max_query_len: usize,
    /// Truncate item texts to this many tokens (capped at the model's max_seq_length)
    #[arg(long, default_value_t = 512, value_parser = crate::cli::tokens)]
    pub max_doc_len: usize,
    /// Evaluate every this many steps (also before the first and after the last step)
    #[arg(long, default_value_t = 1000, value_parser = crate::cli::count)]
    pub eval_steps: usize,
    /// Valid queries in the fixed evaluation sample (seeded; 0: no evaluation, the last
    /// weights are the model)
    #[arg(long, default_value_t = 2000, value_parser = crate::cli::count0)]
    pub eval_queries: usize,
    /// What the evaluation queries are
    #[arg(long, value_enum, default_value_t = QueryType::ReviewText)]
    pub eval_query_type: QueryType,
    /// Keywords per evaluation query (--eval-query-type keywords)
    #[arg(long, default_value_t = DEFAULT_MAX_KEYWORDS, value_parser = crate::cli::count)]
    #[serde(default = "default_max_keywords")]
    pub eval_max_keywords: usize,
    /// Texts per forward pass when encoding for evaluation
    #[arg(long, default_value_t = 64, value_parser = crate::cli::count)]
    pub eval_batch_size: usize,
    /// Write a resumable checkpoint every this many steps
    #[arg(long, default_value_t = 500, value_parser = crate::cli::count)]
    pub save_steps: usize,
    /// Continue the interrupted run in --output [default: the newest models/*-finetuned-*
    /// with a checkpoint]; its training_args.json holds the flags and the seed, so other flags
    /// (and --seed) are ignored
    #[arg(long)]
    pub resume: bool,
    /// Where and in what precision to train (bf16 / f16: f32 master weights and AdamW state,
    /// f16 with dynamic loss scaling)
    #[command(flatten)]
    #[serde(flatten)]
    pub runtime: DeviceArgs,
    /// Stop after this step as if the process were killed (tests of --resume)
    #[arg(long, hide = true, value_parser = crate::cli::count)]
    #[serde(skip)]
    pub halt_after: Option<usize>,
    /// Make this step's loss infinite (tests of f16 loss scaling)
    #[arg(long, hide = true, value_parser = crate::cli::count0)]
    #[serde(skip)]
    pub inject_nonfinite_at: Option<usize>,
}

crate::cli::clap_default!(RetrieverConfig);

fn default_max_keywords() -> usize {
    DEFAULT_MAX_KEYWORDS
}
