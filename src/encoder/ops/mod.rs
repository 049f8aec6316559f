//! Fused CPU kernels for the encoder, each one graph node with its own backward pass, so
//! training and inference run the same few passes over memory (Candle's fused `layer_norm` and
//! `softmax_last_dim` record no gradient, and a graph of small ops pays for every edge in the
//! backward pass: Candle's gradient store starts each sum from zeros and adds to it).
//!
//! - [`linear`] ([`dense`]): y = act(x Wᵀ + b) for a dense layer, act the identity or the exact GELU;
//!   dz = g ⊙ act′(z), dx = dz W, dW = dzᵀ x, db = Σ_rows dz. The product is written by the
//!   `gemm` crate straight into the output (Candle's matmul would copy the inputs and zero the
//!   output first), the bias and activation in one pass after it.
//! - [`attention`] ([`mod@attention`]): multi-head self-attention over a fused q|k|v projection:
//!   P = softmax(s·Q Kᵀ + mask bias) per head, out = P V, heads read from and written to their
//!   columns in place (no split or merge copies); dV = Pᵀ G, dP = G Vᵀ,
//!   dS = P ⊙ (dP − Σ_row dP ⊙ P), dQ = s·dS K, dK = s·dSᵀ Q.
//! - [`add_layer_norm`] ([`layer_norm`]): y = LN(x + r) with weight γ and bias β: ŝ = (s − μ)·ρ,
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
//!
//! This file holds what the ops share: reading CPU data, splitting rows over the pool, the
//! strided product, `no_grad`, and the vectorisable `exp` / `erf`.

mod attention;
mod dense;
mod layer_norm;

pub use attention::attention;
pub use dense::{Act, linear};
pub use layer_norm::add_layer_norm;

use candle_core::{CpuStorage, DType, Device, Layout, Result, Shape, Storage, StorageRef, Tensor};
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
