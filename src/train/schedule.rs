//! Pieces of the training loop: the learning-rate schedule, gradient-norm clipping and the
//! batch sampler that keeps one row per item in a batch where it can.

use std::collections::{BinaryHeap, HashMap};

use candle_core::backprop::GradStore;
use candle_core::{Result, Var};
use rand::Rng;
use rand::seq::SliceRandom;

/// Linear warm-up to `base` over `warmup` steps, then linear decay to 0 at `total` steps
/// (transformers' `get_linear_schedule_with_warmup`). `step` counts from 0.
pub fn linear_warmup_decay(base: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        base * step as f64 / warmup.max(1) as f64
    } else {
        base * (total.saturating_sub(step)) as f64 / (total.saturating_sub(warmup)).max(1) as f64
    }
}

/// Scales the gradients of `vars` so their global L2 norm is at most `max_norm`
/// (torch's `clip_grad_norm_`); returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let mut sq = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq += g
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    let norm = sq.sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for v in vars {
            if let Some(g) = grads.remove(v.as_tensor()) {
                grads.insert(v.as_tensor(), (g * coef)?);
            }
        }
    }
    Ok(norm)
}

/// Cuts rows into batches of `batch_size` in which no two rows share an item wherever the data
/// allows it: each batch takes one row from each of the items with the most rows left (ties in
/// a seeded random order), so an item's rows spread over as many batches as possible; a batch
/// that runs out of distinct items is filled with further rows of the most frequent ones, so
/// batches stay full. Rows within an item and the order of the batches are shuffled with `rng`.
/// Every row appears exactly once.
pub fn item_distinct_batches(
    items: &[u64],
    batch_size: usize,
    rng: &mut impl Rng,
) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut rows: HashMap<u64, Vec<usize>> = HashMap::new();
    for (r, &it) in items.iter().enumerate() {
        rows.entry(it).or_default().push(r);
    }
    let mut keys: Vec<u64> = rows.keys().copied().collect();
    keys.sort_unstable();
    keys.shuffle(rng);
    // (rows left, tie-break rank, item): the heap pops the item with the most rows left
    let mut heap: BinaryHeap<(usize, usize, u64)> = BinaryHeap::new();
    for (rank, it) in keys.into_iter().enumerate() {
        let list = rows.get_mut(&it).expect("item has rows");
        list.shuffle(rng);
        heap.push((list.len(), rank, it));
    }
    let mut out = Vec::new();
    while !heap.is_empty() {
        let mut batch = Vec::with_capacity(batch_size);
        let mut taken = Vec::new();
        while batch.len() < batch_size {
            let Some((left, rank, it)) = heap.pop() else {
                break;
            };
            batch.push(rows.get_mut(&it).and_then(Vec::pop).expect("rows left"));
            taken.push((left - 1, rank, it));
        }
        // out of distinct items: fill with more rows of the items just used, most left first
        taken.sort_unstable_by(|a, b| b.cmp(a));
        let mut t = 0;
        while batch.len() < batch_size && taken.iter().any(|x| x.0 > 0) {
            if taken[t].0 > 0 {
                let it = taken[t].2;
                batch.push(rows.get_mut(&it).and_then(Vec::pop).expect("rows left"));
                taken[t].0 -= 1;
            }
            t = (t + 1) % taken.len();
        }
        heap.extend(taken.into_iter().filter(|x| x.0 > 0));
        out.push(batch);
    }
    out.shuffle(rng);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::collections::HashSet;

    #[test]
    fn schedule_values() {
        let lr = |s| linear_warmup_decay(2e-5, s, 10, 110);
        assert_eq!(lr(0), 0.0);
        assert!((lr(5) - 1e-5).abs() < 1e-18);
        assert!((lr(10) - 2e-5).abs() < 1e-18);
        assert!((lr(60) - 1e-5).abs() < 1e-18);
        assert_eq!(lr(110), 0.0);
        assert_eq!(lr(200), 0.0);
        assert!((linear_warmup_decay(1.0, 0, 0, 4) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let a = Var::from_tensor(&Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::new(&[2f32], &Device::Cpu).unwrap()).unwrap();
        // loss = 3·a0 + 4·a1 + 12·b  → grads (3, 4) and (12): global norm 13
        let loss = ((a.as_tensor() * &Tensor::new(&[3f32, 4.0], &Device::Cpu).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            + (b.as_tensor() * 12.0).unwrap().sum_all().unwrap())
        .unwrap();
        let vars = [a.clone(), b.clone()];
        let mut g = loss.backward().unwrap();
        let norm = clip_grad_norm(&mut g, &vars, 1.0).unwrap();
        assert!((norm - 13.0).abs() < 1e-5);
        let ga: Vec<f32> = g.get(a.as_tensor()).unwrap().to_vec1().unwrap();
        let gb: Vec<f32> = g.get(b.as_tensor()).unwrap().to_vec1().unwrap();
        assert!((ga[0] - 3.0 / 13.0).abs() < 1e-5 && (ga[1] - 4.0 / 13.0).abs() < 1e-5);
        assert!((gb[0] - 12.0 / 13.0).abs() < 1e-5);
        // under the limit: untouched
        let mut g = loss.backward().unwrap();
        assert!((clip_grad_norm(&mut g, &vars, 100.0).unwrap() - 13.0).abs() < 1e-5);
        let gb: Vec<f32> = g.get(b.as_tensor()).unwrap().to_vec1().unwrap();
        assert_eq!(gb, vec![12.0]);
    }

    fn check(items: &[u64], bs: usize) -> Vec<Vec<usize>> {
        let b = item_distinct_batches(items, bs, &mut ChaCha8Rng::seed_from_u64(3));
        let mut all: Vec<usize> = b.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..items.len()).collect::<Vec<_>>(), "every row once");
        b
    }

    #[test]
    fn batches_keep_items_distinct_where_possible() {
        // 50 items × 2 rows: a full split into distinct batches of 10 exists
        let items: Vec<u64> = (0..100).map(|i| i % 50).collect();
        let b = check(&items, 10);
        assert!(b.iter().all(|x| x.len() == 10));
        for batch in &b {
            let distinct: HashSet<u64> = batch.iter().map(|&r| items[r]).collect();
            assert_eq!(distinct.len(), batch.len(), "duplicate item in {batch:?}");
        }
        // the same seed gives the same batches, another seed others
        assert_eq!(
            b,
            item_distinct_batches(&items, 10, &mut ChaCha8Rng::seed_from_u64(3))
        );
        assert_ne!(
            b,
            item_distinct_batches(&items, 10, &mut ChaCha8Rng::seed_from_u64(4))
        );
    }

    #[test]
    fn one_dominant_item_still_yields_full_batches() {
        // 30 rows of item 0 and 10 distinct others: duplicates are unavoidable
        let items: Vec<u64> = (0..40).map(|i| if i < 30 { 0 } else { i }).collect();
        let b = check(&items, 8);
        assert_eq!(b.len(), 5);
        assert!(b.iter().all(|x| x.len() == 8));
        // the singles spread out: some batch has exactly one row of item 0
        assert!(
            b.iter()
                .any(|x| x.iter().filter(|&&r| items[r] == 0).count() == 1)
        );
    }
}
