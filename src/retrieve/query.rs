//! Queries: how a review becomes the text that stage 1 searches with ([`QuerySettings`]), the
//! queries of a split as a lazy frame, and seeded sampling. The settings a candidates file was
//! retrieved with are recorded beside it (see [`super::CandidatesRecord`]), so later stages (the
//! re-ranker's text features) rebuild exactly the same queries.

use polars::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::cols;
use crate::io::scan_parquet;
use crate::layout::{Layout, Split};

/// Keywords per keyword query unless a flag says otherwise.
pub const DEFAULT_MAX_KEYWORDS: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueryType {
    /// The review's keywords, comma-separated
    Keywords,
    /// The review's title and text
    #[value(alias = "review_text")]
    ReviewText,
    /// One row of each
    Both,
}

impl QueryType {
    /// The name a query type has everywhere: flags, settings, records and the `query_type`
    /// column of candidates and pairs.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryType::Keywords => "keywords",
            QueryType::ReviewText => "review-text",
            QueryType::Both => "both",
        }
    }
}

/// How a review becomes one query (`retrieve` and everything that reads its candidates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args, Serialize, Deserialize)]
pub struct QuerySettings {
    /// The query: review title + text, or the review's keywords
    #[arg(long, value_enum, default_value_t = QueryType::ReviewText)]
    pub query_type: QueryType,
    /// Keywords per keyword query
    #[arg(long, default_value_t = DEFAULT_MAX_KEYWORDS, value_parser = crate::cli::count)]
    pub max_keywords: usize,
}

impl Default for QuerySettings {
    fn default() -> Self {
        crate::cli::defaults()
    }
}

impl QuerySettings {
    /// The queries of `split` with these settings (see [`queries`]).
    pub fn queries(&self, l: &Layout, split: Split) -> anyhow::Result<LazyFrame> {
        queries(l, split, self.query_type, self.max_keywords)
    }
}

/// The queries of one split's reviews: `review_id, user_id, parent_asin, timestamp, query,
/// query_type`. A review-text query is title + text; a keyword query is the review's first
/// `max_keywords` keywords joined by ", " (empty when the extraction failed).
/// Empty queries are kept (callers count them).
pub fn queries(
    l: &Layout,
    split: Split,
    query_type: QueryType,
    max_keywords: usize,
) -> anyhow::Result<LazyFrame> {
    let keep = || {
        [
            col(cols::REVIEW_ID),
            col(cols::USER_ID),
            col(cols::PARENT_ASIN),
            col(cols::TIMESTAMP),
        ]
    };
    let mut parts: Vec<LazyFrame> = Vec::new();
    if query_type != QueryType::Keywords {
        let mut sel = keep().to_vec();
        sel.push(
            concat_str([col(cols::TITLE), col(cols::TEXT)], " ", true)
                .str()
                .strip_chars(lit(NULL))
                .alias(cols::QUERY),
        );
        sel.push(lit(QueryType::ReviewText.as_str()).alias(cols::QUERY_TYPE));
        parts.push(scan_parquet(&l.reviews(split))?.select(sel));
    }
    if query_type != QueryType::ReviewText {
        let mut sel = keep().to_vec();
        let joined = col(cols::KEYWORDS)
            .list()
            .head(lit(max_keywords as u64))
            .list()
            .join(lit(", "), true);
        // A failed extraction is an empty query: callers count it instead of losing the review.
        sel.push(
            when(col(cols::KEYWORDS_FAILED))
                .then(lit(""))
                .otherwise(joined)
                .alias(cols::QUERY),
        );
        sel.push(lit(QueryType::Keywords.as_str()).alias(cols::QUERY_TYPE));
        parts.push(scan_parquet(&l.keywords(split))?.select(sel));
    }
    Ok(concat(parts, UnionArgs::default())?)
}

/// A seeded random sample of `n` of the indices `0..len` (all of them when `n >= len`), in
/// ascending order: the same seed gives the same sample.
pub fn sample_indices(len: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..len).collect();
    if n < len {
        idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        idx.truncate(n);
        idx.sort_unstable();
    }
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One spelling per query type: the flag value, the serde name and the Parquet value.
    #[test]
    fn a_query_type_has_one_name() {
        for &t in <QueryType as clap::ValueEnum>::value_variants() {
            let flag = clap::ValueEnum::to_possible_value(&t).unwrap();
            let serde = serde_json::to_value(t).unwrap();
            assert_eq!(flag.get_name(), t.as_str());
            assert_eq!(serde, serde_json::json!(t.as_str()));
        }
    }
}
