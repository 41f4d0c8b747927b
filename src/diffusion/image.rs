//! Images and tensors: the pipeline's 0..1 float output to 8-bit RGB ([`to_rgb8`]), a pixel-space
//! model's [-1, 1] tensors to and from 8-bit RGB ([`tensor_to_images`], [`images_to_tensor`]: the
//! shapes world's convention), and PNG bytes. The one image module: the pipeline, image folders,
//! reports and the shapes world all use it.
use anyhow::Context;
use tch::{Kind, Tensor};

use crate::error::Result;

/// `[N, 3, H, W]` in 0..1 -> RGB images, rounded like diffusers' `numpy_to_pil`
/// (`(x * 255).round().astype("uint8")`).
pub fn to_rgb8(images: &Tensor) -> Result<Vec<image::RgbImage>> {
    let s = images.size();
    anyhow::ensure!(
        s.len() == 4 && s[1] == 3,
        "expected images [N, 3, H, W], got {s:?}"
    );
    let (h, w) = (s[2] as u32, s[3] as u32);
    let bytes = (images.to_kind(Kind::Float) * 255.0)
        .round()
        .clamp(0.0, 255.0)
        .to_kind(Kind::Uint8)
        .permute([0, 2, 3, 1])
        .contiguous();
    (0..s[0])
        .map(|i| {
            let v: Vec<u8> = Vec::<u8>::try_from(bytes.get(i).flatten(0, -1))?;
            image::RgbImage::from_raw(w, h, v)
                .ok_or_else(|| anyhow::anyhow!("image buffer of the wrong size"))
        })
        .collect()
}

/// PNG file bytes of one image.
pub fn png_bytes(img: &image::RgbImage) -> Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .context("encoding a PNG")?;
    Ok(out.into_inner())
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

/// `[B, 3, H, W]` in [-1, 1] → images: `(x + 1) · 127.5`, clamped, then rounded (the shapes world's
/// reference sampler; [`to_rgb8`] keeps diffusers' own arithmetic for the pipeline).
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

/// The image files of `paths`: each folder's PNG/JPEG/WebP/BMP files in name order, or files as
/// given (an input error names a folder without images or a path that is not there).
pub fn image_files(paths: &[std::path::PathBuf]) -> crate::error::Result<Vec<std::path::PathBuf>> {
    let is_image = |p: &std::path::Path| {
        p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
            ["png", "jpg", "jpeg", "webp", "bmp"].contains(&e.to_lowercase().as_str())
        })
    };
    let mut out = vec![];
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(p)
                .map_err(|e| crate::input_err!("cannot read {}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| is_image(f))
                .collect();
            files.sort();
            if files.is_empty() {
                crate::input_bail!(
                    "{} holds no images (.png, .jpg, .jpeg, .webp, .bmp)",
                    p.display()
                );
            }
            out.extend(files);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            crate::input_bail!(
                "{} does not exist: give a folder of images or image files",
                p.display()
            );
        }
    }
    Ok(out)
}

/// Read `files` as RGB images (an input error names a file that is not one).
pub fn read_images(files: &[std::path::PathBuf]) -> crate::error::Result<Vec<image::RgbImage>> {
    files
        .iter()
        .map(|f| {
            image::open(f)
                .map(|i| i.to_rgb8())
                .map_err(|e| crate::input_err!("{}: not a readable image ({e})", f.display()))
        })
        .collect()
}
