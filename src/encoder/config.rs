//! What `config.json` says about the model: the architecture (its `model_type` tag, read with
//! serde into [`Architecture`]) and the transformer's hyper-parameters ([`ModelConfig`]).
//!
//! An architecture is one file ([`super::bert`], [`super::xlm_roberta`]) implementing
//! [`super::family::Family`]; adding one means a new file, a variant of [`Architecture`] and its arm in
//! [`Architecture::family`] (the list [`Architecture::ALL`] follows from it).

use std::fmt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::family::Family;

/// The transformer families we load (BGE-M3 is an XLM-RoBERTa large), named as `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    Bert,
    #[serde(alias = "roberta")]
    XlmRoberta,
}

impl Architecture {
    pub const ALL: [Architecture; 2] = [Architecture::Bert, Architecture::XlmRoberta];

    pub fn family(self) -> &'static dyn Family {
        match self {
            Architecture::Bert => &super::bert::Bert,
            Architecture::XlmRoberta => &super::xlm_roberta::XlmRoberta,
        }
    }
    pub fn model_type(self) -> &'static str {
        self.family().model_type()
    }
    pub fn class_name(self) -> &'static str {
        self.family().class_name()
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

/// `config.json` as serde reads it: the `model_type` tag and the hyper-parameters.
#[derive(Debug, Deserialize)]
struct ConfigJson {
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    #[serde(default = "two")]
    type_vocab_size: usize,
    #[serde(default = "bert_eps")]
    layer_norm_eps: f64,
    pad_token_id: Option<u32>,
    #[serde(default = "gelu")]
    hidden_act: String,
    #[serde(default = "absolute")]
    position_embedding_type: String,
}

fn two() -> usize {
    2
}
fn bert_eps() -> f64 {
    1e-12
}
fn gelu() -> String {
    "gelu".into()
}
fn absolute() -> String {
    "absolute".into()
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
        let c: ConfigJson = serde_json::from_value(raw.clone()).map_err(|e| {
            anyhow::anyhow!("{e} (a BERT-family config.json needs vocab_size, hidden_size, ...)")
        })?;
        let architecture = match &c.model_type {
            Some(t) => serde_json::from_value(Value::String(t.clone())).ok(),
            None => Architecture::ALL
                .into_iter()
                .find(|a| c.architectures.iter().any(|k| a.family().has_class(k))),
        };
        let Some(architecture) = architecture else {
            bail!(
                "field model_type: {:?} (architectures {:?}) is not supported; expected one of {}",
                c.model_type.as_deref().unwrap_or(""),
                c.architectures,
                Architecture::ALL
                    .map(|a| format!("{:?}", a.model_type()))
                    .join(", ")
            );
        };
        if c.hidden_act != "gelu" {
            bail!(
                "field hidden_act: {:?} is not supported; expected \"gelu\"",
                c.hidden_act
            );
        }
        if c.position_embedding_type != "absolute" {
            bail!(
                "field position_embedding_type: {:?} is not supported; expected \"absolute\"",
                c.position_embedding_type
            );
        }
        // Sizes a real checkpoint can have; 0 or an absurd size is a broken file, not a model.
        for (field, v, max) in [
            ("vocab_size", c.vocab_size, 10_000_000),
            ("hidden_size", c.hidden_size, 65_536),
            ("num_hidden_layers", c.num_hidden_layers, 1_000),
            ("num_attention_heads", c.num_attention_heads, 1_024),
            ("intermediate_size", c.intermediate_size, 1 << 20),
            (
                "max_position_embeddings",
                c.max_position_embeddings,
                1 << 20,
            ),
            ("type_vocab_size", c.type_vocab_size, 1_000),
        ] {
            if !(1..=max).contains(&v) {
                bail!("field {field}: {v} is out of range: expected 1 to {max}");
            }
        }
        if !(c.layer_norm_eps.is_finite() && c.layer_norm_eps > 0.0 && c.layer_norm_eps < 1.0) {
            bail!(
                "field layer_norm_eps: {} is out of range: expected a number > 0 and < 1",
                c.layer_norm_eps
            );
        }
        if !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            bail!(
                "field num_attention_heads: {} does not divide hidden_size {}",
                c.num_attention_heads,
                c.hidden_size
            );
        }
        Ok(ModelConfig {
            architecture,
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            num_hidden_layers: c.num_hidden_layers,
            num_attention_heads: c.num_attention_heads,
            intermediate_size: c.intermediate_size,
            max_position_embeddings: c.max_position_embeddings,
            type_vocab_size: c.type_vocab_size,
            layer_norm_eps: c.layer_norm_eps,
            pad_token_id: c
                .pad_token_id
                .unwrap_or_else(|| architecture.family().default_pad_token_id()),
            raw,
        })
    }

    /// The longest token sequence the position table allows (XLM-RoBERTa numbers positions
    /// from `pad_token_id + 1`, so BGE-M3's 8194 positions hold 8192 tokens).
    pub fn max_tokens(&self) -> usize {
        self.architecture
            .family()
            .max_tokens(self.max_position_embeddings, self.pad_token_id)
    }

    /// The sequence limit, resolved once: `--max-length` when given, else the model's
    /// `max_seq_length` capped at 512 (BGE-M3 declares 8192, which on a CPU costs minutes per
    /// batch of long texts); never beyond the position table.
    pub fn max_length(&self, requested: Option<usize>, declared: Option<usize>) -> Result<usize> {
        let n = requested
            .unwrap_or_else(|| declared.unwrap_or(512).min(512))
            .min(self.max_tokens());
        anyhow::ensure!(n >= 2, "--max-length {n}: must be at least 2");
        Ok(n)
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
        // no model_type: the architectures list decides
        let mut x = bert();
        x.as_object_mut().unwrap().remove("model_type");
        x["architectures"] = json!(["XLMRobertaModel"]);
        let c = ModelConfig::from_json(x).unwrap();
        assert_eq!(c.architecture, Architecture::XlmRoberta);
        let mut x = bert();
        x["model_type"] = json!("roberta");
        assert_eq!(
            ModelConfig::from_json(x).unwrap().architecture,
            Architecture::XlmRoberta
        );
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
        for (field, bad) in [
            ("hidden_size", json!(0)),
            ("num_hidden_layers", json!(0)),
            ("num_attention_heads", json!(0)),
            ("vocab_size", json!(0)),
            ("intermediate_size", json!(1u64 << 40)),
            ("layer_norm_eps", json!(-1.0)),
        ] {
            let mut x = bert();
            x[field] = bad.clone();
            let e = ModelConfig::from_json(x).unwrap_err().to_string();
            assert!(
                e.contains(&format!("field {field}: ")),
                "{field}={bad}: {e}"
            );
        }
    }

    #[test]
    fn max_length_is_resolved_once() {
        let c = ModelConfig::from_json(bert()).unwrap();
        assert_eq!(c.max_length(None, Some(256)).unwrap(), 64);
        assert_eq!(c.max_length(Some(10), Some(256)).unwrap(), 10);
        let mut x = bert();
        x["max_position_embeddings"] = json!(8194);
        let c = ModelConfig::from_json(x).unwrap();
        assert_eq!(c.max_length(None, Some(8192)).unwrap(), 512);
        assert_eq!(c.max_length(None, None).unwrap(), 512);
        assert!(c.max_length(Some(1), None).is_err());
    }
}
