//! NudeNet's input tensor (`_read_image` in nudenet.py): pad the image to a square at the bottom and
//! right with black, `cv2.dnn.blobFromImage(pad, 1/255, (320, 320), swapRB=True)`.
//!
//! Channel order: `cv2.imread` gives BGR; NudeNet then applies `cvtColor(COLOR_RGBA2BGR)`, which on a
//! 3-channel image swaps R and B (giving RGB), and `swapRB=True` swaps them back. So the network is fed
//! planes in B, G, R order, and that is what we feed it too.
use image::RgbImage;

use super::resize::resize_linear_u8;
use crate::error::Result;

/// Where the original image sits in the padded square (needed to map boxes back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Letterbox {
    pub width: u32,
    pub height: u32,
    pub pad_x: u32,
    pub pad_y: u32,
}

/// The `[1, 3, size, size]` f32 input (B, G, R planes) and the letterbox geometry.
pub fn blob_from_rgb(img: &RgbImage, size: usize) -> Result<(Vec<f32>, Letterbox)> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        crate::input_bail!("the image is empty ({w}x{h} pixels)");
    }
    let side = w.max(h);
    let mut padded = vec![0u8; side * side * 3];
    for (y, row) in img.as_raw().chunks_exact(w * 3).enumerate() {
        padded[y * side * 3..y * side * 3 + w * 3].copy_from_slice(row);
    }
    let resized = resize_linear_u8(&padded, (side, side), 3, (size, size))?;
    // blobFromImage converts to f32 and multiplies by the scale factor, itself rounded to f32.
    let scale = (1.0f64 / 255.0) as f32;
    let plane = size * size;
    let mut blob = vec![0f32; 3 * plane];
    for (i, px) in resized.chunks_exact(3).enumerate() {
        for (bgr, rgb) in [(0, 2), (1, 1), (2, 0)] {
            blob[bgr * plane + i] = px[rgb] as f32 * scale;
        }
    }
    let letterbox = Letterbox {
        width: w as u32,
        height: h as u32,
        pad_x: (side - w) as u32,
        pad_y: (side - h) as u32,
    };
    Ok((blob, letterbox))
}
