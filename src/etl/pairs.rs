//! `recsys train pairs`: (query, positive[, negative]) rows for fine-tuning the retriever →
//! `processed/training_pairs.parquet`. Queries come from TRAIN reviews only; the positive is the
//! review's item `embedding_text`.

use std::time::{Duration, Instant};

use anyhow::Result;
use polars::prelude::*;
use rand::prelude::*;
use rand_chacha::ChaCha8Rng;

use crate::cols;
use crate::context::Ctx;
use crate::io::{scan_parquet, thousands, write_parquet};
use crate::layout::Split;
use crate::retrieve::query::{DEFAULT_MAX_KEYWORDS, QueryType, queries};

/// Bumped when a change to this stage's logic changes what it writes: the pipeline's records
/// made with another version are stale, so the stage runs again.
pub const CODE_VERSION: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PairFormat {
    /// query, positive
    Pair,
    /// query, positive, negative (a random other item, seeded)
    Triplet,
}

#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct PairsConfig {
    /// What the query of a training row is
    #[arg(long, value_enum, default_value_t = QueryType::Both)]
    pub query_type: QueryType,
    /// Pairs, or triplets with a random negative item
    #[arg(long, value_enum, default_value_t = PairFormat::Pair)]
    pub format: PairFormat,
    /// Keywords used per keyword query
    #[arg(long, default_value_t = DEFAULT_MAX_KEYWORDS, value_parser = crate::cli::count)]
    pub max_keywords: usize,
}

crate::cli::clap_default!(PairsConfig);

#[derive(Debug, Clone, Default)]
pub struct PairsSummary {
    pub rows: usize,
    pub keyword_rows: usize,
    pub review_text_rows: usize,
    /// Queries skipped because they were empty.
    pub empty_queries: usize,
    /// Train reviews whose item is not in items.parquet.
    pub missing_items: usize,
    pub elapsed: Duration,
}

impl std::fmt::Display for PairsSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = |x: usize| thousands(x);
        write!(
            f,
            "train pairs: {} rows ({} keyword queries, {} review-text queries); skipped {} empty queries, {} reviews of items not in items.parquet; {:.1}s",
            n(self.rows),
            n(self.keyword_rows),
            n(self.review_text_rows),
            n(self.empty_queries),
            n(self.missing_items),
            self.elapsed.as_secs_f64()
        )
    }
}

/// Builds the training rows (see the module docs).
pub fn run(ctx: &Ctx, cfg: &PairsConfig) -> Result<PairsSummary> {
    let start = Instant::now();
    let l = &ctx.layout;
    // The item table is read once: joined as positives, sampled for negatives.
    let item_table = scan_parquet(&l.items())?
        .select([col(cols::PARENT_ASIN), col(cols::EMBEDDING_TEXT)])
        .collect()?;
    let items = item_table
        .clone()
        .lazy()
        .rename([cols::EMBEDDING_TEXT], [cols::POSITIVE], true);
    let reviews = scan_parquet(&l.reviews(Split::Train))?;
    let all = queries(l, Split::Train, cfg.query_type, cfg.max_keywords)?;
    let on = || [col(cols::PARENT_ASIN)];
    let missing = reviews
        .join(items.clone(), on(), on(), JoinArgs::new(JoinType::Anti))
        .collect()?
        .height();
    // Keep the query order (the seeded shuffle below must see the same input every run).
    let inner = JoinArgs {
        maintain_order: MaintainOrderJoin::Left,
        ..JoinArgs::new(JoinType::Inner)
    };
    let joined = all.join(items, on(), on(), inner).collect()?;
    let mut summary = PairsSummary {
        missing_items: missing,
        ..Default::default()
    };
    let nonempty = joined
        .clone()
        .lazy()
        .filter(col(cols::QUERY).str().len_chars().gt(lit(0)))
        .collect()?;
    summary.empty_queries = joined.height() - nonempty.height();

    // Shuffle with the seed.
    let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed);
    let mut order: Vec<IdxSize> = (0..nonempty.height() as IdxSize).collect();
    order.shuffle(&mut rng);
    let mut out = nonempty
        .take(&IdxCa::from_vec(PlSmallStr::EMPTY, order))?
        .select([
            cols::QUERY,
            cols::POSITIVE,
            cols::PARENT_ASIN,
            cols::QUERY_TYPE,
            cols::REVIEW_ID,
        ])?;
    if cfg.format == PairFormat::Triplet {
        let asins = crate::io::text_column(&item_table, cols::PARENT_ASIN)?;
        let texts: Vec<Option<&str>> = item_table
            .column(cols::EMBEDDING_TEXT)?
            .str()?
            .iter()
            .collect();
        anyhow::ensure!(
            asins.len() >= 2,
            "triplets need at least two items in {}",
            l.items().display()
        );
        let (mut neg, mut neg_asin) = (
            Vec::with_capacity(out.height()),
            Vec::with_capacity(out.height()),
        );
        for p in out.column(cols::PARENT_ASIN)?.str()?.no_null_iter() {
            let j = loop {
                let j = rng.random_range(0..asins.len());
                if asins[j] != p {
                    break j;
                }
            };
            neg.push(texts[j]);
            neg_asin.push(asins[j]);
        }
        out.with_column(Column::new(cols::NEGATIVE.into(), neg))?;
        out.with_column(Column::new(cols::NEGATIVE_PARENT_ASIN.into(), neg_asin))?;
    }
    let types = out.column(cols::QUERY_TYPE)?.str()?.clone();
    summary.keyword_rows = types
        .iter()
        .filter(|t| *t == Some(QueryType::Keywords.as_str()))
        .count();
    summary.review_text_rows = out.height() - summary.keyword_rows;
    summary.rows = out.height();
    write_parquet(&mut out, &l.training_pairs())?;
    summary.elapsed = start.elapsed();
    Ok(summary)
}
