//! Multi-head self-attention over a fused q|k|v projection as one graph node:
//! P = softmax(s·Q Kᵀ + mask bias) per head, out = P V; dV = Pᵀ G, dP = G Vᵀ,
//! dS = P ⊙ (dP − Σ_row dP ⊙ P), dQ = s·dS K, dK = s·dSᵀ Q.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, D, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{Data, cpu, exp, fused, keeps, matmul, slice};
use crate::encoder::simd::{self, vectorized};

vectorized! {
    /// One attention row block in place: each row of `s` (of `bias.len()`) becomes
    /// softmax(scale · row + bias).
    fn softmax_rows(s: &mut [f32], bias: &[f32], scale: f32) {
        for row in s.chunks_mut(bias.len()) {
            row.iter_mut().zip(bias).for_each(|(v, b)| *v = *v * scale + b);
            let m = simd::max(row);
            row.iter_mut().for_each(|v| *v = exp(*v - m));
            let inv = 1.0 / simd::sum(row);
            row.iter_mut().for_each(|v| *v *= inv);
        }
    }
}

vectorized! {
    /// dP → dS = P ⊙ (dP − Σ_row dP ⊙ P), in place over `dp`, rows of `n`.
    fn softmax_grad_rows(dp: &mut [f32], p: &[f32], n: usize) {
        for (d, p) in dp.chunks_mut(n).zip(p.chunks(n)) {
            let s = simd::dot(d, p);
            d.iter_mut().zip(p).for_each(|(d, p)| *d = p * (*d - s));
        }
    }
}

/// Multi-head self-attention: `qkv` (b, t, 3h) holds each token's query, key and value
/// projections side by side (heads of h / `heads` columns each), `bias` (b, 1, 1, t) the
/// additive padding mask. Returns the heads' outputs merged, (b, t, h):
/// softmax(Q Kᵀ / √d + bias) V per head.
pub fn attention(qkv: &Tensor, bias: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, t, h3) = qkv.dims3()?;
    let h = h3 / 3;
    let dh = h / heads.max(1);
    if h3 != 3 * h || dh * heads != h {
        candle_core::bail!("attention: {h3} columns do not split into 3 × {heads} heads");
    }
    let scale = 1.0 / (dh as f64).sqrt();
    if fused(qkv) && fused(bias) && bias.dims() == [b, 1, 1, t] {
        let op = Attention {
            heads,
            scale: scale as f32,
            keep: keeps(&[qkv]),
            probs: Mutex::new(None),
        };
        qkv.contiguous()?.apply_op2(&bias.contiguous()?, op)
    } else {
        let split = |i: usize| -> Result<Tensor> {
            qkv.narrow(2, i * h, h)?
                .reshape((b, t, heads, dh))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        // the products in qkv's dtype, the softmax in f32 (mixed precision), P back to qkv's
        let scores = (q.matmul(&k.t()?)?.to_dtype(DType::F32)? * scale)?
            .broadcast_add(&bias.to_dtype(DType::F32)?)?;
        let probs = if qkv.track_op() {
            candle_nn::ops::softmax(&scores, D::Minus1)?
        } else {
            candle_nn::ops::softmax_last_dim(&scores)?
        };
        probs
            .to_dtype(qkv.dtype())?
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, h))
    }
}

struct Attention {
    heads: usize,
    scale: f32,
    /// Keep the probabilities (b, heads, t, t) for the backward pass.
    keep: bool,
    probs: Mutex<Option<Vec<f32>>>,
}

impl Attention {
    /// The output (b, t, h) and, with `keep`, the probabilities (b, heads, t, t) (else an
    /// empty vector). One rayon task per sequence.
    fn run(
        &self,
        qkv: &[f32],
        bias: &[f32],
        (b, t, h): (usize, usize, usize),
        keep: bool,
    ) -> (Vec<f32>, Vec<f32>) {
        let (heads, dh) = (self.heads, h / self.heads);
        let sequence = |i: usize, out: &mut [f32], probs: &mut [f32]| {
            let qkv = &qkv[i * t * 3 * h..(i + 1) * t * 3 * h];
            let bias = &bias[i * t..(i + 1) * t];
            let mut o = vec![0f32; t * dh];
            for j in 0..heads {
                let p = if keep {
                    &mut probs[j * t * t..(j + 1) * t * t]
                } else {
                    &mut probs[..]
                };
                let (q, k, v) = (&qkv[j * dh..], &qkv[h + j * dh..], &qkv[2 * h + j * dh..]);
                // S = Q Kᵀ (scaled with the bias added, in the softmax pass)
                matmul(p, (t, t, dh), q, (3 * h, 1), k, (1, 3 * h), 1.0, false);
                softmax_rows(p, bias, self.scale);
                // the head's output P V, into its columns of the merged output
                matmul(&mut o, (t, dh, t), p, (t, 1), v, (3 * h, 1), 1.0, false);
                for (row, o) in out.chunks_mut(h).zip(o.chunks(dh)) {
                    row[j * dh..(j + 1) * dh].copy_from_slice(o);
                }
            }
        };
        let mut out = vec![0f32; b * t * h];
        let mut probs = Vec::new();
        if keep {
            probs = vec![0f32; b * heads * t * t];
            out.par_chunks_mut(t * h)
                .zip(probs.par_chunks_mut(heads * t * t))
                .enumerate()
                .for_each(|(i, (out, p))| sequence(i, out, p));
        } else {
            out.par_chunks_mut(t * h)
                .enumerate()
                .for_each(|(i, out)| sequence(i, out, &mut vec![0f32; t * t]));
        }
        (out, probs)
    }
}

impl CustomOp2 for Attention {
    fn name(&self) -> &'static str {
        "recsys-attention"
    }

    fn cpu_fwd(
        &self,
        qkv_data: &CpuStorage,
        qkv_layout: &Layout,
        bias_data: &CpuStorage,
        bias_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (qkv, bias) = (
            slice(qkv_data, qkv_layout, self.name())?,
            slice(bias_data, bias_layout, self.name())?,
        );
        let (b, t, h3) = qkv_layout.shape().dims3()?;
        let (out, probs) = self.run(qkv, bias, (b, t, h3 / 3), self.keep);
        if self.keep {
            *self.probs.lock().expect("no panics while held") = Some(probs);
        }
        Ok((CpuStorage::F32(out), Shape::from((b, t, h3 / 3))))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        bias: &Tensor,
        _out: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let (b, t, h3) = qkv.dims3()?;
        let h = h3 / 3;
        let (heads, dh) = (self.heads, h / self.heads);
        let (qd, bd, gd) = (Data::of(qkv), Data::of(bias), Data::of(&g));
        let (qkv, gs) = (qd.get(self.name())?, gd.get(self.name())?);
        let kept = self.probs.lock().expect("no panics while held").take();
        let probs = match kept {
            Some(p) => p,
            None => self.run(qkv, bd.get(self.name())?, (b, t, h), true).1,
        };
        let mut dqkv = vec![0f32; b * t * h3];
        dqkv.par_chunks_mut(t * h3)
            .zip(probs.par_chunks(heads * t * t))
            .enumerate()
            .for_each(|(i, (dqkv, probs))| {
                let qkv = &qkv[i * t * h3..(i + 1) * t * h3];
                let g = &gs[i * t * h..(i + 1) * t * h];
                let mut dp = vec![0f32; t * t];
                let mut d = vec![0f32; t * dh];
                for j in 0..heads {
                    let p = &probs[j * t * t..(j + 1) * t * t];
                    let (q, k, v) = (&qkv[j * dh..], &qkv[h + j * dh..], &qkv[2 * h + j * dh..]);
                    let gj = &g[j * dh..];
                    let put = |dst: &mut [f32], col: usize, d: &[f32]| {
                        for (row, d) in dst.chunks_mut(h3).zip(d.chunks(dh)) {
                            row[col..col + dh].copy_from_slice(d);
                        }
                    };
                    // dV = Pᵀ G
                    matmul(&mut d, (t, dh, t), p, (1, t), gj, (h, 1), 1.0, false);
                    put(dqkv, 2 * h + j * dh, &d);
                    // dP = G Vᵀ, then dS in place
                    matmul(&mut dp, (t, t, dh), gj, (h, 1), v, (1, h3), 1.0, false);
                    softmax_grad_rows(&mut dp, p, t);
                    // dQ = s·dS K, dK = s·dSᵀ Q
                    matmul(
                        &mut d,
                        (t, dh, t),
                        &dp,
                        (t, 1),
                        k,
                        (h3, 1),
                        self.scale,
                        false,
                    );
                    put(dqkv, j * dh, &d);
                    matmul(
                        &mut d,
                        (t, dh, t),
                        &dp,
                        (1, t),
                        q,
                        (h3, 1),
                        self.scale,
                        false,
                    );
                    put(dqkv, h + j * dh, &d);
                }
            });
        Ok((Some(cpu(dqkv, (b, t, h3))?), None))
    }
}
