//! FID and KID on Inception v3 pool3 features (2048-d), with the network pytorch-fid uses
//! (`InceptionV3([3])`, `use_fid_inception=True`: the TensorFlow FID graph ported to PyTorch) and a
//! local weight file the user supplies (`pt_inception-2015-12-05-6726825d.pth`, converted to
//! safetensors). See docs/fid-kid.md.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use clipdoor::eval::inception::{fid, kid, FidInception, KidOptions};
//! let net = FidInception::load(std::path::Path::new("pt_inception.safetensors"), tch::Device::Cpu)?;
//! let real: Vec<image::RgbImage> = vec![/* ... */];
//! let fake: Vec<image::RgbImage> = vec![/* ... */];
//! let (a, b) = (net.features(&real, 50)?, net.features(&fake, 50)?);
//! let fid_value = fid(&a, &b)?;
//! let (kid_mean, kid_std) = kid(&a, &b, &KidOptions { subset_size: 100, ..Default::default() })?;
//! # Ok(()) }
//! ```
pub mod metrics;
pub mod model;
pub mod weights;

use std::path::Path;
use tch::{nn::VarStore, Device, Kind, Tensor};

pub use metrics::{fid, kid, kid_on_subsets, kid_subsets, poly_mmd, KidOptions, KidSubset};
pub use model::{FIDInceptionV3, FEATURE_DIM, INPUT_SIZE};
pub use weights::{Layout, FID_WEIGHTS_URL};

use crate::error::Result;
use crate::input_bail;
use crate::models::init::without_random_init;

/// The FID Inception network with its weights, ready to turn images into pool3 features.
#[derive(Debug)]
pub struct FidInception {
    net: FIDInceptionV3,
    vs: VarStore,
    layout: Layout,
}

impl FidInception {
    /// Load the weights from `path` (`.safetensors`; a `.pth` only where libtorch can read it) onto
    /// `device`, in f32, eval mode. Missing file, foreign or reshaped weights: input errors.
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let mut vs = VarStore::new(device);
        let net = without_random_init(|| FIDInceptionV3::new(vs.root()));
        let layout = weights::load(&mut vs, path)?;
        vs.freeze();
        Ok(Self { net, vs, layout })
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Which key layout the weight file had.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// pool3 features [B, 2048] (on the model's device) of `x`: [B, 3, H, W] floats in 0..1.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match x.size().as_slice() {
            [_, 3, h, w] if *h > 0 && *w > 0 => {}
            s => input_bail!("FID Inception input must be [B, 3, H, W] in 0..1, got {s:?}"),
        }
        let x = x.to_device(self.device()).to_kind(Kind::Float);
        Ok(tch::no_grad(|| self.net.forward(&x)))
    }

    /// pool3 features [N, 2048] (f32, CPU) of `images`, `batch_size` at a time. Each image is taken as
    /// torchvision's `ToTensor` does (u8 / 255) and resized on its own to 299×299, so images of any
    /// size may be mixed; the result is what pytorch-fid computes for the same files.
    pub fn features(&self, images: &[image::RgbImage], batch_size: usize) -> Result<Tensor> {
        let batch_size = batch_size.max(1);
        let mut out = Vec::with_capacity(images.len().div_ceil(batch_size));
        for (chunk_no, chunk) in images.chunks(batch_size).enumerate() {
            let mut xs = Vec::with_capacity(chunk.len());
            for (i, img) in chunk.iter().enumerate() {
                let (w, h) = img.dimensions();
                if w == 0 || h == 0 {
                    input_bail!(
                        "image {} is empty ({w}×{h}): FID needs real images",
                        chunk_no * batch_size + i
                    );
                }
                xs.push(image_tensor(img, self.device()));
            }
            let feats = self.forward(&Tensor::cat(&xs, 0))?;
            out.push(feats.to_device(Device::Cpu));
        }
        if out.is_empty() {
            return Ok(Tensor::zeros([0, FEATURE_DIM], (Kind::Float, Device::Cpu)));
        }
        Ok(Tensor::cat(&out, 0))
    }
}

/// [1, 3, 299, 299] f32 in 0..1: `ToTensor` (u8 → f32, / 255) then pytorch-fid's bilinear resize.
pub fn image_tensor(img: &image::RgbImage, device: Device) -> Tensor {
    let (w, h) = img.dimensions();
    let x = Tensor::from_slice(img.as_raw())
        .view([h as i64, w as i64, 3])
        .permute([2, 0, 1])
        .unsqueeze(0)
        .to_device(device)
        .to_kind(Kind::Float)
        / 255.0;
    x.upsample_bilinear2d([INPUT_SIZE, INPUT_SIZE], false, None, None)
}
