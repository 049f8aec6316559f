//! The re-ranker's feature list: each [`Feature`] with its name, its definition (the table of
//! [`doc_table`], also in the README) and how it is computed. The list's order is the model's
//! input order. [`super::features`] computes them.

use polars::prelude::*;

use std::collections::BTreeSet;

use super::text::{Corpus, ItemText, share};
use crate::cols;
use crate::retrieve::hybrid::RRF_K;

pub(super) const DAY_MS: i64 = 86_400_000;

/// One model input.
pub struct Feature {
    pub name: &'static str,
    /// Its definition (one line of the doc table).
    pub doc: &'static str,
    pub how: How,
}

/// How a feature's column is computed.
pub enum How {
    /// A Polars expression over the joined frame (candidates ⋈ queries ⋈ items ⋈ the as-of
    /// event aggregates of [`super::as_of::AS_OF`]) and the features listed before it.
    Expr(fn() -> PolarsResult<Expr>),
    /// A function of one (query, candidate) row, run in Rust; computed before every `Expr`.
    Row(RowFn),
}

/// A per-row feature: its value for one (query, candidate) row (`None`: missing).
pub type RowFn = fn(&RowInput) -> Option<f64>;

/// What a per-row feature sees of one (query, candidate) row.
pub struct RowInput<'a> {
    /// The query's distinct tokens, sorted (so sums over them run in the same order every time).
    pub query: &'a BTreeSet<String>,
    /// The candidate's text statistics (`None`: not in items.parquet).
    pub item: Option<&'a ItemText>,
    /// The candidate's unit vector in the index (`None`: not in the index).
    pub vector: Option<&'a [f32]>,
    /// Unit mean vector of the items the query's user reviewed before the query (`None`: no
    /// earlier review, or none of those items is in the index).
    pub profile: Option<&'a [f32]>,
    pub corpus: &'a Corpus,
}

fn n(prefix: &str) -> Expr {
    col(format!("{prefix}_n"))
        .cast(DataType::Float64)
        .fill_null(lit(0.0))
}

/// Reviews of the item in the `days` before the query.
fn item_window(days: &str) -> Expr {
    n("_item") - n(&format!("_item{days}"))
}

/// Rank of `feature` among the query's candidates (1 = highest, ties share the best rank).
fn rank_in_query(feature: &str) -> PolarsResult<Expr> {
    Ok(col(feature)
        .rank(
            RankOptions {
                method: RankMethod::Min,
                descending: true,
            },
            None,
        )
        .over([col(cols::REVIEW_ID)])?
        .cast(DataType::Float64))
}

/// `feature` minus its best value among the query's candidates (0 for the best, < 0 below).
fn gap_in_query(feature: &str) -> PolarsResult<Expr> {
    Ok(col(feature) - col(feature).max().over([col(cols::REVIEW_ID)])?)
}

/// `a / b`, null when `b` is 0.
fn ratio(a: Expr, b: Expr) -> Expr {
    when(b.clone().gt(lit(0.0)))
        .then(a.cast(DataType::Float64) / b)
        .otherwise(lit(NULL).cast(DataType::Float64))
}

/// Days from `ts_col` to the query (null when `ts_col` is null).
fn days_since(ts_col: &str) -> Expr {
    (col(cols::TIMESTAMP) - col(ts_col)).cast(DataType::Float64) / lit(DAY_MS as f64)
}

/// The model's inputs, in order.
pub const FEATURES: &[Feature] = &[
    Feature {
        name: "dense_score",
        doc: "stage-1 score of the candidate (inner product of unit vectors)",
        how: How::Expr(|| Ok(col(cols::SCORE).cast(DataType::Float64))),
    },
    Feature {
        name: "dense_rank",
        doc: "stage-1 rank (1 = best)",
        how: How::Expr(|| Ok(col(cols::RANK).cast(DataType::Float64))),
    },
    Feature {
        name: "dense_gap",
        doc: "`dense_score` minus the best `dense_score` of the query's candidates",
        how: How::Expr(|| gap_in_query("dense_score")),
    },
    Feature {
        name: "base_dense_score",
        doc: "when the candidates are a fine-tuned dense run: the candidate's score in the split's base dense run (`candidates_{split}.parquet`; missing when not in its top-K or no such run)",
        how: How::Expr(|| Ok(col(BASE_SCORE))),
    },
    Feature {
        name: "bm25_score",
        doc: "BM25 (k1 1.2, b 0.75) of the query against the item's `embedding_text`; IDF over all items",
        how: How::Row(|r| r.item.map(|it| r.corpus.bm25(r.query, it))),
    },
    Feature {
        name: "bm25_rank",
        doc: "rank of `bm25_score` among the query's candidates (1 = best, ties share the best rank)",
        how: How::Expr(|| rank_in_query("bm25_score")),
    },
    Feature {
        name: "bm25_gap",
        doc: "`bm25_score` minus the best `bm25_score` of the query's candidates",
        how: How::Expr(|| gap_in_query("bm25_score")),
    },
    Feature {
        name: "rrf_score",
        doc: "1/(60 + dense_rank) + 1/(60 + bm25_rank)",
        how: How::Expr(|| {
            Ok(lit(1.0) / (lit(RRF_K) + col("dense_rank"))
                + lit(1.0) / (lit(RRF_K) + col("bm25_rank")))
        }),
    },
    Feature {
        name: "user_similarity",
        doc: "inner product of the candidate's index vector and the unit mean vector of the items the query's user reviewed before the query (missing when none)",
        how: How::Row(|r| match (r.vector, r.profile) {
            (Some(v), Some(p)) => Some(v.iter().zip(p).map(|(a, b)| (a * b) as f64).sum()),
            _ => None,
        }),
    },
    Feature {
        name: "item_reviews",
        doc: "reviews of the item (events of every split) strictly before the query's time",
        how: How::Expr(|| Ok(n("_item"))),
    },
    Feature {
        name: "item_reviews_30d",
        doc: "the same in the 30 days before the query",
        how: How::Expr(|| Ok(item_window("30"))),
    },
    Feature {
        name: "item_reviews_90d",
        doc: "the same in the 90 days before the query",
        how: How::Expr(|| Ok(item_window("90"))),
    },
    Feature {
        name: "item_reviews_365d",
        doc: "the same in the 365 days before the query",
        how: How::Expr(|| Ok(item_window("365"))),
    },
    Feature {
        name: "item_share_90d",
        doc: "`item_reviews_90d` over the reviews of all items in those 90 days (missing when none)",
        how: How::Expr(|| Ok(ratio(col("item_reviews_90d"), n("_all") - n("_all90")))),
    },
    Feature {
        name: "item_rank_90d",
        doc: "rank of `item_reviews_90d` among the query's candidates (1 = most reviewed)",
        how: How::Expr(|| rank_in_query("item_reviews_90d")),
    },
    Feature {
        name: "item_rating_mean",
        doc: "mean rating of the item's reviews before the query (missing when none)",
        how: How::Expr(|| Ok(ratio(col("_item_rating_sum"), n("_item")))),
    },
    Feature {
        name: "item_age_days",
        doc: "days from the item's first review to the query (missing when none came before)",
        how: How::Expr(|| Ok(days_since("_item_first"))),
    },
    Feature {
        name: "days_since_last_review",
        doc: "days from the item's latest review before the query to the query (missing when none)",
        how: How::Expr(|| Ok(days_since("_item_last"))),
    },
    Feature {
        name: "user_reviews",
        doc: "reviews the query's user wrote before the query",
        how: How::Expr(|| Ok(n("_user"))),
    },
    Feature {
        name: "user_reviewed_item",
        doc: "reviews of this item by the query's user before the query",
        how: How::Expr(|| Ok(n("_user_item"))),
    },
    Feature {
        name: "user_reviewed_store",
        doc: "reviews by the query's user of items of the candidate's store before the query (missing when the item has no store)",
        how: How::Expr(|| {
            Ok(when(col(cols::STORE).is_null())
                .then(lit(NULL).cast(DataType::Float64))
                .otherwise(n("_user_store")))
        }),
    },
    Feature {
        name: "keyword_overlap",
        doc: "share of the query's distinct tokens found among the item's keyword tokens",
        how: How::Row(|r| r.item.map(|it| share(r.query, &it.keywords))),
    },
    Feature {
        name: "title_overlap",
        doc: "share of the query's distinct tokens found in the item's title",
        how: How::Row(|r| r.item.map(|it| share(r.query, &it.title))),
    },
    Feature {
        name: "text_chars",
        doc: "characters of the item's `embedding_text`",
        how: How::Expr(|| {
            Ok(col(cols::EMBEDDING_TEXT)
                .str()
                .len_chars()
                .cast(DataType::Float64))
        }),
    },
];

/// The feature names, in model order.
pub fn names() -> Vec<&'static str> {
    FEATURES.iter().map(|f| f.name).collect()
}

/// The definitions as a Markdown table (the README carries it; a test keeps them equal).
pub fn doc_table() -> String {
    let mut s = String::from("| feature | definition |\n| --- | --- |\n");
    for f in FEATURES {
        s.push_str(&format!("| `{}` | {} |\n", f.name, f.doc));
    }
    s
}

/// The stage-1 score of the candidates file (its feature names it).
pub(super) const BASE_SCORE: &str = "_base_score";
