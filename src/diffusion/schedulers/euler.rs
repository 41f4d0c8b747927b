//! `EulerDiscreteScheduler`: Euler steps of the probability-flow ODE in sigma space (Karras et al.
//! 2022, Algorithm 2 without churn), optionally on Karras sigmas.
use tch::{Kind, Tensor};

use super::betas::{alphas_cumprod, ZeroSnr};
use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::sigmas::{final_sigma, karras, log_sigmas, sigma_to_t, training_sigmas};
use super::timesteps::{check_steps, index_of, spaced};
use super::torch_math as tm;
use super::{add_sigma_noise, numpy, Scheduler};
use crate::error::Result;
use crate::input_bail;

pub struct EulerDiscreteScheduler {
    cfg: SchedulerConfig,
    alphas_cumprod: Vec<f32>,
    training_sigmas: Vec<f32>,
    spacing: TimestepSpacing,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    step_index: Option<usize>,
}

impl EulerDiscreteScheduler {
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        cfg.reject_unsupported("EulerDiscreteScheduler")?;
        if cfg
            .interpolation_type
            .as_deref()
            .is_some_and(|t| t != "linear")
        {
            input_bail!("EulerDiscreteScheduler: only `interpolation_type: linear` is supported");
        }
        if cfg
            .timestep_type
            .as_deref()
            .is_some_and(|t| t != "discrete")
        {
            input_bail!("EulerDiscreteScheduler: only `timestep_type: discrete` is supported");
        }
        let alphas_cumprod = alphas_cumprod(cfg, ZeroSnr::RescaleAndClampLast)?;
        let training_sigmas = training_sigmas(&alphas_cumprod);
        let (timesteps, sigmas) = untrained_schedule(&training_sigmas);
        Ok(Self {
            cfg: cfg.clone(),
            alphas_cumprod,
            training_sigmas,
            spacing: cfg.timestep_spacing.unwrap_or(TimestepSpacing::Linspace),
            timesteps,
            sigmas,
            step_index: None,
        })
    }

    fn index(&self, timestep: f64) -> Result<usize> {
        match self.step_index {
            Some(i) => Ok(i),
            None => index_of(&self.timesteps, timestep).ok_or_else(|| {
                anyhow::anyhow!("Euler: timestep {timestep} is not in the schedule; pass one of scheduler.timesteps()")
            }),
        }
    }
}

/// The schedule before `set_timesteps`: every training timestep, descending (as upstream's constructor).
pub(crate) fn untrained_schedule(training_sigmas: &[f32]) -> (Vec<f64>, Vec<f32>) {
    let n = training_sigmas.len();
    let timesteps = (0..n).rev().map(|t| t as f64).collect();
    let sigmas = training_sigmas.iter().rev().copied().chain([0.0]).collect();
    (timesteps, sigmas)
}

/// `init_noise_sigma` of the Euler family: the largest sigma, or `sqrt(max² + 1)` for `leading`.
pub(crate) fn init_noise_sigma(sigmas: &[f32], spacing: TimestepSpacing) -> f64 {
    let max = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    match spacing {
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => max as f64,
        TimestepSpacing::Leading => tm::sqrt(max * max + 1.0) as f64,
    }
}

/// `sample / sqrt(sigma² + 1)`: the model input of the Euler family.
pub(crate) fn scale_by_sigma(sample: &Tensor, sigma: f32) -> Tensor {
    sample / (tm::sqrt(sigma * sigma + 1.0) as f64)
}

/// The denoised estimate x0 of the Euler family from the model output at `sigma`.
pub(crate) fn predict_original(
    prediction: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    sigma: f32,
) -> Tensor {
    match prediction {
        PredictionType::Epsilon => sample - model_output * (sigma as f64),
        PredictionType::VPrediction => {
            let c_out = -sigma / tm::sqrt(sigma * sigma + 1.0);
            model_output * (c_out as f64) + sample / ((sigma * sigma + 1.0) as f64)
        }
        PredictionType::Sample => model_output.shallow_clone(),
    }
}

impl Scheduler for EulerDiscreteScheduler {
    fn name(&self) -> &'static str {
        "euler"
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let train = self.cfg.num_train_timesteps;
        check_steps(n, train)?;
        let timesteps: Vec<f64> = spaced(n, train, self.spacing, self.cfg.steps_offset, false)
            .into_iter()
            .map(|t| t as f32 as f64)
            .collect();
        let interpolated: Vec<f64> = timesteps
            .iter()
            .map(|&t| numpy::interp_on_index_grid(t, &self.training_sigmas))
            .collect();
        let (timesteps, sigmas) = if self.cfg.karras() {
            let sigmas = karras(&self.cfg, interpolated[0], interpolated[n - 1], n);
            let logs = log_sigmas(&self.training_sigmas);
            let timesteps = sigmas
                .iter()
                .map(|&s| sigma_to_t(s, &logs) as f32 as f64)
                .collect();
            (timesteps, sigmas)
        } else {
            (timesteps, interpolated)
        };
        self.timesteps = timesteps;
        self.sigmas = sigmas
            .iter()
            .map(|&s| s as f32)
            .chain([final_sigma(&self.cfg, &self.alphas_cumprod)])
            .collect();
        self.step_index = None;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.sigmas)
    }

    fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// Upstream's: `original + noise · σ` with σ of the current schedule at each timestep.
    fn add_noise(&self, original: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        let (schedule, sigmas) = (&self.timesteps, &self.sigmas);
        add_sigma_noise(schedule, sigmas, original, noise, timesteps, "Euler")
    }

    fn init_noise_sigma(&self) -> f64 {
        init_noise_sigma(&self.sigmas, self.spacing)
    }

    fn scale_model_input(&self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        Ok(scale_by_sigma(sample, self.sigmas[self.index(timestep)?]))
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        _noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let i = self.index(timestep)?;
        if i + 1 >= self.sigmas.len() {
            anyhow::bail!("Euler: stepped past the end of the schedule; call set_timesteps again");
        }
        let sample = sample.to_kind(Kind::Float);
        // No churn (s_churn = 0, the diffusers default), so sigma_hat = sigma.
        let sigma = self.sigmas[i];
        let pred_original =
            predict_original(self.cfg.prediction_type, model_output, &sample, sigma);
        let derivative = (&sample - pred_original) / (sigma as f64);
        let dt = self.sigmas[i + 1] - sigma;
        let prev = sample + derivative * (dt as f64);
        self.step_index = Some(i + 1);
        Ok(prev.to_kind(model_output.kind()))
    }
}
