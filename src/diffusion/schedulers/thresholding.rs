//! Dynamic thresholding of the predicted clean sample (Imagen; `_threshold_sample` of diffusers).
use tch::{Kind, Tensor};

use super::config::SchedulerConfig;

/// Clamp each sample to `±s` and divide by `s`, where `s` is the `dynamic_thresholding_ratio` quantile of
/// its absolute values, clamped to `[1, sample_max_value]`.
pub fn threshold_sample(sample: &Tensor, cfg: &SchedulerConfig) -> Tensor {
    let kind = sample.kind();
    let shape = sample.size();
    // Upcast as upstream: quantile and clamp need f32/f64 on CPU.
    let upcast = if matches!(kind, Kind::Float | Kind::Double) {
        sample.shallow_clone()
    } else {
        sample.to_kind(Kind::Float)
    };
    let flat = upcast.reshape([shape[0], -1]);
    let s = flat
        .abs()
        .quantile_scalar(cfg.dynamic_thresholding_ratio, 1, false, "linear")
        .clamp(1.0, cfg.sample_max_value)
        .unsqueeze(1);
    let clamped = flat.clamp_tensor(Some(-&s), Some(s.shallow_clone())) / &s;
    clamped.reshape(shape.as_slice()).to_kind(kind)
}
