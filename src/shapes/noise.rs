//! Seeded Gaussian noise and images ⇄ tensors, from our own RNG so that training does not depend on
//! libtorch's process-wide generator (other threads may draw from it) and resumes exactly.
use rand::Rng;
use tch::Tensor;

pub use crate::diffusion::image::{images_to_tensor, tensor_to_images};

/// `n` standard normals (Box–Muller, both outputs used).
pub fn normals(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
        let u2: f32 = rng.random();
        let r = (-2.0 * u1.ln()).sqrt();
        let a = 2.0 * std::f32::consts::PI * u2;
        out.push(r * a.cos());
        out.push(r * a.sin());
    }
    out.truncate(n);
    out
}

/// A `[shape]` f32 CPU tensor of standard normals.
pub fn randn(rng: &mut impl Rng, shape: &[i64]) -> Tensor {
    let n = shape.iter().product::<i64>().max(0) as usize;
    Tensor::from_slice(&normals(rng, n)).reshape(shape)
}
