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
use tch::Tensor;

use crate::diffusion::schedulers::{PredictionType, Scheduler};
use crate::error::Result;

/// The regression target of `prediction` for clean images `x0` noised with `noise` at `timesteps`
/// (`[B]`): x0, ε, or the scheduler's velocity ([`Scheduler::get_velocity`]).
pub fn target(
    prediction: PredictionType,
    scheduler: &dyn Scheduler,
    x0: &Tensor,
    noise: &Tensor,
    timesteps: &Tensor,
) -> Result<Tensor> {
    Ok(match prediction {
        PredictionType::Sample => x0.shallow_clone(),
        PredictionType::Epsilon => noise.shallow_clone(),
        PredictionType::VPrediction => scheduler.get_velocity(x0, noise, timesteps)?,
    })
}

/// The clean image an output of `prediction` implies at `x_t` (what a sampler's first formula
/// computes); `acp` is ᾱ_t broadcastable to `x_t` (e.g. `[B, 1, 1, 1]`).
pub fn implied_x0(prediction: PredictionType, out: &Tensor, x_t: &Tensor, acp: &Tensor) -> Tensor {
    let sigma = acp.neg().g_add_scalar(1.0).sqrt();
    match prediction {
        PredictionType::Sample => out.shallow_clone(),
        PredictionType::Epsilon => (x_t - sigma * out) / acp.sqrt(),
        PredictionType::VPrediction => acp.sqrt() * x_t - sigma * out,
    }
}

/// ‖prediction error‖² / ‖implied x0 error‖² at each SNR.
fn error_ratio(prediction: PredictionType, snr: &Tensor) -> Tensor {
    match prediction {
        PredictionType::Sample => snr.ones_like(),
        PredictionType::Epsilon => snr.shallow_clone(),
        PredictionType::VPrediction => snr + 1.0,
    }
}

crate::settings::choice_enum! {
    /// How much each timestep's clean-image error counts (`--weighting`).
    pub enum Weighting ("loss weighting") {
        /// 1: every noise level alike.
        Uniform = "uniform",
        /// min(SNR, γ): Min-SNR-γ (Hang et al. 2023).
        MinSnr = "min-snr",
        /// clamp(SNR, 1, γ): truncated SNR (Salimans & Ho 2022) capped as in Min-SNR-γ.
        TruncatedMinSnr = "truncated-min-snr",
    }
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
    prediction: PredictionType,
    weighting: Weighting,
    gamma: f64,
    acp: &Tensor,
) -> Tensor {
    let snr: Tensor = acp / (1.0 - acp);
    weighting.x0_weight(&snr, gamma) / error_ratio(prediction, &snr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::schedulers::scheduler_by_name;
    use tch::{Device, Kind};

    /// For every parametrisation, weight × ‖prediction error‖² equals the weighting on the x0
    /// error, on a perturbed prediction at several noise levels.
    #[test]
    fn weighted_prediction_loss_is_the_weighted_x0_loss() {
        crate::models::init::seeded(0, || {
            // The shapes schedule, from ᾱ ≈ 0.999 to ≈ 0.005.
            let cfg = crate::shapes::model::scheduler_config(PredictionType::VPrediction).unwrap();
            let scheduler = scheduler_by_name(None, &cfg).unwrap();
            let timesteps = Tensor::from_slice(&[0i64, 150, 400, 700, 999]);
            let acp = Tensor::from_slice(scheduler.alphas_cumprod()).index_select(0, &timesteps);
            let shape = [5i64, 3, 4, 4];
            let x0 = Tensor::randn(shape, (Kind::Float, Device::Cpu));
            let noise = Tensor::randn(shape, (Kind::Float, Device::Cpu));
            let a = acp.reshape([-1, 1, 1, 1]);
            let x_t = scheduler.add_noise(&x0, &noise, &timesteps).unwrap();
            for p in PredictionType::ALL {
                let target = target(p, scheduler.as_ref(), &x0, &noise, &timesteps).unwrap();
                // The exact target implies the exact x0.
                let back = implied_x0(p, &target, &x_t, &a);
                let err = (&back - &x0).abs().max().double_value(&[]);
                assert!(err < 1e-3, "{p:?}: implied x0 off by {err}");
                let out = &target + Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 0.1;
                let pred_mse =
                    (&out - &target)
                        .square()
                        .mean_dim([1i64, 2, 3].as_slice(), false, Kind::Float);
                let x0_mse = (implied_x0(p, &out, &x_t, &a) - &x0).square().mean_dim(
                    [1i64, 2, 3].as_slice(),
                    false,
                    Kind::Float,
                );
                for w in Weighting::ALL {
                    let snr: Tensor = &acp / (1.0 - &acp);
                    let lhs = loss_weights(p, w, 5.0, &acp) * &pred_mse;
                    let rhs = w.x0_weight(&snr, 5.0) * &x0_mse;
                    let rel = ((&lhs - &rhs).abs() / rhs.abs().clamp_min(1e-12))
                        .max()
                        .double_value(&[]);
                    assert!(rel < 1e-3, "{p:?} {w:?}: {lhs} vs {rhs}");
                }
            }
        });
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
        close(v(PredictionType::Sample, Weighting::Uniform), [1.0, 1.0]);
        close(
            v(PredictionType::Sample, Weighting::MinSnr),
            [5.0, 1.0 / 9.0],
        );
        close(
            v(PredictionType::Sample, Weighting::TruncatedMinSnr),
            [5.0, 1.0],
        );
        close(
            v(PredictionType::Epsilon, Weighting::MinSnr),
            [5.0 / 9.0, 1.0],
        );
        close(
            v(PredictionType::VPrediction, Weighting::MinSnr),
            [0.5, 0.1],
        );
        close(
            v(PredictionType::VPrediction, Weighting::Uniform),
            [0.1, 0.9],
        );
    }

    #[test]
    fn names_round_trip_and_keep_their_serde_spelling() {
        for p in PredictionType::ALL {
            assert_eq!(p.name().parse::<PredictionType>().unwrap(), p);
            assert_eq!(serde_json::to_value(p).unwrap(), p.name());
        }
        for w in Weighting::ALL {
            assert_eq!(w.name().parse::<Weighting>().unwrap(), w);
            assert_eq!(serde_json::to_value(w).unwrap(), w.name());
        }
        // What older state.json files hold.
        let p: PredictionType = serde_json::from_str("\"v_prediction\"").unwrap();
        assert_eq!(p, PredictionType::VPrediction);
        let w: Weighting = serde_json::from_str("\"truncated-min-snr\"").unwrap();
        assert_eq!(w, Weighting::TruncatedMinSnr);
        assert!("v-prediction".parse::<PredictionType>().is_err());
    }
}
