//! The dense layer as one graph node: y = act(x Wᵀ + b), act the identity or the exact GELU;
//! dz = g ⊙ act′(z), dx = dz W, dW = dzᵀ x, db = Σ_rows dz.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{
    Data, FRAC_1_SQRT_2PI, cpu, exp, fused, keeps, matmul, phi_cdf, rows_per_task, slice,
    sum_blocks,
};
use crate::encoder::simd::vectorized;

vectorized! {
    /// Rows of `y` (length `b.len()`) += b; with `gelu`, also `z` = those values and
    /// `y` = GELU(z) (`z` may be empty when the pre-activation is not kept).
    fn bias_act_rows(y: &mut [f32], z: &mut [f32], b: &[f32], gelu: bool) {
        let n = b.len();
        for (i, y) in y.chunks_mut(n).enumerate() {
            y.iter_mut().zip(b).for_each(|(y, b)| *y += b);
            if gelu {
                if let Some(z) = z.get_mut(i * n..(i + 1) * n) {
                    z.copy_from_slice(y);
                }
                y.iter_mut().for_each(|v| *v *= phi_cdf(*v));
            }
        }
    }
}

vectorized! {
    /// g ⊙ GELU′(z), in place over `g`.
    fn gelu_grad(g: &mut [f32], z: &[f32]) {
        for (g, &x) in g.iter_mut().zip(z) {
            let pdf = FRAC_1_SQRT_2PI * exp(-0.5 * x * x);
            *g *= phi_cdf(x) + x * pdf;
        }
    }
}

vectorized! {
    /// Rows (of `acc.len()`) of `g` summed into `acc`.
    fn column_sums(g: &[f32], acc: &mut [f32]) {
        let n = acc.len();
        for g in g.chunks(n) {
            acc.iter_mut().zip(g).for_each(|(a, v)| *a += v);
        }
    }
}

/// The activation applied after a dense layer's bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Identity,
    /// The exact (erf) GELU.
    Gelu,
}

/// A dense layer `act(x Wᵀ + b)` over the last dimension (w: (out, in), b: (out)) as one graph
/// node: the product before the bias is not kept for the backward pass (it needs x, W and the
/// output gradient, and for GELU the pre-activation, kept only when training).
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor, act: Act) -> Result<Tensor> {
    let mut dims = x.dims().to_vec();
    let k = dims.pop().unwrap_or(1);
    let x2 = x.reshape(((), k))?;
    dims.push(w.dim(0)?);
    let y = if fused(x) && fused(w) && fused(b) {
        let op = Linear {
            act,
            z: Mutex::new(None),
            keep: act == Act::Gelu && keeps(&[x, w, b]),
        };
        x2.contiguous()?
            .apply_op3(&w.contiguous()?, &b.contiguous()?, op)?
    } else {
        let y = x2.matmul(&w.t()?)?.broadcast_add(b)?;
        match act {
            Act::Identity => y,
            Act::Gelu => y.gelu_erf()?,
        }
    };
    y.reshape(dims)
}

struct Linear {
    act: Act,
    /// The pre-activation, kept by the forward pass for the backward pass (GELU, training).
    z: Mutex<Option<Vec<f32>>>,
    keep: bool,
}

impl Linear {
    /// act(x Wᵀ + b) for x (m, k), w (n, k); with `keep_z`, also the pre-activation.
    fn run(
        &self,
        x: &[f32],
        w: &[f32],
        b: &[f32],
        m: usize,
        keep_z: bool,
    ) -> (Vec<f32>, Option<Vec<f32>>) {
        let n = b.len();
        let k = w.len() / n.max(1);
        let mut y = vec![0f32; m * n];
        matmul(&mut y, (m, n, k), x, (k, 1), w, (1, k), 1.0, true);
        let gelu = self.act == Act::Gelu;
        let mut z = if keep_z {
            vec![0f32; m * n]
        } else {
            Vec::new()
        };
        let rows = rows_per_task(n) * n;
        if keep_z {
            y.par_chunks_mut(rows)
                .zip(z.par_chunks_mut(rows))
                .for_each(|(y, z)| bias_act_rows(y, z, b, gelu));
        } else {
            y.par_chunks_mut(rows)
                .for_each(|y| bias_act_rows(y, &mut [], b, gelu));
        }
        (y, keep_z.then_some(z))
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "recsys-linear"
    }

    fn cpu_fwd(
        &self,
        x_data: &CpuStorage,
        x_layout: &Layout,
        w_data: &CpuStorage,
        w_layout: &Layout,
        b_data: &CpuStorage,
        b_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(x_data, x_layout, self.name())?;
        let (w, b) = (
            slice(w_data, w_layout, self.name())?,
            slice(b_data, b_layout, self.name())?,
        );
        let (m, k) = x_layout.shape().dims2()?;
        let (n, k2) = w_layout.shape().dims2()?;
        if k != k2 || b.len() != n {
            candle_core::bail!(
                "{}: shapes {:?} {:?} {:?}",
                self.name(),
                x_layout,
                w_layout,
                b_layout
            );
        }
        let (y, z) = self.run(x, w, b, m, self.keep);
        *self.z.lock().expect("no panics while held") = z;
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let (m, k) = x.dims2()?;
        let n = b.elem_count();
        let (xd, wd, gd, bd) = (Data::of(x), Data::of(w), Data::of(&g), Data::of(b));
        let (xs, ws) = (xd.get(self.name())?, wd.get(self.name())?);
        let mut dz = gd.get(self.name())?.to_vec();
        if self.act == Act::Gelu {
            let kept = self.z.lock().expect("no panics while held").take();
            // a second backward pass over the same graph recomputes what the first took
            let z = match kept {
                Some(z) => z,
                None => self
                    .run(xs, ws, bd.get(self.name())?, m, true)
                    .1
                    .unwrap_or_default(),
            };
            let rows = rows_per_task(n) * n;
            dz.par_chunks_mut(rows)
                .zip(z.par_chunks(rows))
                .for_each(|(g, z)| gelu_grad(g, z));
        }
        let mut dx = vec![0f32; m * k];
        matmul(&mut dx, (m, k, n), &dz, (n, 1), ws, (k, 1), 1.0, true);
        let mut dw = vec![0f32; n * k];
        matmul(&mut dw, (n, k, m), &dz, (1, n), xs, (k, 1), 1.0, true);
        let db = sum_blocks(&mut dz, n, n, |_, g, acc| column_sums(g, acc));
        Ok((
            Some(cpu(dx, (m, k))?),
            Some(cpu(dw, (n, k))?),
            Some(cpu(db, n)?),
        ))
    }
}
