//! `retrieve` + `eval` on a small synthetic root with the tiny committed BERT encoder:
//! candidate files, counts, baselines, and the metrics cross-checked with DuckDB.

mod common;

use std::process::Command;

use recsys::Ctx;
use recsys::Split;
use recsys::encoder::EncoderArgs;
use recsys::etl::build_items::{self, BuildItemsConfig};
use recsys::eval::{self, EvalConfig};
use recsys::index::{self, IndexBuildConfig};
use recsys::io::read_parquet;
use recsys::retrieve::{
    self, QuerySettings, QueryType, RetrieveConfig, RetrieverKind as Retriever,
};

fn pipeline() -> (tempfile::TempDir, Ctx) {
    pipeline_of(2_000, 200)
}

/// Synthetic root → keywords → items → index with the tiny BERT.
fn pipeline_of(reviews: usize, items: usize) -> (tempfile::TempDir, Ctx) {
    indexed(reviews, items, 48, None)
}

/// The same with the index's sequence length and item count chosen.
fn indexed(
    reviews: usize,
    items: usize,
    max_length: usize,
    max_items: Option<usize>,
) -> (tempfile::TempDir, Ctx) {
    let (dir, ctx) = common::synth_root(reviews, items);
    common::keywords_all(&ctx);
    build_items::run(&ctx, &BuildItemsConfig::default()).unwrap();
    let cfg = IndexBuildConfig {
        encoder: EncoderArgs {
            model: common::fixture("encoder/tiny-bert"),
            max_length: Some(max_length),
            ..EncoderArgs::default()
        },
        max_items,
    };
    index::build(&ctx, &cfg).unwrap();
    (dir, ctx)
}

fn retrieve_with(ctx: &Ctx, retriever: Retriever, top_k: usize) -> retrieve::RetrieveSummary {
    let cfg = RetrieveConfig {
        split: Split::Test,
        retriever,
        top_k,
        ..RetrieveConfig::default()
    };
    retrieve::run(ctx, &cfg).unwrap()
}

#[test]
fn retrieve_and_eval_every_retriever() {
    let (_dir, ctx) = pipeline();
    let test_reviews = read_parquet(&ctx.layout.reviews(Split::Test))
        .unwrap()
        .height();
    for r in [
        Retriever::Dense,
        Retriever::Bm25,
        Retriever::Hybrid,
        Retriever::Popularity,
    ] {
        let s = retrieve_with(&ctx, r, 20);
        assert_eq!(s.reviews, test_reviews);
        assert_eq!(
            s.queries + s.empty_queries + s.not_in_index,
            test_reviews,
            "{r:?}: every review is queried or counted"
        );
        let df = read_parquet(&s.out).unwrap();
        let cols: Vec<&str> = df.get_column_names().iter().map(|c| c.as_str()).collect();
        assert_eq!(
            cols,
            [
                "review_id",
                "user_id",
                "target_parent_asin",
                "rank",
                "parent_asin",
                "score",
                "retriever",
                "model"
            ]
        );
        let per_query = df
            .column("review_id")
            .unwrap()
            .as_materialized_series()
            .n_unique()
            .unwrap();
        assert_eq!(per_query, s.queries, "{r:?}: one group per query");
        assert!(df.height() <= s.queries * 20);
        if r != Retriever::Bm25 {
            assert_eq!(df.height(), s.queries * 20, "{r:?}: full top-k lists");
        }
    }
    let files: Vec<String> = eval::candidate_files(&ctx, Split::Test)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(files, ["", "bm25", "hybrid", "popularity"]);

    let report = eval::run(
        &ctx,
        &EvalConfig {
            split: Split::Test,
            stage: Default::default(),
        },
    )
    .unwrap();
    assert_eq!(report.runs.len(), 4);
    let text = report.to_string();
    assert!(text.contains("R@10") && text.contains("MRR") && text.contains("popularity"));
    let svg = std::fs::read_to_string(&report.plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() == 4);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report.json).unwrap()).unwrap();
    assert_eq!(json["runs"].as_array().unwrap().len(), 4);
    for run in &report.runs {
        let m = &run.metrics;
        // K beyond the candidate depth cannot add hits
        let r20 = m.recall_at(20).unwrap();
        assert_eq!(m.recall_at(100).unwrap(), r20, "{}", run.label());
        assert!(m.recall.windows(2).all(|w| w[0].hits <= w[1].hits));
        assert!(m.mrr <= r20 + 1e-12);
    }
    // The synthetic reviews name their item's attributes: every real retriever beats chance.
    let dense = &report.runs[0];
    assert!(
        dense.metrics.recall_at(20).unwrap() > 20.0 / 200.0,
        "{dense:?}"
    );

    // Cross-check with DuckDB over the same files.
    if !common::duckdb("eval::retrieve_and_eval_every_retriever (its DuckDB cross-check)") {
        return;
    }
    for run in &report.runs {
        let sql = format!(
            "SELECT count(*), sum(CASE WHEN r <= 1 THEN 1 ELSE 0 END), \
             sum(CASE WHEN r <= 10 THEN 1 ELSE 0 END), sum(coalesce(1.0 / r, 0)) / count(*) \
             FROM (SELECT review_id, min(CASE WHEN parent_asin = target_parent_asin THEN rank END) AS r \
                   FROM read_parquet('{}') GROUP BY review_id)",
            run.file.display()
        );
        let out = Command::new("duckdb")
            .args(["-csv", "-noheader", "-c", &sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let v: Vec<f64> = line.split(',').map(|x| x.parse().unwrap()).collect();
        let m = &run.metrics;
        assert_eq!(v[0] as usize, m.queries, "{}", run.label());
        assert_eq!(v[1] as usize, m.recall[0].hits, "{}", run.label());
        assert_eq!(v[2] as usize, m.recall[2].hits, "{}", run.label());
        assert!(
            (v[3] - m.mrr).abs() < 1e-9,
            "{}: {} vs {}",
            run.label(),
            v[3],
            m.mrr
        );
    }
}

#[test]
fn popularity_lists_the_most_reviewed_items_and_samples_are_seeded() {
    let (_dir, ctx) = pipeline();
    let s = retrieve_with(&ctx, Retriever::Popularity, 5);
    let df = read_parquet(&s.out).unwrap();
    let scores: Vec<f32> = df
        .column("score")
        .unwrap()
        .f32()
        .unwrap()
        .iter()
        .take(5)
        .map(|x| x.unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    let items = read_parquet(&ctx.layout.items()).unwrap();
    let max = items
        .column("train_review_count")
        .unwrap()
        .u32()
        .unwrap()
        .iter()
        .flatten()
        .max()
        .unwrap();
    assert_eq!(scores[0], max as f32);

    let sample = |seed: u64| {
        let c = Ctx::new(&ctx.layout.root, "All_Beauty", seed, true);
        let cfg = RetrieveConfig {
            retriever: Retriever::Popularity,
            max_queries: Some(25),
            top_k: 3,
            ..RetrieveConfig::default()
        };
        let s = retrieve::run(&c, &cfg).unwrap();
        assert!(s.sampled);
        let df = read_parquet(&s.out).unwrap();
        let ids: Vec<u64> = df
            .column("review_id")
            .unwrap()
            .u64()
            .unwrap()
            .iter()
            .flatten()
            .collect();
        ids
    };
    let a = sample(1);
    assert_eq!(a.len(), 25 * 3);
    assert_eq!(a, sample(1), "same seed, same sample");
    assert_ne!(a, sample(2));
}

#[test]
fn eval_without_candidates_says_what_to_run() {
    let (_dir, ctx) = common::synth_root(300, 30);
    let e = eval::run(
        &ctx,
        &EvalConfig {
            split: Split::Valid,
            stage: Default::default(),
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("recsys retrieve --split valid"), "{e}");
}

#[test]
fn ann_retrieval_reports_its_recall_against_exact() {
    let (_dir, ctx) = pipeline_of(3_000, 300);
    let run = |ann: bool| {
        let cfg = RetrieveConfig {
            ann,
            top_k: 10,
            ..RetrieveConfig::default()
        };
        retrieve::run(&ctx, &cfg).unwrap()
    };
    let exact = run(false);
    assert!(exact.ann_recall.is_none());
    let ann = run(true);
    assert!(ann.out.ends_with("candidates_test_dense_ann.parquet"));
    let a = ann.ann_recall.unwrap();
    assert_eq!(a.sampled_queries, ann.queries.min(1_000));
    assert!(
        (0.0..=1.0).contains(&a.ann_recall_vs_exact) && a.ann_recall_vs_exact > 0.2,
        "{a:?}"
    );
    let report = eval::run(
        &ctx,
        &EvalConfig {
            split: Split::Test,
            stage: Default::default(),
        },
    )
    .unwrap();
    let r = report.runs.iter().find(|r| r.name == "dense_ann").unwrap();
    assert_eq!(r.ann.unwrap().sampled_queries, a.sampled_queries);
    assert!(report.to_string().contains("of the exact top-K"));
    // the exact search stays exact after the vector index exists
    let again = run(false);
    assert!(
        read_parquet(&again.out)
            .unwrap()
            .equals_missing(&read_parquet(&exact.out).unwrap())
    );
}

#[test]
fn ann_needs_enough_items_to_train() {
    let (_dir, ctx) = pipeline();
    let cfg = RetrieveConfig {
        ann: true,
        ..RetrieveConfig::default()
    };
    let e = format!("{:#}", retrieve::run(&ctx, &cfg).err().unwrap());
    assert!(e.contains("at least 256 items"), "{e}");
}

#[test]
fn failed_keyword_extractions_are_counted_as_empty_queries() {
    use polars::prelude::*;
    let (_dir, ctx) = pipeline();
    let path = ctx.layout.keywords(Split::Test);
    let mut kw = read_parquet(&path).unwrap();
    let n = kw.height();
    let failed: Vec<bool> = (0..n).map(|i| i % 4 == 0).collect();
    kw.with_column(Column::new("keywords_failed".into(), failed))
        .unwrap();
    recsys::io::write_parquet(&mut kw, &path).unwrap();
    let cfg = RetrieveConfig {
        retriever: Retriever::Popularity,
        query: QuerySettings {
            query_type: QueryType::Keywords,
            ..Default::default()
        },
        top_k: 3,
        ..RetrieveConfig::default()
    };
    let s = retrieve::run(&ctx, &cfg).unwrap();
    assert_eq!(s.reviews, n, "no review is lost");
    assert!(s.empty_queries >= n.div_ceil(4), "{s}");
    assert_eq!(s.queries + s.empty_queries + s.not_in_index, n);
}

#[test]
fn recall_over_all_reviews_counts_unindexed_targets_as_misses() {
    let (_dir, ctx) = indexed(1_500, 150, 32, Some(75));
    let s = retrieve_with(&ctx, Retriever::Popularity, 100);
    assert!(s.not_in_index > 0, "{s}");
    let run = eval::score_file("popularity", &s.out).unwrap();
    let all = run
        .over_all
        .as_ref()
        .expect("the record counts the split's reviews");
    assert_eq!(all.queries, s.reviews);
    assert_eq!(run.metrics.queries, s.queries);
    for (a, f) in all.recall.iter().zip(&run.metrics.recall) {
        assert_eq!(a.hits, f.hits);
        let expected = f.hits as f64 / s.reviews as f64;
        assert!(
            (a.recall - expected).abs() < 1e-12,
            "{} vs {expected}",
            a.recall
        );
    }
    // every indexed item is among 100 popularity candidates of 75 items: findable R@100 = 1
    assert_eq!(run.metrics.recall_at(100), Some(1.0));
    assert!(all.recall_at(100).unwrap() < 1.0);
    assert!(!run.estimated);
}
