//! The oracle judge: the colour and shape of one shapes-world image by exact analysis of its pixels.
//!
//! 1. Background = per-channel median of the border pixels (a shape covers few of them).
//! 2. Shape colour = mean of the pixels farthest from the background; the colour class is the nearest
//!    palette colour.
//! 3. Each pixel's coverage α is its position on the line background → shape colour; a ramp
//!    (α 0.25 → 0, 0.75 → 1) drops noise and sharpens blurred edges.
//! 4. Shape = the template (rendered with the same ramp, at the area and centroid of the measured mask,
//!    over a few scales) with the smallest normalised L1 distance to the mask.
//!
//! It never panics: an image without a visible shape gives `None`s and confidence 0.
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::labels::{Background, Color, Position, Shape, Size};
use super::render::{centroid_offset, coverage, unit_area};

/// The oracle's verdict on one image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// Nearest palette colour of the shape; `None` when no shape stands out from the background.
    pub color: Option<Color>,
    /// Best-fitting shape template; `None` when no shape was found.
    pub shape: Option<Shape>,
    /// In [0, 1]: the smaller of the colour margin and the shape margin (0 = a tie, 1 = unambiguous).
    pub confidence: f32,
    /// Nearest background palette colour (judged from the border).
    pub background: Option<Background>,
    /// Distance (RGB in [0, 1]) of the measured background from that palette colour: large when the
    /// border is a colour no caption asks for (a degenerate image).
    #[serde(default)]
    pub background_error: f32,
    /// Centre and radius of the best template (pixels), for position and size.
    pub cx: f32,
    pub cy: f32,
    pub radius: f32,
}

impl Judgement {
    fn nothing(background: Option<Background>, background_error: f32) -> Self {
        Self {
            color: None,
            shape: None,
            confidence: 0.0,
            background,
            background_error,
            cx: 0.0,
            cy: 0.0,
            radius: 0.0,
        }
    }

    /// Whether the background is a clean palette colour (within [`MAX_BACKGROUND_ERROR`]).
    pub fn clean_background(&self) -> bool {
        self.background.is_some() && self.background_error <= MAX_BACKGROUND_ERROR
    }

    /// The defined "no object" look: no shape stands out of a clean palette background. A blank
    /// image of another colour, or a smudge, is not it.
    pub fn is_empty_picture(&self) -> bool {
        self.shape.is_none() && self.clean_background()
    }

    /// The 3×3 grid cell of the shape's centre.
    pub fn position(&self) -> Option<Position> {
        self.shape.map(|_| Position::of_centre(self.cx, self.cy))
    }

    /// The size class of the fitted radius.
    pub fn size(&self) -> Option<Size> {
        self.shape.map(|_| Size::of_radius(self.radius))
    }
}

/// Largest distance of a measured background from its palette colour that still counts as that
/// background (the palette's backgrounds are at least 0.87 apart).
pub const MAX_BACKGROUND_ERROR: f32 = 0.2;
/// Smallest colour difference (Euclidean RGB in [0, 1]) that counts as a visible shape.
const MIN_CONTRAST: f32 = 0.2;
/// Smallest mask area (pixels) worth fitting a shape to.
const MIN_AREA: f32 = 4.0;
/// Scales tried around the radius implied by the mask's area.
const SCALES: [f32; 5] = [0.88, 0.94, 1.0, 1.06, 1.12];
/// Template sub-samples per pixel side.
const TEMPLATE_SUPERSAMPLING: u32 = 4;

type Rgbf = [f32; 3];

fn dist(a: Rgbf, b: Rgbf) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

fn unit(c: [u8; 3]) -> Rgbf {
    c.map(|v| v as f32 / 255.0)
}

fn median(mut v: Vec<f32>) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f32::total_cmp);
    v[v.len() / 2]
}

/// The nearest of `palette` to `c`, and the margin (d2 - d1) / (d2 + d1) over the runner-up.
fn nearest<T: Copy>(c: Rgbf, palette: &[T], rgb: impl Fn(T) -> [u8; 3]) -> (T, f32) {
    let mut ds: Vec<(f32, T)> = palette
        .iter()
        .map(|&p| (dist(c, unit(rgb(p))), p))
        .collect();
    ds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let margin = match ds.get(1) {
        Some(second) => (second.0 - ds[0].0) / (second.0 + ds[0].0).max(1e-6),
        None => 1.0,
    };
    (ds[0].1, margin)
}

fn ramp(alpha: f32) -> f32 {
    ((alpha - 0.25) / 0.5).clamp(0.0, 1.0)
}

/// Judge one image (any size; shapes-world images are 32×32).
pub fn judge(img: &RgbImage) -> Judgement {
    let (w, h) = img.dimensions();
    if w < 3 || h < 3 {
        // f32::MAX, not infinity: JSON has no infinity (serde_json would write null).
        return Judgement::nothing(None, f32::MAX);
    }
    let pixels: Vec<Rgbf> = img.pixels().map(|p| unit(p.0)).collect();

    let border: Vec<Rgbf> = img
        .enumerate_pixels()
        .filter(|(x, y, _)| *x == 0 || *y == 0 || *x == w - 1 || *y == h - 1)
        .map(|(_, _, p)| unit(p.0))
        .collect();
    let bg: Rgbf = std::array::from_fn(|c| median(border.iter().map(|p| p[c]).collect()));
    let (background, _) = nearest(bg, Background::ALL, Background::rgb);
    let background_error = dist(bg, unit(background.rgb()));

    let d: Vec<f32> = pixels.iter().map(|&p| dist(p, bg)).collect();
    let dmax = d.iter().copied().fold(0.0, f32::max);
    if dmax < MIN_CONTRAST {
        return Judgement::nothing(Some(background), background_error);
    }
    let core: Vec<Rgbf> = pixels
        .iter()
        .zip(&d)
        .filter(|(_, &di)| di >= 0.6 * dmax)
        .map(|(p, _)| *p)
        .collect();
    let fg: Rgbf =
        std::array::from_fn(|c| core.iter().map(|p| p[c]).sum::<f32>() / core.len() as f32);
    let (color, color_margin) = nearest(fg, Color::ALL, Color::rgb);

    let axis: Rgbf = std::array::from_fn(|c| fg[c] - bg[c]);
    let norm2 = axis.iter().map(|a| a * a).sum::<f32>().max(1e-6);
    let mask: Vec<f32> = pixels
        .iter()
        .map(|p| {
            let a = (0..3).map(|c| (p[c] - bg[c]) * axis[c]).sum::<f32>() / norm2;
            ramp(a.clamp(0.0, 1.0))
        })
        .collect();
    let area: f32 = mask.iter().sum();
    if area < MIN_AREA {
        return Judgement::nothing(Some(background), background_error);
    }
    let (mut mx, mut my) = (0.0, 0.0);
    for (i, m) in mask.iter().enumerate() {
        mx += m * ((i as u32 % w) as f32 + 0.5);
        my += m * ((i as u32 / w) as f32 + 0.5);
    }
    let (mx, my) = (mx / area, my / area);

    // Best (error, radius, cx, cy) per shape.
    let mut fits: Vec<(f32, Shape, f32, f32, f32)> = Shape::ALL
        .iter()
        .map(|&shape| {
            let r0 = (area / unit_area(shape)).sqrt();
            SCALES
                .iter()
                .map(|s| {
                    let r = r0 * s;
                    let (cx, cy) = (mx, my - centroid_offset(shape) * r);
                    let t = coverage(shape, (cx, cy, r), (w, h), TEMPLATE_SUPERSAMPLING);
                    let (mut diff, mut total) = (0.0, area);
                    for (m, tv) in mask.iter().zip(t) {
                        let tv = ramp(tv);
                        diff += (m - tv).abs();
                        total += tv;
                    }
                    (diff / total.max(1e-6), shape, r, cx, cy)
                })
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .expect("SCALES is not empty")
        })
        .collect();
    fits.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (err, shape, radius, cx, cy) = fits[0];
    let shape_margin = (fits[1].0 - err) / (fits[1].0 + err).max(1e-6);
    Judgement {
        color: Some(color),
        shape: Some(shape),
        confidence: color_margin.min(shape_margin).clamp(0.0, 1.0),
        background: Some(background),
        background_error,
        cx,
        cy,
        radius,
    }
}
