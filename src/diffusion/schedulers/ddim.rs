//! `DDIMScheduler` (Song et al. 2020) with eta = 0: the deterministic DDIM sampler.
use tch::Tensor;

use super::betas::{alphas_cumprod, ZeroSnr};
use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::thresholding::threshold_sample;
use super::timesteps::{check_steps, spaced};
use super::torch_math as tm;
use super::{train_index, Scheduler};
use crate::error::Result;

pub struct DdimScheduler {
    cfg: SchedulerConfig,
    alphas_cumprod: Vec<f32>,
    /// The "previous alpha" of the last step: 1 or `alphas_cumprod[0]` (`set_alpha_to_one`).
    final_alpha_cumprod: f32,
    spacing: TimestepSpacing,
    clip_sample: bool,
    num_inference_steps: usize,
    timesteps: Vec<f64>,
}

impl DdimScheduler {
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        cfg.reject_unsupported("DDIMScheduler")?;
        let alphas_cumprod = alphas_cumprod(cfg, ZeroSnr::Rescale)?;
        let final_alpha_cumprod = if cfg.set_alpha_to_one.unwrap_or(true) {
            1.0
        } else {
            alphas_cumprod[0]
        };
        let timesteps = (0..cfg.num_train_timesteps)
            .rev()
            .map(|t| t as f64)
            .collect();
        Ok(Self {
            cfg: cfg.clone(),
            alphas_cumprod,
            final_alpha_cumprod,
            spacing: cfg.timestep_spacing.unwrap_or(TimestepSpacing::Leading),
            clip_sample: cfg.clip_sample.unwrap_or(true),
            num_inference_steps: 0,
            timesteps,
        })
    }
}

impl Scheduler for DdimScheduler {
    fn name(&self) -> &'static str {
        "ddim"
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        check_steps(n, self.cfg.num_train_timesteps)?;
        self.num_inference_steps = n;
        self.timesteps = spaced(
            n,
            self.cfg.num_train_timesteps,
            self.spacing,
            self.cfg.steps_offset,
            true,
        );
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    fn scale_model_input(&self, sample: &Tensor, _timestep: f64) -> Result<Tensor> {
        Ok(sample.shallow_clone())
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        _noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        if self.num_inference_steps == 0 {
            anyhow::bail!("DDIM: call set_timesteps before step");
        }
        let t = train_index(timestep, self.cfg.num_train_timesteps)?;
        // As upstream, the previous timestep is one stride back whatever the spacing.
        let prev_t = t as i64 - (self.cfg.num_train_timesteps / self.num_inference_steps) as i64;
        let alpha_prod_t = self.alphas_cumprod[t];
        let alpha_prod_t_prev = if prev_t >= 0 {
            self.alphas_cumprod[prev_t as usize]
        } else {
            self.final_alpha_cumprod
        };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let (sqrt_alpha, sqrt_beta) = (tm::sqrt(alpha_prod_t) as f64, tm::sqrt(beta_prod_t) as f64);

        let (mut pred_original_sample, pred_epsilon) = match self.cfg.prediction_type {
            PredictionType::Epsilon => (
                (sample - model_output * sqrt_beta) / sqrt_alpha,
                model_output.shallow_clone(),
            ),
            PredictionType::Sample => {
                let original = model_output.shallow_clone();
                let epsilon = (sample - &original * sqrt_alpha) / sqrt_beta;
                (original, epsilon)
            }
            PredictionType::VPrediction => (
                sample * sqrt_alpha - model_output * sqrt_beta,
                model_output * sqrt_alpha + sample * sqrt_beta,
            ),
        };
        if self.cfg.thresholding {
            pred_original_sample = threshold_sample(&pred_original_sample, &self.cfg);
        } else if self.clip_sample {
            let range = self.cfg.clip_sample_range;
            pred_original_sample = pred_original_sample.clamp(-range, range);
        }
        // eta = 0: no variance term, so the direction coefficient is sqrt(1 - alpha_prev).
        let direction = pred_epsilon * (tm::sqrt(1.0 - alpha_prod_t_prev - 0.0f32) as f64);
        Ok(pred_original_sample * (tm::sqrt(alpha_prod_t_prev) as f64) + direction)
    }
}
