//! Dense exact top-100 at full size: 65,000 queries × 112,590 items × 384 dims (the synthetic
//! All_Beauty item count, MiniLM's width), random unit vectors — the search does not depend on
//! what the vectors mean, and query encoding is measured separately (`benches/encoder.rs`).
//!
//! `cargo bench --bench retrieve` (one timed run; a run takes about a minute on 2 cores, so
//! criterion's ten samples are not used). `RECSYS_BENCH_QUERIES` changes the query count.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use recsys::encoder::Embeddings;
use recsys::retrieve::dense::exact_topk;

fn unit_vectors(n: usize, d: usize, rng: &mut ChaCha8Rng) -> Embeddings {
    let mut data: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    for row in data.chunks_mut(d) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= norm);
    }
    Embeddings { dim: d, data }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing: run only for bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let nq: usize = std::env::var("RECSYS_BENCH_QUERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(65_000);
    let (ni, d, k) = (112_590, 384, 100);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let items = unit_vectors(ni, d, &mut rng);
    let queries = unit_vectors(nq, d, &mut rng);
    let keys: Vec<String> = (0..ni).map(|i| format!("B{i:09}")).collect();
    let t = Instant::now();
    let out = exact_topk(
        &queries,
        &items,
        &keys,
        k,
        &candle_core::Device::Cpu,
        &indicatif::ProgressBar::hidden(),
    )
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(out.len(), nq);
    println!(
        "dense_exact_top{k}: {nq} queries x {ni} items x {d} dims in {secs:.1}s \
         ({:.0} queries/s, {:.1} GFLOP/s in the score matrix)",
        nq as f64 / secs,
        2.0 * nq as f64 * ni as f64 * d as f64 / secs / 1e9
    );
}
