//! Helpers shared by the integration tests: small raw files built in a few lines.
#![allow(dead_code)]

pub mod llama;
pub mod llm_server;

use std::path::{Path, PathBuf};

use recsys::Ctx;
use recsys::data::synth::{self, SynthConfig};
use recsys::etl::split::{self, SplitConfig};
use serde_json::json;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A test that cannot run here: `SKIPPED: <test>: <why>` on the process's stderr (written past
/// libtest's capture, which would hide it for a passing test; `make test` counts these lines), or,
/// under `CI=true`, a failure: CI installs everything the tests need, so a skip there is a bug.
pub fn skip(test: &str, why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{test} cannot run, and CI=true allows no skips: {why}");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {why}");
}

/// `../shared/data/All_Beauty_2018_5core.jsonl` when this clone has `../shared` beside it.
pub fn shared_reviews_file() -> Option<PathBuf> {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/All_Beauty_2018_5core.jsonl");
    p.is_file().then_some(p)
}

/// [`shared_reviews_file`] for a test that needs it: `None` is a [`skip`].
pub fn shared_reviews(test: &str) -> Option<PathBuf> {
    let p = shared_reviews_file();
    if p.is_none() {
        skip(
            test,
            "../shared/data/All_Beauty_2018_5core.jsonl is absent (only developers and CI have ../shared)",
        );
    }
    p
}

/// Whether the DuckDB CLI runs; `false` is a [`skip`].
pub fn duckdb(test: &str) -> bool {
    let ok = std::process::Command::new("duckdb")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip(
            test,
            "the duckdb CLI is not on PATH (make setup installs it)",
        );
    }
    ok
}

/// A valid review line of the 2023 schema.
pub fn review(parent_asin: &str, timestamp: i64, text: &str) -> String {
    json!({
        "rating": 5.0, "title": "Nice", "text": text, "images": [],
        "asin": parent_asin, "parent_asin": parent_asin, "user_id": "AGKHLEW2SOWHNMFQIJGBECAF7INQ",
        "timestamp": timestamp, "helpful_vote": 0, "verified_purchase": true
    })
    .to_string()
}

/// A data root with `raw/{category}.jsonl` holding `lines`, and its context.
pub fn data_root(lines: &[String]) -> (tempfile::TempDir, Ctx) {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("raw");
    std::fs::create_dir_all(&raw).unwrap();
    std::fs::write(raw.join("All_Beauty.jsonl"), lines.join("\n") + "\n").unwrap();
    let ctx = Ctx::new(dir.path(), "All_Beauty", 7, true);
    (dir, ctx)
}

/// Every file under `dir`, recursively, as relative paths.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// A synthetic data root, split by quantiles (synthetic time spans differ from the seed's).
pub fn synth_root(reviews: usize, items: usize) -> (tempfile::TempDir, Ctx) {
    let (dir, ctx) = synth_raw(reviews, items);
    split_by_quantiles(&ctx);
    (dir, ctx)
}

/// A data root with synthetic raw files only (seed 5).
pub fn synth_raw(reviews: usize, items: usize) -> (tempfile::TempDir, Ctx) {
    let dir = tempfile::tempdir().unwrap();
    let ctx = Ctx::new(dir.path(), "All_Beauty", 5, true);
    synth::run(
        &ctx,
        &SynthConfig {
            out: None,
            reviews,
            items,
            gzip: false,
        },
    )
    .unwrap();
    (dir, ctx)
}

/// `etl split --quantiles 0.8,0.9`: 80 / 10 / 10 by time, whatever the data's dates.
pub fn split_by_quantiles(ctx: &Ctx) {
    split::run(
        ctx,
        &SplitConfig {
            quantiles: Some(vec![0.8, 0.9]),
            ..SplitConfig::default()
        },
    )
    .unwrap();
}

/// Offline keywords for every split.
pub fn keywords_all(ctx: &Ctx) {
    use recsys::etl::keywords::{self, KeywordsConfig, SplitChoice};
    let cfg = KeywordsConfig {
        split: SplitChoice::All,
        ..KeywordsConfig::default()
    };
    keywords::run(ctx, &cfg).unwrap();
}

/// The tiny committed BERT encoder.
pub fn tiny_bert() -> PathBuf {
    fixture("encoder").join("tiny-bert")
}

/// A synthetic root (1,500 reviews, 150 items) with items.parquet and training pairs.
pub fn pairs_root(format: recsys::etl::pairs::PairFormat) -> (tempfile::TempDir, Ctx) {
    use recsys::etl::build_items::{self, BuildItemsConfig};
    use recsys::etl::pairs::{self, PairsConfig};
    let (dir, ctx) = synth_root(1_500, 150);
    build_items::run(&ctx, &BuildItemsConfig::default()).unwrap();
    pairs::run(
        &ctx,
        &PairsConfig {
            format,
            ..Default::default()
        },
    )
    .unwrap();
    (dir, ctx)
}

/// A quick fine-tune of the tiny BERT into `output` (batch 16, 48 tokens, no evaluation).
pub fn train_cfg(output: &Path) -> recsys::train::retriever::RetrieverConfig {
    recsys::train::retriever::RetrieverConfig {
        base_model: tiny_bert(),
        output: Some(output.to_path_buf()),
        batch_size: 16,
        lr: 1e-3,
        max_query_len: 48,
        max_doc_len: 48,
        eval_queries: 0,
        ..Default::default()
    }
}

/// Every weight of a model directory's model.safetensors, tensors in name order.
pub fn model_weights(dir: &Path) -> Vec<f32> {
    let t =
        candle_core::safetensors::load(dir.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let mut names: Vec<&String> = t.keys().collect();
    names.sort();
    names
        .into_iter()
        .flat_map(|n| t[n].flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect()
}

/// Largest |a − b| over two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
