//! Dynamic loss scaling for f16 training (PyTorch `GradScaler`'s rule): the loss is multiplied
//! by the scale before the backward pass so that small f16 gradients do not flush to zero; the
//! f32 gradients of the master weights are divided by it again before clipping and the update.
//! A step whose gradients hold an inf or NaN (or whose loss is not finite) is skipped — no
//! update — and the scale halved; after [`GROWTH_INTERVAL`] good steps in a row it doubles.
//! bf16 has f32's range and needs none of this.

use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::{DType, Var};
use serde::{Deserialize, Serialize};

/// The first scale (2¹⁶, as PyTorch).
pub const INIT_SCALE: f64 = 65_536.0;
/// Good steps in a row after which the scale doubles.
pub const GROWTH_INTERVAL: usize = 2_000;

/// The scaler's state, saved with each checkpoint so a resumed run continues with the same scale.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScale {
    pub scale: f64,
    /// Good steps since the last change of scale.
    pub good_steps: usize,
    /// Steps skipped for inf/NaN gradients over the run.
    pub skipped: usize,
}

impl Default for LossScale {
    fn default() -> Self {
        LossScale {
            scale: INIT_SCALE,
            good_steps: 0,
            skipped: 0,
        }
    }
}

impl LossScale {
    /// Records a step that must be skipped (non-finite loss or gradients): the scale halves.
    pub fn skip(&mut self) {
        self.scale = (self.scale * 0.5).max(1.0);
        self.good_steps = 0;
        self.skipped += 1;
    }

    /// Divides the gradients of `vars` (those of the scaled loss) by the scale. Returns false,
    /// having recorded a skip, when any of them holds an inf or NaN; the caller then leaves the
    /// weights alone for this step.
    pub fn unscale(&mut self, grads: &mut GradStore, vars: &[Var]) -> Result<bool> {
        let inv = 1.0 / self.scale;
        let mut finite = true;
        for v in vars {
            let Some(g) = grads.remove(v.as_tensor()) else {
                continue;
            };
            let g = (g * inv)?;
            // the sum of squares of the unscaled gradient: inf or NaN iff an element is
            let sq = g
                .sqr()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            finite &= sq.is_finite();
            grads.insert(v.as_tensor(), g);
        }
        if finite {
            self.good_steps += 1;
            if self.good_steps >= GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            self.skip();
        }
        Ok(finite)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn grads_of(w: &Var, factor: f64) -> GradStore {
        // loss = factor · Σ w²  →  dloss/dw = 2 · factor · w
        (w.as_tensor().sqr().unwrap().sum_all().unwrap() * factor)
            .unwrap()
            .backward()
            .unwrap()
    }

    #[test]
    fn unscales_skips_an_inf_step_and_recovers() {
        let w = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let mut s = LossScale::default();
        // a good step: gradients of (loss × scale) come back as those of the loss
        let mut g = grads_of(&w, s.scale);
        assert!(s.unscale(&mut g, std::slice::from_ref(&w)).unwrap());
        let got: Vec<f32> = g.get(w.as_tensor()).unwrap().to_vec1().unwrap();
        assert_eq!(got, vec![2.0, -4.0]);
        assert_eq!((s.scale, s.good_steps, s.skipped), (INIT_SCALE, 1, 0));
        // an injected inf: skipped, the scale halves
        let mut g = grads_of(&w, f64::INFINITY);
        assert!(!s.unscale(&mut g, std::slice::from_ref(&w)).unwrap());
        assert_eq!((s.scale, s.good_steps, s.skipped), (INIT_SCALE / 2.0, 0, 1));
        // a NaN too
        let nan = Var::from_tensor(&Tensor::new(&[f32::NAN], &Device::Cpu).unwrap()).unwrap();
        let mut g = grads_of(&nan, 1.0);
        assert!(!s.unscale(&mut g, &[nan]).unwrap());
        assert_eq!((s.scale, s.skipped), (INIT_SCALE / 4.0, 2));
        // and it recovers: the next finite step goes through with the new scale
        let mut g = grads_of(&w, s.scale);
        assert!(s.unscale(&mut g, std::slice::from_ref(&w)).unwrap());
        let got: Vec<f32> = g.get(w.as_tensor()).unwrap().to_vec1().unwrap();
        assert_eq!(got, vec![2.0, -4.0]);
    }

    #[test]
    fn the_scale_doubles_after_the_growth_interval() {
        let w = Var::new(&[0.5f32], &Device::Cpu).unwrap();
        let mut s = LossScale {
            good_steps: GROWTH_INTERVAL - 1,
            ..Default::default()
        };
        let mut g = grads_of(&w, s.scale);
        assert!(s.unscale(&mut g, &[w]).unwrap());
        assert_eq!((s.scale, s.good_steps), (2.0 * INIT_SCALE, 0));
    }
}
