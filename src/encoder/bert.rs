//! BERT (`model_type` "bert", e.g. all-MiniLM-L6-v2): positions count from 0.

use super::family::Family;

pub struct Bert;

impl Family for Bert {
    fn model_type(&self) -> &'static str {
        "bert"
    }
    fn class_name(&self) -> &'static str {
        "BertModel"
    }
    fn has_class(&self, class: &str) -> bool {
        class.starts_with("Bert")
    }
    fn default_pad_token_id(&self) -> u32 {
        0
    }
    fn max_tokens(&self, max_position_embeddings: usize, _pad: u32) -> usize {
        max_position_embeddings
    }
    fn position_ids(&self, _len: usize, padded: usize, _pad: u32) -> Vec<u32> {
        (0..padded as u32).collect()
    }
}
