//! The files of an encoder directory (Hugging Face layout) and what the sentence-transformers
//! files among them say: pooling, normalisation, the sequence limit.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::Pooling;

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
