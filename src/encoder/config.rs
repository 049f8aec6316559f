//! What an encoder directory (Hugging Face layout) says about the model: architecture from
//! `config.json`, pooling from the sentence-transformers files, the sequence limit.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The two transformer families we load (BGE-M3 is an XLM-RoBERTa large).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    Bert,
    XlmRoberta,
}

impl Architecture {
    /// The `model_type` written back into `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Bert => "bert",
            Architecture::XlmRoberta => "xlm-roberta",
        }
    }
    /// The `architectures` entry written back into `config.json`.
    pub fn class_name(self) -> &'static str {
        match self {
            Architecture::Bert => "BertModel",
            Architecture::XlmRoberta => "XLMRobertaModel",
        }
    }
}

/// How token states become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Mean of the token states under the attention mask (all-MiniLM-L6-v2).
    Mean,
    /// The first token's state (BGE-M3).
    Cls,
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
        })
    }
}

/// The transformer hyper-parameters we need from `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub pad_token_id: u32,
    /// The raw `config.json`, kept so a saved model carries every field it was loaded with.
    pub raw: Value,
}

impl ModelConfig {
    /// Reads and checks `config.json`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the model config", path.display()))?;
        let raw: Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", path.display()))?;
        Self::from_json(raw).with_context(|| format!("{}", path.display()))
    }

    pub fn from_json(raw: Value) -> Result<Self> {
        let model_type = raw.get("model_type").and_then(Value::as_str).unwrap_or("");
        let classes: Vec<&str> = raw
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let architecture = match model_type {
            "bert" => Architecture::Bert,
            "xlm-roberta" | "roberta" => Architecture::XlmRoberta,
            _ if classes.iter().any(|c| c.starts_with("Bert")) => Architecture::Bert,
            _ if classes
                .iter()
                .any(|c| c.starts_with("XLMRoberta") || c.starts_with("Roberta")) =>
            {
                Architecture::XlmRoberta
            }
            other => bail!(
                "field model_type: {other:?} (architectures {classes:?}) is not supported; \
                 expected a BERT (\"bert\") or XLM-RoBERTa (\"xlm-roberta\") encoder"
            ),
        };
        let usize_field = |name: &str| -> Result<usize> {
            raw.get(name)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .with_context(|| format!("field {name}: missing or not a non-negative integer"))
        };
        let act = raw
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("gelu");
        if act != "gelu" {
            bail!("field hidden_act: {act:?} is not supported; expected \"gelu\"");
        }
        let pos_type = raw
            .get("position_embedding_type")
            .and_then(Value::as_str)
            .unwrap_or("absolute");
        if pos_type != "absolute" {
            bail!(
                "field position_embedding_type: {pos_type:?} is not supported; expected \"absolute\""
            );
        }
        let cfg = ModelConfig {
            architecture,
            vocab_size: usize_field("vocab_size")?,
            hidden_size: usize_field("hidden_size")?,
            num_hidden_layers: usize_field("num_hidden_layers")?,
            num_attention_heads: usize_field("num_attention_heads")?,
            intermediate_size: usize_field("intermediate_size")?,
            max_position_embeddings: usize_field("max_position_embeddings")?,
            type_vocab_size: raw
                .get("type_vocab_size")
                .and_then(Value::as_u64)
                .unwrap_or(2) as usize,
            layer_norm_eps: raw
                .get("layer_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-12),
            pad_token_id: raw.get("pad_token_id").and_then(Value::as_u64).unwrap_or(
                match architecture {
                    Architecture::Bert => 0,
                    Architecture::XlmRoberta => 1,
                },
            ) as u32,
            raw,
        };
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            bail!(
                "field num_attention_heads: {} does not divide hidden_size {}",
                cfg.num_attention_heads,
                cfg.hidden_size
            );
        }
        Ok(cfg)
    }

    /// The longest token sequence the position table allows. XLM-RoBERTa numbers positions
    /// from `pad_token_id + 1`, so it loses that many slots (BGE-M3: 8194 → 8192).
    pub fn max_tokens(&self) -> usize {
        match self.architecture {
            Architecture::Bert => self.max_position_embeddings,
            Architecture::XlmRoberta => self
                .max_position_embeddings
                .saturating_sub(self.pad_token_id as usize + 1),
        }
    }
}

/// What the sentence-transformers files say (absent files → `None`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SentenceConfig {
    pub pooling: Option<Pooling>,
    pub normalize: bool,
    pub max_seq_length: Option<usize>,
}

impl SentenceConfig {
    /// Reads `modules.json`, the pooling module's `config.json` and `sentence_bert_config.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let mut out = SentenceConfig::default();
        let modules_path = dir.join("modules.json");
        if let Some(modules) = read_optional_json(&modules_path)? {
            let modules = modules.as_array().with_context(|| {
                format!(
                    "{}: expected a JSON array of modules",
                    modules_path.display()
                )
            })?;
            for (i, m) in modules.iter().enumerate() {
                let kind = m.get("type").and_then(Value::as_str).unwrap_or("");
                let sub = m.get("path").and_then(Value::as_str).unwrap_or("");
                match kind.rsplit('.').next().unwrap_or("") {
                    "Transformer" => {}
                    "Normalize" => out.normalize = true,
                    "Pooling" => {
                        let p = dir.join(sub).join("config.json");
                        let cfg = read_optional_json(&p)?.with_context(|| {
                            format!("{}: named by modules.json but missing", p.display())
                        })?;
                        out.pooling =
                            Some(pooling_from(&cfg).with_context(|| format!("{}", p.display()))?);
                    }
                    _ => bail!(
                        "{}: module {i} has type {kind:?}; only Transformer, Pooling and Normalize \
                         are supported",
                        modules_path.display()
                    ),
                }
            }
        } else {
            let p = dir.join("1_Pooling").join("config.json");
            if let Some(cfg) = read_optional_json(&p)? {
                out.pooling = Some(pooling_from(&cfg).with_context(|| format!("{}", p.display()))?);
            }
        }
        let sb = dir.join("sentence_bert_config.json");
        if let Some(v) = read_optional_json(&sb)? {
            out.max_seq_length = v
                .get("max_seq_length")
                .and_then(Value::as_u64)
                .map(|v| v as usize);
        }
        Ok(out)
    }
}

fn pooling_from(cfg: &Value) -> Result<Pooling> {
    let on = |k: &str| cfg.get(k).and_then(Value::as_bool).unwrap_or(false);
    if let Some(mode) = cfg.get("pooling_mode").and_then(Value::as_str) {
        return match mode {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            other => bail!("field pooling_mode: {other:?} is not supported (mean, cls)"),
        };
    }
    match (on("pooling_mode_mean_tokens"), on("pooling_mode_cls_token")) {
        (true, false) => Ok(Pooling::Mean),
        (false, true) => Ok(Pooling::Cls),
        _ => bail!(
            "fields pooling_mode_*: exactly one of pooling_mode_mean_tokens and \
             pooling_mode_cls_token must be true (max / sqrt-len pooling are not supported)"
        ),
    }
}

fn read_optional_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    Ok(Some(v))
}

/// The files of an encoder directory, checked to exist.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub tokenizer: PathBuf,
    pub weights: PathBuf,
}

impl ModelFiles {
    pub fn find(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            let s = dir.to_string_lossy();
            let owner_dir_exists = s.split('/').next().is_some_and(|o| Path::new(o).is_dir());
            let hint = if !s.starts_with('.')
                && !s.starts_with('/')
                && s.matches('/').count() == 1
                && !owner_dir_exists
            {
                format!(
                    " — {s:?} looks like a Hugging Face Hub id; recsys never downloads models: \
                     fetch it once where you are online (e.g. `huggingface-cli download {s} \
                     --local-dir models/{}`) and pass that directory",
                    s.rsplit('/').next().unwrap_or(&s)
                )
            } else {
                String::new()
            };
            bail!("model directory {} not found{hint}", dir.display());
        }
        let need = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            anyhow::ensure!(
                p.is_file(),
                "{}: missing; an encoder directory needs config.json, tokenizer.json and \
                 model.safetensors (or pytorch_model.bin)",
                p.display()
            );
            Ok(p)
        };
        let config = need("config.json")?;
        let tokenizer = need("tokenizer.json")?;
        let weights = ["model.safetensors", "pytorch_model.bin"]
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "{}: no model.safetensors or pytorch_model.bin in the directory",
                    dir.display()
                )
            })?;
        Ok(ModelFiles {
            dir: dir.to_path_buf(),
            config,
            tokenizer,
            weights,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bert() -> Value {
        json!({"model_type": "bert", "vocab_size": 100, "hidden_size": 8, "num_hidden_layers": 2,
               "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 64})
    }

    #[test]
    fn reads_bert_and_xlmr() {
        let c = ModelConfig::from_json(bert()).unwrap();
        assert_eq!(c.architecture, Architecture::Bert);
        assert_eq!(c.max_tokens(), 64);
        let mut x = bert();
        x["model_type"] = json!("xlm-roberta");
        x["max_position_embeddings"] = json!(8194);
        let c = ModelConfig::from_json(x).unwrap();
        assert_eq!(c.architecture, Architecture::XlmRoberta);
        assert_eq!(c.pad_token_id, 1);
        assert_eq!(c.max_tokens(), 8192);
    }

    #[test]
    fn rejects_unknown_model_and_bad_fields() {
        let mut x = bert();
        x["model_type"] = json!("gpt2");
        let e = ModelConfig::from_json(x).unwrap_err().to_string();
        assert!(e.contains("model_type") && e.contains("gpt2"), "{e}");
        let mut x = bert();
        x["num_attention_heads"] = json!(3);
        let e = ModelConfig::from_json(x).unwrap_err().to_string();
        assert!(e.contains("num_attention_heads"), "{e}");
        let mut x = bert();
        x.as_object_mut().unwrap().remove("hidden_size");
        let e = ModelConfig::from_json(x).unwrap_err().to_string();
        assert!(e.contains("hidden_size"), "{e}");
    }

    #[test]
    fn pooling_modes() {
        let p = |v: Value| pooling_from(&v);
        assert_eq!(
            p(json!({"pooling_mode_mean_tokens": true})).unwrap(),
            Pooling::Mean
        );
        assert_eq!(
            p(json!({"pooling_mode_cls_token": true})).unwrap(),
            Pooling::Cls
        );
        assert!(p(json!({"pooling_mode_max_tokens": true})).is_err());
    }
}
