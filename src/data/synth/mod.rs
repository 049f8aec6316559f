//! `recsys data synth`: Amazon Reviews 2023-shaped reviews and metadata, deterministic for a seed.
//!
//! What it imitates (so every later stage meets realistic data): Zipf-like item popularity;
//! items launched over time, later periods reviewing newer items; variant `asin`s under some
//! parents; a product grammar (brand, type, scent, skin/hair type, ingredient, audience, size);
//! review text that paraphrases some of the item's attributes plus who/when/why context, with
//! sentiment matching the rating; messy metadata (price number/string/null, empty lists, varying
//! `details` keys). A side file records what each review mentions (ground truth for keywords).
//!
//! Streaming: memory is O(items); reviews are generated in parallel chunks, each review from its
//! own RNG stream, so the output does not depend on the number of threads.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::prelude::*;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;

use super::vocab::*;
use crate::context::Ctx;
use crate::io::{AtomicPath, progress, thousands};
use crate::layout::{synth_paths, synth_truth_path};
use meta::meta_line;
use review::gen_review;

mod meta;
mod review;
mod truth;

pub use truth::Truth;

/// 2010-01-01 and 2023-01-01 (ms): review timestamps grow exponentially over this span.
const REVIEWS_START: i64 = 1_262_304_000_000;
const REVIEWS_END: i64 = 1_672_531_200_000;
/// Items launch from 2008-01-01 on.
const LAUNCH_START: i64 = 1_199_145_600_000;
const YEAR_MS: i64 = 31_557_600_000;
const CHUNK: usize = 16 * 1024;

#[derive(clap::Args, Debug, Clone)]
pub struct SynthConfig {
    /// Output folder for `{Cat}.jsonl`, `meta_{Cat}.jsonl` and `{Cat}.truth.jsonl` [default: DATA_DIR/raw]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Number of reviews (All_Beauty 2023 has 701,528)
    #[arg(long, default_value_t = 701_528, value_parser = crate::cli::count)]
    pub reviews: usize,
    /// Number of items, i.e. parent_asins (All_Beauty 2023 has 112,590)
    #[arg(long, default_value_t = 112_590, value_parser = crate::cli::count)]
    pub items: usize,
    /// Write gzip-compressed `.jsonl.gz` files
    #[arg(long)]
    pub gzip: bool,
}

crate::cli::clap_default!(SynthConfig);

#[derive(Debug, Clone)]
pub struct SynthSummary {
    pub reviews: usize,
    pub items: usize,
    pub reviewed_items: usize,
    pub variant_asins: usize,
    pub empty_texts: usize,
    pub reviews_path: PathBuf,
    pub meta_path: PathBuf,
    pub truth_path: PathBuf,
    pub elapsed: Duration,
}

impl std::fmt::Display for SynthSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "data synth: {} reviews of {} items ({} reviewed, {} variant asins, {} empty texts) in {:.1}s",
            thousands(self.reviews),
            thousands(self.items),
            thousands(self.reviewed_items),
            thousands(self.variant_asins),
            thousands(self.empty_texts),
            self.elapsed.as_secs_f64()
        )?;
        writeln!(f, "  reviews  {}", self.reviews_path.display())?;
        writeln!(f, "  metadata {}", self.meta_path.display())?;
        write!(f, "  truth    {}", self.truth_path.display())
    }
}

/// One generated item. Attribute values index into the vocab tables.
struct Item {
    parent_asin: String,
    variants: Vec<String>,
    brand: String,
    ptype: usize,
    scent: Option<usize>,
    target: Option<&'static str>,
    ingredient: Option<usize>,
    audience: Option<usize>,
    size: Option<usize>,
    launch: i64,
    /// Mean-rating shift in [-1, 1].
    quality: f64,
}

#[derive(Serialize)]
struct ReviewLine<'a> {
    rating: f64,
    title: &'a str,
    text: &'a str,
    images: Vec<Value>,
    asin: &'a str,
    parent_asin: &'a str,
    user_id: &'a str,
    timestamp: i64,
    helpful_vote: i64,
    verified_purchase: bool,
}

struct GenReview {
    line: String,
    truth: String,
    item: usize,
    rating: u8,
    empty: bool,
}

fn rng_for(seed: u64, salt: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    r.set_stream(stream);
    r
}

/// A fraction x in [0, 1) under a density ∝ exp(g·x) (growth over time).
fn growth(u: f64, g: f64) -> f64 {
    ((1.0 + u * (g.exp() - 1.0)).ln() / g).min(1.0 - 1e-12)
}

/// Ten characters `B0…` unique per index: an odd multiplier not divisible by 3 is a bijection mod 36^8.
fn asin(index: u64, seed: u64) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    const MODULUS: u64 = 36u64.pow(8);
    let mut x = (index.wrapping_mul(2_654_435_761) + seed % MODULUS) % MODULUS;
    let mut s = [b'0'; 8];
    for c in s.iter_mut().rev() {
        *c = ALPHABET[(x % 36) as usize];
        x /= 36;
    }
    format!("B0{}", std::str::from_utf8(&s).expect("ascii"))
}

/// 28 upper-case characters, like the dataset's `user_id`s.
fn user_id(index: u64, seed: u64) -> String {
    const B32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(&index.to_le_bytes());
    let bytes = h.finalize();
    let mut out = String::with_capacity(28);
    out.push('A');
    for &b in bytes.as_bytes().iter().take(27) {
        out.push(B32[(b & 31) as usize] as char);
    }
    out
}

fn pick<'a, R: Rng>(r: &mut R, xs: &'a [&'a str]) -> &'a str {
    xs[r.random_range(0..xs.len())]
}

fn title_case(s: &str) -> String {
    s.split(' ')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        })
        .collect::<Vec<String>>()
        .join(" ")
}

fn make_brands(n: usize, seed: u64) -> Vec<String> {
    let mut r = rng_for(seed, 1, 0);
    (0..n)
        .map(|_| {
            let k = r.random_range(2..=3);
            let stem: String = (0..k).map(|_| pick(&mut r, SYLLABLES)).collect();
            format!("{}{}", title_case(&stem), pick(&mut r, BRAND_SUFFIXES))
        })
        .collect()
}

fn make_items(n: usize, seed: u64) -> Vec<Item> {
    let brands = make_brands((n / 25).max(5), seed);
    let mut r = rng_for(seed, 2, 0);
    let launch_end = REVIEWS_END - 60 * 24 * 3600 * 1000;
    let mut launches: Vec<i64> = (0..n)
        .map(|_| {
            LAUNCH_START + (growth(r.random(), 1.5) * (launch_end - LAUNCH_START) as f64) as i64
        })
        .collect();
    launches.sort_unstable();
    let mut next_variant = n as u64;
    launches
        .into_iter()
        .enumerate()
        .map(|(i, launch)| {
            let ptype = r.random_range(0..PRODUCT_TYPES.len());
            let target = match PRODUCT_TYPES[ptype].1 {
                Family::Hair if r.random_bool(0.75) => Some(pick(&mut r, HAIR_TYPES)),
                Family::Skin | Family::Body | Family::Makeup | Family::Shave
                    if r.random_bool(0.75) =>
                {
                    Some(pick(&mut r, SKIN_TYPES))
                }
                _ => None,
            };
            let n_var = if r.random_bool(0.15) {
                r.random_range(1..=4)
            } else {
                0
            };
            let variants = (0..n_var)
                .map(|_| {
                    next_variant += 1;
                    asin(next_variant, seed)
                })
                .collect();
            // Brands are Zipf-ish too: a few big brands, a long tail.
            let b = ((brands.len() as f64).powf(r.random::<f64>()) as usize).saturating_sub(1);
            Item {
                parent_asin: asin(i as u64, seed),
                variants,
                brand: brands[b.min(brands.len() - 1)].clone(),
                ptype,
                scent: r.random_bool(0.8).then(|| r.random_range(0..SCENTS.len())),
                target,
                ingredient: r
                    .random_bool(0.6)
                    .then(|| r.random_range(0..INGREDIENTS.len())),
                audience: r
                    .random_bool(0.7)
                    .then(|| r.random_range(0..AUDIENCES.len())),
                size: r.random_bool(0.9).then(|| r.random_range(0..SIZES.len())),
                launch,
                quality: r.random_range(-1.0..1.0),
            }
        })
        .collect()
}

/// Samples an item for a review at time `t`: only launched items; 60% of the time among items
/// launched in the last three years (later periods review newer items); weighted by popularity.
struct ItemSampler {
    launch: Vec<i64>,
    cum: Vec<f64>,
}

impl ItemSampler {
    fn new(items: &[Item], seed: u64) -> Self {
        let mut r = rng_for(seed, 3, 0);
        let mut ranks: Vec<usize> = (1..=items.len()).collect();
        ranks.shuffle(&mut r);
        let mut acc = 0.0;
        let cum = ranks
            .iter()
            .map(|&rank| {
                acc += (rank as f64).powf(-0.7);
                acc
            })
            .collect();
        ItemSampler {
            launch: items.iter().map(|i| i.launch).collect(),
            cum,
        }
    }

    fn sample<R: Rng>(&self, t: i64, r: &mut R) -> usize {
        let k = self.launch.partition_point(|&l| l <= t).max(1);
        let mut j = 0;
        if r.random_bool(0.6) {
            let recent = self.launch.partition_point(|&l| l <= t - 3 * YEAR_MS);
            if recent < k {
                j = recent;
            }
        }
        let lo = if j == 0 { 0.0 } else { self.cum[j - 1] };
        let u = lo + r.random::<f64>() * (self.cum[k - 1] - lo);
        self.cum.partition_point(|&c| c < u).clamp(j, k - 1)
    }
}

fn writer(path: &Path, gzip: bool) -> Result<Box<dyn Write>> {
    let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(if gzip {
        Box::new(BufWriter::new(flate2::write::GzEncoder::new(
            f,
            flate2::Compression::fast(),
        )))
    } else {
        Box::new(BufWriter::with_capacity(1 << 20, f))
    })
}

/// Generates the reviews, metadata and truth files (see the module docs).
pub fn run(ctx: &Ctx, cfg: &SynthConfig) -> Result<SynthSummary> {
    anyhow::ensure!(cfg.items > 0, "--items must be at least 1");
    let start = Instant::now();
    let seed = ctx.seed;
    let dir = cfg.out.clone().unwrap_or_else(|| ctx.layout.raw_dir());
    let (reviews_path, meta_path) = synth_paths(&dir, &ctx.layout.category, cfg.gzip);
    let truth_path = synth_truth_path(&dir, &ctx.layout.category);
    let (reviews_out, meta_out, truth_out) = (
        AtomicPath::new(&reviews_path)?,
        AtomicPath::new(&meta_path)?,
        AtomicPath::new(&truth_path)?,
    );

    let items = make_items(cfg.items, seed);
    let sampler = ItemSampler::new(&items, seed);
    let n_users = ((cfg.reviews as f64 * 0.9) as u64).max(1);
    let mut stats = vec![(0u64, 0u64); items.len()];
    let mut empty_texts = 0;
    {
        let mut rw = writer(reviews_out.tmp(), cfg.gzip)?;
        let mut tw = writer(truth_out.tmp(), false)?;
        let pb = progress(cfg.reviews as u64, "reviews", ctx.quiet);
        for lo in (0..cfg.reviews).step_by(CHUNK) {
            let hi = (lo + CHUNK).min(cfg.reviews);
            let chunk: Vec<GenReview> = (lo..hi)
                .into_par_iter()
                .map(|i| gen_review(i, seed, &items, &sampler, n_users))
                .collect();
            for g in chunk {
                writeln!(rw, "{}", g.line)?;
                writeln!(tw, "{}", g.truth)?;
                stats[g.item].0 += g.rating as u64;
                stats[g.item].1 += 1;
                empty_texts += g.empty as usize;
            }
            pb.inc((hi - lo) as u64);
        }
        rw.flush()?;
        tw.flush()?;
        pb.finish_and_clear();
    }
    {
        let lines: Vec<String> = items
            .par_iter()
            .enumerate()
            .map(|(i, it)| meta_line(it, stats[i], seed, i))
            .collect();
        let mut mw = writer(meta_out.tmp(), cfg.gzip)?;
        for l in lines {
            writeln!(mw, "{l}")?;
        }
        mw.flush()?;
    }
    reviews_out.commit()?;
    meta_out.commit()?;
    truth_out.commit()?;
    Ok(SynthSummary {
        reviews: cfg.reviews,
        items: items.len(),
        reviewed_items: stats.iter().filter(|s| s.1 > 0).count(),
        variant_asins: items.iter().map(|i| i.variants.len()).sum(),
        empty_texts,
        reviews_path,
        meta_path,
        truth_path,
        elapsed: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asins_are_unique_and_dataset_shaped() {
        let a: std::collections::HashSet<String> = (0..50_000).map(|i| asin(i, 7)).collect();
        assert_eq!(a.len(), 50_000);
        assert!(a.iter().all(|s| s.len() == 10 && s.starts_with("B0")));
    }

    #[test]
    fn user_ids_have_28_characters() {
        let u = user_id(3, 7);
        assert_eq!(u.len(), 28);
        assert!(
            u.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        );
    }

    #[test]
    fn growth_maps_unit_interval_into_itself_increasing() {
        let xs: Vec<f64> = [0.0, 0.25, 0.5, 0.75, 0.999]
            .iter()
            .map(|&u| growth(u, 1.0))
            .collect();
        assert!(xs.windows(2).all(|w| w[0] < w[1]) && xs[0] >= 0.0 && xs[4] < 1.0);
        // density ∝ e^x: the median sits above the middle of the span
        assert!(growth(0.5, 1.0) > 0.5);
    }

    #[test]
    fn sampler_never_picks_an_unlaunched_item() {
        let items = make_items(2_000, 1);
        let s = ItemSampler::new(&items, 1);
        let mut r = rng_for(1, 9, 0);
        for k in 0..5_000 {
            let t = REVIEWS_START + (k as i64) * (REVIEWS_END - REVIEWS_START) / 5_000;
            let i = s.sample(t, &mut r);
            assert!(
                items[i].launch <= t || i == 0,
                "item {i} launched after {t}"
            );
        }
    }
}
