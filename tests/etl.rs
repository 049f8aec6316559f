//! ETL after the split: offline keywords (real and synthetic text), build-items, the leakage
//! guard, and training pairs.

mod common;

use std::collections::HashMap;

use common::*;
use polars::prelude::*;
use recsys::data::{ReadOptions, read_reviews};
use recsys::etl::build_items::{self, BuildItemsConfig};
use recsys::etl::extract::{MAX_KEYWORDS, extract};
use recsys::etl::pairs::{self, PairFormat, PairsConfig};
use recsys::etl::split::{self, SplitConfig};
use recsys::etl::truth::truth_found;
use recsys::io::read_parquet;
use recsys::retrieve::QueryType;
use recsys::{Ctx, Split};

fn strs(df: &DataFrame, c: &str) -> Vec<Option<String>> {
    df.column(c)
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|s| s.map(String::from))
        .collect()
}

#[test]
fn extractor_on_real_reviews() {
    let path = shared_reviews_file().unwrap_or_else(|| fixture("all_beauty_2018_head.jsonl"));
    let df = read_reviews(
        &path,
        ReadOptions {
            skip_bad_lines: false,
            quiet: true,
        },
    )
    .unwrap()
    .frame;
    let titles = strs(&df, "title");
    let texts = strs(&df, "text");
    let mut with = 0;
    for (t, x) in titles.iter().zip(&texts) {
        let k = extract(t.as_deref().unwrap(), x.as_deref().unwrap(), MAX_KEYWORDS);
        assert!(k.len() <= MAX_KEYWORDS);
        assert!(k.iter().all(|w| w == &w.to_lowercase() && !w.is_empty()));
        for generic in ["great", "love", "product", "five stars"] {
            assert!(!k.contains(&generic.to_string()), "{generic} kept in {k:?}");
        }
        with += (!k.is_empty()) as usize;
    }
    assert!(
        with as f64 >= 0.9 * df.height() as f64,
        "{with} of {} reviews have keywords",
        df.height()
    );
    // a real line: "I bought this to smell nice after I shave. ... smelled like a grandmother with too much perfume."
    let k = extract(
        titles[2].as_deref().unwrap(),
        texts[2].as_deref().unwrap(),
        MAX_KEYWORDS,
    );
    for want in ["shave", "grandmother", "perfume"] {
        assert!(
            k.iter().any(|x| x.contains(want)),
            "{want} missing from {k:?}"
        );
    }
}

/// Share of ground-truth attributes / context phrases found among a review's offline keywords.
#[test]
fn offline_keywords_recover_synthetic_ground_truth() {
    let (_dir, ctx) = synth_root(4_000, 400);
    keywords_all(&ctx);
    let f = truth_found(&ctx, &Split::ALL).unwrap();
    let share = f.share();
    eprintln!(
        "ground truth found among offline keywords: {:.3} of {} ({:?})",
        share, f.total, f.by_kind
    );
    assert!(f.total > 1_000, "{f:?}");
    assert!(
        share >= 0.9,
        "only {share:.3} of ground-truth attributes found"
    );
}

fn items_by_asin(ctx: &Ctx) -> HashMap<String, (String, u32)> {
    let df = read_parquet(&ctx.layout.items()).unwrap();
    let asins = strs(&df, "parent_asin");
    let texts = strs(&df, "embedding_text");
    let n: Vec<u32> = df
        .column("n_keywords")
        .unwrap()
        .u32()
        .unwrap()
        .into_no_null_iter()
        .collect();
    asins
        .into_iter()
        .zip(texts)
        .zip(n)
        .map(|((a, t), n)| (a.unwrap(), (t.unwrap_or_default(), n)))
        .collect()
}

#[test]
fn build_items_writes_seed_format_sections() {
    let t = split::DEFAULT_TRAIN_END;
    let lines = vec![
        review(
            "B076WQZGPM",
            t - 10,
            "Great charcoal cleanser for my oily skin.",
        ),
        review("B076WQZGPM", t - 9, "My oily skin loves it."),
        review("B01CUPMQZE", t - 8, "Softens old leather boots."),
        review("B999MISSING", t - 7, "An item without metadata."),
        review("B000B658RI", t + 10, "A valid-split review."),
    ];
    let (dir, ctx) = data_root(&lines);
    std::fs::copy(
        fixture("meta_messy.jsonl"),
        dir.path().join("raw/meta_All_Beauty.jsonl"),
    )
    .unwrap();
    let s = build_items::run(&ctx, &BuildItemsConfig::default()).unwrap();
    assert_eq!(s.items, 4);
    assert_eq!(s.review_items_missing_from_meta, 1);
    assert_eq!(s.items_with_train_reviews, 2);
    let items = items_by_asin(&ctx);
    let (text, n) = &items["B076WQZGPM"];
    assert!(
        text.starts_with(
            "[Title] Yes to Tomatoes Detoxifying Charcoal Cleanser [Review Keywords] oily skin, "
        ),
        "{text}"
    );
    assert!(text.ends_with("[Description Summary] Clears pores. Use daily. [Features] Pore-purifying charcoal, Free of parabens"), "{text}");
    assert!(*n >= 2);
    // no description, no features: those sections are left out
    let (text, _) = &items["B01CUPMQZE"];
    assert!(
        text.contains("[Review Keywords]")
            && !text.contains("[Features]")
            && !text.contains("[Description"),
        "{text}"
    );
    // no train reviews (only a valid one): no keywords section, empty keyword list
    let (text, n) = &items["B000B658RI"];
    assert_eq!(
        (text.as_str(), *n),
        (
            "[Title] Eye Patch Black Adult with Tie Band (6 Per Pack)",
            0
        )
    );
    assert!(!items.contains_key("B999MISSING"));
    let text = s.to_string();
    assert!(text.contains("missing from the metadata: 1"), "{text}");
    // a second run skips the fresh steps and says so; --force re-runs them
    let again = build_items::run(&ctx, &BuildItemsConfig::default())
        .unwrap()
        .to_string();
    assert_eq!(again.matches("up to date, skipped").count(), 3, "{again}");
    let forced = build_items::run(
        &ctx,
        &BuildItemsConfig {
            force: true,
            ..BuildItemsConfig::default()
        },
    )
    .unwrap();
    assert!(!forced.to_string().contains("skipped (--force"), "{forced}");
}

#[test]
fn no_valid_or_test_text_reaches_items_or_pairs() {
    let (dir, ctx) = synth_root(3_000, 300);
    // Plant a unique token in every valid and test review, then rebuild the splits from it.
    let raw = dir.path().join("raw/All_Beauty.jsonl");
    let t = read_parquet(
        &ctx.layout
            .split_info()
            .with_file_name("reviews_train.parquet"),
    )
    .unwrap();
    let train_ids: std::collections::HashSet<u64> = t
        .column("review_id")
        .unwrap()
        .u64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    let planted: Vec<String> = std::fs::read_to_string(&raw)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if train_ids.contains(&(i as u64 + 1)) {
                l.to_string()
            } else {
                l.replace("\"text\":\"", "\"text\":\"zqxleaktoken ")
                    .replace("\"title\":\"", "\"title\":\"zqxleaktoken ")
            }
        })
        .collect();
    std::fs::write(&raw, planted.join("\n") + "\n").unwrap();
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ctx.layout.split_info()).unwrap()).unwrap();
    split::run(
        &ctx,
        &SplitConfig {
            train_end: info["train_end"].as_i64().unwrap(),
            valid_end: info["valid_end"].as_i64().unwrap(),
            ..SplitConfig::default()
        },
    )
    .unwrap();
    keywords_all(&ctx);
    let test_kw = read_parquet(&ctx.layout.keywords(Split::Test)).unwrap();
    let planted_kw = format!("{:?}", test_kw.column("keywords").unwrap());
    assert!(
        planted_kw.contains("zqxleaktoken"),
        "the token must be extractable, or the guard proves nothing"
    );
    build_items::run(&ctx, &BuildItemsConfig::default()).unwrap();
    pairs::run(
        &ctx,
        &PairsConfig {
            query_type: QueryType::Both,
            format: PairFormat::Triplet,
            max_keywords: 20,
        },
    )
    .unwrap();
    for path in [ctx.layout.items(), ctx.layout.training_pairs()] {
        let df = read_parquet(&path).unwrap();
        for c in df.columns() {
            let leaked = string_values(c).iter().any(|v| v.contains("zqxleaktoken"));
            assert!(
                !leaked,
                "{}: column {} holds valid/test text",
                path.display(),
                c.name()
            );
        }
    }
}

/// Every string of a `str` or `list<str>` column.
fn string_values(c: &Column) -> Vec<String> {
    match c.dtype() {
        DataType::String => c
            .str()
            .unwrap()
            .iter()
            .flatten()
            .map(String::from)
            .collect(),
        DataType::List(inner) if **inner == DataType::String => c
            .list()
            .unwrap()
            .series_iter()
            .flatten()
            .flat_map(|s| {
                s.str()
                    .unwrap()
                    .iter()
                    .flatten()
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn pairs_formats_and_query_types() {
    let (_dir, ctx) = synth_root(3_000, 300);
    build_items::run(&ctx, &BuildItemsConfig::default()).unwrap();
    let train = read_parquet(&ctx.layout.reviews(Split::Train))
        .unwrap()
        .height();

    let s = pairs::run(
        &ctx,
        &PairsConfig {
            query_type: QueryType::Both,
            format: PairFormat::Pair,
            max_keywords: 20,
        },
    )
    .unwrap();
    assert_eq!(s.missing_items, 0);
    assert!(s.empty_queries > 0, "synthetic data has empty texts: {s}");
    assert_eq!(
        s.keyword_rows + s.review_text_rows + s.empty_queries,
        2 * train,
        "{s}"
    );
    let df = read_parquet(&ctx.layout.training_pairs()).unwrap();
    assert_eq!(
        df.get_column_names(),
        [
            "query",
            "positive",
            "parent_asin",
            "query_type",
            "review_id"
        ]
    );
    assert!(
        strs(&df, "query")
            .iter()
            .all(|q| !q.as_deref().unwrap().is_empty())
    );
    let first_run = strs(&df, "query");

    pairs::run(
        &ctx,
        &PairsConfig {
            query_type: QueryType::Both,
            format: PairFormat::Pair,
            max_keywords: 20,
        },
    )
    .unwrap();
    assert_eq!(
        strs(
            &read_parquet(&ctx.layout.training_pairs()).unwrap(),
            "query"
        ),
        first_run,
        "same seed, same order"
    );

    let s = pairs::run(
        &ctx,
        &PairsConfig {
            query_type: QueryType::Keywords,
            format: PairFormat::Triplet,
            max_keywords: 3,
        },
    )
    .unwrap();
    assert_eq!(s.review_text_rows, 0);
    let df = read_parquet(&ctx.layout.training_pairs()).unwrap();
    let (p, n) = (strs(&df, "parent_asin"), strs(&df, "negative_parent_asin"));
    assert!(
        p.iter().zip(&n).all(|(a, b)| a != b),
        "a negative is never the positive item"
    );
    assert!(
        strs(&df, "query")
            .iter()
            .all(|q| q.as_deref().unwrap().split(", ").count() <= 3)
    );
    assert!(
        strs(&df, "negative")
            .iter()
            .all(|q| q.as_deref().is_some_and(|t| t.starts_with("[Title]")))
    );
}

#[test]
fn descriptions_without_summary_are_cut_at_a_word_boundary() {
    let (dir, ctx) = data_root(&[review("B076WQZGPM", 1_000, "Nice cleanser.")]);
    std::fs::copy(
        fixture("meta_messy.jsonl"),
        dir.path().join("raw/meta_All_Beauty.jsonl"),
    )
    .unwrap();
    let cfg = BuildItemsConfig {
        description_chars: 20,
        ..BuildItemsConfig::default()
    };
    build_items::run(&ctx, &cfg).unwrap();
    let (text, _) = &items_by_asin(&ctx)["B076WQZGPM"];
    // "Clears pores. Use daily." is 24 characters: cut to 20, back to the last whole word
    assert!(
        text.contains("[Description Summary] Clears pores. Use… [Features]"),
        "{text}"
    );
}

/// `recsys etl build-items` run alone makes the split it needs with the settings file's
/// `[split]`, not the default cut-off dates: its TRAIN split equals `etl split --quantiles` run
/// on its own.
#[test]
fn build_items_alone_honours_the_settings_files_split() {
    let (dir, ctx) = synth_raw(600, 60);
    let settings = dir.path().join("recsys.toml");
    std::fs::write(&settings, "[split]\nquantiles = [0.5, 0.75]\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_recsys"))
        .arg("--config")
        .arg(&settings)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--quiet", "etl", "build-items"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(ctx.layout.items().is_file());

    let (ref_dir, ref_ctx) = synth_raw(600, 60);
    split::run(
        &ref_ctx,
        &SplitConfig {
            quantiles: Some(vec![0.5, 0.75]),
            ..SplitConfig::default()
        },
    )
    .unwrap();
    for s in Split::ALL {
        let a = read_parquet(&ctx.layout.reviews(s)).unwrap();
        let b = read_parquet(&ref_ctx.layout.reviews(s)).unwrap();
        assert!(a.height() > 0, "{s} is empty");
        assert!(
            a.equals_missing(&b),
            "{s} differs from etl split --quantiles 0.5,0.75"
        );
    }
    drop(ref_dir);
}
