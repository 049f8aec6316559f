//! Saving a trainable encoder in Hugging Face / sentence-transformers layout.

use std::path::Path;

use anyhow::{Context, Result};

use super::{Encoder, Pooling};
use crate::io::write_json;

impl Encoder {
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
