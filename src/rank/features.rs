//! Re-ranker features: one column per feature over the candidates of a split, joined with the
//! queries, the items, the review events and the item vectors of the index. Each feature is one
//! [`Feature`] in [`FEATURES`]: its name, its definition (the table of [`doc_table`], also in the
//! README) and how it is computed — a Polars expression over the joined frame and the features
//! before it, or a per-row function (text matching, vector similarity) run in Rust on all
//! cores. The list's order is the model's input order; a saved ranker records it and loading
//! checks it.
//!
//! **What a query may know.** A query is a review written at time t. Its features use:
//! - the item texts of `items.parquet` (built from TRAIN reviews and the metadata only);
//! - review *events* — (item, user, store, time, rating) of every split, never their text —
//!   strictly before t ([`super::as_of`]: the query's own review, at t, is never counted, nor is
//!   anything later);
//! - the query's own text, rebuilt with the settings recorded with the candidates file.
//!
//! Not the catalog's `average_rating` / `rating_number`: crawled after every review, they
//! count ratings given after the query (its own included); `item_rating_mean` and
//! `item_reviews` are their as-of-time versions.
//!
//! Tokens: lower-cased runs of letters and digits.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use polars::prelude::*;
use rayon::prelude::*;

use super::as_of::{ALL, AS_OF, as_of, events, no_empty};
use super::text::{Corpus, ItemText, share, tokens};
use crate::cols;
use crate::context::Ctx;
use crate::index::ItemIndex;
use crate::io;
use crate::layout::Split;
use crate::retrieve::hybrid::RRF_K;
use crate::retrieve::{CandidatesRecord, Catalog};

const DAY_MS: i64 = 86_400_000;

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
    /// event aggregates of [`AS_OF`]) and the features listed before it.
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

/// The candidates of `split` (the stage-1 file `candidates`) with every feature column and the
/// label, sorted by `review_id`, then stage-1 `rank`. The queries are rebuilt with the
/// settings recorded beside the candidates; item vectors come from the index (its model
/// should be the candidates' model). Rows of queries without candidates (null rank) are
/// dropped.
pub fn build(ctx: &Ctx, split: Split, candidates: &Path) -> Result<DataFrame> {
    let l = &ctx.layout;
    let record = CandidatesRecord::read(candidates)?;
    let queries = record.query.queries(l, split)?.select([
        col(cols::REVIEW_ID),
        col(cols::USER_ID),
        col(cols::TIMESTAMP),
        col(cols::QUERY),
    ]);
    let items = io::scan_parquet(&l.items())?.select([
        col(cols::PARENT_ASIN),
        no_empty(cols::STORE),
        col(cols::EMBEDDING_TEXT),
    ]);
    let on = |c: &[&str]| c.iter().map(|c| col(*c)).collect::<Vec<_>>();
    let mut lf = io::scan_parquet(candidates)?
        .filter(col(cols::RANK).is_not_null())
        .join(
            queries,
            on(&[cols::REVIEW_ID]),
            on(&[cols::REVIEW_ID]),
            JoinArgs::new(JoinType::Left),
        )
        .join(
            items,
            on(&[cols::PARENT_ASIN]),
            on(&[cols::PARENT_ASIN]),
            JoinArgs::new(JoinType::Left),
        )
        .with_column(lit("").alias(ALL));
    lf = match base_run(ctx, split, candidates)? {
        Some((path, _)) => lf.join(
            io::scan_parquet(&path)?.select([
                col(cols::REVIEW_ID),
                col(cols::PARENT_ASIN),
                col(cols::SCORE).cast(DataType::Float64).alias(BASE_SCORE),
            ]),
            on(&[cols::REVIEW_ID, cols::PARENT_ASIN]),
            on(&[cols::REVIEW_ID, cols::PARENT_ASIN]),
            JoinArgs::new(JoinType::Left),
        ),
        None => lf.with_columns([lit(NULL).cast(DataType::Float64).alias(BASE_SCORE)]),
    };
    // collected step by step: one plan of every join would be deep enough to overflow the
    // stack of a debug build's test thread
    let joined = Context::with_context(lf.collect(), || {
        format!(
            "joining {} with the queries and items",
            candidates.display()
        )
    })?;
    let events = events(ctx)?.collect()?.lazy();
    let mut lf = joined.clone().lazy();
    for a in AS_OF {
        let mut keys = a.keys.to_vec();
        let probes = joined.clone().lazy();
        let agg = as_of(&events, &probes, &keys, a.window_days * DAY_MS, a.prefix).collect();
        let agg = Context::with_context(agg, || format!("counting review events per {keys:?}"))?;
        keys.push(cols::TIMESTAMP);
        lf = lf.join(
            agg.lazy(),
            on(&keys),
            on(&keys),
            JoinArgs::new(JoinType::Left),
        );
    }
    let mut df = lf
        .sort(
            [cols::REVIEW_ID, cols::RANK],
            SortMultipleOptions::default(),
        )
        .collect()?;
    for c in row_features(ctx, &df, &events)? {
        df.with_column(c)?;
    }
    // one feature at a time, in order (later ones read earlier ones); each a shallow plan over
    // the frame in memory
    for f in FEATURES {
        if let How::Expr(e) = f.how {
            let next = df.lazy().with_column(e()?.alias(f.name)).collect();
            df = Context::with_context(next, || format!("computing the feature {}", f.name))?;
        }
    }
    let df = df
        .lazy()
        .with_column(
            col(cols::PARENT_ASIN)
                .eq(col(cols::TARGET_PARENT_ASIN))
                .cast(DataType::Float32)
                .alias(cols::LABEL),
        )
        .collect()?;
    // the helper columns (as-of aggregates, the item text) are not outputs
    let helpers: Vec<String> = df
        .get_column_names()
        .iter()
        .filter(|c| c.starts_with('_') || c.as_str() == cols::EMBEDDING_TEXT)
        .map(|c| c.to_string())
        .collect();
    Ok(df.drop_many(helpers))
}

const BASE_SCORE: &str = "_base_score";

/// The split's base dense run (`candidates_{split}.parquet`, no name) when `candidates` is
/// another dense run with another model — typically base vs fine-tuned: its path and model.
pub fn base_run(ctx: &Ctx, split: Split, candidates: &Path) -> Result<Option<(PathBuf, String)>> {
    let path = ctx.layout.candidates(split, None);
    if path == candidates || !path.is_file() {
        return Ok(None);
    }
    let ours = CandidatesRecord::read(candidates)?;
    Ok(CandidatesRecord::read_optional(&path)?
        .filter(|r| r.retriever == "dense" && ours.retriever == "dense" && r.model != ours.model)
        .map(|r| (path, r.model)))
}

/// The columns of the [`How::Row`] features.
fn row_features(ctx: &Ctx, df: &DataFrame, events: &LazyFrame) -> Result<Vec<Column>> {
    let l = &ctx.layout;
    // every item (document frequencies need all of them), tokenized once
    let items = io::scan_parquet(&l.items())?
        .select([
            col(cols::PARENT_ASIN),
            col(cols::TITLE),
            col(cols::KEYWORDS).list().join(lit(" "), true).alias("kw"),
            col(cols::EMBEDDING_TEXT),
        ])
        .collect()?;
    let (asins, titles, kws, texts) = (
        strings(&items, cols::PARENT_ASIN)?,
        strings(&items, cols::TITLE)?,
        strings(&items, "kw")?,
        strings(&items, cols::EMBEDDING_TEXT)?,
    );
    let item_text: Vec<ItemText> = (0..asins.len())
        .into_par_iter()
        .map(|i| {
            let mut tf: HashMap<String, u32> = HashMap::new();
            let mut len = 0;
            for t in tokens(&texts[i]) {
                *tf.entry(t).or_default() += 1;
                len += 1;
            }
            ItemText {
                tf,
                len,
                title: tokens(&titles[i]).collect(),
                keywords: tokens(&kws[i]).collect(),
            }
        })
        .collect();
    let corpus = Corpus::new(&item_text);
    let by_asin: HashMap<&str, usize> = asins
        .iter()
        .enumerate()
        .map(|(i, a)| (a.as_str(), i))
        .collect();

    let index = ItemIndex::open(ctx)
        .context("the re-ranker's user_similarity reads the item vectors of the index")?;
    let catalog = Catalog::open(&index, true)?;
    let profiles = user_profiles(df, events, &catalog)?;

    let row_fns: Vec<(&str, RowFn)> = FEATURES
        .iter()
        .filter_map(|f| match f.how {
            How::Row(g) => Some((f.name, g)),
            How::Expr(_) => None,
        })
        .collect();
    let cand_asins = df.column(cols::PARENT_ASIN)?.str()?;
    let queries = df.column(cols::QUERY)?.str()?;
    let review_ids = df.column(cols::REVIEW_ID)?.u64()?;
    let rows: Vec<Vec<Option<f64>>> = (0..df.height())
        .into_par_iter()
        .map(|r| {
            let q: BTreeSet<String> = tokens(queries.get(r).unwrap_or("")).collect();
            let asin = cand_asins.get(r).unwrap_or("");
            let input = RowInput {
                query: &q,
                item: by_asin.get(asin).map(|&i| &item_text[i]),
                vector: catalog
                    .position(asin)
                    .map(|i| catalog.vectors.row(i as usize)),
                profile: review_ids
                    .get(r)
                    .and_then(|id| profiles.get(&id))
                    .map(Vec::as_slice),
                corpus: &corpus,
            };
            row_fns.iter().map(|(_, g)| g(&input)).collect()
        })
        .collect();
    Ok(row_fns
        .iter()
        .enumerate()
        .map(|(j, (name, _))| {
            let v: Vec<Option<f64>> = rows.iter().map(|r| r[j]).collect();
            Column::new((*name).into(), v)
        })
        .collect())
}

fn strings(df: &DataFrame, c: &str) -> Result<Vec<String>> {
    Ok(df
        .column(c)?
        .str()?
        .iter()
        .map(|v| v.unwrap_or("").to_string())
        .collect())
}

/// Per query (review_id): the unit mean vector of the index vectors of the items its user
/// reviewed strictly before the query's time (any split's events). Queries without such an
/// item in the index have none.
fn user_profiles(
    df: &DataFrame,
    events: &LazyFrame,
    catalog: &Catalog,
) -> Result<HashMap<u64, Vec<f32>>> {
    const EVENT_TS: &str = "_event_ts";
    let earlier = df
        .select([cols::REVIEW_ID, cols::USER_ID, cols::TIMESTAMP])?
        .lazy()
        .filter(col(cols::USER_ID).is_not_null())
        .unique(None, UniqueKeepStrategy::Any)
        .join(
            events.clone().select([
                col(cols::USER_ID),
                col(cols::PARENT_ASIN),
                col(cols::TIMESTAMP).alias(EVENT_TS),
            ]),
            [col(cols::USER_ID)],
            [col(cols::USER_ID)],
            JoinArgs::new(JoinType::Inner),
        )
        .filter(col(EVENT_TS).lt(col(cols::TIMESTAMP)))
        .select([col(cols::REVIEW_ID), col(cols::PARENT_ASIN), col(EVENT_TS)])
        // a fixed order of the sums, whatever else the event files hold
        .sort(
            [cols::REVIEW_ID, EVENT_TS, cols::PARENT_ASIN],
            SortMultipleOptions::default(),
        )
        .collect()?;
    let dim = catalog.vectors.dim;
    let mut sums: HashMap<u64, Vec<f32>> = HashMap::new();
    let ids = earlier.column(cols::REVIEW_ID)?.u64()?;
    let asins = earlier.column(cols::PARENT_ASIN)?.str()?;
    for (id, asin) in ids.iter().zip(asins.iter()) {
        let (Some(id), Some(pos)) = (id, asin.and_then(|a| catalog.position(a))) else {
            continue;
        };
        let s = sums.entry(id).or_insert_with(|| vec![0.0; dim]);
        for (a, b) in s.iter_mut().zip(catalog.vectors.row(pos as usize)) {
            *a += b;
        }
    }
    sums.retain(|_, v| {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        norm > 0.0
    });
    Ok(sums)
}

/// The feature matrix, row-major f32, missing values as NaN (XGBoost's missing).
pub fn matrix(df: &DataFrame) -> Result<Vec<f32>> {
    let n = df.height();
    let mut out = vec![f32::NAN; n * FEATURES.len()];
    for (j, f) in FEATURES.iter().enumerate() {
        let c = df
            .column(f.name)
            .map_err(|_| anyhow::anyhow!("feature column {} missing", f.name))?
            .cast(&DataType::Float64)?;
        for (i, v) in c.f64()?.iter().enumerate() {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                out[i * FEATURES.len() + j] = v as f32;
            }
        }
    }
    Ok(out)
}

/// Group sizes (rows per query) of a frame sorted by `review_id`.
pub fn groups(df: &DataFrame) -> Result<Vec<u32>> {
    let ids = df.column(cols::REVIEW_ID)?.u64()?;
    let mut out: Vec<u32> = Vec::new();
    let mut prev = None;
    for id in ids.iter() {
        if id == prev && !out.is_empty() {
            *out.last_mut().expect("non-empty") += 1;
        } else {
            out.push(1);
            prev = id;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_the_readme_has_the_table() {
        let n = names();
        let set: HashSet<&str> = n.iter().copied().collect();
        assert_eq!(set.len(), n.len(), "duplicate feature name");
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(&doc_table()),
            "README.md's feature table differs from FEATURES; paste:\n{}",
            doc_table()
        );
    }
}
