//! transformers' `CLIPImageProcessor` (PIL backend) re-implemented bit for bit: convert to RGB
//! (transparency composited onto white, as `transformers.image_transforms.convert_to_rgb`), resize the
//! shortest edge with Pillow's `Image.resize(..., BICUBIC)` on the uint8 image (separable convolution,
//! Pillow's a = −0.5 cubic kernel widened by the downscale factor, 22-bit fixed-point coefficients,
//! uint8 rounding and clipping between the horizontal and vertical pass), centre crop (zero padding when
//! the image is smaller than the crop), rescale by 1/255 in f64 then cast to f32, normalise in f32.
use image::{DynamicImage, RgbImage};
use std::path::Path;
use tch::Tensor;

use crate::error::Result;
use crate::{input_bail, input_err};

/// The OpenAI CLIP normalisation (`transformers.image_utils.OPENAI_CLIP_MEAN` / `_STD`).
pub const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
pub const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// How the resize step picks the output size (`size` in `preprocessor_config.json`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ResizeTo {
    /// `{"shortest_edge": n}` (or a bare integer): short side to n, long side `int(n * long / short)`.
    ShortestEdge(u32),
    /// `{"height": h, "width": w}`.
    Exact { height: u32, width: u32 },
}

/// Pillow resampling filters this processor implements (`resample` in `preprocessor_config.json`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resample {
    /// PIL 2: triangle filter, support 1.
    Bilinear,
    /// PIL 3: cubic convolution a = −0.5, support 2 (CLIP's).
    Bicubic,
}

/// `CLIPImageProcessor` settings (field names follow `preprocessor_config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct CLIPImageProcessor {
    /// `do_convert_rgb`: grayscale and images with transparency become RGB as transformers does it.
    pub do_convert_rgb: bool,
    /// `do_resize`.
    pub do_resize: bool,
    /// `size`.
    pub size: ResizeTo,
    /// `resample` (PIL filter id: 2 bilinear, 3 bicubic).
    pub resample: Resample,
    /// `do_center_crop`.
    pub do_center_crop: bool,
    /// `crop_size` as (height, width).
    pub crop_size: (u32, u32),
    /// `do_rescale`.
    pub do_rescale: bool,
    /// `rescale_factor` (1/255).
    pub rescale_factor: f64,
    /// `do_normalize`.
    pub do_normalize: bool,
    /// `image_mean` (per channel).
    pub image_mean: [f64; 3],
    /// `image_std` (per channel).
    pub image_std: [f64; 3],
}

impl Default for CLIPImageProcessor {
    /// `openai/clip-vit-large-patch14`'s `preprocessor_config.json` (and transformers' defaults).
    fn default() -> Self {
        Self::with_size(224)
    }
}

fn size_of(
    v: &serde_json::Value,
    key: &str,
) -> std::result::Result<Option<(Option<u32>, Option<u32>, Option<u32>)>, String> {
    let Some(s) = v.get(key) else { return Ok(None) };
    let int = |x: &serde_json::Value, k: &str| -> std::result::Result<Option<u32>, String> {
        match x.get(k) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(n) => n
                .as_u64()
                .filter(|&n| n > 0 && n < 1 << 16)
                .map(|n| Some(n as u32))
                .ok_or_else(|| format!("`{key}.{k}` must be a positive integer, got {n}")),
        }
    };
    if let Some(n) = s.as_u64() {
        if n == 0 || n >= 1 << 16 {
            return Err(format!("`{key}` must be a positive integer, got {n}"));
        }
        return Ok(Some((Some(n as u32), None, None)));
    }
    if !s.is_object() {
        return Err(format!("`{key}` must be an integer or an object, got {s}"));
    }
    Ok(Some((
        int(s, "shortest_edge")?,
        int(s, "height")?,
        int(s, "width")?,
    )))
}

impl CLIPImageProcessor {
    /// The OpenAI CLIP processor for square inputs of `side` (224; 336 for ViT-L/14-336).
    pub fn with_size(side: u32) -> Self {
        Self {
            do_convert_rgb: true,
            do_resize: true,
            size: ResizeTo::ShortestEdge(side),
            resample: Resample::Bicubic,
            do_center_crop: true,
            crop_size: (side, side),
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: OPENAI_CLIP_MEAN,
            image_std: OPENAI_CLIP_STD,
        }
    }

    /// Read `preprocessor_config.json`; keys it lacks take transformers' `CLIPImageProcessor` defaults.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| input_err!("cannot read {}: {e}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            input_err!(
                "{} is not valid JSON ({e}): fix or rewrite the file",
                path.display()
            )
        })?;
        Self::from_json(&v).map_err(|e| input_err!("{}: {e}", path.display()))
    }

    /// `dir/preprocessor_config.json` when present, else the defaults.
    pub fn load_or_default(dir: &Path) -> Result<Self> {
        let p = dir.join("preprocessor_config.json");
        if p.exists() {
            Self::load(&p)
        } else {
            Ok(Self::default())
        }
    }

    pub fn from_json(v: &serde_json::Value) -> std::result::Result<Self, String> {
        let mut p = Self::default();
        let flag = |k: &str, d: bool| -> std::result::Result<bool, String> {
            match v.get(k) {
                None | Some(serde_json::Value::Null) => Ok(d),
                Some(b) => b
                    .as_bool()
                    .ok_or_else(|| format!("`{k}` must be true or false, got {b}")),
            }
        };
        p.do_convert_rgb = flag("do_convert_rgb", true)?;
        p.do_resize = flag("do_resize", true)?;
        p.do_center_crop = flag("do_center_crop", true)?;
        p.do_rescale = flag("do_rescale", true)?;
        p.do_normalize = flag("do_normalize", true)?;
        if let Some((short, h, w)) = size_of(v, "size")? {
            p.size = match (short, h, w) {
                (Some(s), _, _) => ResizeTo::ShortestEdge(s),
                (None, Some(height), Some(width)) => ResizeTo::Exact { height, width },
                _ => return Err("`size` needs `shortest_edge`, or `height` and `width`".into()),
            };
        }
        if let Some((short, h, w)) = size_of(v, "crop_size")? {
            p.crop_size = match (short, h, w) {
                (_, Some(h), Some(w)) => (h, w),
                (Some(s), None, None) => (s, s),
                _ => return Err("`crop_size` needs `height` and `width`".into()),
            };
        }
        match v.get("resample") {
            None | Some(serde_json::Value::Null) => {}
            Some(r) => {
                p.resample = match r.as_u64() {
                    Some(2) => Resample::Bilinear,
                    Some(3) => Resample::Bicubic,
                    _ => return Err(format!("`resample` {r} is not supported: clipdoor implements PIL's BILINEAR (2) and BICUBIC (3, CLIP's)")),
                }
            }
        }
        if let Some(f) = v.get("rescale_factor").filter(|f| !f.is_null()) {
            p.rescale_factor = f
                .as_f64()
                .filter(|f| *f > 0.0)
                .ok_or_else(|| format!("`rescale_factor` must be a positive number, got {f}"))?;
        }
        let triple = |k: &str, d: [f64; 3]| -> std::result::Result<[f64; 3], String> {
            match v.get(k) {
                None | Some(serde_json::Value::Null) => Ok(d),
                Some(serde_json::Value::Array(a))
                    if a.len() == 3 && a.iter().all(|x| x.is_number()) =>
                {
                    Ok([
                        a[0].as_f64().unwrap(),
                        a[1].as_f64().unwrap(),
                        a[2].as_f64().unwrap(),
                    ])
                }
                Some(x) => x
                    .as_f64()
                    .map(|f| [f; 3])
                    .ok_or_else(|| format!("`{k}` must be 3 numbers (RGB), got {x}")),
            }
        };
        p.image_mean = triple("image_mean", OPENAI_CLIP_MEAN)?;
        p.image_std = triple("image_std", OPENAI_CLIP_STD)?;
        if p.image_std.contains(&0.0) {
            return Err("`image_std` has a zero entry".into());
        }
        Ok(p)
    }

    /// Check that the output size is the model's `image_size` (`file` names the config in the error).
    pub fn check_fits(&self, image_size: i64, file: &Path) -> Result<()> {
        let (h, w) = self.output_hw_fixed().unwrap_or((0, 0));
        if (h as i64, w as i64) != (image_size, image_size) {
            input_bail!(
                "{}: the image processor produces {}x{} pixels but the vision model takes {image_size}x{image_size}: the preprocessor config does not belong to this model",
                file.display(), h, w
            );
        }
        Ok(())
    }

    /// The output size when it does not depend on the input (centre crop or exact resize).
    pub fn output_hw_fixed(&self) -> Option<(u32, u32)> {
        if self.do_center_crop {
            Some(self.crop_size)
        } else if let (true, ResizeTo::Exact { height, width }) = (self.do_resize, self.size) {
            Some((height, width))
        } else {
            None
        }
    }

    /// The uint8 RGB image after conversion, resize and crop (before rescale/normalise).
    pub fn resize_and_crop(&self, img: &DynamicImage) -> Result<RgbImage> {
        let mut rgb = to_rgb8(img, self.do_convert_rgb)?;
        if self.do_resize {
            let (w, h) = rgb.dimensions();
            let (oh, ow) = match self.size {
                ResizeTo::Exact { height, width } => (height, width),
                ResizeTo::ShortestEdge(s) => shortest_edge_size(h, w, s),
            };
            rgb = pil_resize(&rgb, ow, oh, self.resample);
        }
        if self.do_center_crop {
            rgb = center_crop(&rgb, self.crop_size.0, self.crop_size.1);
        }
        Ok(rgb)
    }

    /// `pixel_values` of one image: [3, H, W] f32 on the CPU.
    pub fn preprocess(&self, img: &DynamicImage) -> Result<Tensor> {
        let rgb = self.resize_and_crop(img)?;
        let (w, h) = rgb.dimensions();
        let (w, h) = (w as usize, h as usize);
        let raw = rgb.as_raw();
        let mut out = vec![0f32; 3 * h * w];
        for c in 0..3 {
            let mean = self.image_mean[c] as f32;
            let std = self.image_std[c] as f32;
            for i in 0..h * w {
                let u = raw[i * 3 + c];
                // transformers: image.astype(float64) * scale, cast to float32; then (x - mean) / std in f32.
                let mut x = if self.do_rescale {
                    (u as f64 * self.rescale_factor) as f32
                } else {
                    u as f32
                };
                if self.do_normalize {
                    x = (x - mean) / std;
                }
                out[c * h * w + i] = x;
            }
        }
        Ok(Tensor::from_slice(&out).view([3, h as i64, w as i64]))
    }

    /// `pixel_values` of a batch: [N, 3, H, W] f32 on the CPU. Images must end at the same size (always
    /// so with a centre crop).
    pub fn preprocess_batch(&self, imgs: &[DynamicImage]) -> Result<Tensor> {
        if imgs.is_empty() {
            input_bail!("no images to preprocess");
        }
        let px = imgs
            .iter()
            .map(|i| self.preprocess(i))
            .collect::<Result<Vec<_>>>()?;
        let s0 = px[0].size();
        if let Some(p) = px.iter().find(|p| p.size() != s0) {
            input_bail!("preprocessed images differ in size ({s0:?} vs {:?}): enable do_center_crop or resize to an exact size", p.size());
        }
        Ok(Tensor::stack(&px, 0))
    }
}

/// transformers' `get_resize_output_image_size(default_to_square=False)`: (height, width).
pub fn shortest_edge_size(h: u32, w: u32, size: u32) -> (u32, u32) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    // Python: int(requested_new_short * long / short), float division then truncation.
    let new_long = (size as f64 * long as f64 / short as f64) as u32;
    if w <= h {
        (new_long, size)
    } else {
        (size, new_long)
    }
}

/// Open an image file (PNG, JPEG) with errors that name it. EXIF orientation is not applied
/// (transformers' processor does not either).
pub fn open_image(path: &Path) -> Result<DynamicImage> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| input_err!("cannot open image {}: {e}", path.display()))?
        .with_guessed_format()
        .map_err(|e| input_err!("cannot read image {}: {e}", path.display()))?;
    reader.decode().map_err(|e| {
        input_err!(
            "{} is not a readable PNG or JPEG image ({e}): re-save it as PNG",
            path.display()
        )
    })
}

/// Pillow's `alpha_composite(white, src)` for one pixel channel: the 7-bit fixed-point path of
/// `libImaging/AlphaComposite.c` with an opaque white destination.
fn composite_on_white(c: u8, a: u8) -> u8 {
    if a == 0 {
        return 255;
    }
    const PB: u32 = 7;
    let (sa, da, dc) = (a as u32, 255u32, 255u32);
    let blend = da * (255 - sa);
    let outa255 = sa * 255 + blend;
    let coef1 = sa * 255 * 255 * (1 << PB) / outa255;
    let coef2 = 255 * (1 << PB) - coef1;
    let tmp = c as u32 * coef1 + dc * coef2 + (0x80 << PB);
    ((((tmp >> 8) + tmp) >> 8) >> PB) as u8
}

/// Convert to 8-bit RGB as transformers' `convert_to_rgb` does on a PIL image: RGB as is, grayscale
/// replicated, transparency (LA, RGBA) composited onto white. 16-bit RGB(A) keeps the high byte
/// (what Pillow's PNG reader does); 16-bit grayscale and float images are rejected.
pub fn to_rgb8(img: &DynamicImage, convert: bool) -> Result<RgbImage> {
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        input_bail!("image of size {w}x{h} has no pixels");
    }
    let hi = |v: u16| (v >> 8) as u8;
    let out = match img {
        DynamicImage::ImageRgb8(i) => return Ok(i.clone()),
        _ if !convert => input_bail!(
            "image is {:?}, not 8-bit RGB, and the processor's do_convert_rgb is false: convert the image to RGB",
            img.color()
        ),
        DynamicImage::ImageLuma8(i) => RgbImage::from_fn(w, h, |x, y| {
            let l = i.get_pixel(x, y)[0];
            image::Rgb([l, l, l])
        }),
        DynamicImage::ImageLumaA8(i) => RgbImage::from_fn(w, h, |x, y| {
            let p = i.get_pixel(x, y);
            let l = composite_on_white(p[0], p[1]);
            image::Rgb([l, l, l])
        }),
        DynamicImage::ImageRgba8(i) => RgbImage::from_fn(w, h, |x, y| {
            let p = i.get_pixel(x, y);
            image::Rgb([composite_on_white(p[0], p[3]), composite_on_white(p[1], p[3]), composite_on_white(p[2], p[3])])
        }),
        DynamicImage::ImageRgb16(i) => RgbImage::from_fn(w, h, |x, y| {
            let p = i.get_pixel(x, y);
            image::Rgb([hi(p[0]), hi(p[1]), hi(p[2])])
        }),
        DynamicImage::ImageRgba16(i) => RgbImage::from_fn(w, h, |x, y| {
            let p = i.get_pixel(x, y);
            let a = hi(p[3]);
            image::Rgb([composite_on_white(hi(p[0]), a), composite_on_white(hi(p[1]), a), composite_on_white(hi(p[2]), a)])
        }),
        other => input_bail!(
            "image mode {:?} is not supported (16-bit grayscale or floating point): save the image as 8-bit RGB PNG or JPEG",
            other.color()
        ),
    };
    Ok(out)
}

/// Pillow's filters (`libImaging/Resample.c`): (kernel, support).
fn filter(r: Resample) -> (fn(f64) -> f64, f64) {
    fn bicubic(x: f64) -> f64 {
        const A: f64 = -0.5;
        let x = x.abs();
        if x < 1.0 {
            ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            (((x - 5.0) * x + 8.0) * x - 4.0) * A
        } else {
            0.0
        }
    }
    fn bilinear(x: f64) -> f64 {
        let x = x.abs();
        if x < 1.0 {
            1.0 - x
        } else {
            0.0
        }
    }
    match r {
        Resample::Bicubic => (bicubic, 2.0),
        Resample::Bilinear => (bilinear, 1.0),
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the whole-image box: per output index
/// (first input index, taps) and `ksize` fixed-point coefficients.
fn coeffs(in_size: u32, out_size: u32, r: Resample) -> (Vec<(usize, usize)>, Vec<i32>, usize) {
    let (f, fsupport) = filter(r);
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = fsupport * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size as usize);
    let mut kk = vec![0i32; out_size as usize * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size as usize {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C casts truncate toward zero, as `as i64` does.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) - xmin;
        let xmax = xmax.max(0) as usize;
        let mut ww = 0.0;
        for x in 0..xmax {
            let w = f(((x as i64 + xmin) as f64 - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for x in 0..ksize {
            let v = if x < xmax {
                if ww != 0.0 {
                    k[x] / ww
                } else {
                    k[x]
                }
            } else {
                0.0
            };
            let scaled = v * (1u32 << PRECISION_BITS) as f64;
            kk[xx * ksize + x] = if v < 0.0 {
                (-0.5 + scaled) as i32
            } else {
                (0.5 + scaled) as i32
            };
        }
        bounds.push((xmin as usize, xmax));
    }
    (bounds, kk, ksize)
}

fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Pillow's `Image.resize((ow, oh), resample)` on an 8-bit RGB image: horizontal pass into a uint8
/// intermediate, then vertical pass; a pass whose size does not change is skipped.
pub fn pil_resize(img: &RgbImage, ow: u32, oh: u32, r: Resample) -> RgbImage {
    let (iw, ih) = img.dimensions();
    if (iw, ih) == (ow, oh) {
        return img.clone();
    }
    let src = img.as_raw();
    let (mut cur, mut cw, ch) = (
        std::borrow::Cow::Borrowed(src.as_slice()),
        iw as usize,
        ih as usize,
    );
    if ow != iw {
        let (bounds, kk, ksize) = coeffs(iw, ow, r);
        let ow = ow as usize;
        let mut out = vec![0u8; ow * ch * 3];
        for y in 0..ch {
            let row = &cur[y * cw * 3..(y + 1) * cw * 3];
            for (xx, &(xmin, n)) in bounds.iter().enumerate() {
                let k = &kk[xx * ksize..xx * ksize + n];
                let mut ss = [1i32 << (PRECISION_BITS - 1); 3];
                for (x, &kx) in k.iter().enumerate() {
                    let p = &row[(xmin + x) * 3..(xmin + x) * 3 + 3];
                    for c in 0..3 {
                        ss[c] = ss[c].wrapping_add((p[c] as i32).wrapping_mul(kx));
                    }
                }
                let o = &mut out[(y * ow + xx) * 3..(y * ow + xx) * 3 + 3];
                for c in 0..3 {
                    o[c] = clip8(ss[c]);
                }
            }
        }
        cur = std::borrow::Cow::Owned(out);
        cw = ow;
    }
    if oh != ih {
        let (bounds, kk, ksize) = coeffs(ih, oh, r);
        let mut out = vec![0u8; cw * oh as usize * 3];
        for (yy, &(ymin, n)) in bounds.iter().enumerate() {
            let k = &kk[yy * ksize..yy * ksize + n];
            for xx in 0..cw {
                let mut ss = [1i32 << (PRECISION_BITS - 1); 3];
                for (y, &ky) in k.iter().enumerate() {
                    let p = &cur[((ymin + y) * cw + xx) * 3..((ymin + y) * cw + xx) * 3 + 3];
                    for c in 0..3 {
                        ss[c] = ss[c].wrapping_add((p[c] as i32).wrapping_mul(ky));
                    }
                }
                let o = &mut out[(yy * cw + xx) * 3..(yy * cw + xx) * 3 + 3];
                for c in 0..3 {
                    o[c] = clip8(ss[c]);
                }
            }
        }
        cur = std::borrow::Cow::Owned(out);
    }
    RgbImage::from_raw(cw as u32, oh, cur.into_owned()).expect("buffer of the right size")
}

/// transformers' `center_crop`: top = (h − ch) // 2, left = (w − cw) // 2; an image smaller than the
/// crop is first zero-padded (centred, extra row/column at the top/left rounded up).
pub fn center_crop(img: &RgbImage, crop_h: u32, crop_w: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (w, h, crop_h, crop_w) = (w as i64, h as i64, crop_h as i64, crop_w as i64);
    let top = (h - crop_h).div_euclid(2);
    let left = (w - crop_w).div_euclid(2);
    let (top_pad, left_pad) = if top >= 0 && left >= 0 && top + crop_h <= h && left + crop_w <= w {
        (0, 0)
    } else {
        let nh = crop_h.max(h);
        let nw = crop_w.max(w);
        ((nh - h + 1) / 2, (nw - w + 1) / 2)
    };
    // Padded canvas coordinates: image pixel (x, y) sits at (x + left_pad, y + top_pad).
    let (top, left) = (top + top_pad, left + left_pad);
    RgbImage::from_fn(crop_w as u32, crop_h as u32, |x, y| {
        let sy = y as i64 + top - top_pad;
        let sx = x as i64 + left - left_pad;
        if sy >= 0 && sy < h && sx >= 0 && sx < w {
            *img.get_pixel(sx as u32, sy as u32)
        } else {
            image::Rgb([0, 0, 0])
        }
    })
}
