//! Loading weights: every tensor of a checkpoint by its Hugging Face name, into a model's
//! `Var`s when trainable; a model's name and the hash that identifies its weights.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

/// Copies checkpoint tensors into the `Var`s a model created; every `Var` must be found.
pub fn fill_varmap(varmap: &VarMap, weights: &HashMap<String, Tensor>, file: &Path) -> Result<()> {
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
