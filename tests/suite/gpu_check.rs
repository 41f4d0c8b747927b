//! `scripts/gpu_check.sh --device cpu`: the GPU check's dry run at tiny sizes, with the debug binary
//! and the venv's CPU torch. It runs every part the GPU run does (init, encode, the reference model's
//! forward check, clipdoor and the torch-only loop in each precision, the denoising benchmark, the
//! train-step profile in each precision) and
//! writes the same JSON. tf32 is asked for too: CPUs have none, so that precision fails, and the
//! check records clipdoor's error and goes on (as a precision that breaks on a GPU must not cost the
//! rest of a short GPU lease).
use crate::common;
use serde_json::Value;

#[test]
fn the_gpu_check_dry_run_measures_every_part_on_cpu() {
    let t = common::tmp();
    let out = t.path().join("gpu_check.json");
    let o = std::process::Command::new("bash")
        .arg(common::root().join("scripts/gpu_check.sh"))
        .args(["--device", "cpu", "--precisions", "f32,tf32,bf16", "--out"])
        .arg(&out)
        .arg("--python")
        .arg(common::python())
        .env("CLIPDOOR_BIN", env!("CARGO_BIN_EXE_clipdoor"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    // The hand-written reference model is clipdoor's function on the same weights.
    let diff = r["reference_forward_check"]["max_abs_diff"]
        .as_f64()
        .unwrap();
    assert!(diff < 1e-5, "{r}");
    for p in ["f32", "bf16"] {
        let tpa = &r["tpa"][p];
        let ours = &tpa["clipdoor"];
        let theirs = &tpa["pytorch"];
        assert!(ours["encoder_saved"].as_bool().unwrap(), "{p}: {r}");
        for side in [ours, theirs] {
            let wall = side["wall_seconds"].as_f64().unwrap();
            let train = side["train_seconds"].as_f64().unwrap();
            assert!(wall > 0.0 && train > 0.0 && train < wall, "{p}: {r}");
            // Three steps from the same teacher barely move the student on clean captions.
            let sim = side["sim_clean"].as_f64().unwrap();
            assert!(sim > 0.9 && sim <= 1.0 + 1e-6, "{p}: {r}");
        }
        let ratio = tpa["speed_ratio_end_to_end"].as_f64().unwrap();
        let expected =
            theirs["wall_seconds"].as_f64().unwrap() / ours["wall_seconds"].as_f64().unwrap();
        assert!((ratio - expected).abs() < 1e-9, "{p}: {r}");
    }
    let failed = r["tpa"]["tf32"]["failed"].as_str().unwrap_or_default();
    assert!(failed.contains("needs a CUDA device"), "{r}");
    assert!(r["tpa"]["tf32"].get("clipdoor").is_none(), "{r}");
    let denoise = &r["denoise"]["report"];
    assert!(
        denoise["clipdoor_s_per_step"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    assert!(
        denoise["diffusers_s_per_step"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    // The train-step profile in each precision: both sides timed in it, clipdoor's phases recorded;
    // tf32's failure on a CPU recorded, not fatal.
    for p in ["f32", "bf16"] {
        let step = &r["train_step"][p]["report"];
        assert!(
            step["clipdoor_seconds_per_step"].as_f64().unwrap() > 0.0,
            "{p}: {r}"
        );
        assert!(
            step["pytorch_seconds_per_step"].as_f64().unwrap() > 0.0,
            "{p}: {r}"
        );
        assert_eq!(step["precision"], p, "{r}");
        assert_eq!(step["reference"]["precision"], p, "{r}");
        assert!(
            step["clipdoor_phase_seconds_per_step"]["backward"]
                .as_f64()
                .is_some(),
            "{p}: {r}"
        );
    }
    assert!(r["train_step"]["tf32"]["failed"].is_string(), "{r}");
    assert_eq!(r["setting"]["steps"], 3, "{r}");
    assert!(r["targets"]["fastest_precision"].as_str().is_some(), "{r}");
}

#[test]
fn the_gpu_check_names_what_is_missing() {
    let o = std::process::Command::new("bash")
        .arg(common::root().join("scripts/gpu_check.sh"))
        .args(["--device", "cpu", "--bin", "/nonexistent/clipdoor"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no clipdoor binary") && err.contains("--bin"),
        "{err}"
    );
    let o = std::process::Command::new("bash")
        .arg(common::root().join("scripts/gpu_check.sh"))
        .args(["--device", "cpu", "--parts", "tpa,profiles"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--parts takes tpa, denoise and profile"),
        "{err}"
    );
}
