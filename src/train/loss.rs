//! MultipleNegativesRankingLoss with in-batch negatives, as sentence-transformers defines it:
//! cosine similarities of each query with every document of the batch (the positives, then the
//! optional explicit negatives), times `scale`, and cross-entropy with the query's own positive as
//! the label. Many reviews share one item, so the other positives (and negatives) of the query's
//! own item are masked out of its row: they are not negatives.
//!
//! Built from differentiable Candle ops only (no fused softmax).

use candle_core::{D, DType, Result, Tensor};

use crate::encoder::layers::l2_normalize;

/// Default similarity scale (temperature 0.05).
pub const DEFAULT_SCALE: f64 = 20.0;
/// Added to masked logits: exp() of it is 0 in f32 and f64.
const MASKED: f64 = -1e9;

/// The additive mask (b, docs): 0, or MASKED where document j is another copy of query i's item.
/// `query_items[i]` is the item of query i and of positive i; `doc_items` lists the items of all
/// documents (positives first, then negatives). With `mask_same_item` false nothing is masked
/// (the plain loss, `--no-mask-same-item`, for comparison).
pub fn same_item_mask(
    query_items: &[u64],
    doc_items: &[u64],
    mask_same_item: bool,
    dtype: DType,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let b = query_items.len();
    let mut m = vec![0f64; b * doc_items.len()];
    if mask_same_item {
        for (i, qi) in query_items.iter().enumerate() {
            for (j, dj) in doc_items.iter().enumerate() {
                if j != i && dj == qi {
                    m[i * doc_items.len() + j] = MASKED;
                }
            }
        }
    }
    Tensor::from_vec(m, (b, doc_items.len()), device)?.to_dtype(dtype)
}

/// Mean loss over the batch. `queries`, `positives`: (b, d); `negatives`: (n, d) or None;
/// `mask`: from [`same_item_mask`] over positives ++ negatives.
pub fn mnrl(
    queries: &Tensor,
    positives: &Tensor,
    negatives: Option<&Tensor>,
    mask: &Tensor,
    scale: f64,
) -> Result<Tensor> {
    let docs = match negatives {
        Some(n) => Tensor::cat(&[positives, n], 0)?,
        None => positives.clone(),
    };
    let logits = (l2_normalize(queries)?.matmul(&l2_normalize(&docs)?.t()?)? * scale)?.add(mask)?;
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let b = queries.dim(0)?;
    // the label of row i is column i: take the diagonal of the first b columns
    let eye = Tensor::eye(b, logp.dtype(), logp.device())?;
    let own = logp.narrow(1, 0, b)?.mul(&eye)?.sum(1)?;
    own.neg()?.mean(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The same loss in plain f64, written independently (no tensors).
    fn reference(
        q: &[Vec<f64>],
        docs: &[Vec<f64>],
        items_q: &[u64],
        items_d: &[u64],
        mask: bool,
        scale: f64,
    ) -> f64 {
        let unit = |v: &Vec<f64>| {
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter().map(|x| x / n).collect::<Vec<_>>()
        };
        let mut total = 0.0;
        for (i, qi) in q.iter().enumerate() {
            let qu = unit(qi);
            let logits: Vec<Option<f64>> = docs
                .iter()
                .enumerate()
                .map(|(j, d)| {
                    if mask && j != i && items_d[j] == items_q[i] {
                        None
                    } else {
                        Some(scale * qu.iter().zip(unit(d)).map(|(a, b)| a * b).sum::<f64>())
                    }
                })
                .collect();
            let lse = logits.iter().flatten().map(|x| x.exp()).sum::<f64>().ln();
            total += lse - logits[i].unwrap();
        }
        total / q.len() as f64
    }

    fn t(rows: &[Vec<f64>]) -> Tensor {
        let d = rows[0].len();
        Tensor::from_vec(rows.concat(), (rows.len(), d), &Device::Cpu).unwrap()
    }

    #[test]
    fn hand_computed_two_by_two() {
        // q0 = p0 direction, q1 orthogonal to p0 and equal to p1: cos = [[1, 0], [0, 1]]
        let q = vec![vec![1.0, 0.0], vec![0.0, 2.0]];
        let p = vec![vec![3.0, 0.0], vec![0.0, 1.0]];
        let mask = same_item_mask(&[1, 2], &[1, 2], true, DType::F64, &Device::Cpu).unwrap();
        let l = mnrl(&t(&q), &t(&p), None, &mask, 20.0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        // each row: -log(e^20 / (e^20 + e^0)) = ln(1 + e^-20)
        let want = (1.0 + (-20f64).exp()).ln();
        assert!((l - want).abs() < 1e-12, "{l} vs {want}");
    }

    #[test]
    fn matches_the_reference_with_masks_and_negatives() {
        let q = vec![
            vec![0.3, -1.2, 0.5],
            vec![1.1, 0.4, -0.2],
            vec![-0.7, 0.9, 0.8],
            vec![0.2, 0.2, -1.5],
        ];
        let p = vec![
            vec![0.1, -1.0, 0.9],
            vec![1.3, 0.1, 0.0],
            vec![-0.5, 1.1, 0.3],
            vec![0.4, -0.3, -1.1],
        ];
        let n = vec![
            vec![0.9, 0.9, 0.1],
            vec![-1.0, 0.2, 0.4],
            vec![0.0, -0.6, 1.2],
            vec![0.5, 0.5, 0.5],
        ];
        // queries 0 and 2 share item 7; negative 1 is also item 7
        let items_q = [7u64, 8, 7, 9];
        let items_d = [7u64, 8, 7, 9, 10, 7, 11, 12];
        let docs: Vec<Vec<f64>> = p.iter().chain(&n).cloned().collect();
        for mask_on in [true, false] {
            let mask =
                same_item_mask(&items_q, &items_d, mask_on, DType::F64, &Device::Cpu).unwrap();
            let l = mnrl(&t(&q), &t(&p), Some(&t(&n)), &mask, DEFAULT_SCALE)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            let want = reference(&q, &docs, &items_q, &items_d, mask_on, DEFAULT_SCALE);
            assert!((l - want).abs() < 1e-10, "mask {mask_on}: {l} vs {want}");
        }
        // masking removes false negatives, so it can only lower the loss
        let on = reference(&q, &docs, &items_q, &items_d, true, DEFAULT_SCALE);
        let off = reference(&q, &docs, &items_q, &items_d, false, DEFAULT_SCALE);
        assert!(on < off);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let q = vec![
            vec![0.3, -1.2, 0.5],
            vec![1.1, 0.4, -0.2],
            vec![-0.7, 0.9, 0.8],
        ];
        let p = vec![
            vec![0.1, -1.0, 0.9],
            vec![1.3, 0.1, 0.0],
            vec![-0.5, 1.1, 0.3],
        ];
        let n = vec![
            vec![0.9, 0.9, 0.1],
            vec![-1.0, 0.2, 0.4],
            vec![0.0, -0.6, 1.2],
        ];
        let items_q = [1u64, 2, 1];
        let items_d = [1u64, 2, 1, 3, 1, 4];
        let mask = same_item_mask(&items_q, &items_d, true, DType::F64, &Device::Cpu).unwrap();
        let scale = 5.0; // a softer scale keeps every term's gradient visible
        let (vq, vp, vn) = (
            Var::from_tensor(&t(&q)).unwrap(),
            Var::from_tensor(&t(&p)).unwrap(),
            Var::from_tensor(&t(&n)).unwrap(),
        );
        let loss = mnrl(
            vq.as_tensor(),
            vp.as_tensor(),
            Some(vn.as_tensor()),
            &mask,
            scale,
        )
        .unwrap();
        let grads = loss.backward().unwrap();
        let docs = |p: &[Vec<f64>], n: &[Vec<f64>]| -> Vec<Vec<f64>> {
            p.iter().chain(n).cloned().collect()
        };
        let h = 1e-6;
        for (which, var) in [(0, &vq), (1, &vp), (2, &vn)] {
            let g: Vec<Vec<f64>> = grads.get(var.as_tensor()).unwrap().to_vec2().unwrap();
            for r in 0..3 {
                for c in 0..3 {
                    let f = |delta: f64| {
                        let (mut q2, mut p2, mut n2) = (q.clone(), p.clone(), n.clone());
                        [&mut q2, &mut p2, &mut n2][which][r][c] += delta;
                        reference(&q2, &docs(&p2, &n2), &items_q, &items_d, true, scale)
                    };
                    let fd = (f(h) - f(-h)) / (2.0 * h);
                    assert!(
                        (g[r][c] - fd).abs() < 1e-6,
                        "tensor {which} [{r},{c}]: autograd {} vs fd {fd}",
                        g[r][c]
                    );
                }
            }
        }
    }
}
