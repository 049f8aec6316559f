//! `recsys etl build-items`: the item table stage 1 embeds → `processed/items.parquet`.
//!
//! One row per `parent_asin` of the metadata. Review keywords come from TRAIN reviews only
//! (ranked by how many reviews mention them); `embedding_text` follows the seed:
//! `[Title] … [Review Keywords] kw1, kw2, … [Description Summary] … [Features] f1, f2, …`,
//! leaving out empty sections. Missing inputs (split, keywords, summaries) are built first, with
//! the settings file's `[split]`, `[keywords]` and `[summaries]` when run from the command line;
//! a step whose outputs are newer than its inputs is skipped (and says so), `--force` re-runs.

use std::time::{Duration, Instant};

use anyhow::Result;
use polars::prelude::*;

use crate::cols;
use crate::context::Ctx;
use crate::data::{ReadOptions, read_meta};
use crate::etl::keywords::{self, KeywordsConfig, SplitChoice};
use crate::etl::split::{self, SplitConfig};
use crate::etl::summaries::{self, SummariesConfig};
use crate::io::{is_fresh, scan_parquet, thousands, write_parquet};
use crate::layout::{Layout, Split};
use crate::llm::LlmArgs;

/// Bumped when a change to this stage's logic changes what it writes: the pipeline's records
/// made with another version are stale, so the stage runs again.
pub const CODE_VERSION: u32 = 1;

#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct BuildItemsConfig {
    /// Review keywords kept per item (the most mentioned first)
    #[arg(long, default_value_t = 30, value_parser = crate::cli::count0)]
    pub top_keywords: usize,
    /// Characters of the description kept when an item has no LLM summary
    #[arg(long, default_value_t = 300, value_parser = crate::cli::count0)]
    pub description_chars: usize,
    /// Re-run every step even when its outputs are newer than its inputs
    #[arg(long)]
    pub force: bool,
    /// Skip (and count) malformed raw lines instead of stopping at the first
    #[arg(long)]
    pub skip_bad_lines: bool,
    /// Backend for the keywords and summaries steps, when they have to run
    #[command(flatten)]
    pub llm: LlmArgs,
}

crate::cli::clap_default!(BuildItemsConfig);

#[derive(Debug, Clone, Default)]
pub struct BuildItemsSummary {
    /// What each prerequisite step did (its summary, or "up to date, skipped").
    pub steps: Vec<String>,
    pub items: usize,
    pub items_with_train_reviews: usize,
    pub items_with_keywords: usize,
    pub items_with_llm_summary: usize,
    pub items_with_description: usize,
    pub items_with_features: usize,
    /// Distinct train-review items absent from the metadata (not in items.parquet).
    pub review_items_missing_from_meta: usize,
    pub meta_skipped_lines: usize,
    /// What the input had that a user should know (duplicate metadata rows).
    pub warnings: Vec<String>,
    pub elapsed: Duration,
}

impl std::fmt::Display for BuildItemsSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for s in &self.steps {
            writeln!(f, "{s}")?;
        }
        let n = |x: usize| thousands(x);
        writeln!(
            f,
            "etl build-items: {} items in {:.1}s",
            n(self.items),
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "  with train reviews {}, with keywords {}, with LLM summary {}, with description {}, with features {}",
            n(self.items_with_train_reviews),
            n(self.items_with_keywords),
            n(self.items_with_llm_summary),
            n(self.items_with_description),
            n(self.items_with_features)
        )?;
        write!(
            f,
            "  train-review items missing from the metadata: {} (not in items.parquet); bad metadata lines skipped: {}",
            n(self.review_items_missing_from_meta),
            n(self.meta_skipped_lines)
        )?;
        for w in &self.warnings {
            write!(f, "\n  warning: {w}")?;
        }
        Ok(())
    }
}

/// Metadata lines that repeat a `parent_asin`: the first line of each item is kept; a warning
/// counts them, and separately those whose titles disagree (with an example).
fn duplicate_items(meta: &DataFrame, file: &std::path::Path) -> Result<Vec<String>> {
    let repeated = meta.height()
        - meta
            .column(cols::PARENT_ASIN)?
            .as_materialized_series()
            .n_unique()?;
    if repeated == 0 {
        return Ok(Vec::new());
    }
    let conflicts = meta
        .clone()
        .lazy()
        .group_by_stable([col(cols::PARENT_ASIN)])
        .agg([col(cols::TITLE).unique_stable().alias("titles")])
        .filter(col("titles").list().len().gt(lit(1)))
        .collect()?;
    let mut out = vec![format!(
        "{}: {} lines repeat an item (parent_asin) of an earlier line; the first line of each \
         item is kept",
        file.display(),
        thousands(repeated)
    )];
    if conflicts.height() > 0 {
        let asin = conflicts
            .column(cols::PARENT_ASIN)?
            .str()?
            .get(0)
            .unwrap_or("");
        let titles = conflicts.column("titles")?.list()?.get_as_series(0);
        let titles = titles.as_ref().map(|t| t.str()).transpose()?;
        let shown: Vec<String> = titles
            .into_iter()
            .flat_map(|c| c.iter().flatten().take(2).map(|x| format!("{x:?}")))
            .collect();
        out.push(format!(
            "{} items have different titles on different lines (e.g. {asin}: {}); the first is kept",
            thousands(conflicts.height()),
            shown.join(" vs ")
        ));
    }
    Ok(out)
}

/// `(parent_asin, embedding_text)` of every row of items.parquet, in file order.
pub fn item_texts(l: &Layout) -> Result<(Vec<String>, Vec<String>)> {
    let items = scan_parquet(&l.items())?
        .select([col(cols::PARENT_ASIN), col(cols::EMBEDDING_TEXT)])
        .collect()?;
    Ok((
        crate::io::strings(&items, cols::PARENT_ASIN)?,
        crate::io::strings(&items, cols::EMBEDDING_TEXT)?,
    ))
}

/// The settings of the steps `build-items` runs first when their outputs are missing or older
/// than their inputs: the command line takes them from the settings file's `[split]`,
/// `[keywords]` and `[summaries]` (as the pipeline does), a library caller from wherever it likes.
#[derive(Debug, Clone, Default)]
pub struct Upstream {
    pub split: SplitConfig,
    pub keywords: KeywordsConfig,
    pub summaries: SummariesConfig,
}

/// Runs the missing or stale prerequisites with their default settings, then merges them into
/// `items.parquet`.
pub fn run(ctx: &Ctx, cfg: &BuildItemsConfig) -> Result<BuildItemsSummary> {
    run_with(ctx, cfg, &Upstream::default())
}

/// Runs the missing or stale prerequisites with `up`'s settings (`--skip-bad-lines` and the LLM
/// backend of `cfg` win), then merges them into `items.parquet`.
pub fn run_with(ctx: &Ctx, cfg: &BuildItemsConfig, up: &Upstream) -> Result<BuildItemsSummary> {
    let start = Instant::now();
    let l = &ctx.layout;
    let mut summary = BuildItemsSummary::default();
    let skipped = |what: &str| format!("{what}: up to date, skipped (--force re-runs)");

    let raw_reviews = l.raw_reviews()?;
    let splits: Vec<_> = Split::ALL.iter().map(|s| l.reviews(*s)).collect();
    if cfg.force || !is_fresh(&splits, std::slice::from_ref(&raw_reviews)) {
        let cfg = SplitConfig {
            skip_bad_lines: cfg.skip_bad_lines || up.split.skip_bad_lines,
            ..up.split.clone()
        };
        summary.steps.push(split::run(ctx, &cfg)?.to_string());
    } else {
        summary.steps.push(skipped("etl split"));
    }
    let kw = l.keywords(Split::Train);
    if cfg.force || !is_fresh(std::slice::from_ref(&kw), &[l.reviews(Split::Train)]) {
        let kcfg = KeywordsConfig {
            split: SplitChoice::Train,
            llm: cfg.llm.clone(),
            ..up.keywords.clone()
        };
        summary.steps.push(keywords::run(ctx, &kcfg)?.to_string());
    } else {
        summary.steps.push(skipped("etl keywords --split train"));
    }
    let raw_meta = l.raw_meta()?;
    if cfg.force || !is_fresh(&[l.summaries()], std::slice::from_ref(&raw_meta)) {
        let scfg = SummariesConfig {
            llm: cfg.llm.clone(),
            skip_bad_lines: cfg.skip_bad_lines || up.summaries.skip_bad_lines,
            ..up.summaries.clone()
        };
        summary.steps.push(summaries::run(ctx, &scfg)?.to_string());
    } else {
        summary.steps.push(skipped("etl summaries"));
    }

    let meta = read_meta(
        &raw_meta,
        ReadOptions {
            skip_bad_lines: cfg.skip_bad_lines,
            quiet: ctx.quiet,
        },
    )?;
    summary.meta_skipped_lines = meta.skipped;
    if meta.frame.height() == 0 {
        anyhow::bail!(
            "{}: no items ({} lines{}): the item table needs each item's metadata line",
            raw_meta.display(),
            thousands(meta.lines),
            if meta.skipped > 0 {
                format!(", {} of them bad and skipped", thousands(meta.skipped))
            } else {
                String::new()
            }
        );
    }
    summary
        .warnings
        .extend(duplicate_items(&meta.frame, &raw_meta)?);
    let meta = meta.frame.lazy().unique_stable(
        Some(by_name([cols::PARENT_ASIN], true, false)),
        UniqueKeepStrategy::First,
    );
    let train = scan_parquet(&l.reviews(Split::Train))?;
    let keywords = scan_parquet(&kw)?;
    let summaries =
        scan_parquet(&l.summaries())?.select([col(cols::PARENT_ASIN), col(cols::SUMMARY)]);
    let mut items = merge(meta.clone(), train.clone(), keywords, summaries, cfg)?.collect()?;

    summary.review_items_missing_from_meta = train
        .select([col(cols::PARENT_ASIN)])
        .unique(None, UniqueKeepStrategy::Any)
        .join(
            meta.select([col(cols::PARENT_ASIN)]),
            [col(cols::PARENT_ASIN)],
            [col(cols::PARENT_ASIN)],
            JoinArgs::new(JoinType::Anti),
        )
        .collect()?
        .height();
    let count = |e: Expr| -> Result<usize> {
        let df = items
            .clone()
            .lazy()
            .select([e.cast(DataType::UInt32).sum().alias("n")])
            .collect()?;
        Ok(df.column("n")?.u32()?.get(0).unwrap_or(0) as usize)
    };
    summary.items = items.height();
    summary.items_with_train_reviews = count(col(cols::TRAIN_REVIEW_COUNT).gt(lit(0)))?;
    summary.items_with_keywords = count(col(cols::N_KEYWORDS).gt(lit(0)))?;
    summary.items_with_llm_summary = count(col(cols::HAS_LLM_SUMMARY))?;
    summary.items_with_description = count(col(cols::DESCRIPTION).list().len().gt(lit(0)))?;
    summary.items_with_features = count(col(cols::FEATURES).list().len().gt(lit(0)))?;
    write_parquet(&mut items, &l.items())?;
    summary.elapsed = start.elapsed();
    Ok(summary)
}

/// `[Label] body`, or null when the body is null or empty (the section is left out).
fn section(label: &str, body: Expr) -> Expr {
    when(body.clone().str().len_chars().gt(lit(0)))
        .then(concat_str([lit(format!("[{label}] ")), body], "", true))
        .otherwise(lit(NULL).cast(DataType::String))
}

/// The item table as one lazy chain: metadata ⋈ train keyword counts ⋈ train stats ⋈ summaries.
pub fn merge(
    meta: LazyFrame,
    train_reviews: LazyFrame,
    keywords: LazyFrame,
    summaries: LazyFrame,
    cfg: &BuildItemsConfig,
) -> Result<LazyFrame> {
    let kw = cols::KEYWORDS;
    // Keywords: TRAIN reviews only (the file is the train split's), ranked by how many reviews
    // mention them, ties alphabetical.
    let ranked = keywords
        .filter(col(cols::KEYWORDS_FAILED).not())
        .select([col(cols::PARENT_ASIN), col(kw)])
        .explode(
            by_name([kw], true, false),
            ExplodeOptions {
                empty_as_null: true,
                keep_nulls: false,
            },
        )
        .filter(
            col(kw)
                .is_not_null()
                .and(col(kw).str().len_chars().gt(lit(0))),
        )
        .group_by([col(cols::PARENT_ASIN), col(kw)])
        .agg([len().alias("mentions")])
        .sort_by_exprs(
            [col(cols::PARENT_ASIN), col("mentions"), col(kw)],
            SortMultipleOptions::default()
                .with_order_descending_multi([false, true, false])
                .with_maintain_order(true),
        )
        .group_by_stable([col(cols::PARENT_ASIN)])
        .agg([col(kw).head(Some(cfg.top_keywords)).alias(kw)]);
    let stats = train_reviews.group_by([col(cols::PARENT_ASIN)]).agg([
        len().cast(DataType::UInt32).alias(cols::TRAIN_REVIEW_COUNT),
        col(cols::TIMESTAMP).min().alias(cols::FIRST_REVIEW_TS),
    ]);
    let on = || [col(cols::PARENT_ASIN)];
    // Keep the metadata's row order: outputs must be deterministic.
    let left = || JoinArgs {
        maintain_order: MaintainOrderJoin::Left,
        ..JoinArgs::new(JoinType::Left)
    };
    // The description without an LLM summary, cut at a word boundary after `description_chars`.
    let full = col(cols::DESCRIPTION)
        .list()
        .join(lit(" "), true)
        .str()
        .strip_chars(lit(NULL));
    let cut = full
        .clone()
        .str()
        .head(lit(cfg.description_chars as u64))
        .str()
        .replace(lit(r"\s+\S*$"), lit(""), false);
    let description = when(
        full.clone()
            .str()
            .len_chars()
            .gt(lit(cfg.description_chars as u32)),
    )
    .then(concat_str([cut, lit("…")], "", true))
    .otherwise(full);
    Ok(meta
        .join(ranked, on(), on(), left())
        .join(stats, on(), on(), left())
        .join(summaries, on(), on(), left())
        .with_columns([
            col(kw).fill_null(
                lit(Series::new_empty(PlSmallStr::EMPTY, &DataType::String)).implode(false),
            ),
            col(cols::TRAIN_REVIEW_COUNT).fill_null(lit(0u32)),
            col(cols::SUMMARY)
                .is_not_null()
                .alias(cols::HAS_LLM_SUMMARY),
        ])
        .with_columns([
            col(kw)
                .list()
                .len()
                .cast(DataType::UInt32)
                .alias(cols::N_KEYWORDS),
            concat_str(
                [
                    section("Title", col(cols::TITLE)),
                    section("Review Keywords", col(kw).list().join(lit(", "), true)),
                    section(
                        "Description Summary",
                        coalesce(&[col(cols::SUMMARY), description]),
                    ),
                    section("Features", col(cols::FEATURES).list().join(lit(", "), true)),
                ],
                " ",
                true,
            )
            .alias(cols::EMBEDDING_TEXT),
        ])
        .select([
            col(cols::PARENT_ASIN),
            col(cols::TITLE),
            col(cols::MAIN_CATEGORY),
            col(cols::STORE),
            col(cols::PRICE),
            col(cols::AVERAGE_RATING),
            col(cols::RATING_NUMBER),
            col(cols::TRAIN_REVIEW_COUNT),
            col(cols::FIRST_REVIEW_TS),
            col(cols::N_KEYWORDS),
            col(kw),
            col(cols::HAS_LLM_SUMMARY),
            col(cols::SUMMARY),
            col(cols::DESCRIPTION),
            col(cols::FEATURES),
            col(cols::EMBEDDING_TEXT),
        ]))
}
