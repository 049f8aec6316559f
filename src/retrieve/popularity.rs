//! The popularity baseline: the items with the most TRAIN reviews, the same list for every query.

use std::collections::HashMap;

use anyhow::Result;
use polars::prelude::*;

use super::dense::topk_row;
use super::{Catalog, Ranked, Retriever};
use crate::cols;
use crate::context::Ctx;
use crate::io;

pub struct Popularity<'a> {
    items: &'a Catalog,
    /// TRAIN review count per item, in catalog order (items.parquet `train_review_count`).
    counts: Vec<f32>,
}

impl<'a> Popularity<'a> {
    pub fn new(ctx: &Ctx, items: &'a Catalog) -> Result<Self> {
        let table = io::scan_parquet(&ctx.layout.items())?
            .select([col(cols::PARENT_ASIN), col(cols::TRAIN_REVIEW_COUNT)])
            .collect()?;
        let by_asin: HashMap<&str, u32> = table
            .column(cols::PARENT_ASIN)?
            .str()?
            .iter()
            .zip(table.column(cols::TRAIN_REVIEW_COUNT)?.u32()?.iter())
            .filter_map(|(a, c)| Some((a?, c.unwrap_or(0))))
            .collect();
        let counts = items
            .asins
            .iter()
            .map(|a| by_asin.get(a.as_str()).copied().unwrap_or(0) as f32)
            .collect();
        Ok(Popularity { items, counts })
    }
}

impl Retriever for Popularity<'_> {
    fn name(&self) -> &'static str {
        "popularity"
    }

    fn search(&mut self, queries: &[&str], k: usize, _quiet: bool) -> Result<Vec<Ranked>> {
        let top = topk_row(&self.counts, &self.items.asins, k);
        Ok(vec![top; queries.len()])
    }
}
