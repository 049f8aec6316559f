//! Text matching for the re-ranker: tokens, overlap shares and BM25 over the items'
//! `embedding_text`.

use std::collections::{BTreeSet, HashMap, HashSet};

const BM25_K1: f64 = 1.2;
const BM25_B: f64 = 0.75;

/// Lower-cased runs of letters and digits.
pub fn tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
}

/// Share of the query's tokens in `set` (0 for an empty query).
pub fn share(q: &BTreeSet<String>, set: &HashSet<String>) -> f64 {
    if q.is_empty() {
        0.0
    } else {
        q.iter().filter(|t| set.contains(*t)).count() as f64 / q.len() as f64
    }
}

/// What the per-row features need of one item.
pub struct ItemText {
    pub tf: HashMap<String, u32>,
    pub len: usize,
    pub title: HashSet<String>,
    pub keywords: HashSet<String>,
}

/// BM25 statistics of every item's `embedding_text`.
pub struct Corpus {
    doc_freq: HashMap<String, u32>,
    n_docs: f64,
    avg_len: f64,
}

impl Corpus {
    pub fn new(items: &[ItemText]) -> Self {
        let mut doc_freq: HashMap<String, u32> = HashMap::new();
        for it in items {
            for t in it.tf.keys() {
                *doc_freq.entry(t.clone()).or_default() += 1;
            }
        }
        let n_docs = items.len().max(1) as f64;
        let avg_len = items.iter().map(|i| i.len).sum::<usize>() as f64 / n_docs;
        Corpus {
            doc_freq,
            n_docs,
            avg_len,
        }
    }

    fn idf(&self, t: &str) -> f64 {
        let df = *self.doc_freq.get(t).unwrap_or(&0) as f64;
        ((self.n_docs - df + 0.5) / (df + 0.5) + 1.0).ln()
    }

    pub fn bm25(&self, q: &BTreeSet<String>, it: &ItemText) -> f64 {
        let norm = BM25_K1 * (1.0 - BM25_B + BM25_B * it.len as f64 / self.avg_len.max(1e-9));
        q.iter()
            .filter_map(|t| it.tf.get(t).map(|&f| (t, f as f64)))
            .map(|(t, f)| self.idf(t) * f * (BM25_K1 + 1.0) / (f + norm))
            .fold(0.0, |a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bm25_by_hand() {
        // two documents: "a a b" and "c"; query {a}
        let mk = |words: &[&str]| {
            let mut tf: HashMap<String, u32> = HashMap::new();
            words
                .iter()
                .for_each(|w| *tf.entry(w.to_string()).or_default() += 1);
            ItemText {
                tf,
                len: words.len(),
                title: HashSet::new(),
                keywords: HashSet::new(),
            }
        };
        let items = [mk(&["a", "a", "b"]), mk(&["c"])];
        let c = Corpus::new(&items);
        let q: BTreeSet<String> = ["a".to_string()].into();
        let idf = ((2.0f64 - 1.0 + 0.5) / (1.0 + 0.5) + 1.0).ln();
        let norm = 1.2 * (1.0 - 0.75 + 0.75 * 3.0 / 2.0);
        let want = idf * 2.0 * 2.2 / (2.0 + norm);
        assert!((c.bm25(&q, &items[0]) - want).abs() < 1e-12);
        assert_eq!(c.bm25(&q, &items[1]), 0.0);
    }
}
