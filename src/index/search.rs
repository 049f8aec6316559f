//! `recsys search`: the top items of the index for one query, dense or BM25.

use std::fmt;

use anyhow::Result;

use super::{Hit, ItemIndex};
use crate::context::Ctx;
use crate::encoder::QueryEncoderArgs;

/// How `recsys search` ranks items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SearchMode {
    /// Encoder vectors, cosine similarity
    #[default]
    Dense,
    /// BM25 over embedding_text
    Bm25,
}

/// `recsys search`
#[derive(Debug, Clone, clap::Args)]
pub struct SearchConfig {
    /// What you are looking for, in your own words
    pub query: String,
    /// How many items to show
    #[arg(short, default_value_t = 10, value_parser = crate::cli::count)]
    pub k: usize,
    #[command(flatten)]
    pub encoder: QueryEncoderArgs,
    /// Ranking: dense vectors or BM25 full text
    #[arg(long, value_enum, default_value_t = SearchMode::Dense)]
    pub mode: SearchMode,
}

pub struct SearchResult {
    pub query: String,
    pub mode: SearchMode,
    pub model: String,
    pub hits: Vec<Hit>,
}

impl fmt::Display for SearchResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.mode {
            SearchMode::Dense => format!("dense, {}", self.model),
            SearchMode::Bm25 => "bm25".to_string(),
        };
        writeln!(
            f,
            "search {:?} ({how}): top {}",
            self.query,
            self.hits.len()
        )?;
        writeln!(
            f,
            "{:>4}  {:>7}  {:<12}  title",
            "rank", "score", "parent_asin"
        )?;
        for (i, h) in self.hits.iter().enumerate() {
            let title: String = h.title.chars().take(90).collect();
            writeln!(
                f,
                "{:>4}  {:>7.4}  {:<12}  {title}",
                i + 1,
                h.score,
                h.parent_asin
            )?;
        }
        Ok(())
    }
}

/// `recsys search`: top-k items for one query.
pub fn search(ctx: &Ctx, cfg: &SearchConfig) -> Result<SearchResult> {
    anyhow::ensure!(cfg.k > 0, "-k must be at least 1");
    let index = ItemIndex::open(ctx)?;
    let hits = match cfg.mode {
        SearchMode::Dense => {
            let enc = index.query_encoder(cfg.encoder.model.as_deref(), cfg.encoder.runtime)?;
            let v = enc.encode(&[cfg.query.as_str()], 1, &indicatif::ProgressBar::hidden())?;
            index.search_vector(v.row(0), cfg.k)?
        }
        SearchMode::Bm25 => index.search_text(&cfg.query, cfg.k)?,
    };
    Ok(SearchResult {
        query: cfg.query.clone(),
        mode: cfg.mode,
        model: index.info.name.clone(),
        hits,
    })
}
