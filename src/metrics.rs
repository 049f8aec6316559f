//! Ranking metrics from the rank of each query's target (one relevant item per query): a leaf
//! module shared by `eval` (reports over candidate files) and training's evaluation.
//!
//! - Recall@K: share of queries whose target is at rank ≤ K (hits / queries).
//! - MRR: mean of 1/rank over queries, 0 when the target is not among the candidates
//!   (so it is MRR@top-K of the candidate file).
//! - NDCG@5 with binary relevance and one target: 1/log2(rank + 1) when rank ≤ 5, else 0
//!   (the ideal DCG is 1).
//!
//! Ranks are the 1-based `rank` column of a candidates file, where ties in score are broken by
//! `parent_asin` ascending (see [`crate::retrieve::rank_order`]), so every number here can be recomputed in SQL.

use serde::{Deserialize, Serialize};

/// The cut-offs of the Recall@K table.
pub const KS: [usize; 6] = [1, 5, 10, 20, 50, 100];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecallAt {
    pub k: usize,
    pub hits: usize,
    pub recall: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub queries: usize,
    pub recall: Vec<RecallAt>,
    pub mrr: f64,
    pub ndcg_at_5: f64,
}

impl Metrics {
    /// `ranks[i]`: 1-based rank of query i's target, `None` when it was not retrieved.
    pub fn from_ranks(ranks: &[Option<usize>], ks: &[usize]) -> Metrics {
        let n = ranks.len();
        let div = |x: f64| if n == 0 { 0.0 } else { x / n as f64 };
        let recall = ks
            .iter()
            .map(|&k| {
                let hits = ranks.iter().filter(|r| r.is_some_and(|r| r <= k)).count();
                RecallAt {
                    k,
                    hits,
                    recall: div(hits as f64),
                }
            })
            .collect();
        let mrr = div(ranks.iter().flatten().map(|&r| 1.0 / r as f64).sum());
        let ndcg_at_5 = div(ranks.iter().flatten().map(|&r| ndcg_at(r, 5)).sum());
        Metrics {
            queries: n,
            recall,
            mrr,
            ndcg_at_5,
        }
    }

    pub fn recall_at(&self, k: usize) -> Option<f64> {
        self.recall.iter().find(|r| r.k == k).map(|r| r.recall)
    }
}

/// DCG of one relevant item at `rank` within the first `k` positions (ideal DCG = 1).
pub fn ndcg_at(rank: usize, k: usize) -> f64 {
    if rank == 0 || rank > k {
        0.0
    } else {
        1.0 / ((rank + 1) as f64).log2()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retrieve::rank_order;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn hand_computed_ranks() {
        // hit at 1, at K=10, at K+1=11, missing
        let m = Metrics::from_ranks(&[Some(1), Some(10), Some(11), None], &[1, 5, 10, 20]);
        assert_eq!(m.queries, 4);
        let hits: Vec<usize> = m.recall.iter().map(|r| r.hits).collect();
        assert_eq!(hits, vec![1, 1, 2, 3]);
        close(m.recall_at(10).unwrap(), 0.5);
        close(m.recall_at(20).unwrap(), 0.75);
        close(m.mrr, (1.0 + 0.1 + 1.0 / 11.0) / 4.0);
        // only the rank-1 hit is within 5
        close(m.ndcg_at_5, 1.0 / 4.0);
    }

    #[test]
    fn ndcg_values() {
        close(ndcg_at(1, 5), 1.0);
        close(ndcg_at(2, 5), 1.0 / 3f64.log2());
        close(ndcg_at(3, 5), 0.5);
        close(ndcg_at(5, 5), 1.0 / 6f64.log2());
        close(ndcg_at(6, 5), 0.0);
        let m = Metrics::from_ranks(&[Some(3), Some(6)], &KS);
        close(m.ndcg_at_5, 0.25);
    }

    #[test]
    fn ties_rank_by_parent_asin() {
        // target B0002 ties with B0001 at 0.9: B0001 comes first, so the target is rank 2.
        let mut c = vec![(0.5f32, "B0003"), (0.9, "B0002"), (0.9, "B0001")];
        c.sort_by(|a, b| rank_order(*a, *b));
        assert_eq!(c, vec![(0.9, "B0001"), (0.9, "B0002"), (0.5, "B0003")]);
        let rank = c.iter().position(|x| x.1 == "B0002").unwrap() + 1;
        let m = Metrics::from_ranks(&[Some(rank)], &KS);
        close(m.mrr, 0.5);
        close(m.recall_at(1).unwrap(), 0.0);
    }

    #[test]
    fn no_queries_is_all_zero() {
        let m = Metrics::from_ranks(&[], &KS);
        assert_eq!(m.queries, 0);
        assert!(m.recall.iter().all(|r| r.recall == 0.0));
        assert_eq!(m.mrr, 0.0);
    }
}
