//! Fused CPU kernels for the encoder's element-wise and row-wise ops, each with its backward
//! pass, so training gets the fused speed that Candle keeps for inference (its fused
//! `softmax_last_dim` and `layer_norm` record no gradient, and its `gelu_erf` backward builds
//! about a dozen temporaries).
//!
//! - masked softmax over the last dim: y = softmax(x + mask bias); dx = y ⊙ (g − Σ g ⊙ y).
//! - layer norm over the last dim with weight γ and bias β: x̂ = (x − μ)·r, r = 1/√(σ² + ε),
//!   y = γ ⊙ x̂ + β; dx = r · (ĝ − mean(ĝ) − x̂ ⊙ mean(ĝ ⊙ x̂)) with ĝ = γ ⊙ g;
//!   dγ = Σ_rows g ⊙ x̂; dβ = Σ_rows g.
//! - exact GELU: y = x·Φ(x) with Φ(x) = (1 + erf(x/√2))/2; dx = g · (Φ(x) + x·φ(x)).
//! - a dense layer as one node: y = x Wᵀ + b; dx = g W, dW = gᵀ x, db = Σ_rows g.
//!
//! Each public function takes the fused path for contiguous f32 tensors on the CPU and the
//! composite (differentiable) Candle ops elsewhere, so other devices and dtypes keep working.
//! Rows are split over the rayon pool ([`map_rows`], [`sum_rows`]). The unit tests compare
//! values and gradients with the composite ops.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, DType, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;

/// The f32 data of a contiguous CPU tensor.
fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{op}: f32 only")
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{op}: the input must be contiguous"),
    }
}

fn fused(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

fn last_dim(l: &Layout) -> usize {
    l.dims().last().copied().unwrap_or(1).max(1)
}

/// Rows of `n` values per rayon task: about 16 K values, enough to amortise the scheduling.
fn rows_per_task(n: usize) -> usize {
    (16_384 / n.max(1)).max(1)
}

/// A new buffer the size of `a`, written row by row (rows of `n`) by
/// `f(row index, out row, a row, b row)`; `b` is read in rows of `n` alongside (pass `a` again
/// when there is no second input). Rows are split over the rayon pool.
fn map_rows(
    a: &[f32],
    b: &[f32],
    n: usize,
    f: impl Fn(usize, &mut [f32], &[f32], &[f32]) + Sync + Send,
) -> Vec<f32> {
    let rows = rows_per_task(n);
    let mut out = vec![0f32; a.len()];
    out.par_chunks_mut(rows * n)
        .zip(a.par_chunks(rows * n))
        .zip(b.par_chunks(rows * n))
        .enumerate()
        .for_each(|(task, ((o, a), b))| {
            let rows_out = o.chunks_mut(n).zip(a.chunks(n)).zip(b.chunks(n));
            for (i, ((o, a), b)) in rows_out.enumerate() {
                f(task * rows + i, o, a, b);
            }
        });
    out
}

/// Σ over rows (of `n`) of `f(a row, b row, acc)` into an accumulator of `width` values:
/// partial sums per task, added in task order (the same result every run).
fn sum_rows(
    a: &[f32],
    b: &[f32],
    n: usize,
    width: usize,
    f: impl Fn(&[f32], &[f32], &mut [f32]) + Sync + Send,
) -> Vec<f32> {
    let rows = rows_per_task(n);
    let partial: Vec<Vec<f32>> = a
        .par_chunks(rows * n)
        .zip(b.par_chunks(rows * n))
        .map(|(a, b)| {
            let mut acc = vec![0f32; width];
            for (a, b) in a.chunks(n).zip(b.chunks(n)) {
                f(a, b, &mut acc);
            }
            acc
        })
        .collect();
    let mut out = vec![0f32; width];
    for p in partial {
        out.iter_mut().zip(p).for_each(|(o, p)| *o += p);
    }
    out
}

/// softmax(x + bias) over the last dimension, for attention scores x (b, heads, tq, tk) and an
/// additive mask bias (b, 1, 1, tk) — one pass, and no (b, heads, tq, tk) sum kept alive for
/// the backward pass. The bias gets no gradient (it is the padding mask). `grad`: off the fused
/// path, use the composite (differentiable) softmax rather than Candle's fused kernel.
pub fn masked_softmax(x: &Tensor, bias: &Tensor, grad: bool) -> Result<Tensor> {
    let (b, _, _, tk) = x.dims4()?;
    if fused(x) && fused(bias) && bias.dims() == [b, 1, 1, tk] {
        x.contiguous()?
            .apply_op2(&bias.contiguous()?, MaskedSoftmax)
    } else if grad {
        candle_nn::ops::softmax(&x.broadcast_add(bias)?, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(&x.broadcast_add(bias)?)
    }
}

struct MaskedSoftmax;

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "recsys-masked-softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, bias) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?);
        let n = last_dim(l1);
        // rows per batch element: heads × tq
        let per_batch = (l1.dims().iter().skip(1).product::<usize>() / n).max(1);
        let y = map_rows(x, x, n, |r, y, x, _| {
            let bias = &bias[(r / per_batch) * n..(r / per_batch + 1) * n];
            y.iter_mut()
                .zip(x)
                .zip(bias)
                .for_each(|((y, x), b)| *y = x + b);
            softmax_row(y);
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _bias: &Tensor,
        y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((
            Some(y.apply_op2_no_bwd(&g.contiguous()?, &SoftmaxGrad)?),
            None,
        ))
    }
}

/// Softmax of one row in place.
#[inline]
fn softmax_row(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    row.iter_mut().for_each(|v| *v = exp(*v - max));
    let inv = 1.0 / row.iter().sum::<f32>();
    row.iter_mut().for_each(|v| *v *= inv);
}

/// (y, g) → y ⊙ (g − Σ g ⊙ y) per row.
struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "recsys-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (y, g) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?);
        let dx = map_rows(y, g, last_dim(l1), |_, dx, y, g| {
            let s: f32 = y.iter().zip(g).map(|(y, g)| y * g).sum();
            for ((d, y), g) in dx.iter_mut().zip(y).zip(g) {
                *d = y * (g - s);
            }
        });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// Layer norm over the last dimension: `(x − μ) / √(σ² + eps) · weight + bias`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if fused(x) && fused(weight) && fused(bias) {
        x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            LayerNorm { eps: eps as f32 },
        )
    } else {
        let dims = x.dims().to_vec();
        let h = x.dim(D::Minus1)?;
        let x = x.reshape(((), h))?;
        let x = x.broadcast_sub(&(x.sum_keepdim(1)? / h as f64)?)?;
        let var = (x.sqr()?.sum_keepdim(1)? / h as f64)?;
        let normed = x.broadcast_div(&(var + eps)?.sqrt()?)?;
        normed
            .broadcast_mul(weight)?
            .broadcast_add(bias)?
            .reshape(dims)
    }
}

struct LayerNorm {
    eps: f32,
}

/// Mean and 1/√(σ² + eps) of one row.
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "recsys-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, self.name())?;
        let (w, b) = (slice(s2, l2, self.name())?, slice(s3, l3, self.name())?);
        let n = w.len().max(1);
        if last_dim(l1) != n || b.len() != n {
            candle_core::bail!("{}: weight and bias must match the last dim", self.name());
        }
        let y = map_rows(x, x, n, |_, y, x, _| {
            let (mean, r) = row_stats(x, self.eps);
            for (((y, x), w), b) in y.iter_mut().zip(x).zip(w).zip(b) {
                *y = (x - mean) * r * w + b;
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let dx = x.apply_op3_no_bwd(w, &g, &LayerNormGradX { eps: self.eps })?;
        let params = x.apply_op2_no_bwd(&g, &LayerNormGradParams { eps: self.eps })?;
        Ok((Some(dx), Some(params.get(0)?), Some(params.get(1)?)))
    }
}

/// (x, γ, g) → dx.
struct LayerNormGradX {
    eps: f32,
}

impl CustomOp3 for LayerNormGradX {
    fn name(&self) -> &'static str {
        "recsys-layer-norm-grad-x"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, self.name())?;
        let (w, g) = (slice(s2, l2, self.name())?, slice(s3, l3, self.name())?);
        let n = w.len().max(1);
        let dx = map_rows(x, g, n, |_, dx, x, g| {
            let (mean, r) = row_stats(x, self.eps);
            // mean(ĝ) and mean(ĝ ⊙ x̂), ĝ = γ ⊙ g
            let (mut m1, mut m2) = (0f32, 0f32);
            for ((x, w), g) in x.iter().zip(w).zip(g) {
                let gh = w * g;
                m1 += gh;
                m2 += gh * (x - mean) * r;
            }
            let (m1, m2) = (m1 / n as f32, m2 / n as f32);
            for (((d, x), w), g) in dx.iter_mut().zip(x).zip(w).zip(g) {
                *d = r * (w * g - m1 - (x - mean) * r * m2);
            }
        });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// (x, g) → (2, n): [dγ; dβ] = [Σ_rows g ⊙ x̂; Σ_rows g].
struct LayerNormGradParams {
    eps: f32,
}

impl CustomOp2 for LayerNormGradParams {
    fn name(&self) -> &'static str {
        "recsys-layer-norm-grad-params"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?);
        let n = last_dim(l1);
        let out = sum_rows(x, g, n, 2 * n, |x, g, acc| {
            let (mean, r) = row_stats(x, self.eps);
            let (dw, db) = acc.split_at_mut(n);
            for (((dw, db), x), g) in dw.iter_mut().zip(db).zip(x).zip(g) {
                *dw += g * (x - mean) * r;
                *db += g;
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((2, n))))
    }
}

/// A dense layer `x Wᵀ + b` over the last dimension (w: (out, in), b: (out)) as one graph
/// node, so the product before the bias is not kept for the backward pass (which needs x, W and
/// the output gradient only): dx = g W, dW = gᵀ x, db = Σ_rows g (one parallel pass; Candle's
/// broadcast backward runs that sum as a scalar loop on one thread). The product is Candle's
/// matmul over transient copies of the inputs.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let mut dims = x.dims().to_vec();
    let k = dims.pop().unwrap_or(1);
    let x2 = x.reshape(((), k))?;
    dims.push(w.dim(0)?);
    let y = if fused(x) && fused(w) && fused(b) {
        x2.contiguous()?
            .apply_op3(&w.contiguous()?, &b.contiguous()?, Linear)?
    } else {
        x2.matmul(&w.t()?)?.broadcast_add(b)?
    };
    y.reshape(dims)
}

struct Linear;

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "recsys-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, self.name())?;
        let (w, b) = (slice(s2, l2, self.name())?, slice(s3, l3, self.name())?);
        let (m, k) = l1.shape().dims2()?;
        let (n, _) = l2.shape().dims2()?;
        let dev = candle_core::Device::Cpu;
        let xw = Tensor::from_slice(x, (m, k), &dev)?
            .matmul(&Tensor::from_slice(w, (n, k), &dev)?.t()?)?;
        let mut y = xw.flatten_all()?.to_vec1::<f32>()?;
        drop(xw);
        y.par_chunks_mut(rows_per_task(n) * n).for_each(|rows| {
            for row in rows.chunks_mut(n) {
                row.iter_mut().zip(b).for_each(|(y, b)| *y += b);
            }
        });
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
        // detached: a gradient that recorded its own graph would keep every layer's output
        // gradient alive through the parameters' running sums
        let (x, w, g) = (x.detach(), w.detach(), g.contiguous()?.detach());
        let dx = g.matmul(&w)?;
        let dw = g.t()?.matmul(&x)?;
        let db = g.apply_op1_no_bwd(&ColumnSums { n: b.elem_count() })?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// (…, n) → (n): the sum of the rows.
struct ColumnSums {
    n: usize,
}

impl CustomOp1 for ColumnSums {
    fn name(&self) -> &'static str {
        "recsys-column-sums"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = slice(s, l, self.name())?;
        let n = self.n.max(1);
        let out = sum_rows(g, g, n, n, |g, _, acc| {
            acc.iter_mut().zip(g).for_each(|(a, v)| *a += v);
        });
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }
}

/// The exact (erf) GELU.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if fused(x) {
        x.contiguous()?.apply_op1(Gelu)
    } else {
        x.gelu_erf()
    }
}

/// Element-wise kernels run over "rows" of this many values.
const CHUNK: usize = 1024;

const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// Φ(x), the standard normal CDF.
#[inline(always)]
fn phi_cdf(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// eˣ in plain f32 arithmetic, so that loops over it vectorise (libm's `expf` is a call per
/// element): x = n·ln 2 + r with |r| ≤ ln 2 / 2, eʳ by Cephes' `expf` polynomial, 2ⁿ through the
/// exponent bits. Relative error ≤ 2e-7 (tested against `f32::exp`); x is clamped to
/// [−87.3, 88], so e^−∞ gives 1.25e-38 instead of 0.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³: adding and subtracting it rounds to an integer
    let x = x.clamp(-87.3, 88.0);
    let n = (x * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

/// erf(x) in plain f32 arithmetic (vectorisable): Abramowitz & Stegun 7.1.26,
/// 1 − (a₁t + … + a₅t⁵)·e^(−x²) with t = 1/(1 + p|x|), odd in x — the approximation PyTorch's
/// vectorised CPU `erf` (and so its exact GELU) uses. Absolute error ≤ 6e-7 in f32 (tested
/// against libm), so GELU stays the exact erf form, not the tanh approximation.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_72) * t
        + 0.254_829_6)
        * t;
    (1.0 - poly * exp(-a * a)).copysign(x)
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "recsys-gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, self.name())?;
        let y = map_rows(x, x, CHUNK, |_, y, x, _| {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = x * phi_cdf(x);
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&g.contiguous()?, &GeluGrad)?))
    }
}

/// (x, g) → g · (Φ(x) + x·φ(x)).
struct GeluGrad;

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "recsys-gelu-erf-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?);
        let dx = map_rows(x, g, CHUNK, |_, dx, x, g| {
            for ((d, &x), &g) in dx.iter_mut().zip(x).zip(g) {
                let pdf = FRAC_1_SQRT_2PI * exp(-0.5 * x * x);
                *d = g * (phi_cdf(x) + x * pdf);
            }
        });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn exp_and_erf_match_libm() {
        let (mut worst_exp, mut worst_erf) = (0f64, 0f64);
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            worst_exp = worst_exp.max(((exp(x) as f64 - want) / want).abs());
            let x = -6.0 + 12.0 * i as f32 / 200_000.0;
            worst_erf = worst_erf.max((erf(x) as f64 - libm::erf(x as f64)).abs());
        }
        assert!(worst_exp < 2e-7, "exp: relative error {worst_exp:e}");
        assert!(worst_erf < 6e-7, "erf: absolute error {worst_erf:e}");
        assert_eq!(exp(f32::NEG_INFINITY), exp(-87.3));
        assert!(exp(f32::NEG_INFINITY) < 1.3e-38);
        assert_eq!(erf(0.0), 0.0);
    }

    /// Each fused op against Candle's composite ops on random input: values, and the gradient
    /// of a random linear function of the output with respect to every input.
    #[test]
    fn fused_ops_match_the_composite_ops_and_their_gradients() {
        let dev = Device::Cpu;
        let (rows, n) = (150, 48); // more rows than one task, a ragged last task
        let x =
            Var::from_tensor(&(Tensor::randn(0f32, 2.0, (3, rows / 3, n), &dev).unwrap())).unwrap();
        let w = Var::from_tensor(&Tensor::randn(1f32, 0.5, n, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.5, n, &dev).unwrap()).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (3, rows / 3, n), &dev).unwrap();
        // a square layer, so that its output has x's shape like every other case
        let wl = Var::from_tensor(&Tensor::randn(0f32, 0.2, (n, n), &dev).unwrap()).unwrap();
        // a padding mask per batch element: 0 for real tokens, −10000 for the last few
        let mask = Tensor::from_vec(
            (0..3 * n)
                .map(|i| {
                    if i % n >= n - 1 - (i / n) * 3 {
                        -10_000f32
                    } else {
                        0.0
                    }
                })
                .collect::<Vec<_>>(),
            (3, 1, 1, n),
            &dev,
        )
        .unwrap();
        type Op<'a> = Box<dyn Fn(&Tensor) -> Tensor + 'a>;
        let cases: Vec<(&str, Op, Op)> = vec![
            (
                "masked_softmax",
                Box::new(|x| {
                    masked_softmax(&x.reshape((3, 2, 25, n)).unwrap(), &mask, true)
                        .unwrap()
                        .reshape(x.dims())
                        .unwrap()
                }),
                Box::new(|x| {
                    candle_nn::ops::softmax(
                        &x.reshape((3, 2, 25, n))
                            .unwrap()
                            .broadcast_add(&mask)
                            .unwrap(),
                        D::Minus1,
                    )
                    .unwrap()
                    .reshape(x.dims())
                    .unwrap()
                }),
            ),
            (
                "linear",
                Box::new(|x| linear(x, &wl, &b).unwrap()),
                Box::new(|x| {
                    x.broadcast_matmul(&wl.t().unwrap())
                        .unwrap()
                        .broadcast_add(&b)
                        .unwrap()
                }),
            ),
            (
                "gelu_erf",
                Box::new(|x| gelu_erf(x).unwrap()),
                Box::new(|x| x.gelu_erf().unwrap()),
            ),
        ];
        for (name, fused_op, composite) in cases {
            let (yf, yc) = (fused_op(x.as_tensor()), composite(x.as_tensor()));
            assert!(
                max_diff(&yf, &yc) < 1e-5,
                "{name}: values differ by {}",
                max_diff(&yf, &yc)
            );
            let gf = (yf * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let gc = (yc * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let mut checked = 0;
            for v in [&x, &w, &b, &wl] {
                match (gf.get(v.as_tensor()), gc.get(v.as_tensor())) {
                    (Some(a), Some(c)) => {
                        let scale = c
                            .abs()
                            .unwrap()
                            .flatten_all()
                            .unwrap()
                            .max(0)
                            .unwrap()
                            .to_scalar::<f32>()
                            .unwrap()
                            .max(1.0);
                        let d = max_diff(a, c);
                        assert!(
                            d < 2e-4 * scale,
                            "{name}: gradient differs by {d} (scale {scale})"
                        );
                        checked += 1;
                    }
                    (None, None) => {}
                    (a, c) => panic!(
                        "{name}: gradient present {} vs {}",
                        a.is_some(),
                        c.is_some()
                    ),
                }
            }
            assert!(checked >= 1, "{name}: no gradient compared");
            let want = match name {
                "layer_norm" | "linear" => 3,
                _ => 1,
            };
            assert_eq!(checked, want, "{name}: every input gets a gradient");
        }
    }
}
