//! The denoising objective of `clipdoor shapes train`: what the UNet predicts (saved as the
//! scheduler's `prediction_type`) and how much each timestep's error counts.
//!
//! Weights are stated on the clean-image error ‖x̂0 − x0‖², whatever the prediction, so that runs with
//! different parametrisations are compared on the same footing (Hang et al. 2023, "Efficient Diffusion
//! Training via Min-SNR Weighting Strategy", §3). With SNR = ᾱ / (1 − ᾱ), an error on the prediction
//! relates to the implied x0 error as
//! - `sample`: x̂0 is the output, ‖x̂0 − x0‖² = ‖out − x0‖²;
//! - `epsilon`: x̂0 = (x_t − √(1−ᾱ)·ε̂)/√ᾱ, so ‖ε̂ − ε‖² = SNR · ‖x̂0 − x0‖²;
//! - `v_prediction`: x̂0 = √ᾱ·x_t − √(1−ᾱ)·v̂, so ‖v̂ − v‖² = (1 + SNR) · ‖x̂0 − x0‖².
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::diffusion::schedulers::PredictionType;

/// What the UNet outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// The clean image x0 (`sample`).
    Sample,
    /// The added noise ε (`epsilon`).
    Epsilon,
    /// The velocity v = √ᾱ·ε − √(1−ᾱ)·x0 of Salimans & Ho 2022 (`v_prediction`).
    #[value(name = "v_prediction")]
    VPrediction,
}

impl Prediction {
    /// The scheduler's `prediction_type` for a model trained this way.
    pub fn scheduler_name(self) -> &'static str {
        match self {
            Prediction::Sample => "sample",
            Prediction::Epsilon => "epsilon",
            Prediction::VPrediction => "v_prediction",
        }
    }

    /// The scheduler-side name of the same thing.
    pub fn as_scheduler_type(self) -> PredictionType {
        match self {
            Prediction::Sample => PredictionType::Sample,
            Prediction::Epsilon => PredictionType::Epsilon,
            Prediction::VPrediction => PredictionType::VPrediction,
        }
    }

    /// The regression target; `acp` is ᾱ_t broadcastable to `x0` (e.g. `[B, 1, 1, 1]`).
    pub fn target(self, x0: &Tensor, noise: &Tensor, acp: &Tensor) -> Tensor {
        match self {
            Prediction::Sample => x0.shallow_clone(),
            Prediction::Epsilon => noise.shallow_clone(),
            Prediction::VPrediction => {
                let sigma = acp.neg().g_add_scalar(1.0).sqrt();
                acp.sqrt() * noise - sigma * x0
            }
        }
    }

    /// The clean image the output implies at `x_t` (what a sampler's first formula computes).
    pub fn implied_x0(self, out: &Tensor, x_t: &Tensor, acp: &Tensor) -> Tensor {
        let sigma = acp.neg().g_add_scalar(1.0).sqrt();
        match self {
            Prediction::Sample => out.shallow_clone(),
            Prediction::Epsilon => (x_t - sigma * out) / acp.sqrt(),
            Prediction::VPrediction => acp.sqrt() * x_t - sigma * out,
        }
    }

    /// ‖prediction error‖² / ‖implied x0 error‖² at each SNR.
    fn error_ratio(self, snr: &Tensor) -> Tensor {
        match self {
            Prediction::Sample => snr.ones_like(),
            Prediction::Epsilon => snr.shallow_clone(),
            Prediction::VPrediction => snr + 1.0,
        }
    }
}

/// How much each timestep's clean-image error counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Weighting {
    /// 1: every noise level alike.
    Uniform,
    /// min(SNR, γ): Min-SNR-γ (Hang et al. 2023).
    MinSnr,
    /// clamp(SNR, 1, γ): truncated SNR (Salimans & Ho 2022) capped as in Min-SNR-γ.
    TruncatedMinSnr,
}

impl Weighting {
    /// The weight on the x0 error at each SNR.
    fn x0_weight(self, snr: &Tensor, gamma: f64) -> Tensor {
        match self {
            Weighting::Uniform => snr.ones_like(),
            Weighting::MinSnr => snr.clamp_max(gamma),
            Weighting::TruncatedMinSnr => snr.clamp(1.0, gamma.max(1.0)),
        }
    }
}

/// Per-item weights on the squared error of the prediction itself, so that the weighted prediction
/// loss equals `weighting` applied to the implied x0 error. `acp`: ᾱ_t of each item, `[B]`.
pub fn loss_weights(
    prediction: Prediction,
    weighting: Weighting,
    gamma: f64,
    acp: &Tensor,
) -> Tensor {
    let snr: Tensor = acp / (1.0 - acp);
    weighting.x0_weight(&snr, gamma) / prediction.error_ratio(&snr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// For every parametrisation, weight × ‖prediction error‖² equals the weighting on the x0
    /// error, on a perturbed prediction at several noise levels.
    #[test]
    fn weighted_prediction_loss_is_the_weighted_x0_loss() {
        tch::manual_seed(0);
        let acp = Tensor::from_slice(&[0.999f32, 0.9, 0.5, 0.1, 0.005]);
        let shape = [5i64, 3, 4, 4];
        let x0 = Tensor::randn(shape, (Kind::Float, Device::Cpu));
        let noise = Tensor::randn(shape, (Kind::Float, Device::Cpu));
        let a = acp.reshape([-1, 1, 1, 1]);
        let x_t = a.sqrt() * &x0 + a.neg().g_add_scalar(1.0).sqrt() * &noise;
        for p in [
            Prediction::Sample,
            Prediction::Epsilon,
            Prediction::VPrediction,
        ] {
            let target = p.target(&x0, &noise, &a);
            // The exact target implies the exact x0.
            let back = p.implied_x0(&target, &x_t, &a);
            let err = (&back - &x0).abs().max().double_value(&[]);
            assert!(err < 1e-3, "{p:?}: implied x0 off by {err}");
            let out = &target + Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 0.1;
            let pred_mse =
                (&out - &target)
                    .square()
                    .mean_dim([1i64, 2, 3].as_slice(), false, Kind::Float);
            let x0_mse = (p.implied_x0(&out, &x_t, &a) - &x0).square().mean_dim(
                [1i64, 2, 3].as_slice(),
                false,
                Kind::Float,
            );
            for w in [
                Weighting::Uniform,
                Weighting::MinSnr,
                Weighting::TruncatedMinSnr,
            ] {
                let snr: Tensor = &acp / (1.0 - &acp);
                let lhs = loss_weights(p, w, 5.0, &acp) * &pred_mse;
                let rhs = w.x0_weight(&snr, 5.0) * &x0_mse;
                let rel = ((&lhs - &rhs).abs() / rhs.abs().clamp_min(1e-12))
                    .max()
                    .double_value(&[]);
                assert!(rel < 1e-3, "{p:?} {w:?}: {lhs} vs {rhs}");
            }
        }
    }

    #[test]
    fn weights_follow_their_definitions() {
        // SNR 9 (ᾱ 0.9) and 1/9 (ᾱ 0.1).
        let acp = Tensor::from_slice(&[0.9f64, 0.1]);
        let v = |p, w| -> Vec<f64> { Vec::try_from(loss_weights(p, w, 5.0, &acp)).unwrap() };
        let close = |a: Vec<f64>, b: [f64; 2]| {
            assert!(
                a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9),
                "{a:?} vs {b:?}"
            )
        };
        close(v(Prediction::Sample, Weighting::Uniform), [1.0, 1.0]);
        close(v(Prediction::Sample, Weighting::MinSnr), [5.0, 1.0 / 9.0]);
        close(
            v(Prediction::Sample, Weighting::TruncatedMinSnr),
            [5.0, 1.0],
        );
        close(v(Prediction::Epsilon, Weighting::MinSnr), [5.0 / 9.0, 1.0]);
        close(v(Prediction::VPrediction, Weighting::MinSnr), [0.5, 0.1]);
        close(v(Prediction::VPrediction, Weighting::Uniform), [0.1, 0.9]);
    }
}
