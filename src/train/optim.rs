//! AdamW (torch's `AdamW`: decoupled weight decay, bias-corrected moments) whose state can be
//! saved and restored, so an interrupted training run resumes exactly where it stopped.
//! Candle's own `AdamW` keeps its moments private, which rules out `--resume`.
//!
//! As in Hugging Face's Trainer, biases and LayerNorm parameters get no weight decay.
//!
//! On the CPU (f32) a parameter's update is one pass over θ, g, m and v ([`update`], split over
//! the rayon pool) instead of a dozen tensor ops that each allocate and write a new tensor of
//! the parameter's size; elsewhere it is the same formula in Candle's tensor ops.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use rayon::prelude::*;

use crate::encoder::ops::{Data, fused};

#[derive(Debug, Clone, Copy)]
pub struct AdamWParams {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        AdamWParams {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

struct Slot {
    name: String,
    var: Var,
    decay: bool,
    m: Tensor,
    v: Tensor,
}

pub struct AdamW {
    slots: Vec<Slot>,
    params: AdamWParams,
    /// Steps taken (the bias-correction exponent).
    pub steps: usize,
}

/// The scalars of one AdamW step, as f32.
#[derive(Debug, Clone, Copy)]
struct Coefficients {
    beta1: f32,
    beta2: f32,
    eps: f32,
    /// Bias corrections 1 − β₁ᵗ and 1 − β₂ᵗ.
    c1: f32,
    c2: f32,
    lr: f32,
    /// 1 − lr · weight decay (1 without decay).
    keep: f32,
}

/// One AdamW step over a parameter's values in one pass: new (θ, m, v). The same arithmetic,
/// in the same order, as the tensor-op path of [`AdamW::step`].
fn update(
    theta: &[f32],
    g: &[f32],
    m: &[f32],
    v: &[f32],
    k: Coefficients,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    const CHUNK: usize = 16_384;
    let n = theta.len();
    let (mut t2, mut m2, mut v2) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    t2.par_chunks_mut(CHUNK)
        .zip(m2.par_chunks_mut(CHUNK))
        .zip(v2.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(c, ((t2, m2), v2))| {
            let at = c * CHUNK;
            let (theta, g) = (&theta[at..at + t2.len()], &g[at..at + t2.len()]);
            let (m, v) = (&m[at..at + t2.len()], &v[at..at + t2.len()]);
            for i in 0..t2.len() {
                m2[i] = m[i] * k.beta1 + g[i] * (1.0 - k.beta1);
                v2[i] = v[i] * k.beta2 + g[i] * g[i] * (1.0 - k.beta2);
                let denom = (v2[i] / k.c2).sqrt() + k.eps;
                let step = (m2[i] / k.c1) / denom;
                t2[i] = theta[i] * k.keep - step * k.lr;
            }
        });
    (t2, m2, v2)
}

/// Parameters that get no weight decay: biases and LayerNorm weights (HF Trainer's rule).
pub fn no_decay(name: &str) -> bool {
    name.ends_with(".bias") || name.contains("LayerNorm") || name.contains("layer_norm")
}

impl AdamW {
    /// Optimises the named variables (sorted by name, so the state file is stable).
    pub fn new(mut vars: Vec<(String, Var)>, params: AdamWParams) -> Result<Self> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                Ok(Slot {
                    decay: !no_decay(&name),
                    m: var.zeros_like()?,
                    v: var.zeros_like()?,
                    name,
                    var,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW {
            slots,
            params,
            steps: 0,
        })
    }

    pub fn vars(&self) -> Vec<Var> {
        self.slots.iter().map(|s| s.var.clone()).collect()
    }

    /// One update with learning rate `lr`. A parameter without a gradient is left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.steps += 1;
        let p = self.params;
        let t = self.steps as i32;
        let (c1, c2) = (1.0 - p.beta1.powi(t), 1.0 - p.beta2.powi(t));
        for s in &mut self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else {
                continue;
            };
            let decay = if s.decay { lr * p.weight_decay } else { 0.0 };
            if [s.var.as_tensor(), g, &s.m, &s.v].into_iter().all(fused) {
                let k = Coefficients {
                    beta1: p.beta1 as f32,
                    beta2: p.beta2 as f32,
                    eps: p.eps as f32,
                    c1: c1 as f32,
                    c2: c2 as f32,
                    lr: lr as f32,
                    keep: (1.0 - decay) as f32,
                };
                let g = g.contiguous()?;
                let (theta, m, v) = {
                    let (t, g, m, v) = (
                        Data::of(s.var.as_tensor()),
                        Data::of(&g),
                        Data::of(&s.m),
                        Data::of(&s.v),
                    );
                    let name = "AdamW";
                    update(t.get(name)?, g.get(name)?, m.get(name)?, v.get(name)?, k)
                };
                let shape = s.var.shape().clone();
                let dev = s.var.device().clone();
                s.m = Tensor::from_vec(m, &shape, &dev)?;
                s.v = Tensor::from_vec(v, &shape, &dev)?;
                s.var.set(&Tensor::from_vec(theta, &shape, &dev)?)?;
                continue;
            }
            s.m = ((&s.m * p.beta1)? + (g * (1.0 - p.beta1))?)?;
            s.v = ((&s.v * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let denom = ((&s.v / c2)?.sqrt()? + p.eps)?;
            let update = ((&s.m / c1)? / denom)?;
            let mut theta = s.var.as_tensor().clone();
            if decay > 0.0 {
                theta = (theta * (1.0 - decay))?;
            }
            s.var.set(&(theta - (update * lr)?)?)?;
        }
        Ok(())
    }

    /// Writes the moments (`m.{name}`, `v.{name}`) and the step count to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut t: HashMap<String, Tensor> = HashMap::new();
        for s in &self.slots {
            t.insert(format!("m.{}", s.name), s.m.clone());
            t.insert(format!("v.{}", s.name), s.v.clone());
        }
        t.insert(
            "steps".into(),
            Tensor::new(&[self.steps as u32], &candle_core::Device::Cpu)?,
        );
        crate::io::write_atomic(path, |tmp| Ok(candle_core::safetensors::save(&t, tmp)?))
    }

    /// Restores what [`AdamW::save`] wrote; every parameter's moments must be present.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let device = self
            .slots
            .first()
            .map(|s| s.var.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let t = candle_core::safetensors::load(path, &device)
            .with_context(|| format!("{}: not a readable optimizer state", path.display()))?;
        for s in &mut self.slots {
            for (key, dst) in [("m", &mut s.m), ("v", &mut s.v)] {
                let name = format!("{key}.{}", s.name);
                let x = t
                    .get(&name)
                    .with_context(|| format!("{}: {name} missing", path.display()))?;
                anyhow::ensure!(
                    x.dims() == s.var.dims(),
                    "{}: {name} has shape {:?}, the parameter {:?}",
                    path.display(),
                    x.dims(),
                    s.var.dims()
                );
                *dst = x.clone();
            }
        }
        let steps = t
            .get("steps")
            .with_context(|| format!("{}: steps missing", path.display()))?;
        let steps = steps
            .to_vec1::<u32>()
            .with_context(|| format!("{}: steps is not a u32 vector", path.display()))?;
        let [n] = steps[..] else {
            bail!(
                "{}: steps holds {} values, expected 1 (a damaged checkpoint: delete it to \
                 resume from the one before, or start again without --resume)",
                path.display(),
                steps.len()
            );
        };
        self.steps = n as usize;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Two steps on a scalar, checked against the update written out by hand.
    #[test]
    fn matches_hand_computed_adamw() {
        let w = Var::new(&[1.0f64], &Device::Cpu).unwrap();
        let b = Var::new(&[1.0f64], &Device::Cpu).unwrap();
        let params = AdamWParams {
            weight_decay: 0.1,
            ..Default::default()
        };
        let mut opt = AdamW::new(
            vec![("w.weight".into(), w.clone()), ("w.bias".into(), b.clone())],
            params,
        )
        .unwrap();
        let (lr, (b1, b2, eps)) = (0.01, (0.9f64, 0.999f64, 1e-8));
        // loss = 3 w + 3 b: gradient 3 for both, every step
        let (mut wr, mut br, mut m, mut v) = (1.0f64, 1.0f64, 0.0f64, 0.0f64);
        for t in 1..=2 {
            let loss = ((w.as_tensor() * 3.0).unwrap() + (b.as_tensor() * 3.0).unwrap())
                .unwrap()
                .sum_all()
                .unwrap();
            opt.step(&loss.backward().unwrap(), lr).unwrap();
            m = b1 * m + (1.0 - b1) * 3.0;
            v = b2 * v + (1.0 - b2) * 9.0;
            let upd = (m / (1.0 - b1.powi(t))) / ((v / (1.0 - b2.powi(t))).sqrt() + eps);
            wr = wr * (1.0 - lr * 0.1) - lr * upd;
            br -= lr * upd; // bias: no weight decay
            let got_w = w.as_tensor().to_vec1::<f64>().unwrap()[0];
            let got_b = b.as_tensor().to_vec1::<f64>().unwrap()[0];
            assert!((got_w - wr).abs() < 1e-12, "step {t}: w {got_w} vs {wr}");
            assert!((got_b - br).abs() < 1e-12, "step {t}: b {got_b} vs {br}");
        }
    }

    /// The fused f32 pass against the tensor-op path (run in f64) over a few steps.
    #[test]
    fn fused_update_matches_the_tensor_ops() {
        let dev = Device::Cpu;
        let init = Tensor::randn(0f32, 1.0, (3, 40_000), &dev).unwrap();
        let w32 = Var::from_tensor(&init).unwrap();
        let w64 = Var::from_tensor(&init.to_dtype(candle_core::DType::F64).unwrap()).unwrap();
        let params = AdamWParams {
            weight_decay: 0.1,
            ..Default::default()
        };
        let mut a = AdamW::new(vec![("l.weight".into(), w32.clone())], params).unwrap();
        let mut b = AdamW::new(vec![("l.weight".into(), w64.clone())], params).unwrap();
        for _ in 0..3 {
            let l32 = w32.as_tensor().sin().unwrap().sum_all().unwrap();
            let l64 = w64.as_tensor().sin().unwrap().sum_all().unwrap();
            a.step(&l32.backward().unwrap(), 0.05).unwrap();
            b.step(&l64.backward().unwrap(), 0.05).unwrap();
        }
        let (x, y) = (
            w32.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            w64.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap(),
        );
        let worst = x
            .iter()
            .zip(&y)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst < 1e-5,
            "fused and tensor-op updates differ by {worst}"
        );
        let moved = x
            .iter()
            .zip(init.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .filter(|(a, b)| *a != b)
            .count();
        assert!(moved > x.len() * 9 / 10, "only {moved} values moved");
    }

    /// Saving after one step and restoring into a fresh optimizer gives the same second step
    /// as never stopping.
    #[test]
    fn save_and_load_resume_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let grad_step = |opt: &mut AdamW, w: &Var| {
            let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap(), 0.1).unwrap();
        };
        let w1 = Var::new(&[0.5f32, -2.0], &Device::Cpu).unwrap();
        let mut a = AdamW::new(vec![("x".into(), w1.clone())], AdamWParams::default()).unwrap();
        grad_step(&mut a, &w1);
        a.save(&dir.path().join("opt.safetensors")).unwrap();
        let after_one = w1.as_tensor().to_vec1::<f32>().unwrap();
        grad_step(&mut a, &w1);

        // a fresh optimizer on the weights after step 1, with the saved state restored
        let w2 = Var::new(after_one.as_slice(), &Device::Cpu).unwrap();
        let mut b = AdamW::new(vec![("x".into(), w2.clone())], AdamWParams::default()).unwrap();
        b.load(&dir.path().join("opt.safetensors")).unwrap();
        assert_eq!(b.steps, 1);
        grad_step(&mut b, &w2);
        assert_eq!(
            w1.as_tensor().to_vec1::<f32>().unwrap(),
            w2.as_tensor().to_vec1::<f32>().unwrap()
        );
        // without the state the step differs (the test can fail)
        let w4 = Var::new(after_one.as_slice(), &Device::Cpu).unwrap();
        let mut d = AdamW::new(vec![("x".into(), w4.clone())], AdamWParams::default()).unwrap();
        grad_step(&mut d, &w4);
        assert_ne!(
            w1.as_tensor().to_vec1::<f32>().unwrap(),
            w4.as_tensor().to_vec1::<f32>().unwrap()
        );
        // a parameter whose moments are missing is an error that names it
        let w3 = Var::new(&[1f32], &Device::Cpu).unwrap();
        let mut c = AdamW::new(vec![("y".into(), w3)], AdamWParams::default()).unwrap();
        let err = c
            .load(&dir.path().join("opt.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("m.y missing"), "{err}");
        // an empty steps tensor (a damaged checkpoint) is an error naming the file, not a panic
        let p = dir.path().join("opt.safetensors");
        let mut t = candle_core::safetensors::load(&p, &Device::Cpu).unwrap();
        t.insert(
            "steps".into(),
            Tensor::new(&[] as &[u32], &Device::Cpu).unwrap(),
        );
        candle_core::safetensors::save(&t, &p).unwrap();
        let w5 = Var::new(after_one.as_slice(), &Device::Cpu).unwrap();
        let mut e = AdamW::new(vec![("x".into(), w5)], AdamWParams::default()).unwrap();
        let err = e.load(&p).unwrap_err().to_string();
        assert!(
            err.contains("opt.safetensors: steps holds 0 values"),
            "{err}"
        );
    }
}
