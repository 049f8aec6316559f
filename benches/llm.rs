//! LLM keywords against the local llama-server (`make llm`: llama.cpp + SmolLM2-135M-Instruct):
//! - throughput: reviews/s at concurrency 1, 4 and 8 (8 server slots) on real reviews from
//!   `../shared/data/`, and the extrapolated time for All_Beauty's 701,528 reviews;
//! - structured output: reply parse failures with and without the JSON schema, same reviews;
//! - quality: the share of synthetic ground-truth mentions found among the keywords, LLM vs
//!   the offline extractor, on the same reviews.
//!
//! `cargo bench --bench llm` (env `LLM_BENCH_REVIEWS`, default 160; `LLM_BENCH_PARTS`, default
//! `speed,schema,truth`). Prints tables; asserts nothing.

#[allow(dead_code)]
#[path = "../tests/common/llama.rs"]
mod llama;

use std::time::Instant;

use recsys::Ctx;
use recsys::data::synth::{self, SynthConfig};
use recsys::etl::keywords::{self, KeywordsConfig, KeywordsSummary, SplitChoice};
use recsys::etl::split::{self, SplitConfig};
use recsys::etl::truth::truth_found;
use recsys::layout::Split;

fn llm_cfg(url: &str, concurrency: usize, no_schema: bool) -> KeywordsConfig {
    let mut c = llama::keywords_cfg(url, concurrency);
    c.llm.no_schema = no_schema;
    c
}

/// Runs keywords with a fresh cache: (summary, seconds).
fn timed(ctx: &Ctx, cfg: &KeywordsConfig) -> (KeywordsSummary, f64) {
    let _ = std::fs::remove_file(ctx.layout.llm_cache("keywords"));
    let t = Instant::now();
    let s = keywords::run(ctx, cfg).expect("keywords");
    (s, t.elapsed().as_secs_f64())
}

fn sum(s: &KeywordsSummary, f: impl Fn(&keywords::SplitKeywords) -> usize) -> usize {
    s.splits.iter().map(f).sum()
}

fn main() {
    // `cargo bench` passes --bench; nothing else is taken.
    let n: usize = std::env::var("LLM_BENCH_REVIEWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(160);
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/All_Beauty_2018_5core.jsonl");
    if let Err(why) = llama::llama_files() {
        eprintln!("skipping: {why}");
        return;
    }
    if !shared.is_file() {
        eprintln!("skipping: {} is absent", shared.display());
        return;
    }
    let parts = std::env::var("LLM_BENCH_PARTS").unwrap_or_else(|_| "speed,schema,truth".into());
    let server = llama::Llama::start(8);

    // real reviews
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("raw");
    std::fs::create_dir_all(&raw).unwrap();
    let lines: Vec<String> = std::fs::read_to_string(&shared)
        .unwrap()
        .lines()
        .take(n)
        .map(String::from)
        .collect();
    std::fs::write(raw.join("All_Beauty.jsonl"), lines.join("\n") + "\n").unwrap();
    let ctx = Ctx::new(dir.path(), "All_Beauty", 7, true);
    let split_cfg = SplitConfig {
        quantiles: Some(vec![0.8, 0.9]),
        ..SplitConfig::default()
    };
    split::run(&ctx, &split_cfg).unwrap();

    println!("LLM keywords, llama-server (SmolLM2-135M-Instruct Q4_1, 8 slots), {n} real reviews");
    println!(
        "{:>11}  {:>9}  {:>10}  {:>7}  {:>22}",
        "concurrency", "seconds", "reviews/s", "failed", "701,528 reviews at it"
    );
    for c in [1, 4, 8].into_iter().filter(|_| parts.contains("speed")) {
        let (s, secs) = timed(&ctx, &llm_cfg(&server.url, c, false));
        let rate = n as f64 / secs;
        println!(
            "{c:>11}  {secs:>9.1}  {rate:>10.2}  {:>7}  {:>20.1} h",
            sum(&s, |x| x.failed),
            701_528.0 / rate / 3600.0
        );
    }
    println!("\nparse failures, same {n} reviews, concurrency 8, no retries:");
    for no_schema in [false, true]
        .into_iter()
        .filter(|_| parts.contains("schema"))
    {
        let (s, _) = timed(&ctx, &llm_cfg(&server.url, 8, no_schema));
        let failed = sum(&s, |x| x.failed);
        println!(
            "  {:<16} {failed} of {n} ({:.1}%), {} with no keyword",
            if no_schema {
                "without schema"
            } else {
                "with schema"
            },
            100.0 * failed as f64 / n as f64,
            n - sum(&s, |x| x.with_keywords)
        );
    }

    if !parts.contains("truth") {
        return;
    }
    // synthetic reviews with ground truth: LLM vs offline
    let dir = tempfile::tempdir().unwrap();
    let ctx = Ctx::new(dir.path(), "All_Beauty", 7, true);
    synth::run(
        &ctx,
        &SynthConfig {
            reviews: n,
            items: (n / 4).max(10),
            ..SynthConfig::default()
        },
    )
    .unwrap();
    split::run(&ctx, &split_cfg).unwrap();
    println!("\nsynthetic ground truth found among the keywords ({n} reviews):");
    let offline = KeywordsConfig {
        split: SplitChoice::All,
        ..KeywordsConfig::default()
    };
    keywords::run(&ctx, &offline).unwrap();
    let off = truth_found(&ctx, &Split::ALL).unwrap();
    timed(&ctx, &llm_cfg(&server.url, 8, false));
    let llm = truth_found(&ctx, &Split::ALL).unwrap();
    println!("  {:<16} {:>10} {:>10}", "kind", "offline", "LLM");
    for (kind, (f, t)) in &off.by_kind {
        let (lf, lt) = llm.by_kind.get(kind).copied().unwrap_or((0, 0));
        println!(
            "  {kind:<16} {:>10} {:>10}",
            format!("{:.3}", *f as f64 / (*t).max(1) as f64),
            format!("{:.3}", lf as f64 / lt.max(1) as f64)
        );
    }
    println!(
        "  {:<16} {:>10} {:>10}   ({} mentions)",
        "all",
        format!("{:.3}", off.share()),
        format!("{:.3}", llm.share()),
        off.total
    );
}
