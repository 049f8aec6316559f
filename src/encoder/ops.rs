//! Fused CPU kernels for the encoder, each one graph node with its own backward pass, so
//! training and inference run the same few passes over memory (Candle's fused `layer_norm` and
//! `softmax_last_dim` record no gradient, and a graph of small ops pays for every edge in the
//! backward pass: Candle's gradient store starts each sum from zeros and adds to it).
//!
//! - [`linear`]: y = act(x Wᵀ + b) for a dense layer, act the identity or the exact GELU;
//!   dz = g ⊙ act′(z), dx = dz W, dW = dzᵀ x, db = Σ_rows dz. The product is written by the
//!   `gemm` crate straight into the output (Candle's matmul would copy the inputs and zero the
//!   output first), the bias and activation in one pass after it.
//! - [`attention`]: multi-head self-attention over a fused q|k|v projection:
//!   P = softmax(s·Q Kᵀ + mask bias) per head, out = P V, heads read from and written to their
//!   columns in place (no split or merge copies); dV = Pᵀ G, dP = G Vᵀ,
//!   dS = P ⊙ (dP − Σ_row dP ⊙ P), dQ = s·dS K, dK = s·dSᵀ Q.
//! - [`add_layer_norm`]: y = LN(x + r) with weight γ and bias β: ŝ = (s − μ)·ρ,
//!   ρ = 1/√(σ² + ε); ds = ρ · (ĝ − mean(ĝ) − ŝ ⊙ mean(ĝ ⊙ ŝ)) with ĝ = γ ⊙ g;
//!   dγ = Σ_rows g ⊙ ŝ; dβ = Σ_rows g; dx = dr = ds.
//! - the exact GELU: y = x·Φ(x), Φ(x) = (1 + erf(x/√2))/2; y′ = Φ(x) + x·φ(x).
//!
//! Each public function takes the fused path for f32 tensors on the CPU and the composite
//! (differentiable) Candle ops elsewhere, so other devices and dtypes keep working. What a
//! backward pass needs beyond the op's inputs (attention probabilities, GELU's pre-activation)
//! is kept by the op only when the inputs track gradients, and handed over by the backward pass.
//! Rows are split over the rayon pool; the row kernels are compiled for the CPU's vector
//! instructions ([`super::simd`]). The unit tests compare values and gradients with the
//! composite ops.

use std::sync::Mutex;

use candle_core::{
    CpuStorage, CustomOp2, CustomOp3, D, DType, Device, Layout, Result, Shape, Storage, StorageRef,
    Tensor,
};
use rayon::prelude::*;

use super::simd::{self, vectorized};

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

/// A tensor's data held for reading outside a `CustomOp`'s forward pass (a backward pass, the
/// optimizer): [`Data::get`] errors unless it is a contiguous f32 CPU tensor.
pub(crate) struct Data<'a>(StorageRef<'a>, &'a Layout);

impl<'a> Data<'a> {
    pub(crate) fn of(t: &'a Tensor) -> Self {
        let (s, l) = t.storage_and_layout();
        Data(s, l)
    }
    /// The values; `op` names the caller in the error.
    pub(crate) fn get(&self, op: &str) -> Result<&[f32]> {
        match &*self.0 {
            Storage::Cpu(s) => slice(s, self.1, op),
            _ => candle_core::bail!("{op}: CPU tensors only"),
        }
    }
}

/// Whether `x` takes the fused CPU path (f32 on the CPU).
pub(crate) fn fused(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

thread_local! {
    static NO_GRAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the fused ops keeping nothing for a backward pass, also when their inputs
/// track gradients (encoding with a model under training). A backward pass through such a node
/// still works: it recomputes what was not kept.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            NO_GRAD.set(self.0);
        }
    }
    let _restore = Restore(NO_GRAD.replace(true));
    f()
}

/// Whether an op over `inputs` keeps what its backward pass needs.
fn keeps(inputs: &[&Tensor]) -> bool {
    !NO_GRAD.get() && inputs.iter().any(|t| t.track_op())
}

fn cpu(v: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_vec(v, shape, &Device::Cpu)
}

/// Rows of `n` values per rayon task: about 16 K values, enough to amortise the scheduling.
fn rows_per_task(n: usize) -> usize {
    (16_384 / n.max(1)).max(1)
}

/// A new buffer the size of `a`, written in blocks of whole rows (rows of `n`) by
/// `f(out block, a block, b block)`; `b` is read in the same blocks (rows of `nb`), or is
/// empty and passed as empty. Blocks are split over the rayon pool.
fn map_rows(
    a: &[f32],
    n: usize,
    b: &[f32],
    nb: usize,
    f: impl Fn(&mut [f32], &[f32], &[f32]) + Sync + Send,
) -> Vec<f32> {
    let rows = rows_per_task(n);
    let mut out = vec![0f32; a.len()];
    let blocks = out.par_chunks_mut(rows * n).zip(a.par_chunks(rows * n));
    if b.is_empty() {
        blocks.for_each(|(o, a)| f(o, a, &[]));
    } else {
        blocks
            .zip(b.par_chunks(rows * nb.max(1)))
            .for_each(|((o, a), b)| f(o, a, b));
    }
    out
}

/// `f(block, acc)` over blocks of whole rows (of `n`) of `a`, each block's sums into its own
/// accumulator of `width` values; the partial sums are added in block order (the same result
/// every run, whatever the thread count).
fn sum_blocks(
    a: &mut [f32],
    n: usize,
    width: usize,
    f: impl Fn(usize, &mut [f32], &mut [f32]) + Sync + Send,
) -> Vec<f32> {
    let rows = rows_per_task(n);
    let partial: Vec<Vec<f32>> = a
        .par_chunks_mut(rows * n)
        .enumerate()
        .map(|(i, a)| {
            let mut acc = vec![0f32; width];
            f(i * rows, a, &mut acc);
            acc
        })
        .collect();
    let mut out = vec![0f32; width];
    for p in partial {
        out.iter_mut().zip(p).for_each(|(o, p)| *o += p);
    }
    out
}

/// `dst` (m × n, row-major) = scale · `lhs` (m × k) · `rhs` (k × n), each operand given with
/// its row and column strides, by the `gemm` crate; on the whole rayon pool when `parallel`.
#[allow(clippy::too_many_arguments)]
fn matmul(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
    scale: f32,
    parallel: bool,
) {
    // every element read or written lies inside its slice
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| {
        (rows.max(1) - 1) * rs + (cols.max(1) - 1) * cs
    };
    assert!(dst.len() >= m * n, "gemm: destination too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        dst[..m * n].fill(0.0);
        return;
    }
    assert!(
        last(m, k, lhs_rs, lhs_cs) < lhs.len(),
        "gemm: lhs out of bounds"
    );
    assert!(
        last(k, n, rhs_rs, rhs_cs) < rhs.len(),
        "gemm: rhs out of bounds"
    );
    // rayon's count, not Candle's `get_num_threads` (which reads /proc/cpuinfo on every call
    // unless RAYON_NUM_THREADS is set)
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the bounds are checked above; dst is exclusively borrowed and does not overlap
    // the inputs (they are shared borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            0.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Element-wise and row kernels (vectorised; see `simd`).

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

const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// Φ(x), the standard normal CDF.
#[inline(always)]
fn phi_cdf(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

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

// ---------------------------------------------------------------------------------------------
// Dense layer.

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
        let (n, k2) = l2.shape().dims2()?;
        if k != k2 || b.len() != n {
            candle_core::bail!("{}: shapes {:?} {:?} {:?}", self.name(), l1, l2, l3);
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

// ---------------------------------------------------------------------------------------------
// Attention.

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
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(bias)?;
        let probs = if qkv.track_op() {
            candle_nn::ops::softmax(&scores, D::Minus1)?
        } else {
            candle_nn::ops::softmax_last_dim(&scores)?
        };
        probs
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
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (qkv, bias) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?);
        let (b, t, h3) = l1.shape().dims3()?;
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

// ---------------------------------------------------------------------------------------------
// Layer norm.

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
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, r) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?);
        let wb = slice(s3, l3, self.name())?;
        let n = wb.len() / 2;
        let (w, b) = wb.split_at(n);
        if l1.dims().last() != Some(&n) || r.len() != x.len() {
            candle_core::bail!("{}: weight and bias must match the last dim", self.name());
        }
        let r = if self.residual { r } else { &[] };
        let y = map_rows(x, n, r, if self.residual { n } else { 0 }, |y, x, r| {
            layer_norm_rows(y, x, r, w, b, self.eps)
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

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

    fn randn(shape: &[usize], mean: f32, std: f32) -> Var {
        Var::from_tensor(&Tensor::randn(mean, std, shape, &Device::Cpu).unwrap()).unwrap()
    }

    /// Each fused op against Candle's composite ops (the path other devices take) on random
    /// input: values, and the gradient of a random linear function of the output with respect
    /// to every input.
    #[test]
    fn fused_ops_match_the_composite_ops_and_their_gradients() {
        let dev = Device::Cpu;
        // 3 sequences of 50 tokens (more rows than one task, a ragged last task), width 48,
        // 4 heads of 4 for attention (q|k|v: 3 × 16 columns)
        let (b, t, n) = (3, 50, 48);
        let x = randn(&[b, t, n], 0.0, 2.0);
        let r = randn(&[b, t, n], 0.0, 1.0);
        let w = randn(&[n], 1.0, 0.5);
        let bn = randn(&[n], 0.0, 0.5);
        let wl = randn(&[n, n], 0.0, 0.2);
        let probe = Tensor::randn(0f32, 1.0, (b, t, n), &dev).unwrap();
        let probe_att = Tensor::randn(0f32, 1.0, (b, t, n / 3), &dev).unwrap();
        // a padding mask per sequence: 0 for real tokens, −10000 for the last few
        let mask = Tensor::from_vec(
            (0..b * t)
                .map(|i| {
                    if i % t >= t - 1 - (i / t) * 3 {
                        -10_000f32
                    } else {
                        0.0
                    }
                })
                .collect::<Vec<_>>(),
            (b, 1, 1, t),
            &dev,
        )
        .unwrap();
        let on_gpu_path = |t: &Tensor| -> Tensor {
            // the composite path: the same op on a non-contiguous f64 copy is not "fused"
            t.to_dtype(DType::F64).unwrap()
        };
        type Op<'a> = Box<dyn Fn(&Tensor) -> Tensor + 'a>;
        let cases: Vec<(&str, Op, usize, &Tensor)> = vec![
            (
                "attention",
                Box::new(|x| {
                    let m = if x.dtype() == DType::F64 {
                        on_gpu_path(&mask)
                    } else {
                        mask.clone()
                    };
                    attention(x, &m, 4).unwrap()
                }),
                1,
                &probe_att,
            ),
            (
                "linear",
                Box::new(|x| {
                    let (w, b) = cast(x, &[&wl, &bn]);
                    linear(x, &w, &b, Act::Identity).unwrap()
                }),
                3,
                &probe,
            ),
            (
                "linear+gelu",
                Box::new(|x| {
                    let (w, b) = cast(x, &[&wl, &bn]);
                    linear(x, &w, &b, Act::Gelu).unwrap()
                }),
                3,
                &probe,
            ),
            (
                "add_layer_norm",
                Box::new(|x| {
                    let (w, b) = cast(x, &[&w, &bn]);
                    let r = cast(x, &[&r, &r]).0;
                    add_layer_norm(x, Some(&r), &w, &b, 1e-12).unwrap()
                }),
                4,
                &probe,
            ),
            (
                "layer_norm",
                Box::new(|x| {
                    let (w, b) = cast(x, &[&w, &bn]);
                    add_layer_norm(x, None, &w, &b, 1e-12).unwrap()
                }),
                3,
                &probe,
            ),
        ];
        for (name, op, want, probe) in cases {
            let xf = x.as_tensor().clone();
            let xc = on_gpu_path(x.as_tensor());
            let (yf, yc) = (op(&xf), op(&xc).to_dtype(DType::F32).unwrap());
            let d = max_diff(&yf, &yc);
            assert!(d < 1e-4, "{name}: values differ by {d}");
            let gf = (yf * probe).unwrap().sum_all().unwrap().backward().unwrap();
            let gc = (op(&xc) * probe.to_dtype(DType::F64).unwrap())
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let mut checked = 0;
            for v in [&x, &r, &w, &bn, &wl] {
                match (gf.get(v.as_tensor()), gc.get(v.as_tensor())) {
                    (Some(a), Some(c)) => {
                        let c = c.to_dtype(DType::F32).unwrap();
                        let scale = c.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
                        let scale = scale.to_scalar::<f32>().unwrap().max(1.0);
                        let d = max_diff(a, &c);
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
            assert_eq!(checked, want, "{name}: every input gets a gradient");
        }
    }

    /// The composite path runs in f64 (so it is not fused); parameters follow the input's dtype
    /// through a differentiable cast.
    fn cast(x: &Tensor, vs: &[&Var; 2]) -> (Tensor, Tensor) {
        let c = |v: &Var| v.as_tensor().to_dtype(x.dtype()).unwrap();
        (c(vs[0]), c(vs[1]))
    }

    #[test]
    fn attention_backward_without_kept_probabilities_recomputes_them() {
        let qkv = randn(&[2, 7, 24], 0.0, 1.0);
        let bias = Tensor::zeros((2, 1, 1, 7), DType::F32, &Device::Cpu).unwrap();
        let y = attention(qkv.as_tensor(), &bias, 2).unwrap();
        let g1 = y.sum_all().unwrap().backward().unwrap();
        // the second pass over the same graph finds nothing kept
        let g2 = y.sum_all().unwrap().backward().unwrap();
        let (a, b) = (
            g1.get(qkv.as_tensor()).unwrap(),
            g2.get(qkv.as_tensor()).unwrap(),
        );
        assert_eq!(max_diff(a, b), 0.0);
    }

    #[test]
    fn inference_keeps_nothing_and_gives_the_training_values() {
        let x = Tensor::randn(0f32, 1.0, (2, 5, 24), &Device::Cpu).unwrap();
        let v = Var::from_tensor(&x).unwrap();
        let bias = Tensor::zeros((2, 1, 1, 5), DType::F32, &Device::Cpu).unwrap();
        let (a, b) = (
            attention(&x, &bias, 2).unwrap(),
            attention(v.as_tensor(), &bias, 2).unwrap(),
        );
        assert_eq!(max_diff(&a, &b), 0.0);
        let w = Tensor::randn(0f32, 0.3, (16, 24), &Device::Cpu).unwrap();
        let bb = Tensor::randn(0f32, 0.3, 16, &Device::Cpu).unwrap();
        let (a, b) = (
            linear(&x, &w, &bb, Act::Gelu).unwrap(),
            linear(v.as_tensor(), &w, &bb, Act::Gelu).unwrap(),
        );
        assert_eq!(max_diff(&a, &b), 0.0);
        assert!(!a.track_op() && b.track_op());
    }
}
