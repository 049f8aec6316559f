//! Re-ranker features: one column per feature over the candidates of a split, joined with the
//! queries, the items and the TRAIN reviews. Each feature is one [`Feature`] in [`FEATURES`]:
//! its name, its definition (the table of [`doc_table`], also in the README) and how it is
//! computed — a Polars expression over the joined frame and the features before it, or a
//! per-row function (text matching, as-of-time counts) run in Rust on all cores. The list's
//! order is the model's input order; a saved ranker records it and loading checks it.
//!
//! Tokens: lower-cased runs of letters and digits. Time-dependent features only count TRAIN
//! reviews before the query, so a train query never sees its own or later reviews, and no
//! valid/test review reaches any feature. The catalog fields (average_rating, rating_number,
//! price) are the metadata as crawled, the same for every query. The queries are rebuilt with
//! the settings recorded with the candidates file (query type, keywords per query).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result};
use polars::prelude::*;
use rayon::prelude::*;

use crate::cols;
use crate::context::Ctx;
use crate::io;
use crate::layout::Split;
use crate::retrieve::CandidatesRecord;
use crate::retrieve::hybrid::RRF_K;

const BM25_K1: f64 = 1.2;
const BM25_B: f64 = 0.75;
const DAY_MS: f64 = 86_400_000.0;

/// One model input.
pub struct Feature {
    pub name: &'static str,
    /// Its definition (one line of the doc table).
    pub doc: &'static str,
    pub how: How,
}

/// How a feature's column is computed.
pub enum How {
    /// A Polars expression over the joined frame (candidates ⋈ queries ⋈ items) and the
    /// features listed before it.
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
    /// The candidate's TRAIN review timestamps, sorted (`None`: it has no TRAIN review).
    pub history: Option<&'a [i64]>,
    /// The query review's timestamp (ms).
    pub ts: Option<i64>,
    pub corpus: &'a Corpus,
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
        name: "bm25_score",
        doc: "BM25 (k1 1.2, b 0.75) of the query against the item's `embedding_text`; IDF over all items",
        how: How::Row(|r| r.item.map(|it| r.corpus.bm25(r.query, it))),
    },
    Feature {
        name: "bm25_rank",
        doc: "rank of `bm25_score` among the query's candidates (1 = best, ties share the best rank)",
        how: How::Expr(|| {
            Ok(col("bm25_score")
                .rank(
                    RankOptions {
                        method: RankMethod::Min,
                        descending: true,
                    },
                    None,
                )
                .over([col(cols::REVIEW_ID)])?
                .cast(DataType::Float64))
        }),
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
        name: "log_popularity",
        doc: "ln(1 + number of the item's TRAIN reviews strictly before the query's timestamp)",
        how: How::Row(|r| match (r.history, r.ts) {
            (Some(h), Some(ts)) => Some((1.0 + h.partition_point(|&t| t < ts) as f64).ln()),
            (None, Some(_)) => Some(0.0),
            _ => None,
        }),
    },
    Feature {
        name: "item_age_days",
        doc: "days from the item's first TRAIN review to the query; missing when none came before",
        how: How::Row(|r| match (r.history, r.ts) {
            (Some(h), Some(ts)) if h.partition_point(|&t| t < ts) > 0 => {
                Some((ts - h[0]) as f64 / DAY_MS)
            }
            _ => None,
        }),
    },
    Feature {
        name: "average_rating",
        doc: "catalog metadata (missing when absent)",
        how: How::Expr(|| Ok(col(cols::AVERAGE_RATING))),
    },
    Feature {
        name: "log_rating_number",
        doc: "ln(1 + rating_number), catalog metadata",
        how: How::Expr(|| Ok((lit(1.0) + col(cols::RATING_NUMBER)).log(lit(std::f64::consts::E)))),
    },
    Feature {
        name: "price",
        doc: "catalog metadata; missing when absent",
        how: How::Expr(|| Ok(col(cols::PRICE))),
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
        name: "query_tokens",
        doc: "distinct tokens in the query",
        how: How::Row(|r| Some(r.query.len() as f64)),
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

/// Lower-cased runs of letters and digits.
pub fn tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
}

/// Share of the query's tokens in `set` (0 for an empty query).
fn share(q: &BTreeSet<String>, set: &HashSet<String>) -> f64 {
    if q.is_empty() {
        0.0
    } else {
        q.iter().filter(|t| set.contains(*t)).count() as f64 / q.len() as f64
    }
}

/// What the per-row features need of one item.
pub struct ItemText {
    tf: HashMap<String, u32>,
    len: usize,
    title: HashSet<String>,
    keywords: HashSet<String>,
}

/// BM25 statistics of every item's `embedding_text`.
pub struct Corpus {
    doc_freq: HashMap<String, u32>,
    n_docs: f64,
    avg_len: f64,
}

impl Corpus {
    fn new(items: &[ItemText]) -> Self {
        let mut doc_freq: HashMap<String, u32> = HashMap::new();
        for it in items {
            for t in it.tf.keys() {
                *doc_freq.entry(t.clone()).or_default() += 1;
            }
        }
        let n_docs = items.len().max(1) as f64;
        let avg_len = items.iter().map(|i| i.len).sum::<usize>() as f64 / n_docs;
        Corpus {
            doc_freq,
            n_docs,
            avg_len,
        }
    }

    fn idf(&self, t: &str) -> f64 {
        let df = *self.doc_freq.get(t).unwrap_or(&0) as f64;
        ((self.n_docs - df + 0.5) / (df + 0.5) + 1.0).ln()
    }

    fn bm25(&self, q: &BTreeSet<String>, it: &ItemText) -> f64 {
        let norm = BM25_K1 * (1.0 - BM25_B + BM25_B * it.len as f64 / self.avg_len.max(1e-9));
        q.iter()
            .filter_map(|t| it.tf.get(t).map(|&f| (t, f as f64)))
            .map(|(t, f)| self.idf(t) * f * (BM25_K1 + 1.0) / (f + norm))
            .fold(0.0, |a, b| a + b)
    }
}

/// The candidates of `split` (the stage-1 file `candidates`) with every feature column and the
/// label, sorted by `review_id`, then stage-1 `rank`. The queries are rebuilt with the
/// settings recorded beside the candidates. Rows of queries without candidates (null rank)
/// are dropped.
pub fn build(ctx: &Ctx, split: Split, candidates: &Path) -> Result<DataFrame> {
    let l = &ctx.layout;
    let record = CandidatesRecord::read(candidates)?;
    let queries = record.query.queries(l, split)?.select([
        col(cols::REVIEW_ID),
        col(cols::TIMESTAMP),
        col(cols::QUERY),
    ]);
    let items = io::scan_parquet(&l.items())?.select([
        col(cols::PARENT_ASIN),
        col(cols::AVERAGE_RATING).cast(DataType::Float64),
        col(cols::RATING_NUMBER).cast(DataType::Float64),
        col(cols::PRICE).cast(DataType::Float64),
        col(cols::EMBEDDING_TEXT),
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
    for c in row_features(ctx, &df)? {
        df.with_column(c)?;
    }
    let mut lf = df.lazy();
    for f in FEATURES {
        if let How::Expr(e) = f.how {
            lf = lf.with_columns([e()?.alias(f.name)]);
        }
    }
    let lf = lf.with_columns([col(cols::PARENT_ASIN)
        .eq(col(cols::TARGET_PARENT_ASIN))
        .cast(DataType::Float32)
        .alias(cols::LABEL)]);
    let df = Context::with_context(lf.collect(), || "computing the features".to_string())?;
    Ok(df.drop(cols::EMBEDDING_TEXT)?)
}

/// The columns of the [`How::Row`] features.
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
    let corpus = Corpus::new(&item_text);
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

    let row_fns: Vec<(&str, RowFn)> = FEATURES
        .iter()
        .filter_map(|f| match f.how {
            How::Row(g) => Some((f.name, g)),
            How::Expr(_) => None,
        })
        .collect();
    let cand_asins = df.column(cols::PARENT_ASIN)?.str()?;
    let queries = df.column(cols::QUERY)?.str()?;
    let times = df.column(cols::TIMESTAMP)?.i64()?;
    let rows: Vec<Vec<Option<f64>>> = (0..df.height())
        .into_par_iter()
        .map(|r| {
            let q: BTreeSet<String> = tokens(queries.get(r).unwrap_or("")).collect();
            let asin = cand_asins.get(r).unwrap_or("");
            let input = RowInput {
                query: &q,
                item: by_asin.get(asin).map(|&i| &item_text[i]),
                history: history.get(asin).map(Vec::as_slice),
                ts: times.get(r),
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

    #[test]
    fn bm25_by_hand() {
        // two documents: "a a b" and "c"; query {a}
        let mk = |words: &[&str]| {
            let mut tf: HashMap<String, u32> = HashMap::new();
            words
                .iter()
                .for_each(|w| *tf.entry(w.to_string()).or_default() += 1);
            ItemText {
                tf,
                len: words.len(),
                title: HashSet::new(),
                keywords: HashSet::new(),
            }
        };
        let items = [mk(&["a", "a", "b"]), mk(&["c"])];
        let c = Corpus::new(&items);
        let q: BTreeSet<String> = ["a".to_string()].into();
        let idf = ((2.0f64 - 1.0 + 0.5) / (1.0 + 0.5) + 1.0).ln();
        let norm = 1.2 * (1.0 - 0.75 + 0.75 * 3.0 / 2.0);
        let want = idf * 2.0 * 2.2 / (2.0 + norm);
        assert!((c.bm25(&q, &items[0]) - want).abs() < 1e-12);
        assert_eq!(c.bm25(&q, &items[1]), 0.0);
    }
}
