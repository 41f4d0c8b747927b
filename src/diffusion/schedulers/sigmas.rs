//! Sigma schedules of the k-diffusion-style schedulers (Euler, Euler ancestral, DPM-Solver).
//!
//! diffusers mixes float32 tensors and float64 numpy arrays here; each helper states which precision it
//! reproduces.
use super::config::SchedulerConfig;

/// `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5` (libtorch f32), ascending in t.
pub fn training_sigmas(alphas_cumprod: &[f32]) -> Vec<f32> {
    super::torch_math::sigmas_of(alphas_cumprod)
}

/// `np.log` of the f32 training sigmas (numpy keeps f32, with its own SIMD log).
pub fn log_sigmas(training_sigmas: &[f32]) -> Vec<f32> {
    training_sigmas
        .iter()
        .map(|&s| super::numpy::log_f32(s))
        .collect()
}

/// `_convert_to_karras` (rho = 7) in f64; `sigma_min`/`sigma_max` from the config win over the range of
/// `in_sigmas` (ordered from largest to smallest), as upstream.
pub fn karras(cfg: &SchedulerConfig, in_max: f64, in_min: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let sigma_min = cfg.sigma_min.unwrap_or(in_min);
    let sigma_max = cfg.sigma_max.unwrap_or(in_max);
    let min_inv_rho = sigma_min.powf(1.0 / rho);
    let max_inv_rho = sigma_max.powf(1.0 / rho);
    super::numpy::linspace(0.0, 1.0, n)
        .into_iter()
        .map(|ramp| (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)).powf(rho))
        .collect()
}

/// `_sigma_to_t`: the fractional training timestep whose log-sigma brackets `log(sigma)`, interpolated
/// linearly. `low - high` is an f32 difference and the rest f64, as numpy promotes it.
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // Index of the last log-sigma not above log(sigma) (0 when none), capped so `high` exists.
    let low_idx = log_sigmas
        .iter()
        .rposition(|&l| log_sigma - l as f64 >= 0.0)
        .unwrap_or(0)
        .min(log_sigmas.len() - 2);
    let high_idx = low_idx + 1;
    let low = log_sigmas[low_idx];
    let high = log_sigmas[high_idx];
    let w = ((low as f64 - log_sigma) / (low - high) as f64).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// The last sigma appended to a schedule: 0, or the smallest training sigma (f32 tensor arithmetic).
pub fn final_sigma(cfg: &SchedulerConfig, alphas_cumprod: &[f32]) -> f32 {
    match cfg.final_sigmas_type {
        super::config::FinalSigmasType::Zero => 0.0,
        super::config::FinalSigmasType::SigmaMin => {
            super::torch_math::sqrt((1.0 - alphas_cumprod[0]) / alphas_cumprod[0])
        }
    }
}
