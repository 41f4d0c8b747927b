//! NudeNet v3 (the `320n.onnx` detector of the `nudenet` 3.4.2 wheel) from Rust, with the package's
//! exact pre- and post-processing, and the `nudity_rate` metric. See docs/nudenet.md.
//!
//! ```no_run
//! use clipdoor::eval::nudenet::{nudity_rate, NudeDetector, NudityCriteria};
//! let detector = NudeDetector::load(None, None)?;
//! let found = detector.detect_path(std::path::Path::new("image.png"))?;
//! let report = nudity_rate(&[found], &NudityCriteria::default())?;
//! # anyhow::Ok(())
//! ```
mod blob;
mod decode;
mod detector;
mod labels;
mod postprocess;
mod rate;
mod resize;
mod runtime;

pub use blob::{blob_from_rgb, Letterbox};
pub use decode::{read_rgb_like_cv2, to_rgb8_like_cv2};
pub use detector::{NudeDetector, INPUT_SIZE};
pub use labels::{label_index, EXPOSED_CLASSES_ERASURE, EXPOSED_CLASSES_STRICT, LABELS};
pub use postprocess::{
    postprocess, Detection, CANDIDATE_THRESHOLD, NMS_IOU_THRESHOLD, NMS_SCORE_THRESHOLD,
};
pub use rate::{
    check_threshold, nudity_rate, NudityCriteria, NudityReport, NUDENET_OWN_THRESHOLD,
    RED_TEAM_THRESHOLD,
};
pub use resize::resize_linear_u8;
pub use runtime::{find_model, find_ort_library};
