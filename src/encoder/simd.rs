//! Vector code for the encoder's CPU kernels without a build-time `target-cpu`: [`vectorized!`]
//! compiles a kernel three times — for AVX-512, for AVX2 + FMA and for the baseline — and picks
//! the best one this CPU has at run time (as the `gemm` crate does for its kernels), so one
//! binary runs everywhere and uses the wide registers where they exist.
//!
//! The kernels are written as plain loops; the reductions here ([`sum`], [`dot`], [`max`]) keep
//! [`LANES`] partial results so the loops vectorise without reordering floating-point sums
//! behind the compiler's back. The order of every sum is fixed by the code, not by the
//! instruction set, and Rust never fuses a multiply and an add on its own, so all three
//! versions give bit-identical results.

/// Partial sums kept by the reductions: one AVX-512 register of f32.
pub const LANES: usize = 16;

/// Which instruction set [`vectorized!`] kernels run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// AVX-512 (F, BW, DQ, VL) with AVX2 and FMA.
    Avx512,
    /// AVX2 with FMA.
    Avx2,
    /// The build's baseline (SSE2 on x86-64).
    Baseline,
}

/// The best level this CPU supports (detected once; `RECSYS_SIMD=avx2|baseline` caps it, for
/// tests and benchmarks).
pub fn level() -> Level {
    use std::sync::OnceLock;
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = std::env::var("RECSYS_SIMD").unwrap_or_default();
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma");
            let avx512 = avx2
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl");
            match cap.as_str() {
                "baseline" => Level::Baseline,
                "avx2" if avx2 => Level::Avx2,
                _ if avx512 => Level::Avx512,
                _ if avx2 => Level::Avx2,
                _ => Level::Baseline,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = cap;
            Level::Baseline
        }
    })
}

/// Defines `fn name(args) -> ret { body }` whose body is compiled for each [`Level`] and run
/// with the best one available. Everything the body calls must be `#[inline(always)]` to be
/// compiled with the wider instructions too. Arguments are plain values and references (no
/// generics).
macro_rules! vectorized {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn imp($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                fn avx512($($arg: $ty),*) $(-> $ret)? { imp($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? { imp($($arg),*) }
                match $crate::encoder::simd::level() {
                    // SAFETY: level() checked that this CPU has these features.
                    $crate::encoder::simd::Level::Avx512 => return unsafe { avx512($($arg),*) },
                    $crate::encoder::simd::Level::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::encoder::simd::Level::Baseline => {}
                }
            }
            imp($($arg),*)
        }
    };
}
pub(crate) use vectorized;

/// Σ x, in [`LANES`] partial sums.
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// Σ a ⊙ b, in [`LANES`] partial sums.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (ca, cb) in ca.zip(cb) {
        for ((s, a), b) in acc.iter_mut().zip(ca).zip(cb) {
            *s += a * b;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Σ a ⊙ b ⊙ c, in [`LANES`] partial sums.
#[inline(always)]
pub fn dot3(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb, cc) = (
        a.chunks_exact(LANES),
        b.chunks_exact(LANES),
        c.chunks_exact(LANES),
    );
    let tail: f32 = (ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .zip(cc.remainder()))
    .map(|((a, b), c)| a * b * c)
    .sum();
    for ((ca, cb), cc) in ca.zip(cb).zip(cc) {
        for (((s, a), b), c) in acc.iter_mut().zip(ca).zip(cb).zip(cc) {
            *s += a * b * c;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// max x (−∞ for an empty slice; NaN is ignored as `f32::max` does).
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a = a.max(*v);
        }
    }
    acc.iter()
        .chain(tail)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    vectorized! {
        fn scaled_sum(x: &[f32], s: f32) -> f32 {
            let mut acc = 0.0;
            for c in x.chunks(37) {
                acc += sum(c) * s + dot(c, c) - max(c);
            }
            acc
        }
    }

    #[test]
    fn reductions_match_plain_loops_at_every_length() {
        for n in [0usize, 1, 15, 16, 17, 33, 100, 1000] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let plain: f64 = x.iter().map(|&v| v as f64).sum();
            assert!((sum(&x) as f64 - plain).abs() < 1e-3, "sum at {n}");
            let d: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
            assert!(
                (dot(&x, &x) as f64 - d).abs() < 1e-2 * d.max(1.0),
                "dot at {n}"
            );
            let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&x), m, "max at {n}");
        }
    }

    #[test]
    fn every_level_gives_the_same_bits() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let dispatched = scaled_sum(&x, 0.5);
        // the baseline build of the same body
        let mut acc = 0.0;
        for c in x.chunks(37) {
            acc += sum(c) * 0.5 + dot(c, c) - max(c);
        }
        assert_eq!(dispatched.to_bits(), acc.to_bits(), "level {:?}", level());
    }
}
