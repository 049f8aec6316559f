//! `recsys train mine-negatives`: hard negatives for the triplet format, the FlagEmbedding
//! recipe — each training query is searched with the current model over the item index, and one
//! item ranked inside a window (default 10–100), other than the query's own item, is drawn
//! (seeded) as its negative. Items ranked above the window are skipped: they are too often
//! unlabeled positives.
//!
//! Output: the training rows with `negative`, `negative_parent_asin` and `negative_rank`
//! (null where the window held no other item) → `processed/training_pairs_mined.parquet`.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use polars::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cols;
use crate::context::Ctx;
use crate::encoder::QueryEncoderArgs;
use crate::index::ItemIndex;
use crate::io::{self, thousands};
use crate::retrieve::dense::Dense;
use crate::retrieve::query::sample_indices;
use crate::retrieve::{Catalog, Retriever};

#[derive(Debug, Clone, clap::Args)]
pub struct MineConfig {
    #[command(flatten)]
    pub encoder: QueryEncoderArgs,
    /// Training rows to mine for [default: DATA_DIR/processed/training_pairs.parquet]
    #[arg(long)]
    pub pairs: Option<PathBuf>,
    /// Output [default: DATA_DIR/processed/training_pairs_mined.parquet]
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// First rank of the window negatives are drawn from (1-based)
    #[arg(long, default_value_t = 10, value_parser = crate::cli::count0)]
    pub window_start: usize,
    /// Last rank of the window (inclusive)
    #[arg(long, default_value_t = 100, value_parser = crate::cli::count)]
    pub window_end: usize,
    /// Mine for a seeded sample of this many rows only (the output holds just those)
    #[arg(long, value_parser = crate::cli::count)]
    pub max_rows: Option<usize>,
}

crate::cli::clap_default!(MineConfig);

#[derive(Debug)]
pub struct MineSummary {
    pub rows: usize,
    pub mined: usize,
    pub model: String,
    pub window: (usize, usize),
    pub elapsed_s: f64,
    pub out: PathBuf,
}

impl fmt::Display for MineSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mine-negatives ({}): {} of {} rows got a negative from ranks {}–{} ({} had no other \
             item there) in {:.1}s → {}",
            self.model,
            thousands(self.mined),
            thousands(self.rows),
            self.window.0,
            self.window.1,
            thousands(self.rows - self.mined),
            self.elapsed_s,
            self.out.display()
        )
    }
}

/// `recsys train mine-negatives`.
pub fn run(ctx: &Ctx, cfg: &MineConfig) -> Result<MineSummary> {
    let t0 = Instant::now();
    anyhow::ensure!(
        cfg.window_start >= 1 && cfg.window_start <= cfg.window_end,
        "--window-start {} / --window-end {}: need 1 ≤ start ≤ end",
        cfg.window_start,
        cfg.window_end
    );
    let input = cfg
        .pairs
        .clone()
        .unwrap_or_else(|| ctx.layout.training_pairs());
    let out = cfg
        .output
        .clone()
        .unwrap_or_else(|| ctx.layout.training_pairs_mined());
    let mut df = io::read_parquet(&input)
        .with_context(|| format!("{}: run `recsys train pairs` first", input.display()))?;
    for c in [
        cols::NEGATIVE,
        cols::NEGATIVE_PARENT_ASIN,
        cols::NEGATIVE_RANK,
    ] {
        if df.column(c).is_ok() {
            df = df.drop(c)?;
        }
    }
    if let Some(n) = cfg.max_rows.filter(|&n| n < df.height()) {
        let idx: Vec<IdxSize> = sample_indices(df.height(), n, ctx.seed)
            .into_iter()
            .map(|i| i as IdxSize)
            .collect();
        df = df.take(&IdxCa::from_vec(PlSmallStr::EMPTY, idx))?;
    }
    let str_col = |name: &str| -> Result<Vec<String>> {
        crate::io::strings(&df, name).with_context(|| input.display().to_string())
    };
    let queries = str_col(cols::QUERY)?;
    let targets = str_col(cols::PARENT_ASIN)?;

    let index = ItemIndex::open(ctx)?;
    let items = Catalog::open(&index, true)?;
    let asins = &items.asins;
    let mut dense = Dense::new(&index, &items, &cfg.encoder, None)?;
    let texts: Vec<&str> = queries.iter().map(String::as_str).collect();
    let top = dense.search(&texts, cfg.window_end, ctx.quiet)?;
    let (item_asins, item_texts) = crate::etl::build_items::item_texts(&ctx.layout)?;
    let texts: HashMap<String, String> = item_asins.into_iter().zip(item_texts).collect();

    let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed);
    let (mut neg, mut neg_asin, mut neg_rank) = (Vec::new(), Vec::new(), Vec::new());
    for (list, target) in top.iter().zip(&targets) {
        let window: Vec<(usize, &str)> = list
            .iter()
            .enumerate()
            .skip(cfg.window_start - 1)
            .map(|(r, (i, _))| (r + 1, asins[*i as usize].as_str()))
            .filter(|(_, a)| a != target)
            .collect();
        if window.is_empty() {
            neg.push(None);
            neg_asin.push(None);
            neg_rank.push(None);
            continue;
        }
        let (rank, a) = window[rng.random_range(0..window.len())];
        neg.push(texts.get(a).cloned());
        neg_asin.push(Some(a.to_string()));
        neg_rank.push(Some(rank as u32));
    }
    let mined = neg_asin.iter().flatten().count();
    df.with_column(Column::new(cols::NEGATIVE.into(), neg))?;
    df.with_column(Column::new(cols::NEGATIVE_PARENT_ASIN.into(), neg_asin))?;
    df.with_column(Column::new(cols::NEGATIVE_RANK.into(), neg_rank))?;
    io::write_parquet(&mut df, &out)?;
    Ok(MineSummary {
        rows: df.height(),
        mined,
        model: dense.model().to_string(),
        window: (cfg.window_start, cfg.window_end),
        elapsed_s: t0.elapsed().as_secs_f64(),
        out,
    })
}
