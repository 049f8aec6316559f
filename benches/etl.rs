//! ETL on the full-size synthetic All_Beauty (701,528 reviews / 112,590 items):
//! `etl split`, offline `etl keywords --split train`, and the `etl build-items` merge.
//!
//! `cargo bench --bench etl`. The synthetic data is generated once into
//! `$CARGO_TARGET_DIR/bench-data/full` (its generation time is printed). Peak RSS (VmHWM) of the
//! whole process is printed at the end; per-command peaks come from `/usr/bin/time -v recsys …`.

use std::path::PathBuf;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use recsys::Ctx;
use recsys::data::synth::{self, SynthConfig};
use recsys::etl::build_items::{self, BuildItemsConfig};
use recsys::etl::keywords::{self, KeywordsConfig};
use recsys::etl::split::{self, SplitConfig};

fn bench_root() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    PathBuf::from(target).join("bench-data/full")
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(|l| l.to_string())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn etl_full(c: &mut Criterion) {
    let ctx = Ctx::new(bench_root(), "All_Beauty", 7, true);
    if ctx.layout.raw_reviews().is_err() {
        let t = Instant::now();
        let s = synth::run(
            &ctx,
            &SynthConfig {
                out: None,
                reviews: 701_528,
                items: 112_590,
                gzip: false,
            },
        )
        .unwrap();
        eprintln!(
            "data synth (full size): {:.1}s\n{s}",
            t.elapsed().as_secs_f64()
        );
    }
    let mut group = c.benchmark_group("etl_full");
    group.sample_size(10);
    group.bench_function("split_701k_reviews", |b| {
        b.iter(|| split::run(&ctx, &SplitConfig::default()).unwrap())
    });
    group.bench_function("keywords_offline_train", |b| {
        b.iter(|| keywords::run(&ctx, &KeywordsConfig::default()).unwrap())
    });
    // Split and keywords are fresh by now: this times the metadata read and the merge.
    group.bench_function("build_items_112k_items", |b| {
        b.iter(|| build_items::run(&ctx, &BuildItemsConfig::default()).unwrap())
    });
    group.finish();
    eprintln!(
        "peak RSS (VmHWM) of the bench process: {:.0} MiB",
        peak_rss_mib()
    );
}

criterion_group!(benches, etl_full);
criterion_main!(benches);
