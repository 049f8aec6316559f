//! `recsys etl keywords`: WHO / WHEN / WHY keywords per review →
//! `processed/keywords_{split}.parquet` (`parent_asin` carried on every row).

use std::time::{Duration, Instant};

use anyhow::Result;
use polars::prelude::*;
use rayon::prelude::*;

use crate::cols;
use crate::context::Ctx;
use crate::data::reader::list_col;
use crate::etl::extract::{self, MAX_KEYWORDS};
use crate::io::{progress, read_parquet, thousands, write_parquet};
use crate::layout::Split;
use crate::llm::{self, Backend, Cache, Job, LlmArgs, Prompt};

/// Bumped when a change to this stage's logic changes what it writes: the pipeline's records
/// made with another version are stale, so the stage runs again.
pub const CODE_VERSION: u32 = 1;

/// Bump when the prompt changes: cached answers of another version are not reused.
pub const PROMPT_VERSION: &str = "keywords-v2";

const SYSTEM: &str = "You extract search keywords from product reviews. Answer with JSON only.";

/// Which splits a stage processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SplitChoice {
    Train,
    Valid,
    Test,
    All,
}

impl SplitChoice {
    pub fn splits(self) -> Vec<Split> {
        match self {
            SplitChoice::Train => vec![Split::Train],
            SplitChoice::Valid => vec![Split::Valid],
            SplitChoice::Test => vec![Split::Test],
            SplitChoice::All => Split::ALL.to_vec(),
        }
    }
}

#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct KeywordsConfig {
    /// Which split(s) to extract keywords for
    #[arg(long, value_enum, default_value_t = SplitChoice::Train)]
    pub split: SplitChoice,
    #[command(flatten)]
    pub llm: LlmArgs,
    /// Process only the first N reviews of each split (quick runs)
    #[arg(long, value_parser = crate::cli::count)]
    pub max_items: Option<usize>,
    /// Keywords kept per review
    #[arg(long, default_value_t = MAX_KEYWORDS, value_parser = crate::cli::count)]
    pub max_keywords: usize,
}

crate::cli::clap_default!(KeywordsConfig);

#[derive(Debug, Clone)]
pub struct SplitKeywords {
    pub split: Split,
    pub reviews: usize,
    /// Reviews with at least one keyword.
    pub with_keywords: usize,
    /// Reviews whose LLM answer failed after retries (recorded as `keywords_failed`).
    pub failed: usize,
    pub cached: usize,
    pub requested: usize,
    /// Why the first failed review failed (the LLM's error or the unparseable reply).
    pub first_error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct KeywordsSummary {
    pub backend: Backend,
    pub model: String,
    pub splits: Vec<SplitKeywords>,
    pub elapsed: Duration,
}

impl std::fmt::Display for KeywordsSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let model = if self.model.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.model)
        };
        write!(
            f,
            "etl keywords [{}{model}] in {:.1}s",
            self.backend.as_str(),
            self.elapsed.as_secs_f64()
        )?;
        for s in &self.splits {
            write!(
                f,
                "\n  {:<5} {:>9} reviews, {:>9} with keywords, {} failed",
                s.split.as_str(),
                thousands(s.reviews),
                thousands(s.with_keywords),
                thousands(s.failed)
            )?;
            if self.backend != Backend::Offline {
                write!(
                    f,
                    " ({} cached, {} requested)",
                    thousands(s.cached),
                    thousands(s.requested)
                )?;
            }
            if let Some(e) = &s.first_error {
                write!(f, "\n        first failure: {e}")?;
            }
        }
        Ok(())
    }
}

/// The JSON schema of a keywords answer: `{"keywords": [string, …]}` with at most `max` items of
/// at most 60 characters (a grammar-constrained small model otherwise can run a string on until
/// the token cap cuts the JSON).
pub fn schema(max: usize) -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {"keywords": {
            "type": "array",
            "items": {"type": "string", "maxLength": 60},
            "maxItems": max
        }},
        "required": ["keywords"],
        "additionalProperties": false
    })
}

fn prompt(title: &str, text: &str, max: usize, with_schema: bool) -> Prompt {
    Prompt {
        system: SYSTEM.to_string(),
        schema: with_schema.then(|| schema(max)),
        // the schema's bound (`max` strings of at most 60 characters, one token each at worst,
        // and the JSON around them): the cap never cuts a schema-conforming answer
        max_tokens: Some(32 + 64 * max as u32),
        user: format!(
            "Review title: {title}\nReview: {text}\n\nList up to {max} short keywords (1-3 words, lower case) that \
             would help find the product this review is about: WHO uses it (e.g. \"daughter\", \"men\"), WHEN or \
             WHERE it is used (\"after the gym\", \"winter\"), WHY it was bought (needs, problems: \"thin hair\", \
             \"dry skin\"), and product attributes (type, scent, ingredients). Skip generic sentiment words \
             (\"great\", \"love\", \"product\"). Answer with a JSON object only, whose one field \"keywords\" is the list of strings."
        ),
    }
}

/// Extracts keywords for the chosen splits (see the module docs).
pub fn run(ctx: &Ctx, cfg: &KeywordsConfig) -> Result<KeywordsSummary> {
    let start = Instant::now();
    let client = match cfg.llm.backend {
        Backend::Offline => None,
        _ => Some(cfg.llm.client()?),
    };
    let model = cfg.llm.model_name();
    // A schema-constrained answer may differ from a free one: they are cached apart.
    let version = match cfg.llm.no_schema {
        true => PROMPT_VERSION.to_string(),
        false => format!("{PROMPT_VERSION}+schema"),
    };
    let mut cache = match client {
        Some(_) => Some(Cache::<Vec<String>>::open(
            &ctx.layout.llm_cache("keywords"),
        )?),
        None => None,
    };
    let mut splits = Vec::new();
    for split in cfg.split.splits() {
        let mut reviews = read_parquet(&ctx.layout.reviews(split))?;
        if let Some(n) = cfg.max_items {
            reviews = reviews.head(Some(n));
        }
        let titles = crate::io::text_column(&reviews, cols::TITLE)?;
        let texts = crate::io::text_column(&reviews, cols::TEXT)?;
        let pb = progress(
            reviews.height() as u64,
            &format!("keywords {split}"),
            ctx.quiet,
        );
        let mut stats = llm::BatchStats::default();
        let mut first_error = None;
        // None = the LLM failed for this review (never silently empty).
        let keywords: Vec<Option<Vec<String>>> = match (&client, cache.as_mut()) {
            (Some(client), Some(cache)) => {
                let keys: Vec<Option<String>> = titles
                    .iter()
                    .zip(&texts)
                    .map(|(t, x)| {
                        (!t.trim().is_empty() || !x.trim().is_empty()).then(|| {
                            llm::cache::key(
                                cfg.llm.backend.as_str(),
                                &model,
                                &version,
                                &format!("{t}\n{x}"),
                            )
                        })
                    })
                    .collect();
                let jobs = keys
                    .iter()
                    .zip(titles.iter().zip(&texts))
                    .filter_map(|(k, (t, x))| {
                        k.as_ref().map(|k| Job {
                            key: k.clone(),
                            prompt: prompt(t, x, cfg.max_keywords, !cfg.llm.no_schema),
                        })
                    })
                    .collect();
                let (answers, s) = llm::run_jobs(
                    client,
                    cache,
                    jobs,
                    llm::parse::keywords,
                    cfg.llm.concurrency,
                    &pb,
                )?;
                stats = s;
                first_error = keys
                    .iter()
                    .flatten()
                    .find_map(|k| answers[k].as_ref().err().cloned());
                keys.iter()
                    .map(|k| match k {
                        None => Some(Vec::new()),
                        Some(k) => answers[k]
                            .as_ref()
                            .ok()
                            .map(|v| v.iter().take(cfg.max_keywords).cloned().collect()),
                    })
                    .collect()
            }
            _ => titles
                .par_iter()
                .zip(&texts)
                .map(|(t, x)| {
                    let k = extract::extract(t, x, cfg.max_keywords);
                    pb.inc(1);
                    Some(k)
                })
                .collect(),
        };
        pb.finish_and_clear();
        let failed: Vec<bool> = keywords.iter().map(Option::is_none).collect();
        let lists: Vec<Vec<String>> = keywords
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect();
        let summary = SplitKeywords {
            split,
            reviews: lists.len(),
            with_keywords: lists.iter().filter(|k| !k.is_empty()).count(),
            failed: failed.iter().filter(|&&f| f).count(),
            cached: stats.cached,
            requested: stats.requested,
            first_error,
        };
        let mut out = reviews
            .select([
                cols::REVIEW_ID,
                cols::USER_ID,
                cols::ASIN,
                cols::PARENT_ASIN,
                cols::TIMESTAMP,
            ])?
            .lazy()
            .with_columns([
                lit(cfg.llm.backend.as_str()).alias(cols::BACKEND),
                lit(model.as_str()).alias(cols::MODEL),
            ])
            .collect()?;
        out.with_column(list_col(cols::KEYWORDS, &lists, |k| k.as_slice()))?;
        out.with_column(Column::new(cols::KEYWORDS_FAILED.into(), failed))?;
        write_parquet(&mut out, &ctx.layout.keywords(split))?;
        splits.push(summary);
    }
    Ok(KeywordsSummary {
        backend: cfg.llm.backend,
        model,
        splits,
        elapsed: start.elapsed(),
    })
}
