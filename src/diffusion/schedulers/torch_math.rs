//! f32 `sqrt`, `log` and `exp` computed by libtorch, as diffusers computes its 0-dim schedule tensors.
//!
//! libtorch's CPU kernels for these (MKL VML) are not always correctly rounded, so Rust's `f32::sqrt`
//! differs from `torch.sqrt` in the last bit for about a fifth of Stable Diffusion's sigmas. Going
//! through libtorch keeps schedules bit-identical to diffusers; the results do not depend on the tensor's
//! length, so scalar calls reproduce the vectorised ones.
use tch::Tensor;

fn unary(x: f32, op: fn(&Tensor) -> Tensor) -> f32 {
    op(&Tensor::from(x)).double_value(&[]) as f32
}

/// `torch.sqrt` (also what `x ** 0.5` dispatches to).
pub fn sqrt(x: f32) -> f32 {
    unary(x, Tensor::sqrt)
}

/// `torch.log`.
pub fn ln(x: f32) -> f32 {
    unary(x, Tensor::log)
}

/// `torch.exp`.
pub fn exp(x: f32) -> f32 {
    unary(x, Tensor::exp)
}

/// `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5` over the whole schedule.
pub fn sigmas_of(alphas_cumprod: &[f32]) -> Vec<f32> {
    let ac = Tensor::from_slice(alphas_cumprod);
    let one_minus: Tensor = 1.0 - &ac;
    let sigmas = (one_minus / &ac).sqrt();
    Vec::<f32>::try_from(&sigmas).expect("f32 sigmas")
}
