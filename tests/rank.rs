//! Stage 2 on a small synthetic root with the tiny committed BERT: features, `train ranker`,
//! `rerank`, the stage-2 evaluation, and the no-leakage rule of the features.

mod common;

use std::collections::HashMap;

use polars::prelude::*;
use recsys::Ctx;
use recsys::Split;
use recsys::encoder::EncoderArgs;
use recsys::etl::build_items::{self, BuildItemsConfig};
use recsys::eval::{self, EvalConfig, Stage};
use recsys::index::{self, IndexBuildConfig};
use recsys::rank::features::{self, FEATURES};
use recsys::rank::{self, RankerConfig, RerankConfig};
use recsys::retrieve::{self, QuerySettings, QueryType, RetrieveConfig, RetrieverKind};

/// items.parquet and its index with the tiny BERT at `max_length` tokens.
fn index_items(ctx: &Ctx, max_length: usize) {
    build_items::run(ctx, &BuildItemsConfig::default()).unwrap();
    index::build(
        ctx,
        &IndexBuildConfig {
            encoder: EncoderArgs {
                model: common::fixture("encoder").join("tiny-bert"),
                max_length: Some(max_length),
                ..Default::default()
            },
            max_items: None,
        },
    )
    .unwrap();
}

fn root_with_candidates() -> (tempfile::TempDir, Ctx) {
    let (dir, ctx) = common::synth_root(3_000, 150);
    index_items(&ctx, 48);
    for (split, n) in [
        (Split::Train, Some(400)),
        (Split::Valid, None),
        (Split::Test, None),
    ] {
        retrieve::run(
            &ctx,
            &RetrieveConfig {
                split,
                max_queries: n,
                top_k: 30,
                ..Default::default()
            },
        )
        .unwrap();
    }
    (dir, ctx)
}

fn col_f64(df: &DataFrame, name: &str) -> Vec<Option<f64>> {
    df.column(name)
        .unwrap()
        .cast(&DataType::Float64)
        .unwrap()
        .f64()
        .unwrap()
        .iter()
        .collect()
}

#[test]
fn ranker_trains_reranks_and_is_evaluated() {
    let (dir, ctx) = root_with_candidates();
    let out = dir.path().join("models/ranker");
    let s = rank::train(
        &ctx,
        &RankerConfig {
            num_rounds: 20,
            output: Some(out.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(s.info.best_round >= 1 && s.info.best_round <= s.info.rounds_run);
    assert!(s.info.train_queries > 0 && s.info.valid_queries > 0);
    assert_eq!(s.info.importance.len(), FEATURES.len());
    assert!(s.info.importance.iter().any(|f| f.3 > 0), "no split at all");
    assert!(out.join("model.json").is_file());
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ranker.json")).unwrap()).unwrap();
    assert_eq!(info["features"].as_array().unwrap().len(), FEATURES.len());

    let r = rank::rerank(
        &ctx,
        &RerankConfig {
            split: Split::Test,
            model: Some(out.clone()),
        },
    )
    .unwrap();
    let df = recsys::io::read_parquet(&ctx.layout.reranked(Split::Test)).unwrap();
    assert_eq!(df.height(), r.rows);
    for c in [
        "review_id",
        "target_parent_asin",
        "rank",
        "parent_asin",
        "score",
        "rerank_score",
        "rerank_rank",
    ] {
        assert!(df.column(c).is_ok(), "{c} missing");
    }
    // rerank_rank is 1..n within each query and follows rerank_score (desc)
    let ids = df.column("review_id").unwrap().u64().unwrap().clone();
    let rr = df.column("rerank_rank").unwrap().u32().unwrap().clone();
    let sc = df.column("rerank_score").unwrap().f32().unwrap().clone();
    let mut by_q: HashMap<u64, Vec<(u32, f32)>> = HashMap::new();
    for i in 0..df.height() {
        by_q.entry(ids.get(i).unwrap())
            .or_default()
            .push((rr.get(i).unwrap(), sc.get(i).unwrap()));
    }
    assert_eq!(by_q.len(), r.queries);
    for (q, mut v) in by_q {
        v.sort_by_key(|x| x.0);
        assert!(
            v.iter().enumerate().all(|(i, x)| x.0 as usize == i + 1),
            "query {q}"
        );
        assert!(
            v.windows(2).all(|w| w[0].1 >= w[1].1),
            "query {q}: not by score"
        );
    }

    // the stage-2 table: the stage-1 row equals the candidates file's own metrics
    let e = eval::run(
        &ctx,
        &EvalConfig {
            split: Split::Test,
            stage: Stage::All,
        },
    )
    .unwrap();
    let r2 = e.rerank.as_ref().unwrap();
    let dense = &e.runs[0];
    assert_eq!(r2.stage1.queries, dense.metrics.queries);
    assert!((r2.stage1.ndcg_at_5 - dense.metrics.ndcg_at_5).abs() < 1e-12);
    assert!((r2.stage1.mrr - dense.metrics.mrr).abs() < 1e-12);
    assert_eq!(r2.reranked.queries, r2.stage1.queries);
    // re-ranking reorders the same candidates: the share retrieved at all (R@100 ⊇ top 30)
    // cannot change
    assert_eq!(r2.stage1.recall_at(100), r2.reranked.recall_at(100));
    let text = e.to_string();
    assert!(
        text.contains("stage 2") && text.contains("NDCG@5"),
        "{text}"
    );

    // a model trained on another feature list is refused
    let mut bad = info.clone();
    bad["features"][0] = "something_else".into();
    std::fs::write(out.join("ranker.json"), bad.to_string()).unwrap();
    let err = match rank::load(&out) {
        Err(e) => format!("{e:#}"),
        Ok(_) => panic!("a model with another feature list loaded"),
    };
    assert!(err.contains("retrain"), "{err}");
}

/// Popularity and age count only TRAIN reviews before the query (checked against a direct
/// count), and changing every valid/test review changes no feature of the train candidates.
#[test]
fn features_use_nothing_after_the_query() {
    let (_dir, ctx) = root_with_candidates();
    let cands = ctx.layout.candidates(Split::Train, None);
    let before = features::build(&ctx, Split::Train, &cands).unwrap();

    // independent count of earlier TRAIN reviews per candidate row
    let train = recsys::io::read_parquet(&ctx.layout.reviews(Split::Train)).unwrap();
    let mut hist: HashMap<String, Vec<i64>> = HashMap::new();
    let ta = train.column("parent_asin").unwrap().str().unwrap().clone();
    let tt = train.column("timestamp").unwrap().i64().unwrap().clone();
    for i in 0..train.height() {
        hist.entry(ta.get(i).unwrap().to_string())
            .or_default()
            .push(tt.get(i).unwrap());
    }
    let a = before.column("parent_asin").unwrap().str().unwrap().clone();
    let ts = before.column("timestamp").unwrap().i64().unwrap().clone();
    let pop = col_f64(&before, "log_popularity");
    let age = col_f64(&before, "item_age_days");
    let mut own_review_excluded = 0;
    for i in 0..before.height() {
        let h = hist.get(a.get(i).unwrap()).cloned().unwrap_or_default();
        let q = ts.get(i).unwrap();
        let earlier: Vec<i64> = h.iter().copied().filter(|&t| t < q).collect();
        let expect = (1.0 + earlier.len() as f64).ln();
        assert!((pop[i].unwrap() - expect).abs() < 1e-9, "row {i}");
        match earlier.iter().min() {
            Some(&first) => {
                assert!((age[i].unwrap() - (q - first) as f64 / 86_400_000.0).abs() < 1e-6)
            }
            None => assert!(age[i].is_none(), "row {i}: age without an earlier review"),
        }
        if h.contains(&q) {
            own_review_excluded += 1;
        }
    }
    assert!(
        own_review_excluded > 0,
        "the check never met a query's own review"
    );

    // scramble every valid and test review and keyword row: no train feature may move
    for split in [Split::Valid, Split::Test] {
        for path in [ctx.layout.reviews(split), ctx.layout.keywords(split)] {
            if !path.is_file() {
                continue;
            }
            let df = recsys::io::read_parquet(&path).unwrap();
            let n = df.height();
            let mut df = df.slice(0, n / 2);
            recsys::io::write_parquet(&mut df, &path).unwrap();
        }
    }
    let after = features::build(&ctx, Split::Train, &cands).unwrap();
    for f in features::names() {
        let (b, a) = (col_f64(&before, f), col_f64(&after, f));
        assert_eq!(b.len(), a.len());
        let moved = b.iter().zip(&a).position(|(x, y)| x != y);
        assert!(moved.is_none(), "feature {f} moved at row {moved:?}");
    }
}

/// The text features rebuild each query with the settings its candidates were retrieved with:
/// candidates of 3-keyword queries get features of 3-keyword queries (not of the default 20).
#[test]
fn features_use_the_candidates_query_settings() {
    let (_dir, ctx) = common::synth_root(2_000, 120);
    common::keywords_all(&ctx);
    index_items(&ctx, 32);
    let max_keywords = 3;
    let s = retrieve::run(
        &ctx,
        &RetrieveConfig {
            split: Split::Test,
            retriever: RetrieverKind::Popularity,
            query: QuerySettings {
                query_type: QueryType::Keywords,
                max_keywords,
            },
            top_k: 5,
            name: Some("kw3".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let df = features::build(&ctx, Split::Test, &s.out).unwrap();

    // the distinct tokens of each test review's first 3 keywords, counted here independently
    let kw = recsys::io::read_parquet(&ctx.layout.keywords(Split::Test)).unwrap();
    let ids = kw.column("review_id").unwrap().u64().unwrap().clone();
    let lists = kw.column("keywords").unwrap().list().unwrap().clone();
    let mut want: HashMap<u64, (usize, usize)> = HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        let words: Vec<String> = lists
            .get_as_series(i)
            .map(|s| {
                s.str()
                    .unwrap()
                    .iter()
                    .map(|w| w.unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        let distinct = |n: usize| {
            words
                .iter()
                .take(n)
                .flat_map(|w| {
                    w.split(|c: char| !c.is_alphanumeric())
                        .filter(|t| !t.is_empty())
                        .map(str::to_lowercase)
                        .collect::<Vec<_>>()
                })
                .collect::<std::collections::HashSet<_>>()
                .len()
        };
        want.insert(id.unwrap(), (distinct(max_keywords), distinct(20)));
    }
    let got_ids = df.column("review_id").unwrap().u64().unwrap().clone();
    let got = col_f64(&df, "query_tokens");
    let mut differs = 0;
    for (id, q) in got_ids.iter().zip(got) {
        let (three, twenty) = want[&id.unwrap()];
        assert_eq!(q.unwrap() as usize, three, "review {id:?}");
        differs += usize::from(three != twenty);
    }
    assert!(
        differs > 0,
        "no query has more than 3 keywords: the check cannot tell the settings apart"
    );
}
