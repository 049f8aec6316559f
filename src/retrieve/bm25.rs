//! BM25 retrieval through LanceDB's full-text index on `embedding_text`.

use anyhow::Result;

use super::{Catalog, Ranked, Retriever};
use crate::index::ItemIndex;
use crate::io;

pub struct Bm25<'a> {
    index: &'a ItemIndex,
    items: &'a Catalog,
}

impl<'a> Bm25<'a> {
    pub fn new(index: &'a ItemIndex, items: &'a Catalog) -> Self {
        Bm25 { index, items }
    }
}

impl Retriever for Bm25<'_> {
    fn name(&self) -> &'static str {
        "bm25"
    }

    fn search(&mut self, queries: &[&str], k: usize, quiet: bool) -> Result<Vec<Ranked>> {
        let pb = io::progress(queries.len() as u64, "bm25", quiet);
        let hits = self.index.search_text_many(queries, k, &pb)?;
        pb.finish_and_clear();
        Ok(hits.iter().map(|hs| self.items.ranked(hs)).collect())
    }
}
