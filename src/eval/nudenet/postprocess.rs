//! NudeNet's `_postprocess`: candidate rows, box mapping in f32 (numpy's float32 arithmetic), and
//! `cv2.dnn.NMSBoxes(boxes, scores, 0.25, 0.45)` on `Rect2d` boxes.
use serde::{Deserialize, Serialize};

use super::blob::Letterbox;
use super::labels::LABELS;
use crate::error::Result;

/// A row is a candidate when its best class score reaches this (`max_score >= 0.2`; numpy compares
/// the f32 score with 0.2 rounded to f32).
pub const CANDIDATE_THRESHOLD: f32 = 0.2;
/// `NMSBoxes` score threshold (strictly greater keeps a box).
pub const NMS_SCORE_THRESHOLD: f32 = 0.25;
/// `NMSBoxes` IoU threshold (a box overlapping a kept one by more than this is dropped).
pub const NMS_IOU_THRESHOLD: f32 = 0.45;

/// One detection, as the Python package returns it: `{"class", "score", "box": [x, y, w, h]}` in
/// pixels of the original image (top-left corner, truncated towards zero like Python's `int`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub class: String,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: [i32; 4],
}

/// A candidate before NMS: class index, score and the f32 box NudeNet computes.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    class: usize,
    score: f32,
    xywh: [f32; 4],
}

/// Turn the raw `[1, 4 + classes, rows]` output into detections, ordered by score as NMSBoxes returns.
pub fn postprocess(
    output: &[f32],
    shape: &[i64],
    lb: Letterbox,
    input_size: usize,
) -> Result<Vec<Detection>> {
    let (channels, rows) = match shape {
        [1, c, r] if *c as usize == 4 + LABELS.len() => (*c as usize, *r as usize),
        _ => anyhow::bail!(
            "NudeNet output has shape {shape:?}; expected [1, {}, N] (is this the 320n.onnx detector?)",
            4 + LABELS.len()
        ),
    };
    anyhow::ensure!(
        output.len() == channels * rows,
        "NudeNet output length does not match its shape"
    );
    let at = |c: usize, r: usize| output[c * rows + r];
    let mut candidates = Vec::new();
    for r in 0..rows {
        // np.amax / np.argmax: the first maximum wins.
        let (class, score) = (0..LABELS.len()).fold((0, f32::NEG_INFINITY), |best, c| {
            let s = at(4 + c, r);
            if s > best.1 {
                (c, s)
            } else {
                best
            }
        });
        if score >= CANDIDATE_THRESHOLD {
            let xywh = map_box(
                [at(0, r), at(1, r), at(2, r), at(3, r)],
                lb,
                input_size as f32,
            );
            candidates.push(Candidate { class, score, xywh });
        }
    }
    let kept = nms_boxes(&candidates, NMS_SCORE_THRESHOLD, NMS_IOU_THRESHOLD);
    Ok(kept
        .into_iter()
        .map(|i| {
            let c = candidates[i];
            Detection {
                class: LABELS[c.class].to_string(),
                score: c.score,
                bbox: c.xywh.map(|v| v as i32),
            }
        })
        .collect())
}

/// Centre box in model pixels to a clipped top-left box in image pixels, op for op as numpy does it.
fn map_box([cx, cy, w, h]: [f32; 4], lb: Letterbox, model: f32) -> [f32; 4] {
    let (iw, ih) = (lb.width as f32, lb.height as f32);
    let (sx, sy) = ((lb.width + lb.pad_x) as f32, (lb.height + lb.pad_y) as f32);
    let x = (cx - w / 2.0) * sx / model;
    let y = (cy - h / 2.0) * sy / model;
    let (w, h) = (w * sx / model, h * sy / model);
    // Python's max(0, min(x, W)) and min(w, W - x).
    let clip = |v: f32, hi: f32| {
        let m = if hi < v { hi } else { v };
        if m > 0.0 {
            m
        } else {
            0.0
        }
    };
    let (x, y) = (clip(x, iw), clip(y, ih));
    let w = if iw - x < w { iw - x } else { w };
    let h = if ih - y < h { ih - y } else { h };
    [x, y, w, h]
}

/// `cv::dnn::NMSBoxes` for `Rect2d` (eta = 1, top_k = 0): stable sort by descending score of the boxes
/// scoring above the threshold, then greedy suppression on IoU computed in f64, compared in f32.
fn nms_boxes(c: &[Candidate], score_threshold: f32, iou_threshold: f32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..c.len())
        .filter(|&i| c[i].score > score_threshold)
        .collect();
    order.sort_by(|&a, &b| {
        c[b].score
            .partial_cmp(&c[a].score)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut kept: Vec<usize> = Vec::new();
    for i in order {
        let keep = kept
            .iter()
            .all(|&k| overlap(c[i].xywh, c[k].xywh) <= iou_threshold);
        if keep {
            kept.push(i);
        }
    }
    kept
}

/// OpenCV's `rectOverlap`: `1 - (float)jaccardDistance(a, b)` on `Rect2d`.
fn overlap(a: [f32; 4], b: [f32; 4]) -> f32 {
    let [ax, ay, aw, ah] = a.map(f64::from);
    let [bx, by, bw, bh] = b.map(f64::from);
    let (area_a, area_b) = (aw * ah, bw * bh);
    let distance = if area_a + area_b <= f64::EPSILON {
        0.0
    } else {
        let x1 = ax.max(bx);
        let y1 = ay.max(by);
        let iw = (ax + aw).min(bx + bw) - x1;
        let ih = (ay + ah).min(by + bh) - y1;
        let inter = if iw <= 0.0 || ih <= 0.0 { 0.0 } else { iw * ih };
        1.0 - inter / (area_a + area_b - inter)
    };
    1.0 - distance as f32
}
