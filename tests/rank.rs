//! Stage 2 on a small synthetic root with the tiny committed BERT: features, `train ranker`,
//! `rerank`, the stage-2 evaluation, and the no-leakage rule of the features.

mod common;

use std::collections::{HashMap, HashSet};

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
    returning_users(&ctx, 150);
    index_items(&ctx, 48);
    for split in [Split::Valid, Split::Test] {
        retrieve::run(
            &ctx,
            &RetrieveConfig {
                split,
                top_k: 30,
                ..Default::default()
            },
        )
        .unwrap();
    }
    (dir, ctx)
}

/// Synthetic users rarely come back; give the reviews `n` users so that the user features
/// have earlier reviews to count.
fn returning_users(ctx: &Ctx, n: u64) {
    for split in Split::ALL {
        let path = ctx.layout.reviews(split);
        let mut df = recsys::io::read_parquet(&path).unwrap();
        let users: Vec<String> = df
            .column("review_id")
            .unwrap()
            .u64()
            .unwrap()
            .iter()
            .map(|id| format!("U{:03}", id.unwrap() % n))
            .collect();
        df.with_column(Column::new("user_id".into(), users))
            .unwrap();
        recsys::io::write_parquet(&mut df, &path).unwrap();
    }
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

fn col_str(df: &DataFrame, name: &str) -> Vec<String> {
    df.column(name)
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|v| v.unwrap_or("").to_string())
        .collect()
}

fn col_i64(df: &DataFrame, name: &str) -> Vec<i64> {
    df.column(name)
        .unwrap()
        .cast(&DataType::Int64)
        .unwrap()
        .i64()
        .unwrap()
        .iter()
        .map(|v| v.unwrap())
        .collect()
}

#[test]
fn ranker_trains_reranks_and_is_evaluated() {
    let (dir, ctx) = root_with_candidates();
    let out = dir.path().join("models/ranker");
    let s = rank::train(
        &ctx,
        &RankerConfig {
            num_rounds: 10,
            ablation: true,
            output: Some(out.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let i = &s.info;
    assert!(i.best_round >= 1 && i.best_round <= i.rounds_run);
    assert!(i.learn_queries > 0 && i.holdout_queries > 0);
    // the hold-out is the latest quarter of the valid queries that found their target
    let kept = i.learn_queries + i.holdout_queries;
    assert!(
        i.holdout_queries.abs_diff(kept / 4) <= kept / 10 + 1,
        "{i:?}"
    );
    assert_eq!(i.importance.len(), FEATURES.len());
    assert!(i.importance.iter().any(|f| f.3 > 0), "no split at all");
    assert!(out.join("model.json").is_file());
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ranker.json")).unwrap()).unwrap();
    assert_eq!(info["features"].as_array().unwrap().len(), FEATURES.len());
    // the ablation: the full model, then one row per feature
    assert_eq!(s.ablation.len(), FEATURES.len() + 1);
    assert!(out.join("ablation.json").is_file());
    assert!((s.ablation[0].holdout_ndcg_at_5 - i.holdout_ndcg_at_5).abs() < 1e-12);
    for (row, f) in s.ablation[1..].iter().zip(FEATURES) {
        assert_eq!(row.feature, f.name);
    }
    assert!(s.to_string().contains("ablation"));

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
    // the ablation's test NDCG@5 of the full model is the re-ranked order's, computed apart
    let full_test = s.ablation[0].test_ndcg_at_5.unwrap();
    assert!(
        (full_test - r2.reranked.ndcg_at_5).abs() < 1e-9,
        "{full_test} vs {}",
        r2.reranked.ndcg_at_5
    );
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

/// One review event as the test reads it back from the split files.
struct Event {
    item: String,
    user: String,
    ts: i64,
    rating: f64,
}

fn all_events(ctx: &Ctx) -> Vec<Event> {
    let mut out = Vec::new();
    for split in Split::ALL {
        let df = recsys::io::read_parquet(&ctx.layout.reviews(split)).unwrap();
        let (items, users) = (col_str(&df, "parent_asin"), col_str(&df, "user_id"));
        let (ts, ratings) = (col_i64(&df, "timestamp"), col_f64(&df, "rating"));
        for i in 0..df.height() {
            out.push(Event {
                item: items[i].clone(),
                user: users[i].clone(),
                ts: ts[i],
                rating: ratings[i].unwrap(),
            });
        }
    }
    out
}

/// Every as-of feature equals a direct count over the reviews of all splits strictly before
/// the query (the query's own review, at its time, never counts), and `user_similarity` equals
/// the mean of the index vectors of the user's earlier items, computed here apart.
#[test]
fn time_and_user_features_match_a_direct_count() {
    let (_dir, ctx) = root_with_candidates();
    let df = features::build(&ctx, Split::Test, &ctx.layout.candidates(Split::Test, None)).unwrap();
    let events = all_events(&ctx);
    let index = recsys::index::ItemIndex::open(&ctx).unwrap();
    let catalog = recsys::retrieve::Catalog::open(&index, true).unwrap();
    let (items, users) = (col_str(&df, "parent_asin"), col_str(&df, "user_id"));
    let ts = col_i64(&df, "timestamp");
    let f = |name: &str| col_f64(&df, name);
    let (n, n30, n90, n365) = (
        f("item_reviews"),
        f("item_reviews_30d"),
        f("item_reviews_90d"),
        f("item_reviews_365d"),
    );
    let (mean, age, since) = (
        f("item_rating_mean"),
        f("item_age_days"),
        f("days_since_last_review"),
    );
    let (un, uin, sim) = (
        f("user_reviews"),
        f("user_reviewed_item"),
        f("user_similarity"),
    );
    let day = 86_400_000i64;
    let close = |a: Option<f64>, b: Option<f64>, what: &str, row: usize| match (a, b) {
        (Some(a), Some(b)) => assert!((a - b).abs() < 1e-4, "{what} row {row}: {a} vs {b}"),
        (a, b) => assert_eq!(a, b, "{what} row {row}"),
    };
    let (mut own, mut returning, mut repeat_item) = (0, 0, 0);
    for r in 0..df.height() {
        let t = ts[r];
        let item_ev: Vec<&Event> = events
            .iter()
            .filter(|e| e.item == items[r] && e.ts < t)
            .collect();
        let within = |d: i64| item_ev.iter().filter(|e| e.ts >= t - d * day).count() as f64;
        close(n[r], Some(item_ev.len() as f64), "item_reviews", r);
        close(n30[r], Some(within(30)), "item_reviews_30d", r);
        close(n90[r], Some(within(90)), "item_reviews_90d", r);
        close(n365[r], Some(within(365)), "item_reviews_365d", r);
        let k = item_ev.len() as f64;
        let sum: f64 = item_ev.iter().map(|e| e.rating).sum();
        close(mean[r], (k > 0.0).then(|| sum / k), "item_rating_mean", r);
        let first = item_ev.iter().map(|e| e.ts).min();
        let last = item_ev.iter().map(|e| e.ts).max();
        let days = |x: Option<i64>| x.map(|x| (t - x) as f64 / day as f64);
        close(age[r], days(first), "item_age_days", r);
        close(since[r], days(last), "days_since_last_review", r);
        let user_ev: Vec<&Event> = events
            .iter()
            .filter(|e| e.user == users[r] && e.ts < t)
            .collect();
        close(un[r], Some(user_ev.len() as f64), "user_reviews", r);
        let ui = user_ev.iter().filter(|e| e.item == items[r]).count();
        close(uin[r], Some(ui as f64), "user_reviewed_item", r);
        // the profile: unit mean of the earlier items' vectors
        let mut p = vec![0f64; catalog.vectors.dim];
        let mut any = false;
        for e in &user_ev {
            if let Some(i) = catalog.position(&e.item) {
                any = true;
                for (a, b) in p.iter_mut().zip(catalog.vectors.row(i as usize)) {
                    *a += *b as f64;
                }
            }
        }
        let norm = p.iter().map(|x| x * x).sum::<f64>().sqrt();
        let want = match (any && norm > 0.0, catalog.position(&items[r])) {
            (true, Some(i)) => Some(
                p.iter()
                    .zip(catalog.vectors.row(i as usize))
                    .map(|(a, b)| a / norm * *b as f64)
                    .sum::<f64>(),
            ),
            _ => None,
        };
        close(sim[r], want, "user_similarity", r);
        own += events
            .iter()
            .any(|e| e.item == items[r] && e.user == users[r] && e.ts == t) as usize;
        returning += (!user_ev.is_empty()) as usize;
        repeat_item += (ui > 0) as usize;
    }
    assert!(own > 0, "the check never met a query's own review");
    assert!(
        returning > 0 && repeat_item > 0,
        "no returning user: the check is empty"
    );
}

/// Reviews planted after every query, and at exactly one query's time, move no feature; the
/// text of every other valid and test review moves no feature of that query.
#[test]
fn future_events_and_other_reviews_texts_move_nothing() {
    let (_dir, ctx) = root_with_candidates();
    let cands = ctx.layout.candidates(Split::Test, None);
    let before = features::build(&ctx, Split::Test, &cands).unwrap();
    let ids: Vec<u64> = before
        .column("review_id")
        .unwrap()
        .u64()
        .unwrap()
        .iter()
        .map(|v| v.unwrap())
        .collect();
    let q0 = ids[0];
    let same = |after: &DataFrame, rows: &dyn Fn(usize) -> bool, what: &str| {
        assert_eq!(before.height(), after.height());
        for name in features::names() {
            let (b, a) = (col_f64(&before, name), col_f64(after, name));
            let moved = (0..b.len()).find(|&i| rows(i) && b[i] != a[i]);
            assert!(moved.is_none(), "{what}: {name} moved at row {moved:?}");
        }
    };

    // plant: a copy of every test review one day after the last query, for the same item and
    // user; and, at q0's exact time, q0's user reviewing each of q0's candidates
    let path = ctx.layout.reviews(Split::Valid);
    let valid = recsys::io::read_parquet(&path).unwrap();
    let test = recsys::io::read_parquet(&ctx.layout.reviews(Split::Test)).unwrap();
    let t_max = col_i64(&test, "timestamp").into_iter().max().unwrap();
    let mut later = test.clone();
    let n = later.height();
    later
        .with_column(Column::new("timestamp".into(), vec![t_max + 86_400_000; n]))
        .unwrap();
    let row0 = test
        .clone()
        .lazy()
        .filter(col("review_id").eq(lit(q0)))
        .collect()
        .unwrap();
    let cands0: Vec<String> = col_str(&before, "parent_asin")
        .into_iter()
        .zip(&ids)
        .filter(|(_, id)| **id == q0)
        .map(|(a, _)| a)
        .collect();
    let mut planted = valid.clone();
    for (k, asin) in cands0.iter().enumerate() {
        let mut r = row0.clone();
        r.with_column(Column::new("parent_asin".into(), [asin.as_str()]))
            .unwrap();
        r.with_column(Column::new("review_id".into(), [10_000_000u64 + k as u64]))
            .unwrap();
        planted.vstack_mut(&r).unwrap();
    }
    // at q0's time: q0's rows do not move (later queries may legitimately see them)
    recsys::io::write_parquet(&mut planted.clone(), &path).unwrap();
    let after = features::build(&ctx, Split::Test, &cands).unwrap();
    same(&after, &|i| ids[i] == q0, "reviews at the query's own time");
    let seen_later = (0..ids.len()).any(|i| {
        ids[i] != q0 && col_f64(&before, "item_reviews")[i] != col_f64(&after, "item_reviews")[i]
    });
    assert!(
        seen_later,
        "no later query saw the planted reviews: the check cannot fail"
    );
    // after the last query: nothing moves
    let later_ids: Vec<u64> = (0..n as u64).map(|i| 20_000_000 + i).collect();
    later
        .with_column(Column::new("review_id".into(), later_ids))
        .unwrap();
    let mut planted = valid.clone();
    planted.vstack_mut(&later).unwrap();
    recsys::io::write_parquet(&mut planted, &path).unwrap();
    let after = features::build(&ctx, Split::Test, &cands).unwrap();
    same(&after, &|_| true, "reviews after every query");
    recsys::io::write_parquet(&mut valid.clone(), &path).unwrap();

    // every other valid / test review's text replaced: q0's rows do not move
    for split in [Split::Valid, Split::Test] {
        let p = ctx.layout.reviews(split);
        let mut df = recsys::io::read_parquet(&p).unwrap();
        let keep: Vec<bool> = df
            .column("review_id")
            .unwrap()
            .u64()
            .unwrap()
            .iter()
            .map(|id| id == Some(q0))
            .collect();
        for c in ["title", "text"] {
            let old = col_str(&df, c);
            let new: Vec<String> = old
                .iter()
                .zip(&keep)
                .map(|(o, &k)| if k { o.clone() } else { "zebra quartz".into() })
                .collect();
            df.with_column(Column::new(c.into(), new)).unwrap();
        }
        recsys::io::write_parquet(&mut df, &p).unwrap();
    }
    let after = features::build(&ctx, Split::Test, &cands).unwrap();
    same(&after, &|i| ids[i] == q0, "other reviews' texts");
    // (and the texts do reach their own queries: the check can fail)
    let moved = features::names().iter().any(|name| {
        col_f64(&before, name)
            .iter()
            .zip(col_f64(&after, name))
            .any(|(b, a)| *b != a)
    });
    assert!(moved, "no feature read the query texts at all");
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

    // keyword_overlap recomputed here from each test review's first 3 (and first 20) keywords
    let words_of = |df: &DataFrame, i: usize| -> Vec<String> {
        df.column("keywords")
            .unwrap()
            .list()
            .unwrap()
            .get_as_series(i)
            .map(|s| {
                s.str()
                    .unwrap()
                    .iter()
                    .map(|w| w.unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let token_set = |words: &[String]| -> HashSet<String> {
        words
            .iter()
            .flat_map(|w| {
                w.split(|c: char| !c.is_alphanumeric())
                    .filter(|t| !t.is_empty())
                    .map(str::to_lowercase)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let kw = recsys::io::read_parquet(&ctx.layout.keywords(Split::Test)).unwrap();
    let mut queries: HashMap<u64, (HashSet<String>, HashSet<String>)> = HashMap::new();
    for (i, id) in col_i64(&kw, "review_id").into_iter().enumerate() {
        let words = words_of(&kw, i);
        let n = words.len();
        queries.insert(
            id as u64,
            (
                token_set(&words[..max_keywords.min(n)]),
                token_set(&words[..20.min(n)]),
            ),
        );
    }
    let items = recsys::io::read_parquet(&ctx.layout.items()).unwrap();
    let item_tokens: HashMap<String, HashSet<String>> = col_str(&items, "parent_asin")
        .into_iter()
        .enumerate()
        .map(|(i, a)| (a, token_set(&words_of(&items, i))))
        .collect();
    let share = |q: &HashSet<String>, it: &HashSet<String>| {
        if q.is_empty() {
            0.0
        } else {
            q.iter().filter(|t| it.contains(*t)).count() as f64 / q.len() as f64
        }
    };
    let got = col_f64(&df, "keyword_overlap");
    let (ids, asins) = (col_i64(&df, "review_id"), col_str(&df, "parent_asin"));
    let mut differs = 0;
    for r in 0..df.height() {
        let (three, twenty) = &queries[&(ids[r] as u64)];
        let it = &item_tokens[&asins[r]];
        let want = share(three, it);
        assert!((got[r].unwrap() - want).abs() < 1e-12, "row {r}");
        differs += usize::from((share(twenty, it) - want).abs() > 1e-12);
    }
    assert!(
        differs > 0,
        "no row's overlap differs between 3 and 20 keywords: the check cannot tell the settings apart"
    );
}
