//! Stage 1, retrieval: a [`Retriever`] finds the top-K items for a batch of queries. The
//! retrievers are `dense` (exact inner product over every item vector, or LanceDB's IVF-PQ
//! index), `bm25` (LanceDB full-text search on `embedding_text`), `hybrid` (reciprocal-rank
//! fusion of the two, k = 60) and `popularity` (items by TRAIN review count). Ties in score are
//! ranked by `parent_asin` ascending ([`rank_order`]).
//!
//! `recsys retrieve` ([`run`]) queries every review of a split → `evaluation/candidates_{split}
//! [_{name}].parquet`, with a [`CandidatesRecord`] beside it (`.json`: retriever, model, the
//! query settings, ANN recall) that later stages read instead of re-defaulting. Training's
//! evaluation, negative mining and the re-ranker use the same retrievers, queries and ranking.
//!
//! A new retriever is one file here implementing [`Retriever`], a variant of [`RetrieverKind`]
//! and its arm in [`RetrieverKind::open`].

pub mod bm25;
pub mod dense;
pub mod hybrid;
pub mod popularity;
pub mod query;
mod stage;

use std::cmp::Ordering;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::context::Ctx;
use crate::encoder::Embeddings;
use crate::index::{Hit, ItemIndex};

pub use dense::AnnRecall;
pub use query::{QuerySettings, QueryType};
pub use stage::{RetrieveConfig, RetrieveSummary, run};

/// Bumped when a change to this stage's logic changes what it writes: the pipeline's records
/// made with another version are stale, so the stage runs again.
pub const CODE_VERSION: u32 = 2;

/// `(item, score)` best first: the item is an index into [`Catalog::asins`].
pub type Ranked = Vec<(u32, f32)>;

/// What a search measured besides its candidates.
#[derive(Debug, Clone, Copy, Default)]
pub struct SearchStats {
    /// Seconds spent encoding queries, and the rate.
    pub encode_s: f64,
    pub texts_per_s: f64,
    /// `--ann`: overlap of the ANN top-K with the exact top-K.
    pub ann_recall: Option<AnnRecall>,
}

/// A stage-1 retriever.
pub trait Retriever {
    /// The name written to the candidates' `retriever` column.
    fn name(&self) -> &'static str;
    /// The model whose vectors rank the items ("" when none does).
    fn model(&self) -> &str {
        ""
    }
    /// The best `k` items of each query, in query order, ranked by [`rank_order`].
    fn search(&mut self, queries: &[&str], k: usize, quiet: bool) -> Result<Vec<Ranked>>;
    /// What the searches so far measured.
    fn stats(&self) -> SearchStats {
        SearchStats::default()
    }
}

/// The retrievers of `recsys retrieve --retriever`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetrieverKind {
    /// Encoder vectors, exact inner product (cosine) over all items
    #[default]
    Dense,
    /// BM25 over embedding_text (LanceDB full-text index)
    Bm25,
    /// Reciprocal-rank fusion (k = 60) of dense and bm25
    Hybrid,
    /// Items by TRAIN review count, the same list for every query
    Popularity,
}

impl RetrieverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RetrieverKind::Dense => "dense",
            RetrieverKind::Bm25 => "bm25",
            RetrieverKind::Hybrid => "hybrid",
            RetrieverKind::Popularity => "popularity",
        }
    }

    /// Whether the retriever reads the item vectors.
    pub fn needs_vectors(self) -> bool {
        matches!(self, RetrieverKind::Dense | RetrieverKind::Hybrid)
    }

    /// The retriever over `index`, whose items are `items` (with vectors when
    /// [`needs_vectors`](Self::needs_vectors)).
    pub fn open<'a>(
        self,
        ctx: &Ctx,
        index: &'a ItemIndex,
        items: &'a Catalog,
        cfg: &RetrieveConfig,
    ) -> Result<Box<dyn Retriever + 'a>> {
        let ann = cfg.ann.then(|| cfg.ann_params());
        let dense = || dense::Dense::new(index, items, &cfg.encoder, ann);
        Ok(match self {
            RetrieverKind::Dense => Box::new(dense()?),
            RetrieverKind::Bm25 => Box::new(bm25::Bm25::new(index, items)),
            RetrieverKind::Hybrid => Box::new(hybrid::Hybrid {
                dense: dense()?,
                bm25: bm25::Bm25::new(index, items),
                keys: &items.asins,
            }),
            RetrieverKind::Popularity => Box::new(popularity::Popularity::new(ctx, items)?),
        })
    }
}

/// The order candidates are ranked in: score descending, ties by `parent_asin` ascending.
pub fn rank_order(a: (f32, &str), b: (f32, &str)) -> Ordering {
    b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1))
}

/// The items a retriever ranks: every `parent_asin` of the index in table order, with their
/// vectors when read.
pub struct Catalog {
    pub asins: Vec<String>,
    /// Empty unless read with vectors.
    pub vectors: Embeddings,
    position: HashMap<String, u32>,
}

impl Catalog {
    /// The index's items, with their vectors when `with_vectors`.
    pub fn open(index: &ItemIndex, with_vectors: bool) -> Result<Self> {
        let (asins, vectors) = index.items(with_vectors)?;
        Ok(Self::new(asins, vectors))
    }

    pub fn new(asins: Vec<String>, vectors: Embeddings) -> Self {
        let position = asins
            .iter()
            .enumerate()
            .map(|(i, a)| (a.clone(), i as u32))
            .collect();
        Catalog {
            asins,
            vectors,
            position,
        }
    }

    /// The item's index in [`Catalog::asins`].
    pub fn position(&self, asin: &str) -> Option<u32> {
        self.position.get(asin).copied()
    }

    /// Search hits as `(item, score)` ranked by [`rank_order`]; hits outside the catalog are
    /// dropped.
    pub fn ranked(&self, hits: &[Hit]) -> Ranked {
        let mut v: Vec<(u32, f32, &str)> = hits
            .iter()
            .filter_map(|h| {
                let i = self.position(&h.parent_asin)?;
                Some((i, h.score, self.asins[i as usize].as_str()))
            })
            .collect();
        v.sort_by(|a, b| rank_order((a.1, a.2), (b.1, b.2)));
        v.into_iter().map(|(i, s, _)| (i, s)).collect()
    }
}

/// What produced a candidates file: written beside it (`candidates_….json`) by `retrieve`,
/// read by `eval` (the ANN recall) and the re-ranker (the query settings).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CandidatesRecord {
    pub retriever: RetrieverKind,
    pub model: String,
    pub top_k: usize,
    pub query: QuerySettings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ann: Option<AnnRecall>,
    /// Reviews of the split, and those that could be queried (non-empty query, item in the index)
    /// before any `--max-queries` sample: what `eval` needs for recall over all reviews.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviews: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findable: Option<usize>,
}

impl CandidatesRecord {
    /// `candidates_….json` beside a candidates file.
    pub fn path(candidates: &Path) -> PathBuf {
        candidates.with_extension("json")
    }

    /// The record of a candidates file; `None` when it has none (written by an older recsys).
    pub fn read_optional(candidates: &Path) -> Result<Option<Self>> {
        let p = Self::path(candidates);
        if !p.is_file() {
            return Ok(None);
        }
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        Ok(Some(serde_json::from_str(&text).with_context(|| {
            format!("{}: not a candidates record", p.display())
        })?))
    }

    /// The record of a candidates file, required.
    pub fn read(candidates: &Path) -> Result<Self> {
        Self::read_optional(candidates)?.with_context(|| {
            format!(
                "{} has no record of its query settings ({}): re-run `recsys retrieve` for it",
                candidates.display(),
                Self::path(candidates).display()
            )
        })
    }
}
