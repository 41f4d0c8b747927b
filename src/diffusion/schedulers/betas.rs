//! The training noise schedule: betas and their cumulative alpha products.
//!
//! Computed with libtorch float32 ops, the same ones diffusers runs (`torch.linspace`, `torch.cumprod`),
//! so `alphas_cumprod` is bit-identical to the Python schedulers'.
use tch::{Device, Kind, Tensor};

use super::config::{BetaSchedule, SchedulerConfig};
use crate::error::Result;
use crate::input_bail;

/// `betas_for_alpha_bar` with the cosine `alpha_bar` of diffusers, in f64 throughout (`i / n` is a true
/// division; the reference Rust ports divide integers there and get a wrong schedule), capped at
/// `max_beta`, then rounded to f32 as `torch.tensor(betas, dtype=float32)` does.
pub fn betas_for_alpha_bar(num_diffusion_timesteps: usize, max_beta: f64) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    let n = num_diffusion_timesteps as f64;
    (0..num_diffusion_timesteps)
        .map(|i| {
            let t1 = i as f64 / n;
            let t2 = (i + 1) as f64 / n;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta) as f32
        })
        .collect()
}

/// The betas of a config, as an f32 CPU tensor.
fn betas(cfg: &SchedulerConfig) -> Result<Tensor> {
    let n = cfg.num_train_timesteps;
    if n < 2 {
        input_bail!("`num_train_timesteps` must be at least 2, got {n}");
    }
    let options = (Kind::Float, Device::Cpu);
    if let Some(trained) = &cfg.trained_betas {
        if trained.len() != n {
            input_bail!(
                "`trained_betas` has {} values but `num_train_timesteps` is {n}",
                trained.len()
            );
        }
        let values: Vec<f32> = trained.iter().map(|&b| b as f32).collect();
        return Ok(Tensor::from_slice(&values));
    }
    Ok(match cfg.beta_schedule {
        BetaSchedule::Linear => Tensor::linspace(cfg.beta_start, cfg.beta_end, n as i64, options),
        // Python's `beta_start**0.5` is a libm pow, not a sqrt.
        BetaSchedule::ScaledLinear => Tensor::linspace(
            cfg.beta_start.powf(0.5),
            cfg.beta_end.powf(0.5),
            n as i64,
            options,
        )
        .pow_tensor_scalar(2),
        BetaSchedule::SquaredcosCapV2 => Tensor::from_slice(&betas_for_alpha_bar(n, 0.999)),
    })
}

/// `rescale_zero_terminal_snr` of diffusers (Lin et al. 2023, Algorithm 1), op for op.
fn rescale_zero_terminal_snr(betas: &Tensor) -> Tensor {
    let alphas: Tensor = 1.0 - betas;
    let alphas_cumprod = alphas.cumprod(0, Kind::Float);
    let sqrt = alphas_cumprod.sqrt();
    let first = sqrt.get(0).copy();
    let last = sqrt.get(-1).copy();
    let shifted = &sqrt - &last;
    let scaled = shifted * (&first / (&first - &last));
    let alphas_bar = scaled.pow_tensor_scalar(2);
    let n = alphas_bar.size()[0];
    let ratios = alphas_bar.narrow(0, 1, n - 1) / alphas_bar.narrow(0, 0, n - 1);
    let alphas = Tensor::cat(&[alphas_bar.narrow(0, 0, 1), ratios], 0);
    1.0 - alphas
}

/// Which schedulers apply `rescale_betas_zero_snr` and how (diffusers differs per class).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ZeroSnr {
    /// PNDM has no such option.
    Ignored,
    /// DDIM rescales the betas only.
    Rescale,
    /// Euler, Euler ancestral and DPM-Solver also set the last `alphas_cumprod` to 2^-24 so its sigma
    /// stays finite.
    RescaleAndClampLast,
}

/// `alphas_cumprod` of the training schedule, as f32 values.
pub fn alphas_cumprod(cfg: &SchedulerConfig, zero_snr: ZeroSnr) -> Result<Vec<f32>> {
    let mut betas = betas(cfg)?;
    let rescale = cfg.rescale_betas_zero_snr && zero_snr != ZeroSnr::Ignored;
    if rescale {
        betas = rescale_zero_terminal_snr(&betas);
    }
    let alphas: Tensor = 1.0 - betas;
    let mut values = Vec::<f32>::try_from(&alphas.cumprod(0, Kind::Float))?;
    if rescale && zero_snr == ZeroSnr::RescaleAndClampLast {
        *values.last_mut().expect("at least two timesteps") = 2f32.powi(-24);
    }
    if values
        .iter()
        .any(|a| !(a.is_finite() && *a >= 0.0 && *a <= 1.0))
    {
        input_bail!("the beta schedule gives alphas_cumprod outside [0, 1]: check beta_start, beta_end and trained_betas");
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_betas_use_float_division() {
        // With integer division t1 = t2 = 0 for every step but the last, and every beta would be 0.
        let b = betas_for_alpha_bar(1000, 0.999);
        assert!(b[0] > 0.0 && b[0] < 1e-4, "{}", b[0]);
        assert!(b.windows(2).take(900).all(|w| w[1] >= w[0]));
        assert_eq!(b[999], 0.999);
    }
}
