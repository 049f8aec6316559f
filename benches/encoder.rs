//! Encoder speed on the CPU with all-MiniLM-L6-v2 (real weights): the Candle side of
//! `make bench-encoder`, which runs this and `benches/encoder_torch.py` part by part, each in
//! its own process with the same threads, and prints the side-by-side table.
//!
//! `cargo bench --bench encoder -- [forward] [train_step] [train_step_long] [encode]` (default:
//! all four).
//! Threads: `RAYON_NUM_THREADS` (Candle's and rayon's pool; `make bench-encoder` leaves it unset
//! for the all-cores run, as users run the program); the `threads` reported is rayon's pool.
//! `RECSYS_MALLOC_DEFAULTS=1` keeps glibc's malloc defaults (the "before" of `recsys::alloc`).
//!
//! - `forward`: inference forward of 32 × 128 tokens (deterministic ids, no padding), median of
//!   10 after 3 warm-ups;
//! - `train_step`: forward of 32 queries + 32 positives × 128 tokens, the in-batch contrastive
//!   loss, backward (no optimizer update on either side), median of 5 after 2 warm-ups;
//! - `train_step_long`: the same at the shape of real review pairs, 32 queries of 40–256 tokens
//!   padded to 256 and 32 item texts of 110 tokens, median of 3 after 1 warm-up (its peak RSS is
//!   the memory target's figure);
//! - `encode`: 2,000 synthetic item texts (`embedding_text` of a synthetic root, ≤ 256 tokens,
//!   batch 32, sorted by length as `index build` and sentence-transformers both do), once after
//!   a 64-text warm-up; the texts are written to `bench-data/encode_texts.json` under the target
//!   directory for the PyTorch side.
//!
//! Each part prints one line `RESULT {json}` with the median and minimum seconds and the
//! process's peak RSS (`getrusage`), so a part run alone gives that part's peak memory.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use recsys::Ctx;
use recsys::data::synth::{self, SynthConfig};
use recsys::encoder::{Encoder, EncoderArgs, probe};
use recsys::etl::build_items::{self, BuildItemsConfig};
use recsys::train::loss::{DEFAULT_SCALE, mnrl, same_item_mask};

const BATCH: usize = 32;
const TOKENS: usize = 128;
const ENCODE_TEXTS: usize = 2_000;

fn model_args() -> EncoderArgs {
    EncoderArgs {
        model: Path::new(env!("CARGO_MANIFEST_DIR")).join(recsys::encoder::DEFAULT_MODEL),
        ..EncoderArgs::default()
    }
}

/// [CLS] w… [SEP], every row exactly TOKENS long; `benches/encoder_torch.py` builds the same.
fn rows() -> Vec<Vec<u32>> {
    (0..BATCH).map(|r| row(r, TOKENS)).collect()
}

/// Row `r` of `len` tokens: [CLS] w… [SEP] (deterministic ids, MiniLM's special ids).
fn row(r: usize, len: usize) -> Vec<u32> {
    probe::row(r, len, (101, 102), 30_522)
}

/// The shape of real review pairs (`train_step_long`): 32 queries of 40–256 tokens, padded to
/// the longest (256), and 32 item texts of 110 tokens.
fn long_rows() -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let queries = (0..BATCH)
        .map(|r| row(r, if r == 0 { 256 } else { 40 + (r * 37) % 217 }))
        .collect();
    let docs = (0..BATCH).map(|r| row(r + BATCH, 110)).collect();
    (queries, docs)
}

/// Median and minimum seconds of `n` runs after `warmup` untimed ones (the probe's timer).
fn timed(warmup: usize, n: usize, mut f: impl FnMut()) -> (f64, f64) {
    probe::timed(warmup, n, || -> Result<(), std::convert::Infallible> {
        f();
        Ok(())
    })
    .unwrap_or_else(|e| match e {})
}

fn peak_rss_mb() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u.ru_maxrss as f64 / 1024.0
    }
}

fn report(part: &str, (median, min): (f64, f64), runs: usize, extra: &str) {
    println!(
        "RESULT {{\"side\":\"candle\",\"part\":\"{part}\",\"threads\":{},\"malloc_defaults\":{},\
         \"median_s\":{median:.6},\"min_s\":{min:.6},\"runs\":{runs},\"peak_rss_mb\":{:.1}{extra}}}",
        rayon::current_num_threads(),
        std::env::var_os("RECSYS_MALLOC_DEFAULTS").is_some(),
        peak_rss_mb()
    );
}

fn forward() {
    let enc = Encoder::load(&model_args()).expect("run `make setup` for the default model");
    let rows = rows();
    let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
    let batch = enc.batch(&refs).unwrap();
    let t = timed(3, 10, || {
        enc.embed(&batch).unwrap().to_vec2::<f32>().unwrap();
    });
    report("forward", t, 10, "");
}

fn train_step() {
    let rows = rows();
    let docs: Vec<Vec<u32>> = rows.iter().rev().cloned().collect();
    step("train_step", &rows, &docs, 2, 5);
}

fn train_step_long() {
    let (queries, docs) = long_rows();
    step("train_step_long", &queries, &docs, 1, 3);
}

/// Forward of queries and positives, the in-batch loss, backward: median of `runs`.
fn step(part: &str, queries: &[Vec<u32>], docs: &[Vec<u32>], warmup: usize, runs: usize) {
    let enc = Encoder::load_trainable(&model_args()).expect("run `make setup`");
    let q_refs: Vec<&[u32]> = queries.iter().map(|r| r.as_slice()).collect();
    let d_refs: Vec<&[u32]> = docs.iter().map(|r| r.as_slice()).collect();
    let (qb, db) = (enc.batch(&q_refs).unwrap(), enc.batch(&d_refs).unwrap());
    let items: Vec<u64> = (0..queries.len() as u64).collect();
    let mask = same_item_mask(&items, &items, true, DType::F32, &Device::Cpu).unwrap();
    let t = timed(warmup, runs, || {
        let q = enc.embed(&qb).unwrap();
        let p = enc.embed(&db).unwrap();
        let loss = mnrl(&q, &p, None, &mask, DEFAULT_SCALE).unwrap();
        loss.backward().unwrap();
    });
    report(part, t, runs, "");
}

fn bench_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    PathBuf::from(target).join("bench-data")
}

/// The 2,000 item texts, made once from a synthetic root and kept as JSON for both sides.
fn encode_texts() -> Vec<String> {
    let file = bench_dir().join("encode_texts.json");
    if let Ok(s) = std::fs::read_to_string(&file) {
        return serde_json::from_str(&s).unwrap();
    }
    let ctx = Ctx::new(bench_dir().join("encode-root"), "All_Beauty", 7, true);
    let cfg = SynthConfig {
        out: None,
        reviews: 40_000,
        items: 2_600,
        gzip: false,
    };
    synth::run(&ctx, &cfg).unwrap();
    recsys::etl::split::run(
        &ctx,
        &recsys::etl::split::SplitConfig {
            quantiles: Some(vec![0.8, 0.9]),
            ..Default::default()
        },
    )
    .unwrap();
    build_items::run(&ctx, &BuildItemsConfig::default()).unwrap();
    let items = recsys::io::read_parquet(&ctx.layout.items()).unwrap();
    let texts: Vec<String> = items
        .column("embedding_text")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .take(ENCODE_TEXTS)
        .map(|t| t.unwrap_or("").to_string())
        .collect();
    assert_eq!(
        texts.len(),
        ENCODE_TEXTS,
        "the synthetic root has too few items"
    );
    std::fs::write(&file, serde_json::to_string(&texts).unwrap()).unwrap();
    texts
}

fn encode() {
    let texts = encode_texts();
    let enc = Encoder::load(&model_args()).unwrap();
    let pb = indicatif::ProgressBar::hidden();
    enc.encode(&texts[..64], 32, &pb).unwrap();
    let t = timed(0, 1, || {
        enc.encode(&texts, 32, &pb).unwrap();
    });
    report(
        "encode",
        t,
        1,
        &format!(
            ",\"texts\":{},\"texts_per_s\":{:.2}",
            texts.len(),
            texts.len() as f64 / t.0
        ),
    );
}

fn main() {
    recsys::alloc::keep_freed_memory();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let all = args.is_empty();
    for (name, part) in [
        ("forward", forward as fn()),
        ("train_step", train_step),
        ("train_step_long", train_step_long),
        ("encode", encode),
    ] {
        if all || args.iter().any(|a| a == name) {
            part();
        }
    }
}
