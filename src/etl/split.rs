//! `recsys etl split`: time-based split of the raw reviews into train / valid / test Parquet.
//!
//! Cutoffs are inclusive, as in the seed: `timestamp <= train_end` is train,
//! `<= valid_end` valid, the rest test.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cols;
use crate::context::Ctx;
use crate::data::{ReadOptions, read_reviews};
use crate::io::{AtomicPath, parquet_pending, thousands, utc};
use crate::layout::Split;

/// Bumped when a change to this stage's logic changes what it writes: the pipeline's records
/// made with another version are stale, so the stage runs again.
pub const CODE_VERSION: u32 = 1;

/// The seed's cutoffs (ms since 1970, inclusive).
pub const DEFAULT_TRAIN_END: i64 = 1_621_867_671_638;
pub const DEFAULT_VALID_END: i64 = 1_643_212_573_029;

#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct SplitConfig {
    /// Last timestamp of the train split, in ms since 1970 (inclusive)
    #[arg(long, default_value_t = DEFAULT_TRAIN_END, value_parser = crate::cli::millis)]
    pub train_end: i64,
    /// Last timestamp of the valid split, in ms since 1970 (inclusive); later reviews are test
    #[arg(long, default_value_t = DEFAULT_VALID_END, value_parser = crate::cli::millis)]
    pub valid_end: i64,
    /// Take the cutoffs from the data's own timestamps instead: train and valid end at these
    /// two quantiles, e.g. `0.8,0.9`
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["train_end", "valid_end"], value_parser = crate::cli::open_fraction)]
    pub quantiles: Option<Vec<f64>>,
    /// Skip (and count) malformed review lines instead of stopping at the first
    #[arg(long)]
    pub skip_bad_lines: bool,
}

crate::cli::clap_default!(SplitConfig);

/// What `etl split` did; also written to `processed/split.json` for later stages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SplitSummary {
    pub source: PathBuf,
    pub lines: usize,
    pub skipped_lines: usize,
    /// Exact duplicate reviews dropped (all fields equal but the line number).
    #[serde(default)]
    pub duplicates: usize,
    /// What looked wrong with the input (also printed on stderr as it is found).
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(skip)]
    pub skipped_examples: Vec<String>,
    pub train_end: i64,
    pub valid_end: i64,
    pub train_rows: usize,
    pub valid_rows: usize,
    pub test_rows: usize,
    /// (distinct items of the split also reviewed in train, distinct items of the split)
    pub valid_items_seen: (usize, usize),
    pub test_items_seen: (usize, usize),
    /// (reviews of the split whose item has train reviews, reviews of the split)
    pub valid_reviews_seen: (usize, usize),
    pub test_reviews_seen: (usize, usize),
    #[serde(skip)]
    pub elapsed: Duration,
}

impl SplitSummary {
    pub fn rows(&self, split: Split) -> usize {
        match split {
            Split::Train => self.train_rows,
            Split::Valid => self.valid_rows,
            Split::Test => self.test_rows,
        }
    }
}

fn pct((a, b): (usize, usize)) -> String {
    if b == 0 {
        "n/a".into()
    } else {
        format!("{:.1}%", 100.0 * a as f64 / b as f64)
    }
}

impl std::fmt::Display for SplitSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total = self.train_rows + self.valid_rows + self.test_rows;
        writeln!(
            f,
            "etl split: {} reviews from {} ({} bad lines skipped, {} duplicates dropped) in {:.1}s",
            thousands(total),
            self.source.display(),
            thousands(self.skipped_lines),
            thousands(self.duplicates),
            self.elapsed.as_secs_f64()
        )?;
        for e in &self.skipped_examples {
            writeln!(f, "  skipped: {e}")?;
        }
        for w in &self.warnings {
            writeln!(f, "  warning: {w}")?;
        }
        writeln!(
            f,
            "  train  ts <= {} ({})  {:>10} rows",
            utc(self.train_end),
            self.train_end,
            thousands(self.train_rows)
        )?;
        writeln!(
            f,
            "  valid  ts <= {} ({})  {:>10} rows",
            utc(self.valid_end),
            self.valid_end,
            thousands(self.valid_rows)
        )?;
        writeln!(
            f,
            "  test   ts >  {} ({})  {:>10} rows",
            utc(self.valid_end),
            self.valid_end,
            thousands(self.test_rows)
        )?;
        write!(
            f,
            "  items already seen in train: valid {} of items ({} of reviews), test {} of items ({} of reviews)",
            pct(self.valid_items_seen),
            pct(self.valid_reviews_seen),
            pct(self.test_items_seen),
            pct(self.test_reviews_seen)
        )
    }
}

/// Adds the `split` column ("train" | "valid" | "test") from inclusive cutoffs.
pub fn assign_split(reviews: LazyFrame, train_end: i64, valid_end: i64) -> LazyFrame {
    let ts = col(cols::TIMESTAMP);
    reviews.with_column(
        when(ts.clone().lt_eq(lit(train_end)))
            .then(lit(Split::Train.as_str()))
            .when(ts.lt_eq(lit(valid_end)))
            .then(lit(Split::Valid.as_str()))
            .otherwise(lit(Split::Test.as_str()))
            .alias(cols::SPLIT),
    )
}

/// Cutoffs at two quantiles of the reviews' timestamps (each an actual timestamp of the data).
pub fn quantile_cutoffs(reviews: LazyFrame, quantiles: &[f64]) -> Result<(i64, i64)> {
    let [q1, q2] = quantiles else {
        bail!("--quantiles takes two values, e.g. 0.8,0.9 (got {quantiles:?})")
    };
    ensure!(
        0.0 < *q1 && q1 < q2 && *q2 <= 1.0,
        "--quantiles must satisfy 0 < train < valid <= 1 (got {q1},{q2})"
    );
    let q = |x: f64, name: &str| {
        col(cols::TIMESTAMP)
            .quantile(lit(x), QuantileMethod::Lower)
            .cast(DataType::Int64)
            .alias(name)
    };
    let df = reviews.select([q(*q1, "q1"), q(*q2, "q2")]).collect()?;
    let get = |name: &str| -> Result<i64> {
        df.column(name)?
            .i64()?
            .get(0)
            .context("no reviews to take quantiles of")
    };
    Ok((get("q1")?, get("q2")?))
}

fn seen_in_train(labelled: &LazyFrame, split: Split) -> Result<((usize, usize), (usize, usize))> {
    let of = |s: Split| {
        labelled
            .clone()
            .filter(col(cols::SPLIT).eq(lit(s.as_str())))
    };
    let train_items = of(Split::Train)
        .select([col(cols::PARENT_ASIN)])
        .unique(None, UniqueKeepStrategy::Any);
    let part = of(split);
    let items = part
        .clone()
        .select([col(cols::PARENT_ASIN)])
        .unique(None, UniqueKeepStrategy::Any);
    let n = |lf: LazyFrame| -> Result<usize> { Ok(lf.collect()?.height()) };
    let seen_items = n(items.clone().semi_join(
        train_items.clone(),
        col(cols::PARENT_ASIN),
        col(cols::PARENT_ASIN),
    ))?;
    let seen_reviews =
        n(part
            .clone()
            .semi_join(train_items, col(cols::PARENT_ASIN), col(cols::PARENT_ASIN)))?;
    Ok(((seen_items, n(items)?), (seen_reviews, n(part)?)))
}

/// Timestamps all below this (1973-03-03 in milliseconds) look like seconds.
const SECONDS_LIKE_BELOW: i64 = 100_000_000_000;

/// Reads `raw/{Cat}.jsonl[.gz]`, writes `processed/reviews_{train,valid,test}.parquet` and `split.json`.
pub fn run(ctx: &Ctx, cfg: &SplitConfig) -> Result<SplitSummary> {
    let start = Instant::now();
    let source = ctx.layout.raw_reviews()?;
    let read = read_reviews(
        &source,
        ReadOptions {
            skip_bad_lines: cfg.skip_bad_lines,
            quiet: ctx.quiet,
        },
    )?;
    ensure!(
        read.frame.height() > 0,
        "{}: no reviews to split ({} lines{}): check the file",
        source.display(),
        thousands(read.lines),
        if read.skipped > 0 {
            format!(", {} skipped as malformed", thousands(read.skipped))
        } else {
            String::new()
        }
    );
    let mut warnings = Vec::new();
    // The same review twice (a file concatenated with itself, a re-download appended): keep the
    // first, count the rest. review_id is the line number, so it is left out of the comparison.
    let before = read.frame.height();
    let subset: Vec<Expr> = read
        .frame
        .get_column_names()
        .into_iter()
        .filter(|c| c.as_str() != cols::REVIEW_ID)
        .map(|c| col(c.clone()))
        .collect();
    let frame = read
        .frame
        .lazy()
        .unique_stable_generic(Some(subset), UniqueKeepStrategy::First)
        .collect()?;
    let duplicates = before - frame.height();
    if duplicates > 0 {
        warnings.push(format!(
            "{} duplicate review lines (same user, item, time and text as an earlier line) dropped",
            thousands(duplicates)
        ));
    }
    let max_ts = frame.column(cols::TIMESTAMP)?.i64()?.max().unwrap_or(0);
    if max_ts < SECONDS_LIKE_BELOW {
        warnings.push(format!(
            "every timestamp is below {SECONDS_LIKE_BELOW} (latest {max_ts} = {} read as \
             milliseconds): they look like seconds since 1970, while Amazon Reviews 2023 counts \
             milliseconds; multiply them by 1000",
            utc(max_ts)
        ));
    }
    let (train_end, valid_end) = match &cfg.quantiles {
        Some(q) => quantile_cutoffs(frame.clone().lazy(), q)?,
        None => (cfg.train_end, cfg.valid_end),
    };
    ensure!(
        train_end <= valid_end,
        "--train-end ({train_end}) must not be after --valid-end ({valid_end})"
    );

    let labelled = assign_split(frame.lazy(), train_end, valid_end)
        .collect()?
        .lazy();
    let mut rows = [0usize; 3];
    let mut pending = Vec::new();
    for (i, split) in Split::ALL.into_iter().enumerate() {
        let mut part = labelled
            .clone()
            .filter(col(cols::SPLIT).eq(lit(split.as_str())))
            .drop(by_name([cols::SPLIT], true, false))
            .collect()?;
        rows[i] = part.height();
        pending.push(parquet_pending(&mut part, &ctx.layout.reviews(split))?);
    }
    for (i, split) in Split::ALL.into_iter().enumerate() {
        if rows[i] == 0 {
            warnings.push(format!(
                "the {split} split is empty: the cut-offs ({} / {}) leave no review there; \
                 set --train-end/--valid-end inside the data's time range or use --quantiles",
                utc(train_end),
                utc(valid_end)
            ));
        }
    }
    for w in &warnings {
        eprintln!("warning: {}: {w}", source.display());
    }
    let (valid_items_seen, valid_reviews_seen) = seen_in_train(&labelled, Split::Valid)?;
    let (test_items_seen, test_reviews_seen) = seen_in_train(&labelled, Split::Test)?;
    let summary = SplitSummary {
        source,
        lines: read.lines,
        skipped_lines: read.skipped,
        duplicates,
        warnings,
        skipped_examples: read.skipped_examples,
        train_end,
        valid_end,
        train_rows: rows[0],
        valid_rows: rows[1],
        test_rows: rows[2],
        valid_items_seen,
        test_items_seen,
        valid_reviews_seen,
        test_reviews_seen,
        elapsed: start.elapsed(),
    };
    let info = AtomicPath::new(&ctx.layout.split_info())?;
    std::fs::write(info.tmp(), serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("writing {}", ctx.layout.split_info().display()))?;
    pending.push(info);
    // Every output is written: only now do they replace the earlier ones, together.
    for p in pending {
        p.commit()?;
    }
    Ok(summary)
}
