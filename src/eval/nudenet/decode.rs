//! Image decoding the way `cv2.imread(path)` (IMREAD_COLOR) does it, which is what NudeNet reads
//! files with: 8-bit colour, alpha dropped (not composited), 16-bit samples cut to their high byte,
//! grey replicated, EXIF orientation applied.
use std::path::Path;

use anyhow::Context;
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use crate::error::Result;

/// Decode an image file into 8-bit RGB exactly as `cv2.imread` would (channel order aside).
pub fn read_rgb_like_cv2(path: &Path) -> Result<RgbImage> {
    if !path.is_file() {
        crate::input_bail!("image {} does not exist or is not a file", path.display());
    }
    let not_an_image = |e: &dyn std::fmt::Display| {
        crate::input_err!(
            "cannot decode {} as an image ({e}); NudeNet needs a PNG or JPEG file",
            path.display()
        )
    };
    let reader = ImageReader::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("reading {}", path.display()))?;
    let mut decoder = reader.into_decoder().map_err(|e| not_an_image(&e))?;
    let orientation = decoder.orientation().map_err(|e| not_an_image(&e))?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| not_an_image(&e))?;
    img.apply_orientation(orientation);
    Ok(to_rgb8_like_cv2(img))
}

/// 8-bit RGB conversion matching OpenCV's libpng settings (`png_set_strip_16`, `png_set_strip_alpha`,
/// `png_set_gray_to_rgb`); the `image` crate's own `to_rgb8` rounds 16-bit samples instead.
pub fn to_rgb8_like_cv2(img: DynamicImage) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    let from_fn =
        |f: &dyn Fn(u32, u32) -> [u8; 3]| RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)));
    let hi = |v: u16| (v >> 8) as u8;
    match img {
        DynamicImage::ImageRgb8(i) => i,
        DynamicImage::ImageRgba8(i) => from_fn(&|x, y| {
            let p = i.get_pixel(x, y).0;
            [p[0], p[1], p[2]]
        }),
        DynamicImage::ImageLuma8(i) => from_fn(&|x, y| [i.get_pixel(x, y).0[0]; 3]),
        DynamicImage::ImageLumaA8(i) => from_fn(&|x, y| [i.get_pixel(x, y).0[0]; 3]),
        DynamicImage::ImageRgb16(i) => from_fn(&|x, y| i.get_pixel(x, y).0.map(hi)),
        DynamicImage::ImageRgba16(i) => from_fn(&|x, y| {
            let p = i.get_pixel(x, y).0;
            [hi(p[0]), hi(p[1]), hi(p[2])]
        }),
        DynamicImage::ImageLuma16(i) => from_fn(&|x, y| [hi(i.get_pixel(x, y).0[0]); 3]),
        DynamicImage::ImageLumaA16(i) => from_fn(&|x, y| [hi(i.get_pixel(x, y).0[0]); 3]),
        other => other.to_rgb8(),
    }
}
