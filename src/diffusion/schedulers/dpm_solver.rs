//! `DPMSolverMultistepScheduler` (Lu et al. 2022): DPM-Solver++ multistep in data prediction, order 1–3
//! (order 2 = "DPM++ 2M"), midpoint or Heun rule, optional Karras sigmas; `sde-dpmsolver++` adds noise
//! drawn by the caller.
use tch::{Kind, Tensor};

use super::betas::{alphas_cumprod, ZeroSnr};
use super::config::{
    BetaSchedule, FinalSigmasType, PredictionType, SchedulerConfig, TimestepSpacing,
};
use super::sigmas::{final_sigma, karras, log_sigmas, sigma_to_t, training_sigmas};
use super::thresholding::threshold_sample;
use super::timesteps::{check_steps, dpm_solver, index_of};
use super::torch_math as tm;
use super::{numpy, required_noise, schedule_sigmas, Scheduler};
use crate::error::Result;
use crate::input_bail;

pub struct DpmSolverMultistepScheduler {
    cfg: SchedulerConfig,
    alphas_cumprod: Vec<f32>,
    training_sigmas: Vec<f32>,
    spacing: TimestepSpacing,
    /// `sde-dpmsolver++` (stochastic) rather than `dpmsolver++`.
    sde: bool,
    /// Heun rather than midpoint second-order rule.
    heun: bool,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    /// Data predictions of the last `solver_order` steps, oldest first.
    model_outputs: Vec<Option<Tensor>>,
    lower_order_nums: usize,
    step_index: Option<usize>,
}

/// `alpha_t = 1 / sqrt(sigma² + 1)`, `sigma_t = sigma * alpha_t` and `lambda = log(alpha_t / sigma_t)`, in
/// f32 as upstream's 0-dim tensors.
#[derive(Clone, Copy)]
struct Level {
    alpha: f32,
    sigma: f32,
    lambda: f32,
}

impl Level {
    fn new(sigma: f32) -> Self {
        let alpha = 1.0 / tm::sqrt(sigma * sigma + 1.0);
        let sigma = sigma * alpha;
        Self {
            alpha,
            sigma,
            lambda: tm::ln(alpha) - tm::ln(sigma),
        }
    }
}

impl DpmSolverMultistepScheduler {
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        cfg.reject_unsupported("DPMSolverMultistepScheduler")?;
        let sde = match cfg.algorithm_type.as_str() {
            "dpmsolver++" | "deis" => false,
            "sde-dpmsolver++" => true,
            other => input_bail!(
                "DPMSolverMultistepScheduler: algorithm_type `{other}` is not supported; use `dpmsolver++` or `sde-dpmsolver++`"
            ),
        };
        let heun = match cfg.solver_type.as_str() {
            "midpoint" | "logrho" | "bh1" | "bh2" => false,
            "heun" => true,
            other => input_bail!(
                "DPMSolverMultistepScheduler: solver_type `{other}` is not `midpoint` or `heun`"
            ),
        };
        if !(1..=3).contains(&cfg.solver_order) {
            input_bail!(
                "DPMSolverMultistepScheduler: solver_order must be 1, 2 or 3, got {}",
                cfg.solver_order
            );
        }
        if cfg.variance_type.is_some() {
            input_bail!("DPMSolverMultistepScheduler: learned variances (`variance_type`) are not supported");
        }
        let alphas_cumprod = alphas_cumprod(cfg, ZeroSnr::RescaleAndClampLast)?;
        let training_sigmas = training_sigmas(&alphas_cumprod);
        let timesteps = (0..cfg.num_train_timesteps)
            .rev()
            .map(|t| t as f64)
            .collect();
        Ok(Self {
            cfg: cfg.clone(),
            sigmas: training_sigmas.clone(),
            alphas_cumprod,
            training_sigmas,
            spacing: cfg.timestep_spacing.unwrap_or(TimestepSpacing::Linspace),
            sde,
            heun,
            timesteps,
            model_outputs: (0..cfg.solver_order).map(|_| None).collect(),
            lower_order_nums: 0,
            step_index: None,
        })
    }

    /// Training timesteps kept by `lambda_min_clipped` (all of them by default).
    fn last_timestep(&self) -> usize {
        let train = self.cfg.num_train_timesteps;
        match self.cfg.lambda_min_clipped {
            Some(min) if min.is_finite() => {
                // searchsorted(flip(lambda_t), min): lambdas fall with t, so count those below `min`.
                let clipped = self
                    .alphas_cumprod
                    .iter()
                    .filter(|&&a| ((tm::ln(tm::sqrt(a)) - tm::ln(tm::sqrt(1.0 - a))) as f64) < min)
                    .count();
                train - clipped
            }
            _ => train,
        }
    }

    /// The model output as a data (x0) prediction at the current sigma.
    fn data_prediction(&self, model_output: &Tensor, sample: &Tensor, level: Level) -> Tensor {
        let x0 = match self.cfg.prediction_type {
            PredictionType::Epsilon => {
                (sample - model_output * (level.sigma as f64)) / (level.alpha as f64)
            }
            PredictionType::Sample => model_output.shallow_clone(),
            PredictionType::VPrediction => {
                sample * (level.alpha as f64) - model_output * (level.sigma as f64)
            }
        };
        if self.cfg.thresholding {
            threshold_sample(&x0, &self.cfg)
        } else {
            x0
        }
    }

    fn first_order(
        &self,
        i: usize,
        x0: &Tensor,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Tensor {
        let (t, s) = (Level::new(self.sigmas[i + 1]), Level::new(self.sigmas[i]));
        let h = t.lambda - s.lambda;
        match noise {
            None => {
                sample * ((t.sigma / s.sigma) as f64)
                    - x0 * ((t.alpha * (tm::exp(-h) - 1.0)) as f64)
            }
            Some(noise) => {
                sample * ((t.sigma / s.sigma * tm::exp(-h)) as f64)
                    + x0 * ((t.alpha * (1.0 - tm::exp(-2.0 * h))) as f64)
                    + noise * ((t.sigma * tm::sqrt(1.0 - tm::exp(-2.0 * h))) as f64)
            }
        }
    }

    fn second_order(&self, i: usize, sample: &Tensor, noise: Option<&Tensor>) -> Tensor {
        let (t, s0, s1) = (
            Level::new(self.sigmas[i + 1]),
            Level::new(self.sigmas[i]),
            Level::new(self.sigmas[i - 1]),
        );
        let n = self.model_outputs.len();
        let (m0, m1) = (self.output(n - 1), self.output(n - 2));
        let (h, h_0) = (t.lambda - s0.lambda, s0.lambda - s1.lambda);
        let r0 = h_0 / h;
        let d0 = m0;
        let d1 = (m0 - m1) * ((1.0 / r0) as f64);
        let alpha_t = t.alpha;
        match noise {
            None => {
                let a = alpha_t * (tm::exp(-h) - 1.0);
                let base = sample * ((t.sigma / s0.sigma) as f64) - d0 * (a as f64);
                if self.heun {
                    base + d1 * ((alpha_t * ((tm::exp(-h) - 1.0) / h + 1.0)) as f64)
                } else {
                    base - d1 * ((0.5 * a) as f64)
                }
            }
            Some(noise) => {
                let a = alpha_t * (1.0 - tm::exp(-2.0 * h));
                let base = sample * ((t.sigma / s0.sigma * tm::exp(-h)) as f64) + d0 * (a as f64);
                let with_d1 = if self.heun {
                    base + d1 * ((alpha_t * ((1.0 - tm::exp(-2.0 * h)) / (-2.0 * h) + 1.0)) as f64)
                } else {
                    base + d1 * ((0.5 * a) as f64)
                };
                with_d1 + noise * ((t.sigma * tm::sqrt(1.0 - tm::exp(-2.0 * h))) as f64)
            }
        }
    }

    fn third_order(&self, i: usize, sample: &Tensor, noise: Option<&Tensor>) -> Tensor {
        let t = Level::new(self.sigmas[i + 1]);
        let (s0, s1, s2) = (
            Level::new(self.sigmas[i]),
            Level::new(self.sigmas[i - 1]),
            Level::new(self.sigmas[i - 2]),
        );
        let n = self.model_outputs.len();
        let (m0, m1, m2) = (self.output(n - 1), self.output(n - 2), self.output(n - 3));
        let (h, h_0, h_1) = (
            t.lambda - s0.lambda,
            s0.lambda - s1.lambda,
            s1.lambda - s2.lambda,
        );
        let (r0, r1) = (h_0 / h, h_1 / h);
        let d1_0 = (m0 - m1) * ((1.0 / r0) as f64);
        let d1_1 = (m1 - m2) * ((1.0 / r1) as f64);
        let d1 = &d1_0 + (&d1_0 - &d1_1) * ((r0 / (r0 + r1)) as f64);
        let d2 = (&d1_0 - &d1_1) * ((1.0 / (r0 + r1)) as f64);
        let alpha_t = t.alpha;
        match noise {
            None => {
                let e = tm::exp(-h) - 1.0;
                sample * ((t.sigma / s0.sigma) as f64) - m0 * ((alpha_t * e) as f64)
                    + d1 * ((alpha_t * (e / h + 1.0)) as f64)
                    - d2 * ((alpha_t * ((tm::exp(-h) - 1.0 + h) / (h * h) - 0.5)) as f64)
            }
            Some(noise) => {
                let e2 = 1.0 - tm::exp(-2.0 * h);
                sample * ((t.sigma / s0.sigma * tm::exp(-h)) as f64)
                    + m0 * ((alpha_t * e2) as f64)
                    + d1 * ((alpha_t * (e2 / (-2.0 * h) + 1.0)) as f64)
                    + d2 * ((alpha_t
                        * ((1.0 - tm::exp(-2.0 * h) - 2.0 * h) / ((2.0 * h) * (2.0 * h)) - 0.5))
                        as f64)
                    + noise * ((t.sigma * tm::sqrt(e2)) as f64)
            }
        }
    }

    fn output(&self, k: usize) -> &Tensor {
        self.model_outputs[k]
            .as_ref()
            .expect("filled before use by the order schedule")
    }
}

impl Scheduler for DpmSolverMultistepScheduler {
    fn name(&self) -> &'static str {
        "dpm++"
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let train = self.cfg.num_train_timesteps;
        check_steps(n, train)?;
        let last_timestep = self.last_timestep();
        let mut timesteps =
            dpm_solver(n, train, last_timestep, self.spacing, self.cfg.steps_offset);
        let sigmas: Vec<f64> = if self.cfg.karras() {
            let (min, max) = (
                self.training_sigmas[0] as f64,
                self.training_sigmas[train - 1] as f64,
            );
            let sigmas = karras(&self.cfg, max, min, n);
            let logs = log_sigmas(&self.training_sigmas);
            let round = self.cfg.beta_schedule != BetaSchedule::SquaredcosCapV2;
            // Fractional timesteps are rounded, or truncated by the int64 cast for the cosine schedule.
            timesteps = sigmas
                .iter()
                .map(|&s| sigma_to_t(s, &logs))
                .map(|t| if round { numpy::round(t) } else { t.trunc() })
                .collect();
            sigmas
        } else {
            timesteps
                .iter()
                .map(|&t| numpy::interp_on_index_grid(t, &self.training_sigmas))
                .collect()
        };
        if timesteps.is_empty() {
            input_bail!("DPM-Solver: no timesteps left for {n} steps after `lambda_min_clipped`");
        }
        self.sigmas = sigmas
            .iter()
            .map(|&s| s as f32)
            .chain([final_sigma(&self.cfg, &self.alphas_cumprod)])
            .collect();
        self.timesteps = timesteps;
        self.model_outputs = (0..self.cfg.solver_order).map(|_| None).collect();
        self.lower_order_nums = 0;
        self.step_index = None;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// Upstream's: `α_t · original + σ_t · noise` with `α_t = 1 / √(σ² + 1)`, `σ_t = σ · α_t` and σ of
    /// the current schedule at each timestep (before `set_timesteps` upstream pairs the descending
    /// training timesteps with the ascending training sigmas; so does this).
    fn add_noise(&self, original: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        let sigma = schedule_sigmas(
            &self.timesteps,
            &self.sigmas,
            original,
            noise,
            timesteps,
            "DPM-Solver",
        )?;
        let sigma_sq: Tensor = &sigma * &sigma;
        let alpha_t = (sigma_sq + 1.0).sqrt().reciprocal();
        let sigma_t = &sigma * &alpha_t;
        Ok(alpha_t * original + sigma_t * noise)
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.sigmas)
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input(&self, sample: &Tensor, _timestep: f64) -> Result<Tensor> {
        Ok(sample.shallow_clone())
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let noise = if self.sde {
            Some(required_noise(noise, model_output, "SDE-DPM-Solver++")?)
        } else {
            None
        };
        let len = self.timesteps.len();
        // Upstream falls back to the last step for a timestep not in the schedule.
        let i = self
            .step_index
            .unwrap_or_else(|| index_of(&self.timesteps, timestep).unwrap_or(len - 1));
        if i >= len || i + 1 >= self.sigmas.len() {
            anyhow::bail!(
                "DPM-Solver: stepped past the end of the schedule; call set_timesteps again"
            );
        }
        let few_steps = self.cfg.lower_order_final && len < 15;
        let lower_order_final = i == len - 1
            && (self.cfg.euler_at_final
                || few_steps
                || self.cfg.final_sigmas_type == FinalSigmasType::Zero);
        let lower_order_second = i + 2 == len && few_steps;

        let sample = sample.to_kind(Kind::Float);
        let x0 = self.data_prediction(model_output, &sample, Level::new(self.sigmas[i]));
        self.model_outputs.rotate_left(1);
        *self.model_outputs.last_mut().expect("solver_order >= 1") = Some(x0.shallow_clone());
        let noise = noise.map(|n| n.to_kind(Kind::Float));

        let order = self.cfg.solver_order;
        let prev = if order == 1 || self.lower_order_nums < 1 || lower_order_final {
            self.first_order(i, &x0, &sample, noise.as_ref())
        } else if order == 2 || self.lower_order_nums < 2 || lower_order_second {
            self.second_order(i, &sample, noise.as_ref())
        } else {
            self.third_order(i, &sample, noise.as_ref())
        };
        if self.lower_order_nums < order {
            self.lower_order_nums += 1;
        }
        self.step_index = Some(i + 1);
        Ok(prev.to_kind(model_output.kind()))
    }

    fn needs_noise(&self) -> bool {
        self.sde
    }

    fn noise_kind(&self, _model_output_kind: Kind) -> Kind {
        Kind::Float
    }
}
