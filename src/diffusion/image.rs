//! Images out of the pipeline: 0..1 float tensors to 8-bit RGB and PNG bytes. The one place images
//! are encoded: the pipeline, image folders, reports and the shapes world all use it.
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
