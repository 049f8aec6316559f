//! `recsys retrieve`: top-K candidate items for every review of a split →
//! `evaluation/candidates_{split}[_{name}].parquet`.
//!
//! Retrievers share one code path: `dense` (exact inner product over every item vector, tiled
//! matrix products on all cores), `bm25` (LanceDB full-text search on `embedding_text`),
//! `hybrid` (reciprocal-rank fusion of the two, k = 60) and `popularity` (items by TRAIN review
//! count). Ties in score are ranked by `parent_asin` ascending.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use polars::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::metrics::rank_order;
use crate::cols;
use crate::context::Ctx;
use crate::encoder::{self, DeviceKind, Embeddings};
use crate::etl::pairs::{self, QueryType};
use crate::index::{AnnParams, ItemIndex};
use crate::io::{self, thousands};
use crate::layout::Split;

/// Reciprocal-rank-fusion constant (Cormack et al.).
pub const RRF_K: f64 = 60.0;
/// Queries per tile of the dense search: bounds the score matrix to TILE × items floats.
const TILE: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Retriever {
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

impl Retriever {
    pub fn as_str(self) -> &'static str {
        match self {
            Retriever::Dense => "dense",
            Retriever::Bm25 => "bm25",
            Retriever::Hybrid => "hybrid",
            Retriever::Popularity => "popularity",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct RetrieveConfig {
    /// Split whose reviews are the queries
    #[arg(long, value_enum, default_value_t = Split::Test)]
    pub split: Split,
    /// How candidates are found
    #[arg(long, value_enum, default_value_t = Retriever::Dense)]
    pub retriever: Retriever,
    /// Query encoder for dense / hybrid [default: the model the index was built with]; it must
    /// embed like the index's model
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Candidates per query
    #[arg(long, default_value_t = 100)]
    pub top_k: usize,
    /// The query: review title + text, or the review's keywords
    #[arg(long, value_enum, default_value_t = QueryType::ReviewText)]
    pub query_type: QueryType,
    /// Keywords per keyword query
    #[arg(long, default_value_t = 20)]
    pub max_keywords: usize,
    /// Use a seeded random sample of this many queries (quick runs)
    #[arg(long)]
    pub max_queries: Option<usize>,
    /// Dense search through a LanceDB IVF-PQ vector index (built on first use) instead of the
    /// exact search; the summary and `eval` report its recall against the exact top-K on a
    /// sample of up to 1,000 queries
    #[arg(long)]
    pub ann: bool,
    /// --ann: IVF partitions probed per query
    #[arg(long, default_value_t = 20)]
    pub nprobes: usize,
    /// --ann: re-score refine-factor × top-K PQ candidates with the exact vectors (0: off)
    #[arg(long, default_value_t = 4)]
    pub refine_factor: u32,
    /// Queries per encoder forward pass
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Output name: candidates_{split}_{name}.parquet [default: none for dense, else the retriever]
    #[arg(long)]
    pub name: Option<String>,
    /// Where to run the query encoder
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
}

impl Default for RetrieveConfig {
    fn default() -> Self {
        RetrieveConfig {
            split: Split::Test,
            retriever: Retriever::Dense,
            model: None,
            top_k: 100,
            query_type: QueryType::ReviewText,
            max_keywords: 20,
            max_queries: None,
            ann: false,
            nprobes: 20,
            refine_factor: 4,
            batch_size: 64,
            name: None,
            device: DeviceKind::Cpu,
        }
    }
}

#[derive(Debug)]
pub struct RetrieveSummary {
    pub split: Split,
    pub retriever: Retriever,
    pub model: String,
    pub reviews: usize,
    pub queries: usize,
    pub empty_queries: usize,
    pub not_in_index: usize,
    pub sampled: bool,
    pub top_k: usize,
    pub encode_s: f64,
    pub texts_per_s: f64,
    pub search_s: f64,
    /// `--ann`: overlap of the ANN top-K with the exact top-K, and the queries it was measured on.
    pub ann_recall: Option<AnnRecall>,
    pub out: PathBuf,
}

/// How much of the exact top-K an ANN search found (mean over a sample of queries).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct AnnRecall {
    pub ann_recall_vs_exact: f64,
    pub sampled_queries: usize,
}

/// Queries on which `--ann` is compared with the exact search.
const ANN_SAMPLE: usize = 1_000;

impl fmt::Display for RetrieveSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "retrieve {} ({}{}): {} queries{} from {} reviews; not queried: {} empty, {} whose \
             item is not in the index; top {}",
            self.split,
            self.retriever.as_str(),
            if self.model.is_empty() {
                String::new()
            } else {
                format!(", {}", self.model)
            },
            thousands(self.queries),
            if self.sampled { " (seeded sample)" } else { "" },
            thousands(self.reviews),
            thousands(self.empty_queries),
            thousands(self.not_in_index),
            self.top_k,
        )?;
        if self.encode_s > 0.0 {
            write!(
                f,
                "; queries encoded in {:.1}s ({:.1} texts/s)",
                self.encode_s, self.texts_per_s
            )?;
        }
        if let Some(a) = self.ann_recall {
            write!(
                f,
                "; ANN recall vs exact top-{} = {:.4} on {} queries",
                self.top_k, a.ann_recall_vs_exact, a.sampled_queries
            )?;
        }
        write!(f, "; search {:.1}s → {}", self.search_s, self.out.display())
    }
}

/// One query: the review and its target.
struct Query {
    review_id: u64,
    user_id: String,
    target: String,
    text: String,
}

/// `recsys retrieve`.
pub fn run(ctx: &Ctx, cfg: &RetrieveConfig) -> Result<RetrieveSummary> {
    anyhow::ensure!(cfg.top_k > 0, "--top-k must be at least 1");
    if cfg.query_type == QueryType::Both {
        bail!("--query-type both: pick review-text or keywords (one query per review)");
    }
    let index = ItemIndex::open(ctx)?;
    let needs_vectors = matches!(cfg.retriever, Retriever::Dense | Retriever::Hybrid);
    let (asins, vectors) = index.items(needs_vectors)?;
    let in_index: HashMap<&str, u32> = asins
        .iter()
        .enumerate()
        .map(|(i, a)| (a.as_str(), i as u32))
        .collect();

    let df = pairs::queries(&ctx.layout, cfg.split, cfg.query_type, cfg.max_keywords)?.collect();
    let df = Context::with_context(df, || format!("reading the {} queries", cfg.split))?;
    let reviews = df.height();
    let (mut queries, mut empty, mut missing) = (Vec::new(), 0, 0);
    let ids = df.column(cols::REVIEW_ID)?.u64()?;
    let users = df.column(cols::USER_ID)?.str()?;
    let targets = df.column(cols::PARENT_ASIN)?.str()?;
    let texts = df.column(cols::QUERY)?.str()?;
    for i in 0..reviews {
        let text = texts.get(i).unwrap_or("").trim();
        let target = targets.get(i).unwrap_or("");
        if text.is_empty() {
            empty += 1;
        } else if !in_index.contains_key(target) {
            missing += 1;
        } else {
            queries.push(Query {
                review_id: ids.get(i).unwrap_or(0),
                user_id: users.get(i).unwrap_or("").to_string(),
                target: target.to_string(),
                text: text.to_string(),
            });
        }
    }
    let sampled = cfg.max_queries.is_some_and(|n| n < queries.len());
    if let Some(n) = cfg.max_queries.filter(|_| sampled) {
        let mut keep = vec![false; queries.len()];
        sample_indices(queries.len(), n, ctx.seed)
            .into_iter()
            .for_each(|i| keep[i] = true);
        let mut it = keep.into_iter();
        queries.retain(|_| it.next().unwrap_or(false));
    }
    anyhow::ensure!(
        !queries.is_empty(),
        "no {} query to run ({reviews} reviews: {empty} empty, {missing} of items not in the index)",
        cfg.split
    );

    let k = cfg.top_k;
    let (mut encode_s, mut rate) = (0.0, 0.0);
    let mut model = String::new();
    let mut ann_recall = None;
    let mut dense = || -> Result<Vec<Vec<(u32, f32)>>> {
        let enc = index.query_encoder(cfg.model.as_deref(), cfg.device)?;
        model = enc.info.name.clone();
        let t = Instant::now();
        let texts: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
        let (qv, r) =
            encoder::encode_all(&enc, &texts, cfg.batch_size, "encoding queries", ctx.quiet)?;
        encode_s = t.elapsed().as_secs_f64();
        rate = r;
        if cfg.ann {
            if index.ensure_vector_index()? && !ctx.quiet {
                eprintln!("built the IVF-PQ vector index of {}", index.path.display());
            }
            let pb = io::progress(qv.len() as u64, "ann top-k", ctx.quiet);
            let out: Vec<Vec<(u32, f32)>> = index
                .search_vectors_ann(&qv, k, AnnParams::from(cfg), &pb)?
                .iter()
                .map(|hs| ranked(hs, &in_index))
                .collect();
            pb.finish_and_clear();
            ann_recall = Some(ann_vs_exact(&qv, &out, &vectors, &asins, k)?);
            return Ok(out);
        }
        let pb = io::progress(qv.len() as u64, "dense top-k", ctx.quiet);
        let out = exact_topk(&qv, &vectors, &asins, k, &pb)?;
        pb.finish_and_clear();
        Ok(out)
    };
    let t_search = Instant::now();
    let lists: Vec<Vec<(u32, f32)>> = match cfg.retriever {
        Retriever::Dense => dense()?,
        Retriever::Bm25 => bm25(&index, &queries, &in_index, k, ctx.quiet)?,
        Retriever::Hybrid => {
            let d = dense()?;
            let b = bm25(&index, &queries, &in_index, k, ctx.quiet)?;
            d.iter()
                .zip(&b)
                .map(|(d, b)| rrf(&[d, b], &asins, k))
                .collect()
        }
        Retriever::Popularity => {
            let top = popularity(ctx, &asins, k)?;
            vec![top; queries.len()]
        }
    };
    let search_s = t_search.elapsed().as_secs_f64() - encode_s;

    let name = cfg.name.clone().or_else(|| match (cfg.retriever, cfg.ann) {
        (Retriever::Dense, false) => None,
        (r, true) => Some(format!("{}_ann", r.as_str())),
        (r, false) => Some(r.as_str().to_string()),
    });
    let out = ctx.layout.candidates(cfg.split, name.as_deref());
    let mut df = candidates_frame(&queries, &lists, &asins, cfg.retriever, &model)?;
    io::write_parquet(&mut df, &out)?;
    // `eval` reads the ANN-vs-exact recall from this sidecar; a stale one must not survive.
    let sidecar = ann_sidecar(&out);
    match ann_recall {
        Some(a) => io::write_atomic(&sidecar, |tmp| {
            std::fs::write(tmp, serde_json::to_string_pretty(&a)?)
                .with_context(|| format!("writing {}", tmp.display()))
        })?,
        None if sidecar.exists() => std::fs::remove_file(&sidecar)
            .with_context(|| format!("removing {}", sidecar.display()))?,
        None => {}
    }
    Ok(RetrieveSummary {
        split: cfg.split,
        retriever: cfg.retriever,
        model,
        reviews,
        queries: queries.len(),
        empty_queries: empty,
        not_in_index: missing,
        sampled,
        top_k: k,
        encode_s,
        texts_per_s: rate,
        search_s,
        ann_recall,
        out,
    })
}

impl From<&RetrieveConfig> for AnnParams {
    fn from(c: &RetrieveConfig) -> Self {
        AnnParams {
            nprobes: c.nprobes,
            refine_factor: c.refine_factor,
        }
    }
}

/// A seeded random sample of `n` of the indices `0..len` (all of them when `n >= len`), in
/// ascending order: the same seed gives the same sample.
pub fn sample_indices(len: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..len).collect();
    if n < len {
        idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        idx.truncate(n);
        idx.sort_unstable();
    }
    idx
}

/// `candidates_….ann.json` beside a candidates file.
pub fn ann_sidecar(candidates: &std::path::Path) -> PathBuf {
    candidates.with_extension("ann.json")
}

/// Mean share of the exact top-`k` that the ANN lists found, on up to ANN_SAMPLE queries
/// spread evenly over the query list.
fn ann_vs_exact(
    qv: &Embeddings,
    ann: &[Vec<(u32, f32)>],
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
    let exact = exact_topk(&sample, items, keys, k, &indicatif::ProgressBar::hidden())?;
    let mut sum = 0.0;
    for (e, &i) in exact.iter().zip(&picks) {
        let found: std::collections::HashSet<u32> = ann[i].iter().map(|x| x.0).collect();
        let hit = e.iter().filter(|x| found.contains(&x.0)).count();
        sum += hit as f64 / e.len().max(1) as f64;
    }
    Ok(AnnRecall {
        ann_recall_vs_exact: sum / n.max(1) as f64,
        sampled_queries: n,
    })
}

/// Search hits as `(item, score)` ranked by score, ties by parent_asin; hits outside the
/// item list are dropped.
fn ranked(hits: &[crate::index::Hit], in_index: &HashMap<&str, u32>) -> Vec<(u32, f32)> {
    let mut v: Vec<(u32, f32, &str)> = hits
        .iter()
        .filter_map(|h| {
            in_index
                .get_key_value(h.parent_asin.as_str())
                .map(|(key, &i)| (i, h.score, *key))
        })
        .collect();
    v.sort_by(|a, b| rank_order((a.1, a.2), (b.1, b.2)));
    v.into_iter().map(|(i, s, _)| (i, s)).collect()
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
pub fn topk_row(scores: &[f32], keys: &[String], k: usize) -> Vec<(u32, f32)> {
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
/// tile of queries at a time (TILE × items floats), rows selected on all cores.
pub fn exact_topk(
    queries: &Embeddings,
    items: &Embeddings,
    keys: &[String],
    k: usize,
    pb: &indicatif::ProgressBar,
) -> Result<Vec<Vec<(u32, f32)>>> {
    anyhow::ensure!(
        queries.dim == items.dim,
        "query and item vectors differ in size"
    );
    let (n, d) = (items.len(), items.dim);
    let k = k.min(n);
    let items_t = Tensor::from_slice(&items.data, (n, d), &Device::Cpu)?.t()?;
    let mut out = Vec::with_capacity(queries.len());
    for tile in queries.data.chunks(TILE * d) {
        let rows = tile.len() / d;
        let q = Tensor::from_slice(tile, (rows, d), &Device::Cpu)?;
        let scores: Vec<f32> = q.matmul(&items_t)?.flatten_all()?.to_vec1()?;
        let mut part: Vec<Vec<(u32, f32)>> = scores
            .par_chunks(n)
            .map(|row| topk_row(row, keys, k))
            .collect();
        out.append(&mut part);
        pb.inc(rows as u64);
    }
    Ok(out)
}

/// BM25 candidates per query, through LanceDB's full-text index.
fn bm25(
    index: &ItemIndex,
    queries: &[Query],
    in_index: &HashMap<&str, u32>,
    k: usize,
    quiet: bool,
) -> Result<Vec<Vec<(u32, f32)>>> {
    let pb = io::progress(queries.len() as u64, "bm25", quiet);
    let texts: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
    let hits = index.search_text_many(&texts, k, &pb)?;
    pb.finish_and_clear();
    Ok(hits.iter().map(|hs| ranked(hs, in_index)).collect())
}

/// Reciprocal-rank fusion of ranked lists: score = Σ 1 / (60 + rank).
pub fn rrf(lists: &[&Vec<(u32, f32)>], keys: &[String], k: usize) -> Vec<(u32, f32)> {
    let mut acc: HashMap<u32, f64> = HashMap::new();
    for list in lists {
        for (r, (i, _)) in list.iter().enumerate() {
            *acc.entry(*i).or_default() += 1.0 / (RRF_K + (r + 1) as f64);
        }
    }
    let mut v: Vec<(u32, f32)> = acc.into_iter().map(|(i, s)| (i, s as f32)).collect();
    v.sort_by(|a, b| rank_order((a.1, &keys[a.0 as usize]), (b.1, &keys[b.0 as usize])));
    v.truncate(k);
    v
}

/// The `k` items with the most TRAIN reviews (items.parquet `train_review_count`).
fn popularity(ctx: &Ctx, asins: &[String], k: usize) -> Result<Vec<(u32, f32)>> {
    let items = io::scan_parquet(&ctx.layout.items())?
        .select([col(cols::PARENT_ASIN), col(cols::TRAIN_REVIEW_COUNT)])
        .collect()?;
    let counts: HashMap<&str, u32> = items
        .column(cols::PARENT_ASIN)?
        .str()?
        .iter()
        .zip(items.column(cols::TRAIN_REVIEW_COUNT)?.u32()?.iter())
        .filter_map(|(a, c)| Some((a?, c.unwrap_or(0))))
        .collect();
    let scores: Vec<f32> = asins
        .iter()
        .map(|a| counts.get(a.as_str()).copied().unwrap_or(0) as f32)
        .collect();
    Ok(topk_row(&scores, asins, k))
}

/// The candidates table: one row per (query, candidate); a query with no candidate keeps one
/// row with null rank / parent_asin / score, so it still counts as a miss.
fn candidates_frame(
    queries: &[Query],
    lists: &[Vec<(u32, f32)>],
    asins: &[String],
    retriever: Retriever,
    model: &str,
) -> Result<DataFrame> {
    let rows: usize = lists.iter().map(|l| l.len().max(1)).sum();
    let mut review_id = Vec::with_capacity(rows);
    let mut user_id = Vec::with_capacity(rows);
    let mut target = Vec::with_capacity(rows);
    let mut rank: Vec<Option<u32>> = Vec::with_capacity(rows);
    let mut item: Vec<Option<&str>> = Vec::with_capacity(rows);
    let mut score: Vec<Option<f32>> = Vec::with_capacity(rows);
    for (q, list) in queries.iter().zip(lists) {
        let n = list.len().max(1);
        review_id.extend(std::iter::repeat_n(q.review_id, n));
        user_id.extend(std::iter::repeat_n(q.user_id.as_str(), n));
        target.extend(std::iter::repeat_n(q.target.as_str(), n));
        if list.is_empty() {
            rank.push(None);
            item.push(None);
            score.push(None);
        }
        for (r, &(i, s)) in list.iter().enumerate() {
            rank.push(Some(r as u32 + 1));
            item.push(Some(asins[i as usize].as_str()));
            score.push(Some(s));
        }
    }
    let n = review_id.len();
    Ok(DataFrame::new(
        n,
        vec![
            Column::new(cols::REVIEW_ID.into(), review_id),
            Column::new(cols::USER_ID.into(), user_id),
            Column::new(cols::TARGET_PARENT_ASIN.into(), target),
            Column::new(cols::RANK.into(), rank),
            Column::new(cols::PARENT_ASIN.into(), item),
            Column::new(cols::SCORE.into(), score),
            Column::new(cols::RETRIEVER.into(), vec![retriever.as_str(); n]),
            Column::new(cols::MODEL.into(), vec![model; n]),
        ],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<String> {
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
        let got = exact_topk(&q, &it, &k, 10, &indicatif::ProgressBar::hidden()).unwrap();
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

    #[test]
    fn rrf_fuses_ranks() {
        let k = keys(4);
        let a = vec![(0, 0.9), (1, 0.8)];
        let b = vec![(1, 12.0), (2, 3.0)];
        let f = rrf(&[&a, &b], &k, 3);
        // item 1: 1/62 + 1/61; item 0: 1/61; item 2: 1/62
        assert_eq!(f.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 0, 2]);
        assert!((f[0].1 as f64 - (1.0 / 62.0 + 1.0 / 61.0)).abs() < 1e-6);
    }
}
