//! XLM-RoBERTa (`model_type` "xlm-roberta" or "roberta", e.g. BGE-M3): real tokens are numbered
//! from `pad + 1` and padding gets the id `pad`, as Hugging Face computes them, so the position
//! table holds `pad + 1` fewer tokens than its size.

use super::family::Family;

pub struct XlmRoberta;

impl Family for XlmRoberta {
    fn model_type(&self) -> &'static str {
        "xlm-roberta"
    }
    fn class_name(&self) -> &'static str {
        "XLMRobertaModel"
    }
    fn has_class(&self, class: &str) -> bool {
        class.starts_with("XLMRoberta") || class.starts_with("Roberta")
    }
    fn default_pad_token_id(&self) -> u32 {
        1
    }
    fn max_tokens(&self, max_position_embeddings: usize, pad: u32) -> usize {
        max_position_embeddings.saturating_sub(pad as usize + 1)
    }
    fn position_ids(&self, len: usize, padded: usize, pad: u32) -> Vec<u32> {
        (0..padded)
            .map(|i| if i < len { pad + 1 + i as u32 } else { pad })
            .collect()
    }
}
