//! Text encoders: a tokenizer and a BERT-family transformer (trainable), pooling, batched
//! encoding. One file per architecture ([`bert`], [`xlm_roberta`]) implements
//! [`family::Family`] over the shared body ([`layers`]); `config.json` is read by [`config`], the
//! other files of a model directory by [`files`]; [`weights`] loads, [`save`] saves,
//! [`tokenize`] tokenises and batches; [`args`] holds the flag groups and devices; [`ops`] has the
//! fused CPU kernels, [`simd`] their run-time choice of vector instructions.

pub mod args;
pub mod bert;
pub mod config;
pub mod device;
pub mod family;
pub mod files;
pub mod layers;
pub mod ops;
pub mod probe;
pub mod save;
pub mod simd;
pub mod tokenize;
pub mod weights;
pub mod xlm_roberta;

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

pub use args::{EncoderArgs, QueryEncoderArgs};
pub use config::{Architecture, ModelConfig, Pooling};
pub use device::{DeviceArgs, DeviceSpec, Precision, Runtime, RuntimeInfo};
pub use files::{ModelFiles, SentenceConfig};
pub use layers::{Batch, Transformer};
pub use tokenize::make_batch;
pub use weights::{hash_file, model_name, read_weights};

/// The encoder `make` fetches: real all-MiniLM-L6-v2 weights.
pub const DEFAULT_MODEL: &str = "models/all-MiniLM-L6-v2";

/// What produced a set of vectors: recorded with the index so a later stage can refuse to
/// query it with a different model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Directory name, e.g. `all-MiniLM-L6-v2`.
    pub name: String,
    /// The directory, absolute.
    pub path: String,
    pub architecture: Architecture,
    pub pooling: Pooling,
    pub normalize: bool,
    pub dim: usize,
    pub max_length: usize,
    /// blake3 of the weights file: two models are the same model when this matches.
    pub weights_blake3: String,
    /// Where and in what precision the vectors were computed (records before the device flags:
    /// the CPU in f32). Not part of "the same model": a bf16 query encoder may query f32 vectors.
    #[serde(default)]
    pub runtime: RuntimeInfo,
}

impl ModelInfo {
    /// Errors unless `other` embeds text the same way as `self` (same weights, pooling, dim).
    pub fn ensure_same(&self, other: &ModelInfo, what: &str) -> Result<()> {
        if self.weights_blake3 != other.weights_blake3
            || self.pooling != other.pooling
            || self.normalize != other.normalize
            || self.dim != other.dim
        {
            bail!(
                "{what} was built with model {} ({}, {} pooling, dim {}, weights {}), but the \
                 query model is {} ({}, {} pooling, dim {}, weights {}); rebuild the index with \
                 `recsys index build --model {}` or query with --model {}",
                self.name,
                self.path,
                self.pooling,
                self.dim,
                &self.weights_blake3[..12.min(self.weights_blake3.len())],
                other.name,
                other.path,
                other.pooling,
                other.dim,
                &other.weights_blake3[..12.min(other.weights_blake3.len())],
                other.path,
                self.path
            );
        }
        Ok(())
    }
}

/// A loaded encoder: tokenizer, transformer, pooling.
pub struct Encoder {
    pub info: ModelInfo,
    pub config: ModelConfig,
    pub model: Transformer,
    pub tokenizer: Tokenizer,
    /// The device and precision the model runs in (weights of a trainable model stay f32).
    pub runtime: Runtime,
    /// Present when loaded trainable: the parameters, by Hugging Face name.
    pub varmap: Option<VarMap>,
    /// Checkpoint tensors the encoder does not use (BERT's `pooler.*`), written back by
    /// [`Encoder::save`] so other loaders find the checkpoint complete.
    extra: HashMap<String, Tensor>,
}

/// Vectors of `n` texts, row-major.
#[derive(Debug, Clone)]
pub struct Embeddings {
    pub dim: usize,
    pub data: Vec<f32>,
}

impl Embeddings {
    pub fn len(&self) -> usize {
        self.data.len() / self.dim.max(1)
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

impl Encoder {
    /// Loads an encoder for inference (weights shared read-only).
    pub fn load(args: &EncoderArgs) -> Result<Self> {
        Self::load_inner(args, false)
    }

    /// Loads an encoder whose parameters are `Var`s in [`Encoder::varmap`] (for training).
    pub fn load_trainable(args: &EncoderArgs) -> Result<Self> {
        Self::load_inner(args, true)
    }

    fn load_inner(args: &EncoderArgs, trainable: bool) -> Result<Self> {
        let files = ModelFiles::find(&args.model)?;
        let config = ModelConfig::read(&files.config)?;
        let st = SentenceConfig::read(&files.dir)?;
        let runtime = args.runtime.resolve()?;
        let device = runtime.device.clone();
        let compute = runtime.precision.dtype();
        let weights = read_weights(&files.weights, &device)?;
        let extra: HashMap<String, Tensor> = weights
            .iter()
            .filter(|(k, _)| k.starts_with("pooler."))
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        let (model, varmap) = if trainable {
            let varmap = VarMap::new();
            // f32 master weights; the forward pass casts them to the compute precision
            let model = Transformer::new(
                VarBuilder::from_varmap(&varmap, DType::F32, &device),
                &config,
                compute,
            )?;
            weights::fill_varmap(&varmap, &weights, &files.weights)?;
            (model, Some(varmap))
        } else {
            let vb = VarBuilder::from_tensors(weights, compute, &device);
            let model = Transformer::new(vb, &config, compute).with_context(|| {
                format!(
                    "{}: weights do not match config.json",
                    files.weights.display()
                )
            })?;
            (model, None)
        };
        let pooling = args.pooling.or(st.pooling).unwrap_or(Pooling::Mean);
        let max_length = config.max_length(args.max_length, st.max_seq_length)?;
        let tokenizer = tokenize::load_tokenizer(&files.tokenizer, max_length)?;
        let info = ModelInfo {
            name: model_name(&files.dir),
            path: files
                .dir
                .canonicalize()
                .unwrap_or_else(|_| files.dir.clone())
                .to_string_lossy()
                .into_owned(),
            architecture: config.architecture,
            pooling,
            // Retrieval ranks by inner product, so vectors are always unit length (cosine);
            // every sentence-transformers model we target ends in Normalize.
            normalize: true,
            dim: config.hidden_size,
            max_length,
            weights_blake3: hash_file(&files.weights)?,
            runtime: runtime.info(),
        };
        Ok(Encoder {
            info,
            config,
            model,
            tokenizer,
            runtime,
            varmap,
            extra,
        })
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.runtime.device
    }

    /// A per-call token limit (training's query / item lengths) within the model's resolved
    /// `max_length`, at least 2 (the special tokens).
    pub fn length_within(&self, n: usize) -> usize {
        n.min(self.info.max_length).max(2)
    }

    /// Pooled (and normalised) sentence vectors (b, dim) of one batch.
    pub fn embed(&self, batch: &Batch) -> Result<Tensor> {
        let states = self.model.forward(batch)?;
        Ok(layers::pool(
            &states,
            &batch.mask,
            self.info.pooling,
            self.info.normalize,
        )?)
    }

    /// Encodes `texts` in batches of `batch_size`, longest first with per-batch padding;
    /// rows come back in the input order. `pb` advances by texts.
    pub fn encode<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        batch_size: usize,
        pb: &ProgressBar,
    ) -> Result<Embeddings> {
        let ids = self.tokenize(texts)?;
        self.encode_ids(&ids, batch_size, pb)
    }

    /// [`Encoder::encode`] of texts already tokenized (and truncated).
    pub fn encode_ids(
        &self,
        ids: &[Vec<u32>],
        batch_size: usize,
        pb: &ProgressBar,
    ) -> Result<Embeddings> {
        anyhow::ensure!(batch_size > 0, "--batch-size must be at least 1");
        let dim = self.info.dim;
        let mut data = vec![0f32; ids.len() * dim];
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        for chunk in order.chunks(batch_size) {
            let batch_ids: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            let batch = self.batch(&batch_ids)?;
            // nothing kept for a backward pass, also when the model is being trained
            let rows: Vec<Vec<f32>> = ops::no_grad(|| self.embed(&batch))?.to_vec2()?;
            for (&i, row) in chunk.iter().zip(rows) {
                data[i * dim..(i + 1) * dim].copy_from_slice(&row);
            }
            pb.inc(chunk.len() as u64);
        }
        Ok(Embeddings { dim, data })
    }
}

/// Encodes texts with a progress bar and reports throughput: `(vectors, texts per second)`.
pub fn encode_all<S: AsRef<str> + Sync>(
    encoder: &Encoder,
    texts: &[S],
    batch_size: usize,
    what: &str,
    quiet: bool,
) -> Result<(Embeddings, f64)> {
    let pb = crate::io::progress(texts.len() as u64, what, quiet);
    let t0 = Instant::now();
    let out = encoder.encode(texts, batch_size, &pb)?;
    pb.finish_and_clear();
    let rate = texts.len() as f64 / t0.elapsed().as_secs_f64().max(1e-9);
    Ok((out, rate))
}
