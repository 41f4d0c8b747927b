//! `PNDMScheduler` (Liu et al. 2022), the Stable Diffusion 1.x default. With `skip_prk_steps` (as SD
//! configs set) only the PLMS linear-multistep steps run; otherwise the Runge-Kutta (PRK) warm-up too.
use tch::Tensor;

use super::betas::{alphas_cumprod, ZeroSnr};
use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::timesteps::{check_steps, spaced};
use super::torch_math as tm;
use super::{train_index, Scheduler};
use crate::error::Result;
use crate::input_bail;

pub struct PndmScheduler {
    cfg: SchedulerConfig,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    spacing: TimestepSpacing,
    num_inference_steps: usize,
    /// Timesteps of the PRK warm-up (empty with `skip_prk_steps`).
    prk_timesteps: Vec<f64>,
    timesteps: Vec<f64>,
    /// Past model outputs (at most 4 are used).
    ets: Vec<Tensor>,
    counter: usize,
    cur_sample: Option<Tensor>,
    /// Running PRK combination of model outputs (`0` upstream before the first term).
    cur_model_output: Option<Tensor>,
}

impl PndmScheduler {
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        cfg.reject_unsupported("PNDMScheduler")?;
        if cfg.prediction_type == PredictionType::Sample {
            input_bail!(
                "PNDMScheduler supports prediction_type `epsilon` or `v_prediction`, not `sample`"
            );
        }
        let alphas_cumprod = alphas_cumprod(cfg, ZeroSnr::Ignored)?;
        let final_alpha_cumprod = if cfg.set_alpha_to_one.unwrap_or(false) {
            1.0
        } else {
            alphas_cumprod[0]
        };
        Ok(Self {
            cfg: cfg.clone(),
            alphas_cumprod,
            final_alpha_cumprod,
            spacing: cfg.timestep_spacing.unwrap_or(TimestepSpacing::Leading),
            num_inference_steps: 0,
            prk_timesteps: vec![],
            timesteps: vec![],
            ets: vec![],
            counter: 0,
            cur_sample: None,
            cur_model_output: None,
        })
    }

    fn stride(&self) -> i64 {
        (self.cfg.num_train_timesteps / self.num_inference_steps) as i64
    }

    /// Formula (9) of the PNDM paper: x_{t-δ} from x_t and the (combined) noise estimate.
    fn prev_sample(
        &self,
        sample: &Tensor,
        t: i64,
        prev_t: i64,
        model_output: &Tensor,
    ) -> Result<Tensor> {
        let alpha_prod_t =
            self.alphas_cumprod[train_index(t as f64, self.cfg.num_train_timesteps)?];
        let alpha_prod_t_prev = if prev_t >= 0 {
            self.alphas_cumprod[prev_t as usize]
        } else {
            self.final_alpha_cumprod
        };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let model_output = match self.cfg.prediction_type {
            PredictionType::VPrediction => {
                model_output * (tm::sqrt(alpha_prod_t) as f64)
                    + sample * (tm::sqrt(beta_prod_t) as f64)
            }
            _ => model_output.shallow_clone(),
        };
        let sample_coeff = tm::sqrt(alpha_prod_t_prev / alpha_prod_t);
        let denom = alpha_prod_t * tm::sqrt(beta_prod_t_prev)
            + tm::sqrt(alpha_prod_t * beta_prod_t * alpha_prod_t_prev);
        let update = model_output * ((alpha_prod_t_prev - alpha_prod_t) as f64) / (denom as f64);
        Ok(sample * (sample_coeff as f64) - update)
    }

    fn step_prk(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
    ) -> Result<Tensor> {
        let diff_to_prev = if self.counter % 2 == 1 {
            0
        } else {
            self.stride() / 2
        };
        let prev_t = timestep as i64 - diff_to_prev;
        let t = self.prk_timesteps[self.counter / 4 * 4] as i64;
        let accumulate = |acc: Option<Tensor>, term: Tensor| match acc {
            Some(acc) => acc + term,
            None => term,
        };
        let mut combined = model_output.shallow_clone();
        match self.counter % 4 {
            0 => {
                self.cur_model_output = Some(accumulate(
                    self.cur_model_output.take(),
                    model_output * (1.0 / 6.0),
                ));
                self.ets.push(model_output.shallow_clone());
                self.cur_sample = Some(sample.shallow_clone());
            }
            1 | 2 => {
                self.cur_model_output = Some(accumulate(
                    self.cur_model_output.take(),
                    model_output * (1.0 / 3.0),
                ));
            }
            _ => combined = accumulate(self.cur_model_output.take(), model_output * (1.0 / 6.0)),
        }
        let cur_sample = self.cur_sample.as_ref().unwrap_or(sample).shallow_clone();
        let prev = self.prev_sample(&cur_sample, t, prev_t, &combined)?;
        self.counter += 1;
        Ok(prev)
    }

    fn step_plms(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
    ) -> Result<Tensor> {
        if !self.cfg.skip_prk_steps && self.ets.len() < 3 {
            anyhow::bail!("PNDM: PLMS steps need the 12 PRK warm-up steps first");
        }
        let mut t = timestep as i64;
        let mut prev_t = t - self.stride();
        if self.counter != 1 {
            if self.ets.len() > 3 {
                self.ets.drain(..self.ets.len() - 3);
            }
            self.ets.push(model_output.shallow_clone());
        } else {
            prev_t = t;
            t += self.stride();
        }
        let mut sample = sample.shallow_clone();
        let e = &self.ets;
        let n = e.len();
        let combined = if n == 1 && self.counter == 0 {
            self.cur_sample = Some(sample.shallow_clone());
            model_output.shallow_clone()
        } else if n == 1 && self.counter == 1 {
            sample = self.cur_sample.take().unwrap_or(sample);
            (model_output + &e[0]) / 2.0
        } else if n == 2 {
            (&e[1] * 3.0 - &e[0]) / 2.0
        } else if n == 3 {
            (&e[2] * 23.0 - &e[1] * 16.0 + &e[0] * 5.0) / 12.0
        } else {
            (&e[n - 1] * 55.0 - &e[n - 2] * 59.0 + &e[n - 3] * 37.0 - &e[n - 4] * 9.0)
                * (1.0 / 24.0)
        };
        let prev = self.prev_sample(&sample, t, prev_t, &combined)?;
        self.counter += 1;
        Ok(prev)
    }
}

impl Scheduler for PndmScheduler {
    fn name(&self) -> &'static str {
        "pndm"
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        check_steps(n, self.cfg.num_train_timesteps)?;
        if !self.cfg.skip_prk_steps && n < 4 {
            input_bail!("PNDM with PRK warm-up steps needs at least 4 inference steps, got {n}");
        }
        self.num_inference_steps = n;
        let mut ascending = spaced(
            n,
            self.cfg.num_train_timesteps,
            self.spacing,
            self.cfg.steps_offset,
            true,
        );
        ascending.reverse();
        let len = ascending.len();
        if self.cfg.skip_prk_steps {
            // The second-to-last timestep is repeated: the PLMS start needs two evaluations there.
            self.prk_timesteps = vec![];
            let mut plms: Vec<f64> = ascending[..len - 1].to_vec();
            if len >= 2 {
                plms.push(ascending[len - 2]);
            }
            plms.push(ascending[len - 1]);
            plms.reverse();
            self.timesteps = plms;
        } else {
            let half = (self.stride() / 2) as f64;
            let pairs: Vec<f64> = ascending[len - 4..]
                .iter()
                .flat_map(|&t| [t, t + half])
                .collect();
            let mut prk: Vec<f64> = pairs[..pairs.len() - 1]
                .iter()
                .flat_map(|&t| [t, t])
                .collect();
            prk = prk[1..prk.len() - 1].to_vec();
            prk.reverse();
            let mut plms: Vec<f64> = ascending[..len - 3].to_vec();
            plms.reverse();
            self.prk_timesteps = prk.clone();
            self.timesteps = prk.into_iter().chain(plms).collect();
        }
        self.ets.clear();
        self.counter = 0;
        self.cur_sample = None;
        self.cur_model_output = None;
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
            anyhow::bail!("PNDM: call set_timesteps before step");
        }
        if self.counter < self.prk_timesteps.len() && !self.cfg.skip_prk_steps {
            self.step_prk(model_output, timestep, sample)
        } else {
            self.step_plms(model_output, timestep, sample)
        }
    }
}
