//! Encoder throughput on CPU with all-MiniLM-L6-v2 (real weights):
//! 1. forward at batch 32 × 128 tokens (criterion), inference kernels (fused layer norm /
//!    softmax) and training kernels (composite ops);
//!    and one training step's compute (forward of 32 queries + 32 positives with the training
//!    kernels, in-batch contrastive loss, backward);
//! 2. `index build` on items of the full-size synthetic All_Beauty (112,590 items): one timed
//!    run over the first `RECSYS_BENCH_INDEX_ITEMS` items (default 2,000; set 112590 for all),
//!    printed with the extrapolation to all items.
//!
//! `cargo bench --bench encoder`. The PyTorch side of the comparison is
//! `benches/encoder_torch.py` (same shapes, same threads); run both on the same machine.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use recsys::Ctx;
use recsys::data::synth::{self, SynthConfig};
use recsys::encoder::{Encoder, EncoderArgs, Mode};
use recsys::etl::build_items::{self, BuildItemsConfig};
use recsys::index::{self, IndexBuildConfig};
use recsys::train::loss::{DEFAULT_SCALE, mnrl, same_item_mask};

const BATCH: usize = 32;
const TOKENS: usize = 128;
const FULL_ITEMS: usize = 112_590;

fn model_args() -> EncoderArgs {
    EncoderArgs {
        model: Path::new(env!("CARGO_MANIFEST_DIR")).join(recsys::encoder::DEFAULT_MODEL),
        ..EncoderArgs::default()
    }
}

fn forward(c: &mut Criterion) {
    let enc = Encoder::load(&model_args()).expect("run `make setup` for the default model");
    // Deterministic ids: [CLS] w… [SEP], every row exactly TOKENS long (no padding).
    let rows: Vec<Vec<u32>> = (0..BATCH)
        .map(|r| {
            let mut v = vec![101u32];
            v.extend((1..TOKENS - 1).map(|i| 1000 + ((r * 7919 + i * 104_729) % 28_000) as u32));
            v.push(102);
            v
        })
        .collect();
    let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
    let batch = enc.batch(&refs).unwrap();
    eprintln!("candle threads: {}", candle_core::utils::get_num_threads());
    let mut group = c.benchmark_group("minilm_forward");
    group.sample_size(10);
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, mode) in [
        ("inference_32x128", Mode::Inference),
        ("train_kernels_32x128", Mode::Train),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| enc.embed(&batch, mode).unwrap().to_vec2::<f32>().unwrap())
        });
    }
    group.finish();

    // One training step's compute: forward (training kernels) of 32 queries and 32 positives,
    // the in-batch contrastive loss, backward. (No optimizer update: AdamW is cheap next to it.)
    let trainable = Encoder::load_trainable(&model_args()).unwrap();
    let docs: Vec<Vec<u32>> = rows.iter().rev().cloned().collect();
    let doc_refs: Vec<&[u32]> = docs.iter().map(|r| r.as_slice()).collect();
    let doc_batch = trainable.batch(&doc_refs).unwrap();
    let items: Vec<u64> = (0..BATCH as u64).collect();
    let mask = same_item_mask(&items, &items, true, DType::F32, &Device::Cpu).unwrap();
    let mut group = c.benchmark_group("minilm_train_step");
    group.sample_size(10);
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("fwd_bwd_32x128_pairs", |b| {
        b.iter(|| {
            let q = trainable.embed(&batch, Mode::Train).unwrap();
            let p = trainable.embed(&doc_batch, Mode::Train).unwrap();
            let loss = mnrl(&q, &p, None, &mask, DEFAULT_SCALE).unwrap();
            loss.backward().unwrap()
        })
    });
    group.finish();
}

fn bench_root() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    PathBuf::from(target).join("bench-data/full")
}

/// One timed `index build` (not criterion: a full run takes tens of minutes on 2 cores).
fn index_build(_c: &mut Criterion) {
    let n: usize = std::env::var("RECSYS_BENCH_INDEX_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let ctx = Ctx::new(bench_root(), "All_Beauty", 7, true);
    if !ctx.layout.items().is_file() {
        if ctx.layout.raw_reviews().is_err() {
            let cfg = SynthConfig {
                out: None,
                reviews: 701_528,
                items: FULL_ITEMS,
                gzip: false,
            };
            synth::run(&ctx, &cfg).unwrap();
        }
        build_items::run(&ctx, &BuildItemsConfig::default()).unwrap();
    }
    let cfg = IndexBuildConfig {
        encoder: model_args(),
        max_items: Some(n),
    };
    let t = Instant::now();
    let s = index::build(&ctx, &cfg).unwrap();
    let secs = t.elapsed().as_secs_f64();
    eprintln!("{s}");
    eprintln!(
        "index_build/full_synthetic: {} items in {secs:.1}s = {:.1} items/s (encoding {:.1} texts/s); \
         all {FULL_ITEMS} items ≈ {:.1} min at this rate",
        s.items,
        s.items as f64 / secs,
        s.texts_per_s,
        FULL_ITEMS as f64 / (s.items as f64 / secs) / 60.0
    );
}

criterion_group!(benches, forward, index_build);
criterion_main!(benches);
