//! `etl split`: inclusive cutoffs, quantile cutoffs, summaries, and nothing half-written.

mod common;

use common::*;
use polars::prelude::*;
use recsys::Split;
use recsys::etl::split::{self, SplitConfig};
use recsys::io::read_parquet;

const T: i64 = split::DEFAULT_TRAIN_END;
const V: i64 = split::DEFAULT_VALID_END;

fn ids(ctx: &recsys::Ctx, s: Split) -> Vec<u64> {
    let df = read_parquet(&ctx.layout.reviews(s)).unwrap();
    df.column("review_id")
        .unwrap()
        .u64()
        .unwrap()
        .into_no_null_iter()
        .collect()
}

#[test]
fn split_is_inclusive_at_both_cutoffs() {
    let lines: Vec<String> = [T - 1, T, T + 1, V, V + 1]
        .iter()
        .enumerate()
        .map(|(i, &ts)| review(&format!("B{i}"), ts, "text"))
        .collect();
    let (_dir, ctx) = data_root(&lines);
    let s = split::run(&ctx, &SplitConfig::default()).unwrap();
    assert_eq!((s.train_rows, s.valid_rows, s.test_rows), (2, 2, 1));
    assert_eq!(ids(&ctx, Split::Train), vec![1, 2]);
    assert_eq!(ids(&ctx, Split::Valid), vec![3, 4]);
    assert_eq!(ids(&ctx, Split::Test), vec![5]);
    // the raw columns survive, the temporary split column does not
    let df = read_parquet(&ctx.layout.reviews(Split::Test)).unwrap();
    assert!(df.column("split").is_err());
    assert_eq!(
        df.column("timestamp").unwrap().i64().unwrap().get(0),
        Some(V + 1)
    );
}

#[test]
fn quantile_cutoffs_are_timestamps_of_the_data() {
    let lines: Vec<String> = (1..=10).map(|i| review("B1", i * 1000, "t")).collect();
    let (_dir, ctx) = data_root(&lines);
    let cfg = SplitConfig {
        quantiles: Some(vec![0.8, 0.9]),
        ..SplitConfig::default()
    };
    let s = split::run(&ctx, &cfg).unwrap();
    assert_eq!((s.train_end, s.valid_end), (8000, 9000));
    assert_eq!((s.train_rows, s.valid_rows, s.test_rows), (8, 1, 1));
}

#[test]
fn bad_quantiles_are_refused() {
    let (_dir, ctx) = data_root(&[review("B1", 1000, "t")]);
    for q in [vec![0.9, 0.8], vec![0.5], vec![0.0, 0.5], vec![0.5, 1.5]] {
        let cfg = SplitConfig {
            quantiles: Some(q.clone()),
            ..SplitConfig::default()
        };
        assert!(split::run(&ctx, &cfg).is_err(), "{q:?} accepted");
    }
}

#[test]
fn seen_in_train_shares_count_items_and_reviews() {
    // train: A, B; valid: A (seen), C (unseen); test: B, B (seen)
    let lines = vec![
        review("A", T - 5, "t"),
        review("B", T - 4, "t"),
        review("A", T + 5, "t"),
        review("C", T + 6, "t"),
        review("B", V + 1, "t"),
        review("B", V + 2, "t"),
    ];
    let (_dir, ctx) = data_root(&lines);
    let s = split::run(&ctx, &SplitConfig::default()).unwrap();
    assert_eq!(s.valid_items_seen, (1, 2));
    assert_eq!(s.valid_reviews_seen, (1, 2));
    assert_eq!(s.test_items_seen, (1, 1));
    assert_eq!(s.test_reviews_seen, (2, 2));
    let text = s.to_string();
    assert!(
        text.contains("valid 50.0% of items") && text.contains("2021-05-24 14:47:51 UTC"),
        "{text}"
    );
    // split.json records the cutoffs for later stages
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ctx.layout.split_info()).unwrap()).unwrap();
    assert_eq!(info["train_end"], T);
}

#[test]
fn bad_line_stops_the_split_and_writes_nothing() {
    let lines = vec![
        review("A", 1, "t"),
        "{oops".to_string(),
        review("B", 2, "t"),
    ];
    let (dir, ctx) = data_root(&lines);
    let err = split::run(&ctx, &SplitConfig::default()).unwrap_err();
    assert!(format!("{err:#}").contains("All_Beauty.jsonl:2"), "{err:#}");
    assert_eq!(files_under(dir.path()), vec!["raw/All_Beauty.jsonl"]);
}

#[test]
fn skip_bad_lines_reports_the_count() {
    let lines = vec![
        review("A", 1, "t"),
        "{oops".to_string(),
        review("B", 2, "t"),
    ];
    let (_dir, ctx) = data_root(&lines);
    let s = split::run(
        &ctx,
        &SplitConfig {
            skip_bad_lines: true,
            ..SplitConfig::default()
        },
    )
    .unwrap();
    assert_eq!((s.skipped_lines, s.train_rows), (1, 2));
    assert!(s.to_string().contains("1 bad lines skipped"));
}

#[test]
fn missing_raw_file_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = recsys::Ctx::new(dir.path(), "Toys", 1, true);
    let err = format!(
        "{:#}",
        split::run(&ctx, &SplitConfig::default()).unwrap_err()
    );
    assert!(
        err.contains("raw/Toys.jsonl") && err.contains("Toys.jsonl.gz"),
        "{err}"
    );
}

#[test]
fn shared_real_reviews_split_by_quantiles() {
    let Some(path) = shared_reviews("split::shared_real_reviews_split_by_quantiles") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("raw")).unwrap();
    std::fs::copy(&path, dir.path().join("raw/All_Beauty.jsonl")).unwrap();
    let ctx = recsys::Ctx::new(dir.path(), "All_Beauty", 1, true);
    let s = split::run(
        &ctx,
        &SplitConfig {
            quantiles: Some(vec![0.8, 0.9]),
            ..SplitConfig::default()
        },
    )
    .unwrap();
    // 1,044 of the 5,269 lines repeat an earlier line exactly (the 2018 release's duplicates;
    // counted independently with Python's json module): dropped and counted.
    assert_eq!(s.duplicates, 1_044);
    assert_eq!(s.train_rows + s.valid_rows + s.test_rows, 5_269 - 1_044);
    assert!((s.train_rows as f64 / 4_225.0 - 0.8).abs() < 0.02, "{s}");
    let _ = DataType::Int64;
}

/// Odd but real-looking inputs: each is named, none passes silently.
#[test]
fn empty_files_duplicates_seconds_and_a_bom_are_caught() {
    // an empty file is an error naming it
    let (_d, ctx) = data_root(&[]);
    let e = format!(
        "{:#}",
        split::run(&ctx, &SplitConfig::default()).unwrap_err()
    );
    assert!(
        e.contains("All_Beauty.jsonl") && e.contains("no reviews"),
        "{e}"
    );

    // a byte-order mark on line 1 is accepted
    let mut lines: Vec<String> = [T - 5, T - 4, V - 3, V + 2]
        .iter()
        .enumerate()
        .map(|(i, &ts)| review(&format!("B{i}"), ts, "text"))
        .collect();
    lines[0] = format!("\u{feff}{}", lines[0]);
    // the same review twice (line 2 again, and line 4 again) is dropped and counted
    lines.push(lines[1].clone());
    lines.push(lines[3].clone());
    let (_d, ctx) = data_root(&lines);
    let s = split::run(&ctx, &SplitConfig::default()).unwrap();
    assert_eq!((s.train_rows, s.valid_rows, s.test_rows), (2, 1, 1), "{s}");
    assert_eq!(s.duplicates, 2);
    assert!(
        s.warnings.iter().any(|w| w.contains("2 duplicate")),
        "{:?}",
        s.warnings
    );
    assert_eq!(
        ids(&ctx, Split::Train),
        vec![1, 2],
        "the first of each duplicate is kept"
    );

    // timestamps in seconds: warned, and the empty splits are named
    let lines: Vec<String> = (0..5)
        .map(|i| review(&format!("B{i}"), (T - 1000 * i) / 1000, "text"))
        .collect();
    let (_d, ctx) = data_root(&lines);
    let s = split::run(&ctx, &SplitConfig::default()).unwrap();
    assert_eq!(s.train_rows, 5);
    let all = s.warnings.join("\n");
    assert!(all.contains("look like seconds"), "{all}");
    assert!(
        all.contains("valid split is empty") && all.contains("test split is empty"),
        "{all}"
    );
    assert!(s.to_string().contains("warning: "), "{s}");
}
