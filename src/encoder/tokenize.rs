//! Tokenising and batching: token ids per text (truncated), right-padded batches with the
//! family's position ids.

use std::path::Path;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use tokenizers::Tokenizer;

use super::config::Architecture;
use super::{Batch, Encoder};

impl Encoder {
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
            self.device(),
        )
    }
}

/// Pads token id lists on the right into one [`Batch`].
pub fn make_batch(ids: &[&[u32]], arch: Architecture, pad: u32, device: &Device) -> Result<Batch> {
    let b = ids.len();
    anyhow::ensure!(b > 0, "empty batch");
    let family = arch.family();
    let t = ids.iter().map(|x| x.len()).max().unwrap_or(0).max(1);
    let mut input = Vec::with_capacity(b * t);
    let mut pos = Vec::with_capacity(b * t);
    let mut mask = Vec::with_capacity(b * t);
    for row in ids {
        input.extend_from_slice(row);
        input.extend(std::iter::repeat_n(pad, t - row.len()));
        pos.extend(family.position_ids(row.len(), t, pad));
        mask.extend((0..t).map(|i| if i < row.len() { 1f32 } else { 0f32 }));
    }
    Ok(Batch {
        input_ids: Tensor::from_vec(input, (b, t), device)?,
        type_ids: Tensor::zeros((b, t), DType::U32, device)?,
        position_ids: Tensor::from_vec(pos, (b, t), device)?,
        mask: Tensor::from_vec(mask, (b, t), device)?,
    })
}

/// The tokenizer of `tokenizer.json`, truncating at `max_length`, no padding (batches pad).
pub fn load_tokenizer(path: &Path, max_length: usize) -> Result<Tokenizer> {
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
