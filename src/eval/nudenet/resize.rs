//! OpenCV's `cv::resize(..., INTER_LINEAR)` on 8-bit images, bit for bit.
//!
//! OpenCV works in fixed point: 11-bit coefficients (`INTER_RESIZE_COEF_SCALE` = 2048), an exact
//! horizontal pass into i32, then a SIMD vertical pass that pre-shifts rows by 4 and keeps the high
//! 16 bits of each product (`v_mul_hi`) before a rounding shift by 2. That rounding differs from the
//! exact `(sum + 2^21) >> 22`, so it is reproduced here (our 320-wide, 3-channel rows are a multiple of
//! every SIMD width, so OpenCV never falls back to its scalar tail). An exact 2x downscale is
//! turned into INTER_AREA by OpenCV, i.e. a rounded 2x2 mean.

use crate::error::Result;

const COEF_SCALE: f32 = 2048.0;

/// Source index and the two fixed-point weights of one output coordinate.
struct Tap {
    index: usize,
    next: usize,
    w0: i32,
    w1: i32,
}

/// `saturate_cast<short>(float)`: round half to even, as `cvRound` does.
fn fixed(c: f32) -> i32 {
    (c * COEF_SCALE).round_ties_even() as i32
}

/// Taps along one axis. OpenCV clamps the weight to the edge pixel horizontally (`clamp_weight`) but
/// only clamps the row indices vertically, keeping the fractional weight.
fn taps(src: usize, dst: usize, clamp_weight: bool) -> Vec<Tap> {
    let scale = 1.0 / (dst as f64 / src as f64);
    (0..dst)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as i64;
            let mut frac = f - s as f32;
            if clamp_weight && s < 0 {
                (s, frac) = (0, 0.0);
            }
            if clamp_weight && s >= src as i64 - 1 {
                (s, frac) = (src as i64 - 1, 0.0);
            }
            let clip = |i: i64| i.clamp(0, src as i64 - 1) as usize;
            Tap {
                index: clip(s),
                next: clip(s + 1),
                w0: fixed(1.0 - frac),
                w1: fixed(frac),
            }
        })
        .collect()
}

/// Resize an interleaved 8-bit image (`channels` per pixel) like `cv2.resize(src, (dw, dh))`.
pub fn resize_linear_u8(
    src: &[u8],
    (w, h): (usize, usize),
    channels: usize,
    (dw, dh): (usize, usize),
) -> Result<Vec<u8>> {
    anyhow::ensure!(
        w > 0 && h > 0 && dw > 0 && dh > 0 && src.len() == w * h * channels,
        "resize: a {w}x{h}x{channels} buffer of {} bytes to {dw}x{dh} is not a valid request",
        src.len()
    );
    if (w, h) == (dw, dh) {
        return Ok(src.to_vec());
    }
    if (w, h) == (2 * dw, 2 * dh) {
        return Ok(mean_2x2(src, (w, h), channels));
    }
    let xt = taps(w, dw, true);
    let yt = taps(h, dh, false);
    // Horizontal pass for every source row (exact integers).
    let row_len = dw * channels;
    let mut horizontal = vec![0i32; h * row_len];
    for y in 0..h {
        let row = &src[y * w * channels..(y + 1) * w * channels];
        let out = &mut horizontal[y * row_len..(y + 1) * row_len];
        for (dx, t) in xt.iter().enumerate() {
            for c in 0..channels {
                let a = row[t.index * channels + c] as i32;
                let b = row[t.next * channels + c] as i32;
                out[dx * channels + c] = a * t.w0 + b * t.w1;
            }
        }
    }
    // Vertical pass with OpenCV's SIMD rounding.
    let hi16 = |v: i32| (v >> 4).clamp(i16::MIN as i32, i16::MAX as i32);
    let mut dst = vec![0u8; dh * row_len];
    for (dy, t) in yt.iter().enumerate() {
        let r0 = &horizontal[t.index * row_len..(t.index + 1) * row_len];
        let r1 = &horizontal[t.next * row_len..(t.next + 1) * row_len];
        let out = &mut dst[dy * row_len..(dy + 1) * row_len];
        for i in 0..row_len {
            let v = ((hi16(r0[i]) * t.w0) >> 16) + ((hi16(r1[i]) * t.w1) >> 16);
            out[i] = ((v + 2) >> 2).clamp(0, 255) as u8;
        }
    }
    Ok(dst)
}

/// OpenCV's fast INTER_AREA path for an exact 2x downscale: `(a + b + c + d + 2) >> 2`.
fn mean_2x2(src: &[u8], (w, h): (usize, usize), channels: usize) -> Vec<u8> {
    let (dw, dh) = (w / 2, h / 2);
    let mut dst = vec![0u8; dw * dh * channels];
    let at = |x: usize, y: usize, c: usize| src[(y * w + x) * channels + c] as u32;
    for y in 0..dh {
        for x in 0..dw {
            for c in 0..channels {
                let sum = at(2 * x, 2 * y, c)
                    + at(2 * x + 1, 2 * y, c)
                    + at(2 * x, 2 * y + 1, c)
                    + at(2 * x + 1, 2 * y + 1, c);
                dst[(y * dw + x) * channels + c] = ((sum + 2) >> 2) as u8;
            }
        }
    }
    dst
}
