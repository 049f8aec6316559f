//! Layer norm of x + residual as one graph node: y = LN(s), ŝ = (s − μ)·ρ, ρ = 1/√(σ² + ε);
//! ds = ρ · (ĝ − mean(ĝ) − ŝ ⊙ mean(ĝ ⊙ ŝ)) with ĝ = γ ⊙ g; dγ = Σ_rows g ⊙ ŝ; dβ = Σ_rows g;
//! dx = dr = ds (the sum is recomputed, not kept).

use candle_core::{CpuStorage, CustomOp3, D, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{Data, cpu, fused, map_rows, rows_per_task, slice, sum_blocks};
use crate::encoder::simd::{self, vectorized};

/// Mean and 1/√(σ² + eps) of one row.
#[inline(always)]
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = simd::sum(x) / n;
    let mut acc = [0f32; simd::LANES];
    let chunks = x.chunks_exact(simd::LANES);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += (v - mean) * (v - mean);
        }
    }
    let var = (simd::sum(&acc) + tail) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

vectorized! {
    /// y = LN(x + r) row by row (rows of `w.len()`; `r` empty: no residual).
    fn layer_norm_rows(y: &mut [f32], x: &[f32], r: &[f32], w: &[f32], b: &[f32], eps: f32) {
        let n = w.len();
        for (i, (y, x)) in y.chunks_mut(n).zip(x.chunks(n)).enumerate() {
            y.copy_from_slice(x);
            if let Some(r) = r.get(i * n..(i + 1) * n) {
                y.iter_mut().zip(r).for_each(|(y, r)| *y += r);
            }
            let (mean, rho) = row_stats(y, eps);
            for ((y, w), b) in y.iter_mut().zip(w).zip(b) {
                *y = (*y - mean) * rho * w + b;
            }
        }
    }
}

vectorized! {
    /// The layer-norm backward over a block of rows: `ds` holds s = x (+ r) on entry and the
    /// gradient with respect to s on return; dγ and dβ are added to `acc` ([dγ; dβ]).
    fn layer_norm_grad_rows(ds: &mut [f32], g: &[f32], w: &[f32], eps: f32, acc: &mut [f32]) {
        let n = w.len();
        let (dw, db) = acc.split_at_mut(n);
        for (s, g) in ds.chunks_mut(n).zip(g.chunks(n)) {
            let (mean, rho) = row_stats(s, eps);
            // ŝ in place, then mean(ĝ) and mean(ĝ ⊙ ŝ) with ĝ = γ ⊙ g
            s.iter_mut().for_each(|v| *v = (*v - mean) * rho);
            let m1 = simd::dot(w, g) / n as f32;
            let m2 = simd::dot3(w, g, s) / n as f32;
            for ((((d, w), g), dw), db) in s.iter_mut().zip(w).zip(g).zip(dw.iter_mut()).zip(db.iter_mut()) {
                let sh = *d;
                *dw += g * sh;
                *db += g;
                *d = rho * (w * g - m1 - sh * m2);
            }
        }
    }
}

/// Layer norm over the last dimension of `x + residual` (or of `x` alone):
/// `(s − μ) / √(σ² + eps) · weight + bias`.
pub fn add_layer_norm(
    x: &Tensor,
    residual: Option<&Tensor>,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    if fused(x) && fused(weight) && fused(bias) && residual.is_none_or(fused) {
        let wb = Tensor::stack(&[weight, bias], 0)?;
        let x = x.contiguous()?;
        let r = match residual {
            Some(r) if r.dims() == x.dims() => r.contiguous()?,
            Some(r) => candle_core::bail!(
                "add_layer_norm: residual {:?} for x {:?}",
                r.dims(),
                x.dims()
            ),
            None => x.clone(),
        };
        let op = LayerNorm {
            eps: eps as f32,
            residual: residual.is_some(),
        };
        x.apply_op3(&r, &wb.contiguous()?, op)
    } else {
        let s = match residual {
            Some(r) => (x + r)?,
            None => x.clone(),
        };
        if s.track_op() || weight.track_op() {
            let dims = s.dims().to_vec();
            let h = s.dim(D::Minus1)?;
            let s = s.reshape(((), h))?;
            let s = s.broadcast_sub(&(s.sum_keepdim(1)? / h as f64)?)?;
            let var = (s.sqr()?.sum_keepdim(1)? / h as f64)?;
            let normed = s.broadcast_div(&(var + eps)?.sqrt()?)?;
            normed
                .broadcast_mul(weight)?
                .broadcast_add(bias)?
                .reshape(dims)
        } else {
            candle_nn::ops::layer_norm(&s, weight, bias, eps as f32)
        }
    }
}

struct LayerNorm {
    eps: f32,
    /// The second input is a residual to add (else it is `x` again and ignored).
    residual: bool,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "recsys-layer-norm"
    }

    fn cpu_fwd(
        &self,
        x_data: &CpuStorage,
        x_layout: &Layout,
        res_data: &CpuStorage,
        res_layout: &Layout,
        wb_data: &CpuStorage,
        wb_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, r) = (
            slice(x_data, x_layout, self.name())?,
            slice(res_data, res_layout, self.name())?,
        );
        let wb = slice(wb_data, wb_layout, self.name())?;
        let n = wb.len() / 2;
        let (w, b) = wb.split_at(n);
        if x_layout.dims().last() != Some(&n) || r.len() != x.len() {
            candle_core::bail!("{}: weight and bias must match the last dim", self.name());
        }
        let r = if self.residual { r } else { &[] };
        let y = map_rows(x, n, r, if self.residual { n } else { 0 }, |y, x, r| {
            layer_norm_rows(y, x, r, w, b, self.eps)
        });
        Ok((CpuStorage::F32(y), x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        r: &Tensor,
        wb: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let (xd, rd, wd, gd) = (Data::of(x), Data::of(r), Data::of(wb), Data::of(&g));
        let (xs, gs) = (xd.get(self.name())?, gd.get(self.name())?);
        let n = wb.dim(1)?;
        let w = &wd.get(self.name())?[..n];
        // s = x (+ r), turned into ds block by block
        let mut ds = xs.to_vec();
        if self.residual {
            let rs = rd.get(self.name())?;
            let rows = rows_per_task(n) * n;
            ds.par_chunks_mut(rows)
                .zip(rs.par_chunks(rows))
                .for_each(|(s, r)| s.iter_mut().zip(r).for_each(|(s, r)| *s += r));
        }
        let dwb = sum_blocks(&mut ds, n, 2 * n, |first, s, acc| {
            let g = &gs[first * n..first * n + s.len()];
            layer_norm_grad_rows(s, g, w, self.eps, acc)
        });
        let ds = cpu(ds, x.shape())?;
        let dr = self.residual.then(|| ds.clone());
        Ok((Some(ds), dr, Some(cpu(dwb, (2, n))?)))
    }
}
