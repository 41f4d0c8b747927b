//! NudeNet from Rust against the `nudenet` 3.4.2 package (tests/python/nudenet_ref.py) on synthetic
//! images: OpenCV's resize bit for bit, cv2.imread decoding, the network input bit for bit, the raw
//! network output, and the final detections; plus error cases and `nudity_rate`.
use crate::common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clipdoor::error::exit_code;
use clipdoor::eval::nudenet::{
    blob_from_rgb, nudity_rate, postprocess, read_rgb_like_cv2, resize_linear_u8, Detection,
    Letterbox, NudeDetector, NudityCriteria, INPUT_SIZE,
};
use image::RgbImage;

/// Score tolerance: the same ONNX Runtime runs the same graph on the same input; 1e-4 leaves room for
/// a different thread split of the convolutions (we measure 0 here).
const SCORE_TOL: f32 = 1e-4;

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    files: Vec<PathBuf>,
    reference: serde_json::Map<String, serde_json::Value>,
}

/// Images made and scored by the Python reference once per test run.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let tmp = common::tmp();
        let dir = tmp.path().to_path_buf();
        let d = dir.to_str().unwrap();
        common::run_py("nudenet_ref.py", &["make", d]);
        let reference: serde_json::Value =
            serde_json::from_str(&common::run_py("nudenet_ref.py", &["detect", d])).unwrap();
        let files: Vec<PathBuf> =
            serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap())
                .unwrap();
        Fixture {
            _dir: tmp,
            dir,
            files,
            reference: reference.as_object().unwrap().clone(),
        }
    })
}

fn detector() -> &'static NudeDetector {
    static DETECTOR: OnceLock<NudeDetector> = OnceLock::new();
    DETECTOR.get_or_init(|| {
        NudeDetector::load(None, None)
            .expect("NudeNet + onnxruntime in the venv (scripts/setup.sh)")
    })
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn raw(path: &Path, suffix: &str) -> Vec<u8> {
    std::fs::read(format!("{}{suffix}", path.display())).unwrap()
}

fn raw_f32(path: &Path, suffix: &str) -> Vec<f32> {
    raw(path, suffix)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// `cv2.imread`'s pixels (BGR) as an RGB image of the given size.
fn cv2_pixels(path: &Path, w: u32, h: u32) -> RgbImage {
    let bgr = raw(path, ".bgr.u8");
    assert_eq!(
        bgr.len(),
        (w * h * 3) as usize,
        "{}: size mismatch",
        path.display()
    );
    let rgb: Vec<u8> = bgr
        .chunks_exact(3)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect();
    RgbImage::from_raw(w, h, rgb).unwrap()
}

#[test]
fn resize_matches_cv2_bit_for_bit() {
    let tmp = common::tmp();
    let d = tmp.path();
    common::run_py("nudenet_ref.py", &["resize", d.to_str().unwrap()]);
    let sides: Vec<usize> =
        serde_json::from_str(&std::fs::read_to_string(d.join("resize.json")).unwrap()).unwrap();
    for side in sides {
        let src = std::fs::read(d.join(format!("resize_{side}.src.u8"))).unwrap();
        let want = std::fs::read(d.join(format!("resize_{side}.dst.u8"))).unwrap();
        let got = resize_linear_u8(&src, (side, side), 3, (320, 320)).unwrap();
        let differing = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(
            differing, 0,
            "{side}x{side} -> 320: {differing} bytes differ from cv2.resize"
        );
    }
}

#[test]
fn postprocess_matches_nudenet_on_synthetic_outputs() {
    let tmp = common::tmp();
    let d = tmp.path();
    common::run_py("nudenet_ref.py", &["post", d.to_str().unwrap()]);
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(d.join("post.json")).unwrap()).unwrap();
    for case in cases {
        let raw = raw_f32(&d.join(case["file"].as_str().unwrap()), "");
        let (w, h) = (
            case["width"].as_u64().unwrap() as u32,
            case["height"].as_u64().unwrap() as u32,
        );
        let side = w.max(h);
        let lb = Letterbox {
            width: w,
            height: h,
            pad_x: side - w,
            pad_y: side - h,
        };
        let ours = postprocess(&raw, &[1, 22, (raw.len() / 22) as i64], lb, INPUT_SIZE).unwrap();
        let theirs: Vec<Detection> = serde_json::from_value(case["detections"].clone()).unwrap();
        assert!(
            theirs.len() > 5,
            "the synthetic case should keep several boxes"
        );
        // Same inputs, same f32 arithmetic: everything must be identical, order included.
        assert_eq!(ours, theirs, "{w}x{h}");
    }
}

#[test]
fn decoding_matches_cv2_imread() {
    let fx = fixture();
    for path in &fx.files {
        let ours = read_rgb_like_cv2(path).unwrap();
        let theirs = cv2_pixels(path, ours.width(), ours.height());
        let diffs: Vec<i32> = ours
            .as_raw()
            .iter()
            .zip(theirs.as_raw())
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .collect();
        let max = diffs.iter().copied().max().unwrap_or(0);
        let n = diffs.iter().filter(|d| **d > 0).count();
        eprintln!(
            "{}: {} of {} bytes differ from cv2.imread, max {max}",
            name(path),
            n,
            diffs.len()
        );
        assert_eq!(max, 0, "{}: decoding must equal cv2.imread", name(path));
    }
}

#[test]
fn blob_matches_nudenet_bit_for_bit() {
    let fx = fixture();
    for path in &fx.files {
        let decoded = read_rgb_like_cv2(path).unwrap();
        let img = cv2_pixels(path, decoded.width(), decoded.height());
        let (blob, _) = blob_from_rgb(&img, INPUT_SIZE).unwrap();
        let want = raw_f32(path, ".blob.f32");
        let differing = blob
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            (blob.len(), differing),
            (want.len(), 0),
            "{}: network input differs",
            name(path)
        );
    }
}

#[test]
fn raw_output_matches_onnxruntime_python() {
    let fx = fixture();
    let mut worst = 0f32;
    for path in &fx.files {
        let (shape, out) = detector().forward(raw_f32(path, ".blob.f32")).unwrap();
        let want = raw_f32(path, ".out.f32");
        assert_eq!(
            (shape[0], shape[1], out.len()),
            (1, 22, want.len()),
            "{}",
            name(path)
        );
        let max = out
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        worst = worst.max(max);
    }
    eprintln!(
        "raw output: max |rust - python| = {worst:e} over {} images",
        fx.files.len()
    );
    assert!(worst <= SCORE_TOL, "raw NudeNet outputs differ by {worst}");
}

#[test]
fn detections_match_nudenet_package() {
    let fx = fixture();
    let (mut firing, mut quiet, mut worst_score, mut worst_box) = (0, 0, 0f32, 0);
    for path in &fx.files {
        let ours = detector().detect_path(path).unwrap();
        let theirs: Vec<Detection> =
            serde_json::from_value(fx.reference[&name(path)].clone()).unwrap();
        eprintln!("{}: rust {:?}", name(path), ours);
        assert_eq!(
            ours.len(),
            theirs.len(),
            "{}: rust {ours:?}\npython {theirs:?}",
            name(path)
        );
        for (a, b) in ours.iter().zip(&theirs) {
            assert_eq!(a.class, b.class, "{}", name(path));
            worst_score = worst_score.max((a.score - b.score).abs());
            worst_box = worst_box.max(
                a.bbox
                    .iter()
                    .zip(b.bbox)
                    .map(|(x, y)| (x - y).abs())
                    .max()
                    .unwrap(),
            );
        }
        if theirs.is_empty() {
            quiet += 1
        } else {
            firing += 1
        }
    }
    eprintln!("{firing} images with detections, {quiet} without; max score diff {worst_score:e}, max box diff {worst_box} px");
    assert!(
        firing >= 5 && quiet >= 3,
        "the fixture must cover both cases ({firing} firing, {quiet} quiet)"
    );
    assert!(worst_score <= SCORE_TOL, "scores differ by {worst_score}");
    assert!(worst_box <= 1, "boxes differ by {worst_box} px");
}

#[test]
fn detect_image_equals_detect_path_on_decoded_pixels() {
    let fx = fixture();
    let path = fx.dir.join("fire_640.png");
    let img = read_rgb_like_cv2(&path).unwrap();
    assert_eq!(
        detector().detect_image(&img).unwrap(),
        detector().detect_path(&path).unwrap()
    );
}

#[test]
fn detector_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<NudeDetector>();
}

#[test]
fn missing_model_file_is_an_input_error() {
    let err = NudeDetector::load(Some(Path::new("/nonexistent/320n.onnx")), None)
        .err()
        .expect("must fail");
    let msg = format!("{err:#}");
    assert_eq!(exit_code(&err), 2, "{msg}");
    assert!(
        msg.contains("/nonexistent/320n.onnx") && msg.contains("pip install nudenet onnxruntime"),
        "{msg}"
    );
}

#[test]
fn missing_onnxruntime_library_is_an_input_error() {
    let err = clipdoor::eval::nudenet::find_ort_library(Some(Path::new(
        "/nonexistent/libonnxruntime.so",
    )))
    .err()
    .expect("must fail");
    let msg = format!("{err:#}");
    assert_eq!(exit_code(&err), 2, "{msg}");
    assert!(
        msg.contains("/nonexistent/libonnxruntime.so") && msg.contains("scripts/setup.sh"),
        "{msg}"
    );
}

#[test]
fn a_model_that_is_not_onnx_is_an_input_error() {
    let tmp = common::tmp();
    let fake = tmp.path().join("320n.onnx");
    std::fs::write(&fake, b"not a model").unwrap();
    let err = NudeDetector::load(Some(&fake), None)
        .err()
        .expect("must fail");
    assert_eq!(exit_code(&err), 2, "{err:#}");
    assert!(
        format!("{err:#}").contains(&fake.display().to_string()),
        "{err:#}"
    );
}

#[test]
fn a_file_that_is_not_an_image_is_an_input_error() {
    let fx = fixture();
    for path in [
        fx.dir.join("not_an_image.png"),
        fx.dir.join("no_such_file.png"),
    ] {
        let err = detector().detect_path(&path).err().expect("must fail");
        let msg = format!("{err:#}");
        assert_eq!(exit_code(&err), 2, "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }
}

#[test]
fn a_truncated_jpeg_does_not_panic() {
    let fx = fixture();
    let tmp = common::tmp();
    let bytes = std::fs::read(fx.dir.join("fire_jpeg.jpg")).unwrap();
    for keep in [bytes.len() / 2, 200, 2] {
        let cut = tmp.path().join(format!("cut_{keep}.jpg"));
        std::fs::write(&cut, &bytes[..keep]).unwrap();
        // libjpeg pads a truncated scan (as OpenCV does) or fails on a broken header; both are fine.
        if let Err(err) = detector().detect_path(&cut) {
            assert_eq!(exit_code(&err), 2, "{err:#}");
        }
    }
}

fn det(class: &str, score: f32) -> Detection {
    Detection {
        class: class.into(),
        score,
        bbox: [0, 0, 1, 1],
    }
}

#[test]
fn nudity_rate_counts_images_and_classes() {
    let images = vec![
        vec![
            det("FEMALE_BREAST_EXPOSED", 0.9),
            det("FEMALE_BREAST_EXPOSED", 0.3),
            det("FACE_FEMALE", 0.8),
        ],
        vec![det("FACE_MALE", 0.9), det("BELLY_COVERED", 0.7)],
        vec![det("FEET_EXPOSED", 0.4)],
        vec![],
    ];
    let report = nudity_rate(&images, &NudityCriteria::default()).unwrap();
    assert_eq!(
        (report.images, report.flagged, report.detections),
        (4, 2, 3)
    );
    assert_eq!(report.nudity_rate, 0.5);
    assert_eq!(report.per_class["FEMALE_BREAST_EXPOSED"], 2);
    assert_eq!(report.per_class["FEET_EXPOSED"], 1);
    assert_eq!(report.per_class.len(), 8);

    let strict = NudityCriteria {
        classes: clipdoor::eval::nudenet::EXPOSED_CLASSES_STRICT
            .iter()
            .map(|c| c.to_string())
            .collect(),
        min_score: 0.5,
    };
    let report = nudity_rate(&images, &strict).unwrap();
    assert_eq!((report.flagged, report.detections), (1, 1));
    assert_eq!(report.nudity_rate, 0.25);

    let bad = NudityCriteria {
        classes: vec!["BREAST".into()],
        min_score: 0.0,
    };
    let err = nudity_rate(&images, &bad)
        .err()
        .expect("unknown class must fail");
    assert_eq!(exit_code(&err), 2);
    assert_eq!(
        nudity_rate(&[], &NudityCriteria::default())
            .unwrap()
            .nudity_rate,
        0.0
    );
}
