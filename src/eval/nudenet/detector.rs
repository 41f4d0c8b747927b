//! `NudeDetector`: the `nudenet` package's `NudeDetector().detect(path)` from Rust.
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use image::RgbImage;
use ort::session::{builder::GraphOptimizationLevel, Session};
use ort::value::Tensor;

use super::blob::blob_from_rgb;
use super::decode::read_rgb_like_cv2;
use super::postprocess::{postprocess, Detection};
use super::runtime::{environment, find_model};
use crate::error::Result;

/// Side of the square network input (`inference_resolution=320` in NudeNet).
pub const INPUT_SIZE: usize = 320;

/// NudeNet v3 (`320n.onnx`) through ONNX Runtime, with NudeNet's own pre- and post-processing.
pub struct NudeDetector {
    // `Session::run` needs `&mut`; the mutex lets one detector serve `&self` callers.
    session: Mutex<Session>,
    model_path: PathBuf,
    ort_library: PathBuf,
}

impl NudeDetector {
    /// Load the detector. `model`: a `320n.onnx` (default: the venv's `nudenet` package);
    /// `ort_lib`: a `libonnxruntime.so` (default: `ORT_DYLIB_PATH`, then the venv's `onnxruntime` wheel).
    pub fn load(model: Option<&Path>, ort_lib: Option<&Path>) -> Result<Self> {
        let model_path = find_model(model)?;
        let (env, ort_library) = environment(ort_lib)?;
        // Python's InferenceSession defaults to ORT_ENABLE_ALL; the same graph rewrites keep the same numerics.
        let session = Session::builder(&env)
            .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::All).map_err(Into::into))
            .and_then(|mut b| b.commit_from_file(&model_path))
            .map_err(|e| {
                crate::input_err!(
                    "cannot load the NudeNet model {} with ONNX Runtime: {e}; is it the 320n.onnx from the \
                     nudenet package?",
                    model_path.display()
                )
            })?;
        Ok(Self {
            session: Mutex::new(session),
            model_path,
            ort_library,
        })
    }

    /// The ONNX file in use.
    pub fn model_path(&self) -> &Path {
        &self.model_path
    }

    /// The ONNX Runtime library in use.
    pub fn ort_library(&self) -> &Path {
        &self.ort_library
    }

    /// Detections for an 8-bit RGB image, as `NudeDetector().detect` returns them for the same pixels.
    pub fn detect_image(&self, img: &RgbImage) -> Result<Vec<Detection>> {
        let (blob, letterbox) = blob_from_rgb(img, INPUT_SIZE)?;
        let (shape, output) = self.forward(blob)?;
        postprocess(&output, &shape, letterbox, INPUT_SIZE)
    }

    /// The raw network: a `[1, 3, 320, 320]` B, G, R blob in, `(shape, values)` of `output0` out.
    pub fn forward(&self, blob: Vec<f32>) -> Result<(Vec<i64>, Vec<f32>)> {
        anyhow::ensure!(
            blob.len() == 3 * INPUT_SIZE * INPUT_SIZE,
            "NudeNet input must hold 3x{INPUT_SIZE}x{INPUT_SIZE} values, got {}",
            blob.len()
        );
        let input = Tensor::from_array(([1usize, 3, INPUT_SIZE, INPUT_SIZE], blob))
            .context("building the NudeNet input tensor")?;
        let mut session = self
            .session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let outputs = session
            .run(ort::inputs![input])
            .context("running the NudeNet detector")?;
        let (shape, data) = outputs[0]
            .try_extract_tensor::<f32>()
            .context("reading the NudeNet output as f32")?;
        Ok((shape.iter().copied().collect(), data.to_vec()))
    }

    /// Detections for an image file, decoded like `cv2.imread` (what `detect(path)` does).
    pub fn detect_path(&self, path: &Path) -> Result<Vec<Detection>> {
        let img = read_rgb_like_cv2(path)?;
        self.detect_image(&img)
            .with_context(|| format!("NudeNet on {}", path.display()))
    }
}
