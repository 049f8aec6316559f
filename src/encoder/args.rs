//! The encoder flag groups (flattened into every stage config that encodes text) and devices.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::{DEFAULT_MODEL, Pooling};

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    #[default]
    Cpu,
    /// The first CUDA GPU (needs a build with `--features cuda`).
    Cuda,
}

impl DeviceKind {
    pub fn device(self) -> Result<Device> {
        match self {
            DeviceKind::Cpu => Ok(Device::Cpu),
            DeviceKind::Cuda if !cfg!(feature = "cuda") => bail!(
                "--device cuda: this binary was built without the `cuda` feature \
                 (rebuild with `cargo build --release --features cuda`)"
            ),
            DeviceKind::Cuda => Device::new_cuda(0).context("opening CUDA device 0"),
        }
    }
}

/// The encoder that builds an index (`index build`).
#[derive(Debug, Clone, clap::Args)]
pub struct EncoderArgs {
    /// Encoder directory in Hugging Face layout (config.json, tokenizer.json, model.safetensors
    /// or pytorch_model.bin; sentence-transformers modules.json / 1_Pooling when present)
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// Texts per forward pass (texts are sorted by length and padded per batch)
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Truncate texts to this many tokens [default: the model's max_seq_length (sentence_bert_config.json), at most 512]
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Override the pooling the model directory declares
    #[arg(long, value_enum)]
    pub pooling: Option<Pooling>,
    /// Where to run the encoder
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
}

/// The encoder that queries an index (`retrieve`, `search`, `train mine-negatives`): the index's
/// own model unless `--model` names another that embeds the same way.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryEncoderArgs {
    /// Query encoder [default: the model the index was built with]; it must embed like the
    /// index's model
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Queries per encoder forward pass
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Where to run the query encoder
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
}

crate::cli::clap_default!(EncoderArgs, QueryEncoderArgs);
