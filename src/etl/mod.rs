//! ETL stages: time split, keywords (offline extractor or LLM), description summaries,
//! the item table, and the retriever's training pairs.

pub mod build_items;
pub mod extract;
pub mod keywords;
pub mod pairs;
pub mod split;
pub mod summaries;
