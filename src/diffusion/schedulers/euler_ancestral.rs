//! `EulerAncestralDiscreteScheduler`: Euler steps down to `sigma_down` plus fresh noise of scale
//! `sigma_up` (k-diffusion's `sample_euler_ancestral`). The noise comes from the caller so it can be
//! drawn from the pipeline's generator at the point diffusers draws it.
use tch::{Kind, Tensor};

use super::betas::{alphas_cumprod, ZeroSnr};
use super::config::{SchedulerConfig, TimestepSpacing};
use super::euler::{init_noise_sigma, predict_original, scale_by_sigma, untrained_schedule};
use super::sigmas::training_sigmas;
use super::timesteps::{check_steps, index_of, spaced};
use super::torch_math as tm;
use super::{add_sigma_noise, numpy, required_noise, Scheduler};
use crate::error::Result;

pub struct EulerAncestralDiscreteScheduler {
    cfg: SchedulerConfig,
    alphas_cumprod: Vec<f32>,
    training_sigmas: Vec<f32>,
    spacing: TimestepSpacing,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    step_index: Option<usize>,
}

impl EulerAncestralDiscreteScheduler {
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        cfg.reject_unsupported("EulerAncestralDiscreteScheduler")?;
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
                anyhow::anyhow!("Euler ancestral: timestep {timestep} is not in the schedule; pass one of scheduler.timesteps()")
            }),
        }
    }
}

impl Scheduler for EulerAncestralDiscreteScheduler {
    fn name(&self) -> &'static str {
        "euler-a"
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let train = self.cfg.num_train_timesteps;
        check_steps(n, train)?;
        // Upstream has no Karras option here and always ends at sigma = 0.
        self.timesteps = spaced(n, train, self.spacing, self.cfg.steps_offset, false)
            .into_iter()
            .map(|t| t as f32 as f64)
            .collect();
        self.sigmas = self
            .timesteps
            .iter()
            .map(|&t| numpy::interp_on_index_grid(t, &self.training_sigmas) as f32)
            .chain([0.0])
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
        add_sigma_noise(
            schedule,
            sigmas,
            original,
            noise,
            timesteps,
            "Euler ancestral",
        )
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
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let noise = required_noise(noise, model_output, "Euler ancestral")?;
        let i = self.index(timestep)?;
        if i + 1 >= self.sigmas.len() {
            anyhow::bail!(
                "Euler ancestral: stepped past the end of the schedule; call set_timesteps again"
            );
        }
        let sample = sample.to_kind(Kind::Float);
        let (sigma_from, sigma_to) = (self.sigmas[i], self.sigmas[i + 1]);
        let pred_original =
            predict_original(self.cfg.prediction_type, model_output, &sample, sigma_from);
        let sigma_up = tm::sqrt(
            sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to)
                / (sigma_from * sigma_from),
        );
        let sigma_down = tm::sqrt(sigma_to * sigma_to - sigma_up * sigma_up);
        let derivative = (&sample - pred_original) / (sigma_from as f64);
        let dt = sigma_down - sigma_from;
        let prev = sample + derivative * (dt as f64);
        let prev = prev + noise * (sigma_up as f64);
        self.step_index = Some(i + 1);
        Ok(prev.to_kind(model_output.kind()))
    }

    fn needs_noise(&self) -> bool {
        true
    }
}
