//! Seeded Gaussian noise and images ⇄ tensors, from our own RNG so that training does not depend on
//! libtorch's process-wide generator (other threads may draw from it) and resumes exactly.
use rand::Rng;
use tch::Tensor;

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

/// Images → `[B, 3, H, W]` f32 in [-1, 1] (all images must have the size of the first).
pub fn images_to_tensor(images: &[image::RgbImage]) -> Tensor {
    let (w, h) = images.first().map(|i| i.dimensions()).unwrap_or((0, 0));
    let mut data = Vec::with_capacity(images.len() * 3 * (w * h) as usize);
    for img in images {
        for c in 0..3 {
            data.extend(img.pixels().map(|p| p.0[c] as f32 / 127.5 - 1.0));
        }
    }
    Tensor::from_slice(&data).reshape([images.len() as i64, 3, h as i64, w as i64])
}

/// `[B, 3, H, W]` in [-1, 1] → images (clamped, rounded).
pub fn tensor_to_images(x: &Tensor) -> crate::error::Result<Vec<image::RgbImage>> {
    let size = x.size();
    if size.len() != 4 || size[1] != 3 {
        anyhow::bail!("expected images as [B, 3, H, W], got {size:?}");
    }
    let (b, h, w) = (size[0] as usize, size[2] as u32, size[3] as u32);
    let x = ((x
        .detach()
        .to_device(tch::Device::Cpu)
        .to_kind(tch::Kind::Float)
        + 1.0)
        * 127.5)
        .clamp(0.0, 255.0)
        .round()
        .permute([0, 2, 3, 1])
        .contiguous();
    let bytes: Vec<f32> = Vec::<f32>::try_from(x.reshape([-1]))?;
    let per = (h * w * 3) as usize;
    Ok((0..b)
        .map(|i| {
            let raw = bytes[i * per..(i + 1) * per]
                .iter()
                .map(|&v| v as u8)
                .collect();
            image::RgbImage::from_raw(w, h, raw).expect("buffer has w*h*3 bytes")
        })
        .collect())
}
