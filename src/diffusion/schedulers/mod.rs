//! Noise schedulers behind one trait, each a port of the diffusers class of the same name that
//! reproduces its schedule and update rule (f32 tensor arithmetic, same op order).
//!
//! Usage mirrors the diffusers pipeline loop:
//! ```text
//! scheduler.set_timesteps(steps)?;
//! latents = noise * scheduler.init_noise_sigma();
//! for &t in scheduler.timesteps() {
//!     let input = scheduler.scale_model_input(&latents, t)?;
//!     let model_output = unet(input, t);
//!     let noise = scheduler.needs_noise().then(|| generator.randn(...));   // see crate::diffusion::rng
//!     latents = scheduler.step(&model_output, t, &latents, noise.as_ref())?;
//! }
//! ```
use tch::{Kind, Tensor};

use crate::error::Result;
use crate::input_bail;
use crate::settings::{Choice, SchedulerKind};

pub mod betas;
pub mod config;
pub mod ddim;
pub mod dpm_solver;
pub mod euler;
pub mod euler_ancestral;
mod numpy;
pub mod pndm;
mod sigmas;
mod thresholding;
mod timesteps;
mod torch_math;

pub use betas::betas_for_alpha_bar;
pub use config::{BetaSchedule, FinalSigmasType, PredictionType, SchedulerConfig, TimestepSpacing};

/// One sampler of the reverse diffusion process.
pub trait Scheduler: Send {
    /// The `--scheduler` name (`ddim`, `pndm`, `euler`, `euler-a`, `dpm++`).
    fn name(&self) -> &'static str;

    /// Build the inference schedule for `num_inference_steps` and reset the sampler's state.
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()>;

    /// The timesteps to evaluate the model at, in order (integers for DDIM, PNDM and DPM-Solver,
    /// possibly fractional for Euler). PNDM has one more than the step count, as upstream.
    fn timesteps(&self) -> &[f64];

    /// The noise levels of sigma-parameterised schedulers (one more than the timesteps), else `None`.
    fn sigmas(&self) -> Option<&[f32]> {
        None
    }

    /// Scale of the initial Gaussian latents.
    fn init_noise_sigma(&self) -> f64;

    /// The model's input at `timestep` (Euler divides by `sqrt(sigma² + 1)`; others pass through).
    fn scale_model_input(&self, sample: &Tensor, timestep: f64) -> Result<Tensor>;

    /// One reverse step from `timestep`; `noise` is required when [`Scheduler::needs_noise`] is true.
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor>;

    /// Whether `step` consumes fresh Gaussian noise, which the caller draws just before the step with the
    /// shape of the model output and the kind [`Scheduler::noise_kind`] (that is where diffusers draws it
    /// from the pipeline's generator).
    fn needs_noise(&self) -> bool {
        false
    }

    /// The dtype the step noise is drawn in, given the model output's.
    fn noise_kind(&self, model_output_kind: Kind) -> Kind {
        model_output_kind
    }

    /// ᾱ_t of the training schedule for t in `0..num_train_timesteps` (diffusers' `alphas_cumprod`,
    /// after `rescale_betas_zero_snr` where the class applies it), f32 as upstream.
    fn alphas_cumprod(&self) -> &[f32];

    /// diffusers' `add_noise`: the forward process at `timesteps` (`[B]`, one per item of `original`).
    ///
    /// The default is the DDPM-family one (DDPM, DDIM, PNDM): `√ᾱ_t · original + √(1 − ᾱ_t) · noise`
    /// at integer training timesteps. The sigma-parameterised schedulers (Euler, Euler ancestral,
    /// DPM-Solver) override it as upstream does, in their own space on their current schedule.
    fn add_noise(&self, original: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        ddpm_add_noise(self.alphas_cumprod(), original, noise, timesteps)
    }

    /// The velocity target of v-prediction (Salimans & Ho 2022), as diffusers' `DDIMScheduler` /
    /// `DDPMScheduler.get_velocity` computes it: `√ᾱ_t · noise − √(1 − ᾱ_t) · sample` at integer
    /// training timesteps `[B]` (the same for every class here: it depends on the training schedule only).
    fn get_velocity(&self, sample: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        let (sqrt_alpha, sqrt_one_minus) =
            ddpm_coefficients(self.alphas_cumprod(), sample, noise, timesteps)?;
        Ok(sqrt_alpha * noise - sqrt_one_minus * sample)
    }
}

/// `(√ᾱ_t, √(1 − ᾱ_t))` at integer training `timesteps`, shaped `[B, 1, …]` to broadcast against
/// `sample`, in its kind and on its device (upstream's `alphas_cumprod[timesteps] ** 0.5` and
/// `(1 - alphas_cumprod[timesteps]) ** 0.5`; torch computes `** 0.5` as `sqrt`).
fn ddpm_coefficients(
    alphas_cumprod: &[f32],
    sample: &Tensor,
    noise: &Tensor,
    timesteps: &Tensor,
) -> Result<(Tensor, Tensor)> {
    check_noise_args(sample, noise, timesteps)?;
    let n = alphas_cumprod.len();
    let t = Vec::<f64>::try_from(&timesteps.to_device(tch::Device::Cpu).to_kind(Kind::Double))?;
    let index = t
        .iter()
        .map(|&t| train_index(t, n).map(|i| i as i64))
        .collect::<Result<Vec<i64>>>()?;
    let acp = Tensor::from_slice(alphas_cumprod)
        .to_kind(sample.kind())
        .index_select(0, &Tensor::from_slice(&index))
        .to_device(sample.device());
    let shape = broadcast_shape(t.len(), sample.dim());
    let one_minus: Tensor = 1.0 - &acp;
    Ok((
        acp.sqrt().reshape(shape.as_slice()),
        one_minus.sqrt().reshape(shape.as_slice()),
    ))
}

/// `[B, 1, 1, …]` with as many dimensions as the sample.
fn broadcast_shape(batch: usize, dims: usize) -> Vec<i64> {
    let mut shape = vec![1i64; dims.max(1)];
    shape[0] = batch as i64;
    shape
}

fn check_noise_args(sample: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<()> {
    if sample.size() != noise.size() {
        input_bail!(
            "add_noise: the noise has shape {:?}, the sample {:?}",
            noise.size(),
            sample.size()
        );
    }
    let b = sample.size().first().copied().unwrap_or(0);
    if timesteps.dim() != 1 || timesteps.size()[0] != b {
        input_bail!(
            "add_noise: expected one timestep per item ([{b}]), got timesteps of shape {:?}",
            timesteps.size()
        );
    }
    Ok(())
}

/// The DDPM-family `add_noise`: `√ᾱ_t · original + √(1 − ᾱ_t) · noise`.
pub(crate) fn ddpm_add_noise(
    alphas_cumprod: &[f32],
    original: &Tensor,
    noise: &Tensor,
    timesteps: &Tensor,
) -> Result<Tensor> {
    let (sqrt_alpha, sqrt_one_minus) =
        ddpm_coefficients(alphas_cumprod, original, noise, timesteps)?;
    Ok(sqrt_alpha * original + sqrt_one_minus * noise)
}

/// The sigmas of the current schedule at `timesteps` (`[B]`, each one of the schedule's timesteps,
/// found as upstream's `index_for_timestep`: the second match when it repeats), shaped `[B, 1, …]`
/// in the sample's kind and on its device.
pub(crate) fn schedule_sigmas(
    schedule: &[f64],
    sigmas: &[f32],
    sample: &Tensor,
    noise: &Tensor,
    timesteps: &Tensor,
    who: &str,
) -> Result<Tensor> {
    check_noise_args(sample, noise, timesteps)?;
    let t = Vec::<f64>::try_from(&timesteps.to_device(tch::Device::Cpu).to_kind(Kind::Double))?;
    let picked = t
        .iter()
        .map(|&t| {
            timesteps::index_of(schedule, t)
                .and_then(|i| sigmas.get(i).copied())
                .ok_or_else(|| {
                    anyhow::anyhow!("{who}: timestep {t} is not in the schedule; pass one of scheduler.timesteps()")
                })
        })
        .collect::<Result<Vec<f32>>>()?;
    Ok(Tensor::from_slice(&picked)
        .to_kind(sample.kind())
        .to_device(sample.device())
        .reshape(broadcast_shape(t.len(), sample.dim()).as_slice()))
}

/// The Euler family's `add_noise`: `original + noise · σ`, σ of the current schedule at each
/// timestep.
pub(crate) fn add_sigma_noise(
    schedule: &[f64],
    sigmas: &[f32],
    original: &Tensor,
    noise: &Tensor,
    timesteps: &Tensor,
    who: &str,
) -> Result<Tensor> {
    let sigma = schedule_sigmas(schedule, sigmas, original, noise, timesteps, who)?;
    Ok(original + noise * sigma)
}

fn known_names() -> String {
    SchedulerKind::NAMES.join(", ")
}

/// The scheduler `kind` stands for, or with `None` the one of the config's own `_class_name`
/// (an input error when the config names none, or a class that is not ported).
pub fn resolve_scheduler(
    kind: Option<SchedulerKind>,
    cfg: &SchedulerConfig,
) -> Result<SchedulerKind> {
    if let Some(k) = kind {
        return Ok(k);
    }
    let Some(class) = cfg.class_name.as_deref() else {
        input_bail!(
            "the scheduler config has no `_class_name`: pass --scheduler with one of {}",
            known_names()
        );
    };
    match SchedulerKind::ALL.into_iter().find(|k| k.class_name() == class) {
        Some(k) => Ok(k),
        None => input_bail!(
            "the pipeline's scheduler `{class}` is not implemented: pass --scheduler with one of {}",
            known_names()
        ),
    }
}

/// The scheduler `kind` (a `--scheduler` value), or with `None` the config's own `_class_name`,
/// configured from `cfg` the way diffusers' `XScheduler.from_config(cfg)` is.
pub fn scheduler_by_name(
    kind: Option<SchedulerKind>,
    cfg: &SchedulerConfig,
) -> Result<Box<dyn Scheduler>> {
    Ok(match resolve_scheduler(kind, cfg)? {
        SchedulerKind::Ddim => Box::new(ddim::DdimScheduler::new(cfg)?),
        SchedulerKind::Pndm => Box::new(pndm::PndmScheduler::new(cfg)?),
        SchedulerKind::Euler => Box::new(euler::EulerDiscreteScheduler::new(cfg)?),
        SchedulerKind::EulerAncestral => {
            Box::new(euler_ancestral::EulerAncestralDiscreteScheduler::new(cfg)?)
        }
        SchedulerKind::DpmPlusPlus => Box::new(dpm_solver::DpmSolverMultistepScheduler::new(cfg)?),
    })
}

/// A timestep given to DDIM/PNDM as an index into `alphas_cumprod`.
pub(crate) fn train_index(timestep: f64, num_train_timesteps: usize) -> Result<usize> {
    if timestep.fract() != 0.0 || timestep < 0.0 || timestep >= num_train_timesteps as f64 {
        anyhow::bail!("timestep {timestep} is not an integer in 0..{num_train_timesteps}: pass one of scheduler.timesteps()");
    }
    Ok(timestep as usize)
}

/// The step noise a stochastic scheduler was promised.
pub(crate) fn required_noise<'a>(
    noise: Option<&'a Tensor>,
    model_output: &Tensor,
    who: &str,
) -> Result<&'a Tensor> {
    let noise = noise.ok_or_else(|| {
        anyhow::anyhow!("{who} needs step noise: draw it when needs_noise() is true")
    })?;
    if noise.size() != model_output.size() {
        anyhow::bail!(
            "{who}: step noise has shape {:?}, the model output {:?}",
            noise.size(),
            model_output.size()
        );
    }
    Ok(noise)
}
