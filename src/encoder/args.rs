//! The encoder flag groups (flattened into every stage config that encodes text); the device
//! group inside them is [`super::device`].

use std::path::PathBuf;

use super::device::DeviceArgs;
use super::{DEFAULT_MODEL, Pooling};

/// The encoder that builds an index (`index build`).
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct EncoderArgs {
    /// Encoder directory in Hugging Face layout (config.json, tokenizer.json, model.safetensors
    /// or pytorch_model.bin; sentence-transformers modules.json / 1_Pooling when present)
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// Texts per forward pass (texts are sorted by length and padded per batch)
    #[arg(long, default_value_t = 32, value_parser = crate::cli::count)]
    pub batch_size: usize,
    /// Truncate texts to this many tokens [default: the model's max_seq_length (sentence_bert_config.json), at most 512]
    #[arg(long, value_parser = crate::cli::tokens)]
    pub max_length: Option<usize>,
    /// Override the pooling the model directory declares
    #[arg(long, value_enum)]
    pub pooling: Option<Pooling>,
    #[command(flatten)]
    pub runtime: DeviceArgs,
}

/// The encoder that queries an index (`retrieve`, `search`, `train mine-negatives`): the index's
/// own model unless `--model` names another that embeds the same way.
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct QueryEncoderArgs {
    /// Query encoder [default: the model the index was built with]; it must embed like the
    /// index's model
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Queries per encoder forward pass
    #[arg(long, default_value_t = 64, value_parser = crate::cli::count)]
    pub batch_size: usize,
    #[command(flatten)]
    pub runtime: DeviceArgs,
}

crate::cli::clap_default!(EncoderArgs, QueryEncoderArgs);
