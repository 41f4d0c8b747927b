//! Dynamic loss scaling for f16 training, as `torch.amp.GradScaler` does it with its defaults.
//!
//! f16 has five exponent bits: small gradients underflow to zero. The loss is multiplied by a large
//! scale before `backward`, the gradients are divided by it again (in place) before clipping and the
//! update, and a step whose gradients hold an inf or NaN is skipped and the scale halved. After
//! `growth_interval` good steps in a row the scale doubles. [`GradScaler::update`] is
//! `torch._amp_update_scale_` (the scale is an f32, the tracker counts good steps).
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::error::Result;

/// `torch.amp.GradScaler`'s defaults.
pub const INIT_SCALE: f32 = 65536.0;
pub const GROWTH_FACTOR: f64 = 2.0;
pub const BACKOFF_FACTOR: f64 = 0.5;
pub const GROWTH_INTERVAL: u32 = 2000;

/// The scaler's state; saved in `checkpoint/state.json` so a resumed run scales as an uninterrupted
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GradScaler {
    /// The factor the next loss is multiplied by.
    pub scale: f32,
    /// Good steps in a row since the scale last changed.
    pub growth_tracker: u32,
    /// Steps skipped for non-finite gradients so far (reporting only).
    pub skipped_steps: u64,
}

impl Default for GradScaler {
    fn default() -> Self {
        Self {
            scale: INIT_SCALE,
            growth_tracker: 0,
            skipped_steps: 0,
        }
    }
}

impl GradScaler {
    /// `loss * scale` (the scale as an f32 tensor, as torch multiplies by its scale tensor).
    pub fn scale_loss(&self, loss: &Tensor) -> Result<Tensor> {
        let s = Tensor::from(self.scale).f_to_device(loss.device())?;
        Ok(loss.f_mul(&s)?)
    }

    /// Divide every defined gradient by the scale, in place (`GradScaler.unscale_`: a multiplication
    /// by the f32 of `1 / scale` computed in f64), and say whether any of them holds an inf or NaN.
    pub fn unscale(&self, grads: &mut [Tensor]) -> Result<bool> {
        let inv = (1.0 / self.scale as f64) as f32;
        tch::no_grad(|| -> Result<bool> {
            let mut found_inf = false;
            for g in grads.iter_mut().filter(|g| g.defined()) {
                let _ = g.f_mul_scalar_(inv as f64)?;
                if !found_inf {
                    found_inf = g.f_isfinite()?.f_all()?.f_int64_value(&[])? == 0;
                }
            }
            Ok(found_inf)
        })
    }

    /// After a step: back off (and count the skip) if its gradients were not finite, else count a
    /// good step and grow the scale after `GROWTH_INTERVAL` of them (only to a finite value).
    pub fn update(&mut self, found_inf: bool) {
        if found_inf {
            self.scale = (self.scale as f64 * BACKOFF_FACTOR) as f32;
            self.growth_tracker = 0;
            self.skipped_steps += 1;
        } else {
            let successful = self.growth_tracker + 1;
            if successful == GROWTH_INTERVAL {
                let grown = (self.scale as f64 * GROWTH_FACTOR) as f32;
                if grown.is_finite() {
                    self.scale = grown;
                }
                self.growth_tracker = 0;
            } else {
                self.growth_tracker = successful;
            }
        }
    }

    /// A state read back from a checkpoint: the scale must be a positive finite number and the
    /// tracker below the interval.
    pub fn is_valid(&self) -> bool {
        self.scale.is_finite() && self.scale > 0.0 && self.growth_tracker < GROWTH_INTERVAL
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// `torch._amp_update_scale_` on tensors, the kernel GradScaler.update calls.
    fn torch_update(s: &GradScaler, found_inf: bool) -> (f32, u32) {
        let mut scale = Tensor::from(s.scale);
        let tracker = Tensor::from(s.growth_tracker as i32);
        let inf = Tensor::from(if found_inf { 1f32 } else { 0f32 });
        let _ = scale.internal_amp_update_scale_(
            &tracker,
            &inf,
            GROWTH_FACTOR,
            BACKOFF_FACTOR,
            GROWTH_INTERVAL as i64,
        );
        (
            scale.double_value(&[]) as f32,
            tracker.int64_value(&[]) as u32,
        )
    }

    #[test]
    fn the_update_rule_is_torchs() {
        let mut s = GradScaler::default();
        assert_eq!((s.scale, s.growth_tracker), (65536.0, 0));
        // An overflow halves the scale and resets the tracker.
        s.growth_tracker = 7;
        let want = torch_update(&s, true);
        s.update(true);
        assert_eq!((s.scale, s.growth_tracker), want);
        assert_eq!(
            (s.scale, s.growth_tracker, s.skipped_steps),
            (32768.0, 0, 1)
        );
        // 1999 good steps count up; the 2000th doubles the scale and resets.
        for _ in 0..GROWTH_INTERVAL - 1 {
            let want = torch_update(&s, false);
            s.update(false);
            assert_eq!((s.scale, s.growth_tracker), want);
        }
        assert_eq!((s.scale, s.growth_tracker), (32768.0, 1999));
        let want = torch_update(&s, false);
        s.update(false);
        assert_eq!((s.scale, s.growth_tracker), want);
        assert_eq!((s.scale, s.growth_tracker), (65536.0, 0));
        // Growth never makes the scale infinite.
        let mut big = GradScaler {
            scale: f32::MAX,
            growth_tracker: GROWTH_INTERVAL - 1,
            skipped_steps: 0,
        };
        let want = torch_update(&big, false);
        big.update(false);
        assert_eq!((big.scale, big.growth_tracker), want);
        assert_eq!(big.scale, f32::MAX);
    }

    #[test]
    fn unscale_divides_in_place_and_finds_overflow() {
        let s = GradScaler::default();
        let mut grads = vec![
            Tensor::from_slice(&[65536f32, -131072.0]),
            Tensor::new(),
            Tensor::from_slice(&[3f32]),
        ];
        let alias = grads[0].shallow_clone();
        assert!(!s.unscale(&mut grads).unwrap());
        assert_eq!(Vec::<f32>::try_from(&alias).unwrap(), vec![1.0, -2.0]);
        assert_eq!(
            Vec::<f32>::try_from(&grads[2]).unwrap(),
            vec![3.0 / 65536.0]
        );
        let mut bad = vec![
            Tensor::from_slice(&[1f32]),
            Tensor::from_slice(&[f32::INFINITY]),
        ];
        assert!(s.unscale(&mut bad).unwrap());
        let mut nan = vec![Tensor::from_slice(&[f32::NAN, 0.0])];
        assert!(s.unscale(&mut nan).unwrap());
        let loss = Tensor::from(0.5f32).to_device(Device::Cpu);
        assert_eq!(s.scale_loss(&loss).unwrap().double_value(&[]), 32768.0);
    }
}
