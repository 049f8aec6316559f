//! Hybrid retrieval: reciprocal-rank fusion of the dense and the BM25 lists.

use std::collections::HashMap;

use anyhow::Result;

use super::bm25::Bm25;
use super::dense::Dense;
use super::{Ranked, Retriever, SearchStats, rank_order};

/// Reciprocal-rank-fusion constant (Cormack et al.).
pub const RRF_K: f64 = 60.0;

pub struct Hybrid<'a> {
    pub dense: Dense<'a>,
    pub bm25: Bm25<'a>,
    /// Item keys (parent_asin), for ties.
    pub keys: &'a [String],
}

impl Retriever for Hybrid<'_> {
    fn name(&self) -> &'static str {
        "hybrid"
    }
    fn model(&self) -> &str {
        self.dense.model()
    }
    fn stats(&self) -> SearchStats {
        self.dense.stats()
    }

    fn search(&mut self, queries: &[&str], k: usize, quiet: bool) -> Result<Vec<Ranked>> {
        let d = self.dense.search(queries, k, quiet)?;
        let b = self.bm25.search(queries, k, quiet)?;
        Ok(d.iter()
            .zip(&b)
            .map(|(d, b)| rrf(&[d, b], self.keys, k))
            .collect())
    }
}

/// Reciprocal-rank fusion of ranked lists: score = Σ 1 / (60 + rank).
pub fn rrf(lists: &[&Ranked], keys: &[String], k: usize) -> Ranked {
    let mut acc: HashMap<u32, f64> = HashMap::new();
    for list in lists {
        for (r, (i, _)) in list.iter().enumerate() {
            *acc.entry(*i).or_default() += 1.0 / (RRF_K + (r + 1) as f64);
        }
    }
    let mut v: Ranked = acc.into_iter().map(|(i, s)| (i, s as f32)).collect();
    v.sort_by(|a, b| rank_order((a.1, &keys[a.0 as usize]), (b.1, &keys[b.0 as usize])));
    v.truncate(k);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrf_fuses_ranks() {
        let k: Vec<String> = (0..4).map(|i| format!("B{i:04}")).collect();
        let a = vec![(0, 0.9), (1, 0.8)];
        let b = vec![(1, 12.0), (2, 3.0)];
        let f = rrf(&[&a, &b], &k, 3);
        // item 1: 1/62 + 1/61; item 0: 1/61; item 2: 1/62
        assert_eq!(f.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 0, 2]);
        assert!((f[0].1 as f64 - (1.0 / 62.0 + 1.0 / 61.0)).abs() < 1e-6);
    }
}
