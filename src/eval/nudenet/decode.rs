//! Image decoding the way `cv2.imread(path)` (IMREAD_COLOR) does it, which is what NudeNet reads
//! files with: 8-bit colour, alpha dropped (not composited), 16-bit samples cut to their high byte,
//! grey replicated, EXIF orientation applied.
//!
//! JPEG pixels come from libjpeg-turbo's decoder (the `mozjpeg` crate builds it from source; OpenCV
//! bundles libjpeg-turbo too): accurate integer IDCT and "fancy" chroma upsampling give the same bytes
//! as `cv2.imread`. The `image` crate's pure-Rust JPEG decoder differs by up to 4 levels on ~10% of
//! the bytes, which moves NudeNet scores by a few hundredths.
use std::path::Path;

use anyhow::Context;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

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
    let is_jpeg = reader.format() == Some(ImageFormat::Jpeg);
    let mut decoder = reader.into_decoder().map_err(|e| not_an_image(&e))?;
    let orientation = decoder.orientation().map_err(|e| not_an_image(&e))?;
    let libjpeg = if is_jpeg {
        decode_jpeg_with_libjpeg_turbo(path)
    } else {
        None
    };
    let mut img = match libjpeg {
        Some(rgb) => DynamicImage::ImageRgb8(rgb),
        None => DynamicImage::from_decoder(decoder).map_err(|e| not_an_image(&e))?,
    };
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

/// JPEG to RGB through libjpeg-turbo with its defaults (JDCT_ISLOW, fancy upsampling), as OpenCV reads
/// JPEGs. `None` when libjpeg cannot give RGB (e.g. CMYK files): the caller falls back to the `image`
/// crate. libjpeg reports errors by unwinding (the `mozjpeg` crate's error manager), hence the catch.
fn decode_jpeg_with_libjpeg_turbo(path: &Path) -> Option<RgbImage> {
    let bytes = std::fs::read(path).ok()?;
    std::panic::catch_unwind(|| -> Option<RgbImage> {
        let mut started = mozjpeg::Decompress::new_mem(&bytes).ok()?.rgb().ok()?;
        let (w, h) = (started.width() as u32, started.height() as u32);
        let pixels: Vec<[u8; 3]> = started.read_scanlines().ok()?;
        started.finish().ok()?;
        RgbImage::from_raw(w, h, pixels.into_iter().flatten().collect())
    })
    .ok()
    .flatten()
}
