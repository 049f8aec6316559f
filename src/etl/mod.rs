//! ETL stages: time split, keywords (offline extractor or LLM), description summaries,
//! the item table, the retriever's training pairs, and the keywords' recall of synthetic ground truth.

pub mod build_items;
pub mod extract;
pub mod keywords;
pub mod pairs;
pub mod split;
pub mod summaries;
pub mod truth;
