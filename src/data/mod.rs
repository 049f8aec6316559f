//! Amazon Reviews 2023 raw data: schema, readers (`.jsonl`, `.jsonl.gz`) and a synthetic generator.

pub mod reader;
pub mod schema;
pub mod synth;
mod vocab;

pub use reader::{ReadOptions, ReadOutcome, read_meta, read_reviews};
pub use schema::{Meta, Review};
