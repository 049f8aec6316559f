//! `data synth`: deterministic, schema-exact, readable by every reader, with honest ground truth.

mod common;

use recsys::Ctx;
use recsys::data::synth::{self, SynthConfig, Truth};
use recsys::data::{ReadOptions, read_meta, read_reviews};

fn synth_into(dir: &std::path::Path, seed: u64, gzip: bool) -> synth::SynthSummary {
    let ctx = Ctx::new(dir, "All_Beauty", seed, true);
    synth::run(
        &ctx,
        &SynthConfig {
            out: None,
            reviews: 3_000,
            items: 400,
            gzip,
        },
    )
    .unwrap()
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (sa, sb, sc) = (
        synth_into(a.path(), 7, false),
        synth_into(b.path(), 7, false),
        synth_into(c.path(), 8, false),
    );
    for (x, y) in [
        (&sa.reviews_path, &sb.reviews_path),
        (&sa.meta_path, &sb.meta_path),
        (&sa.truth_path, &sb.truth_path),
    ] {
        assert_eq!(
            std::fs::read(x).unwrap(),
            std::fs::read(y).unwrap(),
            "{} differs",
            x.display()
        );
    }
    assert_ne!(
        std::fs::read(&sa.reviews_path).unwrap(),
        std::fs::read(&sc.reviews_path).unwrap()
    );
}

#[test]
fn output_reads_cleanly_in_the_2023_schema() {
    let d = tempfile::tempdir().unwrap();
    let s = synth_into(d.path(), 7, true);
    assert!(
        s.reviews_path
            .to_string_lossy()
            .ends_with("raw/All_Beauty.jsonl.gz")
    );
    let reviews = read_reviews(
        &s.reviews_path,
        ReadOptions {
            skip_bad_lines: false,
            quiet: true,
        },
    )
    .unwrap();
    assert_eq!(reviews.frame.height(), 3_000);
    let meta = read_meta(
        &s.meta_path,
        ReadOptions {
            skip_bad_lines: false,
            quiet: true,
        },
    )
    .unwrap();
    assert_eq!(meta.frame.height(), 400);
    // every review's parent is an item of the metadata
    let items: std::collections::HashSet<&str> = meta
        .frame
        .column("parent_asin")
        .unwrap()
        .str()
        .unwrap()
        .no_null_iter()
        .collect();
    let parents = reviews
        .frame
        .column("parent_asin")
        .unwrap()
        .str()
        .unwrap()
        .clone();
    assert!(parents.no_null_iter().all(|p| items.contains(p)));
    // messy on purpose: some prices null, some strings, some descriptions empty
    let raw = std::fs::read(&s.meta_path).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&raw[..]), &mut text).unwrap();
    assert!(
        text.contains("\"price\":null")
            && text.contains("\"price\":\"$")
            && text.contains("\"description\":[]")
    );
    // variants: some reviews carry an asin other than their parent
    let asins = reviews.frame.column("asin").unwrap().str().unwrap().clone();
    let parents = reviews
        .frame
        .column("parent_asin")
        .unwrap()
        .str()
        .unwrap()
        .clone();
    assert!(asins.iter().zip(parents.iter()).any(|(a, p)| a != p));
    // user ids are 28 characters
    let users = reviews
        .frame
        .column("user_id")
        .unwrap()
        .str()
        .unwrap()
        .clone();
    assert!(users.no_null_iter().all(|u| u.len() == 28));
}

#[test]
fn truth_matches_the_review_text() {
    let d = tempfile::tempdir().unwrap();
    let s = synth_into(d.path(), 3, false);
    let reviews: Vec<serde_json::Value> = std::fs::read_to_string(&s.reviews_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let truths: Vec<Truth> = std::fs::read_to_string(&s.truth_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(truths.len(), reviews.len());
    let mut with_attrs = 0;
    for (i, (r, t)) in reviews.iter().zip(&truths).enumerate() {
        assert_eq!(t.review_id, i as u64 + 1);
        assert_eq!(r["parent_asin"], t.parent_asin.as_str());
        let text = r["text"].as_str().unwrap().to_lowercase();
        for (_, v) in t.attributes.iter().chain(&t.context) {
            assert!(
                text.contains(v.as_str()),
                "review {i}: {v:?} not in {text:?}"
            );
        }
        with_attrs += (!t.attributes.is_empty()) as usize;
        // sentiment follows the rating
        let rating = r["rating"].as_f64().unwrap();
        assert!((1.0..=5.0).contains(&rating));
    }
    assert!(
        with_attrs > reviews.len() / 2,
        "only {with_attrs} reviews mention attributes"
    );
}

#[test]
fn popularity_is_skewed_and_later_reviews_favour_newer_items() {
    let d = tempfile::tempdir().unwrap();
    let ctx = Ctx::new(d.path(), "All_Beauty", 11, true);
    let s = synth::run(
        &ctx,
        &SynthConfig {
            out: None,
            reviews: 20_000,
            items: 2_000,
            gzip: false,
        },
    )
    .unwrap();
    let df = read_reviews(
        &s.reviews_path,
        ReadOptions {
            skip_bad_lines: false,
            quiet: true,
        },
    )
    .unwrap()
    .frame;
    let mut counts = std::collections::HashMap::<String, usize>::new();
    for p in df
        .column("parent_asin")
        .unwrap()
        .str()
        .unwrap()
        .no_null_iter()
    {
        *counts.entry(p.to_string()).or_default() += 1;
    }
    let mut c: Vec<usize> = counts.values().copied().collect();
    c.sort_unstable_by(|a, b| b.cmp(a));
    let top1pct: usize = c.iter().take(20).sum();
    assert!(
        top1pct * 10 > 20_000 / 10,
        "top 1% of items have only {top1pct} reviews"
    );
    assert!(
        c.iter().filter(|&&n| n == 1).count() > 50,
        "too few single-review items"
    );
    let ts: Vec<i64> = df
        .column("timestamp")
        .unwrap()
        .i64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    let parents: Vec<&str> = df
        .column("parent_asin")
        .unwrap()
        .str()
        .unwrap()
        .no_null_iter()
        .collect();
    let (min, max) = (*ts.iter().min().unwrap(), *ts.iter().max().unwrap());
    assert!(min >= 1_262_304_000_000 && max <= 1_672_531_200_000);
    // later periods review newer items: in the last year, the median item was first reviewed
    // less than four years before (the span is thirteen years)
    let mut first = std::collections::HashMap::<&str, i64>::new();
    for (p, &t) in parents.iter().zip(&ts) {
        let e = first.entry(p).or_insert(t);
        *e = (*e).min(t);
    }
    const YEAR: i64 = 31_557_600_000;
    let mut ages: Vec<i64> = parents
        .iter()
        .zip(&ts)
        .filter(|(_, t)| **t > max - YEAR)
        .map(|(p, t)| t - first[p])
        .collect();
    ages.sort_unstable();
    let median = ages[ages.len() / 2];
    assert!(
        median < 4 * YEAR,
        "median item age in the last year: {:.1} years",
        median as f64 / YEAR as f64
    );
}
