//! The one trait an encoder architecture implements: what differs between the BERT-family
//! transformers that share [`super::layers::Transformer`].

/// One architecture (see [`super::config::Architecture`] for the list).
pub trait Family: Sync {
    /// `config.json`'s `model_type` (written back when a model is saved).
    fn model_type(&self) -> &'static str;
    /// The `architectures` entry written back into `config.json`.
    fn class_name(&self) -> &'static str;
    /// Whether an `architectures` entry names this family (when `model_type` is absent).
    fn has_class(&self, class: &str) -> bool;
    /// `pad_token_id` when `config.json` has none.
    fn default_pad_token_id(&self) -> u32;
    /// The longest token sequence the position table allows.
    fn max_tokens(&self, max_position_embeddings: usize, pad: u32) -> usize;
    /// Position ids of a row of `len` real tokens right-padded to `padded`.
    fn position_ids(&self, len: usize, padded: usize, pad: u32) -> Vec<u32>;
}
