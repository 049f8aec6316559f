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
use super::catalog::{BASE_SCORE, DAY_MS, How, RowFn, RowInput};
pub use super::catalog::{FEATURES, Feature, doc_table, names};
use super::text::{Corpus, ItemText, tokens};
use crate::cols;
use crate::context::Ctx;
use crate::index::ItemIndex;
use crate::io::{self, strings};
use crate::layout::Split;
use crate::retrieve::{CandidatesRecord, Catalog, RetrieverKind};

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

/// The split's base dense run (`candidates_{split}.parquet`, no name) when `candidates` is
/// another dense run with another model — typically base vs fine-tuned: its path and model.
pub fn base_run(ctx: &Ctx, split: Split, candidates: &Path) -> Result<Option<(PathBuf, String)>> {
    let path = ctx.layout.candidates(split, None);
    if path == candidates || !path.is_file() {
        return Ok(None);
    }
    let ours = CandidatesRecord::read(candidates)?;
    Ok(CandidatesRecord::read_optional(&path)?
        .filter(|r| {
            r.retriever == RetrieverKind::Dense
                && ours.retriever == RetrieverKind::Dense
                && r.model != ours.model
        })
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
