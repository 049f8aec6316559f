//! `recsys etl summaries`: LLM summaries of long item descriptions → `processed/summaries.parquet`.
//!
//! Cached by content hash like keywords. Offline, no summary is invented: the file is written
//! with no rows, and `build-items` uses the (truncated) description instead.

use std::time::{Duration, Instant};

use anyhow::Result;
use polars::prelude::*;

use crate::cols;
use crate::context::Ctx;
use crate::data::{ReadOptions, read_meta};
use crate::io::{progress, thousands, write_parquet};
use crate::llm::{self, Backend, Cache, Job, LlmArgs, Prompt};

/// Bumped when a change to this stage's logic changes what it writes: the pipeline's records
/// made with another version are stale, so the stage runs again.
pub const CODE_VERSION: u32 = 1;

pub const PROMPT_VERSION: &str = "summary-v1";

#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct SummariesConfig {
    #[command(flatten)]
    pub llm: LlmArgs,
    /// Only descriptions longer than this many characters are summarised
    #[arg(long, default_value_t = 500, value_parser = crate::cli::count0)]
    pub min_chars: usize,
    /// Summarise at most N descriptions (quick runs)
    #[arg(long, value_parser = crate::cli::count)]
    pub max_items: Option<usize>,
    /// Skip (and count) malformed metadata lines instead of stopping at the first
    #[arg(long)]
    pub skip_bad_lines: bool,
}

crate::cli::clap_default!(SummariesConfig);

#[derive(Debug, Clone)]
pub struct SummariesSummary {
    pub backend: Backend,
    pub items: usize,
    pub long_descriptions: usize,
    pub summarised: usize,
    pub failed: usize,
    pub cached: usize,
    pub elapsed: Duration,
}

impl std::fmt::Display for SummariesSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "etl summaries [{}]: {} items, {} long descriptions, {} with an LLM summary ({} cached, {} failed) in {:.1}s",
            self.backend.as_str(),
            thousands(self.items),
            thousands(self.long_descriptions),
            thousands(self.summarised),
            thousands(self.cached),
            thousands(self.failed),
            self.elapsed.as_secs_f64()
        )?;
        if self.backend == Backend::Offline {
            write!(
                f,
                "\n  offline: no summaries invented; items keep their truncated description"
            )?;
        }
        Ok(())
    }
}

fn prompt(description: &str) -> Prompt {
    Prompt {
        system: "You summarise product descriptions for a search index.".to_string(),
        max_tokens: Some(128),
        schema: None,
        user: format!(
            "Product description:\n{description}\n\nSummarise it in a few short phrases (at most 30 words in all): \
             what the product is, who it is for, its key attributes. Answer with the phrases only, separated by \"; \"."
        ),
    }
}

/// Summarises long descriptions of `raw/meta_{Cat}` (see the module docs).
pub fn run(ctx: &Ctx, cfg: &SummariesConfig) -> Result<SummariesSummary> {
    let start = Instant::now();
    let meta = read_meta(
        &ctx.layout.raw_meta()?,
        ReadOptions {
            skip_bad_lines: cfg.skip_bad_lines,
            quiet: ctx.quiet,
        },
    )?
    .frame;
    let n_items = meta.height();
    let long = meta
        .lazy()
        .select([
            col(cols::PARENT_ASIN),
            col(cols::DESCRIPTION)
                .list()
                .join(lit(" "), true)
                .alias(cols::DESCRIPTION),
        ])
        .filter(
            col(cols::DESCRIPTION)
                .str()
                .len_chars()
                .gt(lit(cfg.min_chars as u32)),
        )
        .collect()?;
    let long = match cfg.max_items {
        Some(n) => long.head(Some(n)),
        None => long,
    };
    let asins = crate::io::text_column(&long, cols::PARENT_ASIN)?;
    let descriptions = crate::io::text_column(&long, cols::DESCRIPTION)?;
    let mut summary = SummariesSummary {
        backend: cfg.llm.backend,
        items: n_items,
        long_descriptions: long.height(),
        summarised: 0,
        failed: 0,
        cached: 0,
        elapsed: Duration::ZERO,
    };
    let (mut out_asins, mut out_text) = (Vec::new(), Vec::new());
    if cfg.llm.backend != Backend::Offline {
        let client = cfg.llm.client()?;
        let model = cfg.llm.model_name();
        let mut cache = Cache::<String>::open(&ctx.layout.llm_cache("description_summaries"))?;
        let keys: Vec<String> = descriptions
            .iter()
            .map(|d| llm::cache::key(cfg.llm.backend.as_str(), &model, PROMPT_VERSION, d))
            .collect();
        let jobs = keys
            .iter()
            .zip(&descriptions)
            .map(|(k, d)| Job {
                key: k.clone(),
                prompt: prompt(d),
            })
            .collect();
        let pb = progress(keys.len() as u64, "summaries", ctx.quiet);
        let (answers, stats) = llm::run_jobs(
            &client,
            &mut cache,
            jobs,
            llm::parse::summary,
            cfg.llm.concurrency,
            &pb,
        )?;
        pb.finish_and_clear();
        for (asin, key) in asins.iter().zip(&keys) {
            if let Ok(s) = &answers[key] {
                out_asins.push(*asin);
                out_text.push(s.clone());
            }
        }
        summary.failed = keys.iter().filter(|k| answers[*k].is_err()).count();
        summary.cached = stats.cached;
    }
    summary.summarised = out_asins.len();
    let mut df = DataFrame::new(
        out_asins.len(),
        vec![
            Column::new(cols::PARENT_ASIN.into(), out_asins),
            Column::new(cols::SUMMARY.into(), out_text),
        ],
    )?
    .lazy()
    .with_columns([
        lit(cfg.llm.backend.as_str()).alias(cols::BACKEND),
        lit(cfg.llm.model_name()).alias(cols::MODEL),
    ])
    .collect()?;
    write_parquet(&mut df, &ctx.layout.summaries())?;
    summary.elapsed = start.elapsed();
    Ok(summary)
}
