//! Dense retrieval: exact inner product over every item vector (tiled matrix products, top-K
//! selected on all cores), or LanceDB's IVF-PQ index (`--ann`) with its recall against the exact
//! search measured on a sample.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};
use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Catalog, Ranked, Retriever, SearchStats, rank_order};
use crate::encoder::{self, Embeddings, Encoder, QueryEncoderArgs};
use crate::index::{AnnParams, ItemIndex};
use crate::io;

/// Queries per tile of the exact search: bounds the score matrix to TILE × items floats.
const TILE: usize = 256;
/// Queries on which `--ann` is compared with the exact search.
const ANN_SAMPLE: usize = 1_000;

/// How much of the exact top-K an ANN search found (mean over a sample of queries).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct AnnRecall {
    pub ann_recall_vs_exact: f64,
    pub sampled_queries: usize,
}

/// Encoder vectors ranked by inner product (cosine: every vector is unit length).
pub struct Dense<'a> {
    items: &'a Catalog,
    encoder: Encoder,
    batch_size: usize,
    /// `--ann`: search through the index's IVF-PQ index instead of exactly.
    ann: Option<(&'a ItemIndex, AnnParams)>,
    stats: SearchStats,
}

impl<'a> Dense<'a> {
    /// The index's items (`items` must hold their vectors) queried with the query encoder of
    /// `args` (default: the model the index was built with; one that embeds differently is
    /// refused).
    pub fn new(
        index: &'a ItemIndex,
        items: &'a Catalog,
        args: &QueryEncoderArgs,
        ann: Option<AnnParams>,
    ) -> Result<Self> {
        anyhow::ensure!(
            items.vectors.len() == items.asins.len(),
            "dense retrieval needs the item vectors"
        );
        Ok(Dense {
            items,
            encoder: index.query_encoder(args.model.as_deref(), args.runtime)?,
            batch_size: args.batch_size,
            ann: ann.map(|p| (index, p)),
            stats: SearchStats::default(),
        })
    }
}

impl Retriever for Dense<'_> {
    fn name(&self) -> &'static str {
        "dense"
    }
    fn model(&self) -> &str {
        &self.encoder.info.name
    }
    fn stats(&self) -> SearchStats {
        self.stats
    }

    fn search(&mut self, queries: &[&str], k: usize, quiet: bool) -> Result<Vec<Ranked>> {
        let t = Instant::now();
        let (qv, rate) = encoder::encode_all(
            &self.encoder,
            queries,
            self.batch_size,
            "encoding queries",
            quiet,
        )?;
        self.stats.encode_s += t.elapsed().as_secs_f64();
        self.stats.texts_per_s = rate;
        let items = self.items;
        if let Some((index, params)) = self.ann {
            if index.ensure_vector_index()? && !quiet {
                eprintln!("built the IVF-PQ vector index of {}", index.path.display());
            }
            let pb = io::progress(qv.len() as u64, "ann top-k", quiet);
            let out: Vec<Ranked> = index
                .search_vectors_ann(&qv, k, params, &pb)?
                .iter()
                .map(|hs| items.ranked(hs))
                .collect();
            pb.finish_and_clear();
            self.stats.ann_recall = Some(ann_vs_exact(&qv, &out, &items.vectors, &items.asins, k)?);
            return Ok(out);
        }
        let pb = io::progress(qv.len() as u64, "dense top-k", quiet);
        let out = exact_topk(
            &qv,
            &items.vectors,
            &items.asins,
            k,
            self.encoder.device(),
            &pb,
        )?;
        pb.finish_and_clear();
        Ok(out)
    }
}

/// Mean share of the exact top-`k` that the ANN lists found, on up to ANN_SAMPLE queries
/// spread evenly over the query list.
fn ann_vs_exact(
    qv: &Embeddings,
    ann: &[Ranked],
    items: &Embeddings,
    keys: &[String],
    k: usize,
) -> Result<AnnRecall> {
    let n = qv.len().min(ANN_SAMPLE);
    let picks: Vec<usize> = (0..n).map(|i| i * qv.len() / n).collect();
    let sample = Embeddings {
        dim: qv.dim,
        data: picks.iter().flat_map(|&i| qv.row(i).to_vec()).collect(),
    };
    let hidden = indicatif::ProgressBar::hidden();
    let exact = exact_topk(&sample, items, keys, k, &Device::Cpu, &hidden)?;
    let mut sum = 0.0;
    for (e, &i) in exact.iter().zip(&picks) {
        let found: HashSet<u32> = ann[i].iter().map(|x| x.0).collect();
        let hit = e.iter().filter(|x| found.contains(&x.0)).count();
        sum += hit as f64 / e.len().max(1) as f64;
    }
    Ok(AnnRecall {
        ann_recall_vs_exact: sum / n.max(1) as f64,
        sampled_queries: n,
    })
}

/// A candidate in a bounded heap whose top is the worst-ranked entry.
struct Entry<'a> {
    score: f32,
    key: &'a str,
    idx: u32,
}
impl PartialEq for Entry<'_> {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Entry<'_> {}
impl PartialOrd for Entry<'_> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry<'_> {
    fn cmp(&self, o: &Self) -> Ordering {
        rank_order((self.score, self.key), (o.score, o.key))
    }
}

/// The `k` best `(item, score)` of one score row, best first (score desc, key asc).
pub fn topk_row(scores: &[f32], keys: &[String], k: usize) -> Ranked {
    let mut heap: BinaryHeap<Entry> = BinaryHeap::with_capacity(k + 1);
    for (i, &s) in scores.iter().enumerate() {
        if heap.len() == k {
            // cheap reject: strictly worse than the current worst
            if s < heap.peek().map_or(f32::NEG_INFINITY, |w| w.score) {
                continue;
            }
        }
        let e = Entry {
            score: s,
            key: &keys[i],
            idx: i as u32,
        };
        if heap.len() < k {
            heap.push(e);
        } else if heap.peek().is_some_and(|w| e < *w) {
            heap.pop();
            heap.push(e);
        }
    }
    heap.into_sorted_vec()
        .into_iter()
        .map(|e| (e.idx, e.score))
        .collect()
}

/// Exact top-`k` items by inner product for every query row: the score matrix is computed a
/// tile of queries at a time (TILE × items floats) on `device` (the item matrix is uploaded
/// once; f32 products on a GPU too), each tile's rows selected on all cores of the CPU.
pub fn exact_topk(
    queries: &Embeddings,
    items: &Embeddings,
    keys: &[String],
    k: usize,
    device: &Device,
    pb: &indicatif::ProgressBar,
) -> Result<Vec<Ranked>> {
    anyhow::ensure!(
        queries.dim == items.dim,
        "query and item vectors differ in size"
    );
    let (n, d) = (items.len(), items.dim);
    let k = k.min(n);
    let items_t = Tensor::from_slice(&items.data, (n, d), device)?.t()?;
    let mut out = Vec::with_capacity(queries.len());
    for tile in queries.data.chunks(TILE * d) {
        let rows = tile.len() / d;
        let q = Tensor::from_slice(tile, (rows, d), device)?;
        let scores: Vec<f32> = q.matmul(&items_t)?.flatten_all()?.to_vec1()?;
        let mut part: Vec<Ranked> = scores
            .par_chunks(n)
            .map(|row| topk_row(row, keys, k))
            .collect();
        out.append(&mut part);
        pb.inc(rows as u64);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("B{i:04}")).collect()
    }

    #[test]
    fn topk_row_is_exact_with_ties() {
        let k = keys(6);
        let s = [0.1, 0.9, 0.3, 0.9, -1.0, 0.3];
        assert_eq!(
            topk_row(&s, &k, 4),
            vec![(1, 0.9), (3, 0.9), (2, 0.3), (5, 0.3)]
        );
        // a tie at the cut keeps the smaller parent_asin
        assert_eq!(topk_row(&s, &k, 3), vec![(1, 0.9), (3, 0.9), (2, 0.3)]);
        assert_eq!(topk_row(&s, &k, 10).len(), 6);
    }

    #[test]
    fn exact_topk_matches_brute_force() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (nq, ni, d) = (300, 500, 8);
        let mut make = |n: usize| Embeddings {
            dim: d,
            data: (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
        };
        let (q, it) = (make(nq), make(ni));
        let k = keys(ni);
        let hidden = indicatif::ProgressBar::hidden();
        let got = exact_topk(&q, &it, &k, 10, &Device::Cpu, &hidden).unwrap();
        for (qi, row) in got.iter().enumerate() {
            let mut all: Vec<(u32, f32)> = (0..ni)
                .map(|i| {
                    let s = q.row(qi).iter().zip(it.row(i)).map(|(a, b)| a * b).sum();
                    (i as u32, s)
                })
                .collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1));
            let want: Vec<u32> = all[..10].iter().map(|x| x.0).collect();
            let have: Vec<u32> = row.iter().map(|x| x.0).collect();
            assert_eq!(have, want, "query {qi}");
            for (h, w) in row.iter().zip(&all[..10]) {
                assert!((h.1 - w.1).abs() < 1e-4);
            }
        }
    }
}
