//! Text encoders: tokenizer + BERT / XLM-RoBERTa transformer (trainable), pooling, loading from
//! a Hugging Face-layout directory, batched encoding.

pub mod config;
pub mod model;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::io::write_json;

pub use config::{Architecture, ModelConfig, ModelFiles, Pooling, SentenceConfig};
pub use model::{Batch, Mode, Transformer};

/// The encoder `make` fetches: real all-MiniLM-L6-v2 weights.
pub const DEFAULT_MODEL: &str = "models/all-MiniLM-L6-v2";

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

/// The encoder flags every stage that encodes text shares.
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

impl Default for EncoderArgs {
    fn default() -> Self {
        EncoderArgs {
            model: PathBuf::from(DEFAULT_MODEL),
            batch_size: 32,
            max_length: None,
            pooling: None,
            device: DeviceKind::Cpu,
        }
    }
}

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
    pub device: Device,
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
        let device = args.device.device()?;
        let weights = read_weights(&files.weights, &device)?;
        let extra: HashMap<String, Tensor> = weights
            .iter()
            .filter(|(k, _)| k.starts_with("pooler."))
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        let (model, varmap) = if trainable {
            let varmap = VarMap::new();
            let model = Transformer::new(
                VarBuilder::from_varmap(&varmap, DType::F32, &device),
                &config,
            )?;
            fill_varmap(&varmap, &weights, &files.weights)?;
            (model, Some(varmap))
        } else {
            let vb = VarBuilder::from_tensors(weights, DType::F32, &device);
            let model = Transformer::new(vb, &config).with_context(|| {
                format!(
                    "{}: weights do not match config.json",
                    files.weights.display()
                )
            })?;
            (model, None)
        };
        let pooling = args.pooling.or(st.pooling).unwrap_or(Pooling::Mean);
        // Default: the model's max_seq_length capped at 512 (BGE-M3 declares 8192, which on a
        // CPU costs minutes per batch of long texts); --max-length goes beyond on purpose.
        let max_length = args
            .max_length
            .unwrap_or_else(|| st.max_seq_length.unwrap_or(512).min(512))
            .min(config.max_tokens());
        anyhow::ensure!(
            max_length >= 2,
            "--max-length {max_length}: must be at least 2"
        );
        let tokenizer = load_tokenizer(&files.tokenizer, max_length)?;
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
        };
        Ok(Encoder {
            info,
            config,
            model,
            tokenizer,
            device,
            varmap,
            extra,
        })
    }

    /// Saves a trainable encoder in Hugging Face / sentence-transformers layout, atomically
    /// (written into a temporary directory, then renamed over `dir`): see [`Encoder::write_files`].
    pub fn save(&self, dir: &Path) -> Result<()> {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        if let Err(e) = self.write_files(&tmp) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e.context(format!("saving the model to {}", dir.display())));
        }
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("replacing {}", dir.display()))?;
        }
        std::fs::rename(&tmp, dir)
            .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))
    }

    /// Writes the model files into `dir` (created if missing; other files there are kept):
    /// config.json, model.safetensors (the current parameters), the tokenizer files of the
    /// source directory, modules.json, 1_Pooling/config.json, 2_Normalize/ and
    /// sentence_bert_config.json — loadable by [`Encoder::load`] and by sentence-transformers.
    /// Each file is written under a temporary name and renamed.
    pub fn write_files(&self, dir: &Path) -> Result<()> {
        let varmap = self
            .varmap
            .as_ref()
            .context("only an encoder loaded with load_trainable can be saved")?;
        std::fs::create_dir_all(dir.join("1_Pooling"))
            .and_then(|_| std::fs::create_dir_all(dir.join("2_Normalize")))
            .with_context(|| format!("creating {}", dir.display()))?;
        let mut config = self.config.raw.clone();
        config["architectures"] = serde_json::json!([self.config.architecture.class_name()]);
        config["model_type"] = self.config.architecture.model_type().into();
        write_json(&dir.join("config.json"), &config)?;
        let mut tensors = self.extra.clone();
        for (k, v) in varmap.data().lock().expect("varmap lock").iter() {
            tensors.insert(k.clone(), v.as_tensor().clone());
        }
        crate::io::write_atomic(&dir.join("model.safetensors"), |tmp| {
            Ok(candle_core::safetensors::save(&tensors, tmp)?)
        })?;
        let src = Path::new(&self.info.path);
        if src != dir {
            for f in TOKENIZER_FILES {
                if src.join(f).is_file() {
                    crate::io::write_atomic(&dir.join(f), |tmp| {
                        std::fs::copy(src.join(f), tmp)
                            .with_context(|| format!("copying {f} from {}", src.display()))
                            .map(|_| ())
                    })?;
                }
            }
        }
        write_json(
            &dir.join("modules.json"),
            &serde_json::json!([
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
            ]),
        )?;
        write_json(
            &dir.join("1_Pooling/config.json"),
            &serde_json::json!({
                "word_embedding_dimension": self.info.dim,
                "pooling_mode_cls_token": self.info.pooling == Pooling::Cls,
                "pooling_mode_mean_tokens": self.info.pooling == Pooling::Mean,
                "pooling_mode_max_tokens": false,
                "pooling_mode_mean_sqrt_len_tokens": false
            }),
        )?;
        write_json(
            &dir.join("sentence_bert_config.json"),
            &serde_json::json!({"max_seq_length": self.info.max_length, "do_lower_case": false}),
        )
    }

    /// Token ids per text (special tokens added, truncated to `max_length`).
    pub fn tokenize<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>> {
        let inputs: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
        let encs = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        Ok(encs.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Token ids per text, truncated to at most `max_len` tokens (special tokens included, the
    /// closing one kept), as the tokenizer would truncate at that length.
    pub fn tokenize_max<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        max_len: usize,
    ) -> Result<Vec<Vec<u32>>> {
        let mut ids = self.tokenize(texts)?;
        for row in &mut ids {
            if row.len() > max_len && max_len >= 2 {
                let last = row[row.len() - 1];
                row.truncate(max_len - 1);
                row.push(last);
            }
        }
        Ok(ids)
    }

    /// One right-padded batch from token ids.
    pub fn batch(&self, ids: &[&[u32]]) -> Result<Batch> {
        make_batch(
            ids,
            self.config.architecture,
            self.config.pad_token_id,
            &self.device,
        )
    }

    /// Pooled (and normalised) sentence vectors (b, dim) of one batch.
    pub fn embed(&self, batch: &Batch, mode: Mode) -> Result<Tensor> {
        let states = self.model.forward(batch, mode)?;
        Ok(model::pool(
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
            let rows: Vec<Vec<f32>> = self.embed(&batch, Mode::Inference)?.to_vec2()?;
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

/// Pads token id lists on the right into one [`Batch`].
pub fn make_batch(ids: &[&[u32]], arch: Architecture, pad: u32, device: &Device) -> Result<Batch> {
    let b = ids.len();
    anyhow::ensure!(b > 0, "empty batch");
    let t = ids.iter().map(|x| x.len()).max().unwrap_or(0).max(1);
    let mut input = Vec::with_capacity(b * t);
    let mut pos = Vec::with_capacity(b * t);
    let mut mask = Vec::with_capacity(b * t);
    for row in ids {
        input.extend_from_slice(row);
        input.extend(std::iter::repeat_n(pad, t - row.len()));
        pos.extend(model::position_ids(arch, row.len(), t, pad));
        mask.extend((0..t).map(|i| if i < row.len() { 1f32 } else { 0f32 }));
    }
    Ok(Batch {
        input_ids: Tensor::from_vec(input, (b, t), device)?,
        type_ids: Tensor::zeros((b, t), DType::U32, device)?,
        position_ids: Tensor::from_vec(pos, (b, t), device)?,
        mask: Tensor::from_vec(mask, (b, t), device)?,
    })
}

/// Copies checkpoint tensors into the `Var`s a model created; every `Var` must be found.
fn fill_varmap(varmap: &VarMap, weights: &HashMap<String, Tensor>, file: &Path) -> Result<()> {
    let vars = varmap.data().lock().expect("varmap lock");
    for (name, var) in vars.iter() {
        let t = weights.get(name).with_context(|| {
            format!(
                "{}: tensor {name} missing from the checkpoint",
                file.display()
            )
        })?;
        anyhow::ensure!(
            t.dims() == var.dims(),
            "{}: tensor {name} has shape {:?}, config.json implies {:?}",
            file.display(),
            t.dims(),
            var.dims()
        );
        var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    Ok(())
}

/// Tokenizer files copied along when a model is saved (whichever the source has).
const TOKENIZER_FILES: [&str; 6] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
    "added_tokens.json",
];

/// Reads every tensor of `model.safetensors` / `pytorch_model.bin`, with the architecture
/// prefix (`bert.`, `roberta.`, …) stripped and legacy `gamma`/`beta` LayerNorm names renamed.
pub fn read_weights(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let raw: Vec<(String, Tensor)> = if path.extension().is_some_and(|e| e == "safetensors") {
        candle_core::safetensors::load(path, device)
            .with_context(|| format!("{}: not a readable safetensors file", path.display()))?
            .into_iter()
            .collect()
    } else {
        candle_core::pickle::read_all(path)
            .with_context(|| format!("{}: not a readable PyTorch checkpoint", path.display()))?
    };
    const ANCHOR: &str = "embeddings.word_embeddings.weight";
    let prefix = raw
        .iter()
        .find_map(|(k, _)| k.strip_suffix(ANCHOR).map(str::to_string))
        .with_context(|| {
            format!(
                "{}: no tensor named *{ANCHOR}; not a BERT-family checkpoint",
                path.display()
            )
        })?;
    let mut out = HashMap::new();
    for (k, t) in raw {
        let Some(k) = k.strip_prefix(&prefix) else {
            continue;
        };
        let k = k
            .replace("LayerNorm.gamma", "LayerNorm.weight")
            .replace("LayerNorm.beta", "LayerNorm.bias");
        let t = if t.dtype().is_float() {
            t.to_dtype(DType::F32)?.to_device(device)?
        } else {
            t
        };
        out.insert(k, t);
    }
    Ok(out)
}

fn load_tokenizer(path: &Path, max_length: usize) -> Result<Tokenizer> {
    let mut tok = Tokenizer::from_file(path)
        .map_err(|e| anyhow::anyhow!("{}: not a usable tokenizer.json: {e}", path.display()))?;
    tok.with_padding(None);
    tok.with_truncation(Some(tokenizers::TruncationParams {
        max_length,
        ..Default::default()
    }))
    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(tok)
}

/// A model's name: its directory's name.
pub fn model_name(dir: &Path) -> String {
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    canon
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.to_string_lossy().into_owned())
}

/// blake3 of a file, hex.
pub fn hash_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().to_hex().to_string())
}
