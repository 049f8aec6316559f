//! Re-ranker features: one column per feature over the candidates of a split, joined with the
//! queries, the items and the TRAIN reviews. The joins, logs, ranks and the fusion are Polars
//! expressions; the text-matching columns (BM25, token overlaps) and the as-of-query-time
//! popularity are computed per row in Rust (rayon) and added as columns.
//!
//! | feature | definition |
//! | --- | --- |
//! | `dense_score` | stage-1 score of the candidate (inner product of unit vectors) |
//! | `dense_rank` | stage-1 rank (1 = best) |
//! | `bm25_score` | BM25 (k1 1.2, b 0.75) of the query against the item's `embedding_text`; IDF over all items |
//! | `bm25_rank` | rank of `bm25_score` among the query's candidates (1 = best, ties share the best rank) |
//! | `rrf_score` | 1/(60 + dense_rank) + 1/(60 + bm25_rank) |
//! | `log_popularity` | ln(1 + number of the item's TRAIN reviews strictly before the query's timestamp) |
//! | `item_age_days` | days from the item's first TRAIN review to the query; missing when none came before |
//! | `average_rating` | catalog metadata (missing when absent) |
//! | `log_rating_number` | ln(1 + rating_number), catalog metadata |
//! | `price` | catalog metadata; missing when absent |
//! | `keyword_overlap` | share of the query's distinct tokens found among the item's keyword tokens |
//! | `title_overlap` | share of the query's distinct tokens found in the item's title |
//! | `query_tokens` | distinct tokens in the query |
//! | `text_chars` | characters of the item's `embedding_text` |
//!
//! Tokens: lower-cased runs of letters and digits. Time-dependent features only count TRAIN reviews
//! before the query, so a train query never sees its own or later reviews, and no valid/test review
//! reaches any feature. The catalog fields (average_rating, rating_number, price) are the metadata
//! as crawled, the same for every query.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result};
use polars::prelude::*;
use rayon::prelude::*;

use crate::cols;
use crate::context::Ctx;
use crate::etl::pairs::{self, QueryType};
use crate::io;
use crate::layout::Split;

/// The model's inputs, in order (the saved model records this list; loading checks it).
pub const FEATURES: [&str; 14] = [
    "dense_score",
    "dense_rank",
    "bm25_score",
    "bm25_rank",
    "rrf_score",
    "log_popularity",
    "item_age_days",
    "average_rating",
    "log_rating_number",
    "price",
    "keyword_overlap",
    "title_overlap",
    "query_tokens",
    "text_chars",
];

/// 1 for the target item, 0 otherwise.
pub const LABEL: &str = "label";

const BM25_K1: f64 = 1.2;
const BM25_B: f64 = 0.75;
const RRF_K: f64 = crate::eval::retrieve::RRF_K;
const DAY_MS: f64 = 86_400_000.0;

/// Lower-cased runs of letters and digits.
pub fn tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
}

/// What the per-row features need of one item.
struct ItemText {
    tf: HashMap<String, u32>,
    len: usize,
    title: HashSet<String>,
    keywords: HashSet<String>,
}

/// The candidates of `split` (the stage-1 file `candidates`) with every feature column and the
/// label, sorted by `review_id`, then stage-1 `rank`. Rows of queries without candidates (null
/// rank) are dropped.
pub fn build(
    ctx: &Ctx,
    split: Split,
    candidates: &Path,
    query_type: QueryType,
) -> Result<DataFrame> {
    let l = &ctx.layout;
    let queries = pairs::queries(l, split, query_type, 20)?.select([
        col(cols::REVIEW_ID),
        col(cols::TIMESTAMP),
        col(cols::QUERY),
    ]);
    let items = io::scan_parquet(&l.items())?.select([
        col(cols::PARENT_ASIN),
        col(cols::AVERAGE_RATING).cast(DataType::Float64),
        col(cols::RATING_NUMBER).cast(DataType::Float64),
        col(cols::PRICE).cast(DataType::Float64),
        col(cols::EMBEDDING_TEXT)
            .str()
            .len_chars()
            .cast(DataType::Float64)
            .alias("text_chars"),
    ]);
    let on = |c: &str| [col(c)];
    let df = io::scan_parquet(candidates)?
        .filter(col(cols::RANK).is_not_null())
        .join(
            queries,
            on(cols::REVIEW_ID),
            on(cols::REVIEW_ID),
            JoinArgs::new(JoinType::Left),
        )
        .join(
            items,
            on(cols::PARENT_ASIN),
            on(cols::PARENT_ASIN),
            JoinArgs::new(JoinType::Left),
        )
        .sort(
            [cols::REVIEW_ID, cols::RANK],
            SortMultipleOptions::default(),
        )
        .collect();
    let mut df = Context::with_context(df, || format!("joining {}", candidates.display()))?;

    let row_cols = row_features(ctx, &df)?;
    for c in row_cols {
        df.with_column(c)?;
    }
    let lf = df
        .lazy()
        .with_columns([
            col(cols::SCORE)
                .cast(DataType::Float64)
                .alias("dense_score"),
            col(cols::RANK).cast(DataType::Float64).alias("dense_rank"),
            col("bm25_score")
                .rank(
                    RankOptions {
                        method: RankMethod::Min,
                        descending: true,
                    },
                    None,
                )
                .over([col(cols::REVIEW_ID)])?
                .cast(DataType::Float64)
                .alias("bm25_rank"),
            (lit(1.0) + col(cols::RATING_NUMBER))
                .log(lit(std::f64::consts::E))
                .alias("log_rating_number"),
            col(cols::PARENT_ASIN)
                .eq(col(cols::TARGET_PARENT_ASIN))
                .cast(DataType::Float32)
                .alias(LABEL),
        ])
        .with_columns([(lit(1.0) / (lit(RRF_K) + col("dense_rank"))
            + lit(1.0) / (lit(RRF_K) + col("bm25_rank")))
        .alias("rrf_score")]);
    let df = Context::with_context(lf.collect(), || "computing the features".to_string())?;
    Ok(df)
}

/// The per-row columns computed in Rust: bm25_score, keyword_overlap, title_overlap,
/// query_tokens, log_popularity, item_age_days.
fn row_features(ctx: &Ctx, df: &DataFrame) -> Result<Vec<Column>> {
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
    let s = |c: &str| -> Result<Vec<String>> {
        Ok(items
            .column(c)?
            .str()?
            .iter()
            .map(|v| v.unwrap_or("").to_string())
            .collect())
    };
    let (asins, titles, kws, texts) = (
        s(cols::PARENT_ASIN)?,
        s(cols::TITLE)?,
        s("kw")?,
        s(cols::EMBEDDING_TEXT)?,
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
    let mut doc_freq: HashMap<&str, u32> = HashMap::new();
    for it in &item_text {
        for t in it.tf.keys() {
            *doc_freq.entry(t.as_str()).or_default() += 1;
        }
    }
    let n_docs = item_text.len().max(1) as f64;
    let avg_len = item_text.iter().map(|i| i.len).sum::<usize>() as f64 / n_docs;
    let idf = |t: &str| {
        let df = *doc_freq.get(t).unwrap_or(&0) as f64;
        ((n_docs - df + 0.5) / (df + 0.5) + 1.0).ln()
    };
    let by_asin: HashMap<&str, usize> = asins
        .iter()
        .enumerate()
        .map(|(i, a)| (a.as_str(), i))
        .collect();

    // TRAIN review timestamps per item, sorted
    let train = io::scan_parquet(&l.reviews(Split::Train))?
        .select([col(cols::PARENT_ASIN), col(cols::TIMESTAMP)])
        .collect()?;
    let mut history: HashMap<String, Vec<i64>> = HashMap::new();
    for (a, t) in train
        .column(cols::PARENT_ASIN)?
        .str()?
        .iter()
        .zip(train.column(cols::TIMESTAMP)?.i64()?.iter())
    {
        if let (Some(a), Some(t)) = (a, t) {
            history.entry(a.to_string()).or_default().push(t);
        }
    }
    history.values_mut().for_each(|v| v.sort_unstable());

    let cand_asins = df.column(cols::PARENT_ASIN)?.str()?;
    let queries = df.column(cols::QUERY)?.str()?;
    let times = df.column(cols::TIMESTAMP)?.i64()?;
    let n = df.height();
    let rows: Vec<[Option<f64>; 6]> = (0..n)
        .into_par_iter()
        .map(|r| {
            // sorted: the BM25 sum is added up in the same order on every run
            let q: BTreeSet<String> = tokens(queries.get(r).unwrap_or("")).collect();
            let asin = cand_asins.get(r).unwrap_or("");
            let ts = times.get(r);
            let qn = q.len() as f64;
            let share = |set: &HashSet<String>| {
                if q.is_empty() {
                    0.0
                } else {
                    q.iter().filter(|t| set.contains(*t)).count() as f64 / qn
                }
            };
            let (bm25, kw, title) = match by_asin.get(asin) {
                Some(&i) => {
                    let it = &item_text[i];
                    let norm =
                        BM25_K1 * (1.0 - BM25_B + BM25_B * it.len as f64 / avg_len.max(1e-9));
                    let bm25: f64 = q
                        .iter()
                        .filter_map(|t| it.tf.get(t).map(|&f| (t, f as f64)))
                        .map(|(t, f)| idf(t) * f * (BM25_K1 + 1.0) / (f + norm))
                        .fold(0.0, |a, b| a + b);
                    (
                        Some(bm25),
                        Some(share(&it.keywords)),
                        Some(share(&it.title)),
                    )
                }
                None => (None, None, None),
            };
            let (pop, age) = match (history.get(asin), ts) {
                (Some(h), Some(ts)) => {
                    let before = h.partition_point(|&t| t < ts);
                    let age = (before > 0).then(|| (ts - h[0]) as f64 / DAY_MS);
                    (Some((1.0 + before as f64).ln()), age)
                }
                (None, Some(_)) => (Some(0.0), None),
                _ => (None, None),
            };
            [bm25, kw, title, Some(qn), pop, age]
        })
        .collect();
    let names = [
        "bm25_score",
        "keyword_overlap",
        "title_overlap",
        "query_tokens",
        "log_popularity",
        "item_age_days",
    ];
    Ok(names
        .iter()
        .enumerate()
        .map(|(j, name)| {
            let v: Vec<Option<f64>> = rows.iter().map(|r| r[j]).collect();
            Column::new((*name).into(), v)
        })
        .collect())
}

/// The feature matrix, row-major f32, missing values as NaN (XGBoost's missing).
pub fn matrix(df: &DataFrame) -> Result<Vec<f32>> {
    let n = df.height();
    let mut out = vec![f32::NAN; n * FEATURES.len()];
    for (j, name) in FEATURES.iter().enumerate() {
        let c = df
            .column(name)
            .map_err(|_| anyhow::anyhow!("feature column {name} missing"))?
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
