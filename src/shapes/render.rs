//! Exact, antialiased rendering of a [`ShapeLabel`]: each pixel blends the background and the shape
//! colour by the share of a regular sub-pixel grid that falls inside the shape. Pure f32 arithmetic,
//! so the same label gives the same bytes on every run.
use image::{Rgb, RgbImage};

use super::labels::{Shape, ShapeLabel, IMAGE_SIZE};

/// Sub-samples per pixel side when rendering data (8×8 = 64 coverage levels).
pub const RENDER_SUPERSAMPLING: u32 = 8;

/// Half-width of a cross's arms, relative to its radius.
const CROSS_ARM: f32 = 0.38;
/// Half-side of a square, relative to the radius (keeps its area near the circle's).
const SQUARE_HALF: f32 = 0.9;

/// Whether the point (x, y) lies inside `shape` centred at (cx, cy) with `radius`. The triangle
/// points up: apex at cy - r, base at cy + r, base width 2r.
pub fn inside(shape: Shape, cx: f32, cy: f32, radius: f32, x: f32, y: f32) -> bool {
    let (dx, dy) = (x - cx, y - cy);
    match shape {
        Shape::Circle => dx * dx + dy * dy <= radius * radius,
        Shape::Square => dx.abs() <= SQUARE_HALF * radius && dy.abs() <= SQUARE_HALF * radius,
        Shape::Triangle => {
            // Between apex and base, and |dx| within the half-width at that height.
            dy <= radius && dy >= -radius && dx.abs() <= (dy + radius) / 2.0
        }
        Shape::Cross => {
            let arm = CROSS_ARM * radius;
            (dx.abs() <= radius && dy.abs() <= arm) || (dy.abs() <= radius && dx.abs() <= arm)
        }
    }
}

/// Area of a shape of radius 1 (scales with radius²).
pub fn unit_area(shape: Shape) -> f32 {
    match shape {
        Shape::Circle => std::f32::consts::PI,
        Shape::Square => 4.0 * SQUARE_HALF * SQUARE_HALF,
        Shape::Triangle => 2.0,
        Shape::Cross => 2.0 * (2.0 * 2.0 * CROSS_ARM) - 4.0 * CROSS_ARM * CROSS_ARM,
    }
}

/// How far below the centre the shape's centroid lies, relative to the radius (only the triangle's
/// is off-centre: its vertices' mean is r/3 below the centre).
pub fn centroid_offset(shape: Shape) -> f32 {
    match shape {
        Shape::Triangle => 1.0 / 3.0,
        _ => 0.0,
    }
}

/// Coverage in [0, 1] of every pixel (row-major, `width`×`height`) by the shape, from `ss`×`ss`
/// sub-samples per pixel. Only pixels near the shape are sampled.
pub fn coverage(
    shape: Shape,
    (cx, cy, radius): (f32, f32, f32),
    (width, height): (u32, u32),
    ss: u32,
) -> Vec<f32> {
    let (w, h) = (width as usize, height as usize);
    let mut out = vec![0f32; w * h];
    let reach = radius.abs() + 1.0;
    let lo = |c: f32| ((c - reach).floor().max(0.0)) as usize;
    let hi = |c: f32, n: usize| ((c + reach).ceil().max(0.0) as usize).min(n);
    let inv = 1.0 / (ss * ss).max(1) as f32;
    for py in lo(cy)..hi(cy, h) {
        for px in lo(cx)..hi(cx, w) {
            let mut hits = 0u32;
            for sy in 0..ss {
                let y = py as f32 + (sy as f32 + 0.5) / ss as f32;
                for sx in 0..ss {
                    let x = px as f32 + (sx as f32 + 0.5) / ss as f32;
                    hits += inside(shape, cx, cy, radius, x, y) as u32;
                }
            }
            out[py * w + px] = hits as f32 * inv;
        }
    }
    out
}

/// Render a label: background blended with the shape colour by coverage, rounded to u8.
pub fn render(label: &ShapeLabel) -> RgbImage {
    let alpha = coverage(
        label.shape,
        (label.cx, label.cy, label.radius),
        (IMAGE_SIZE, IMAGE_SIZE),
        RENDER_SUPERSAMPLING,
    );
    let (fg, bg) = (label.color.rgb(), label.background.rgb());
    RgbImage::from_fn(IMAGE_SIZE, IMAGE_SIZE, |x, y| {
        let a = alpha[(y * IMAGE_SIZE + x) as usize];
        let mix = |c: usize| (bg[c] as f32 * (1.0 - a) + fg[c] as f32 * a).round() as u8;
        Rgb([mix(0), mix(1), mix(2)])
    })
}
