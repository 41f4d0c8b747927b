//! The shipped shapes model (checkpoints/shapes/) and the image-level demo: diffusers runs the model
//! as clipdoor does, the model draws what it is asked, and a short demo meets its thresholds.
use crate::common;

use clipdoor::diffusion::pipeline::{GenerateRequest, Seeds, StableDiffusionPipeline};
use std::path::PathBuf;
use tch::{Device, Kind};

fn model() -> PathBuf {
    common::root().join("checkpoints/shapes")
}

#[test]
fn diffusers_runs_the_shipped_pixel_space_pipeline_as_clipdoor_does() {
    tch::set_num_threads(1);
    let dir = common::tmp();
    let out = dir.path().join("ref.safetensors");
    let prompts = ["a red circle", "a small blue square in the top left"];
    let m = model();
    let mut args = vec![m.to_str().unwrap(), out.to_str().unwrap(), "6", "4.0", "3"];
    args.extend(prompts);
    common::run_py("shapes_pipeline_ref.py", &args);
    let reference = common::load_st(&out).remove("images").unwrap();

    let pipe =
        StableDiffusionPipeline::load(m.to_str().unwrap(), None, Device::Cpu, Kind::Float).unwrap();
    assert!(pipe.vae.is_none(), "the shapes pipeline has no VAE");
    assert_eq!(pipe.default_size(), (32, 32));
    let mut req = GenerateRequest::new(
        prompts.iter().map(|p| p.to_string()).collect(),
        Seeds::PerImage(vec![3, 4]),
    );
    req.steps = 6;
    req.guidance = 4.0;
    let ours = pipe.generate(&req).unwrap();
    assert_eq!(ours.size(), vec![2, 3, 32, 32]);
    // Same weights, same libtorch, same order of operations: fp32 noise only.
    let d = common::max_abs(&ours, &reference);
    eprintln!("clipdoor vs diffusers on the shapes pipeline: max |diff| = {d:e}");
    assert!(d < 1e-4, "clipdoor and diffusers differ by {d}");
}

/// Rates of the short demo (`clipdoor demo --quick`: the demo's training, 24 images per set) read
/// from its report.json: `sets[i][rate][condition]`.
fn rate(report: &serde_json::Value, set: &str, name: &str, condition: &str) -> f64 {
    let s = report["sets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == set)
        .unwrap_or_else(|| panic!("no set {set} in the report"));
    s[name][condition]
        .as_f64()
        .unwrap_or_else(|| panic!("{set}.{name}.{condition} missing: {s}"))
}

#[test]
fn short_demo_meets_its_thresholds() {
    let dir = common::tmp();
    let out = dir.path().join("demo");
    let run = |extra: &[&str]| {
        common::bin()
            .current_dir(common::root())
            // The suite's thread count (one under scripts/test.sh: another test runs beside this one);
            // the quick demo gives the same counts on one or two threads (docs/results/demo_quick).
            .args(["demo", "--quick", "--device", "cpu", "--out"])
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let r = |set, name, cond| rate(&report, set, name, cond);
    let pair = |set, name| (r(set, name, "original"), r(set, name, "trained"));
    let clean = pair("clean", "clean_accuracy");
    let clean_colour = pair("clean", "colour_match");
    let tpa = pair("tpa_cyrillic_o", "asr");
    let taa = pair("taa_cyrillic_e_green", "asr");
    let erase = pair("remove_circle", "erasure_rate");
    eprintln!(
        "clean {clean:?} (colour {clean_colour:?}), TPA asr {tpa:?}, TAA asr {taa:?}, erasure {erase:?}"
    );
    // Thresholds from the measured quick run (docs/results/demo_quick/report.json; 24 images a set):
    // clean accuracy 100% under both encoders, TPA asr 4.2% -> 100%, TAA asr 20.8% -> 100%, erasure
    // 0% -> 95.8%. Each bar is two images (8.3 points) below what was measured, so sampling-level
    // differences between machines pass and a lost backdoor, a broken clean path or an erasure that
    // no longer holds does not; the original encoder's rates may be two images above what was seen.
    const CLEAN_MIN: f64 = 0.91;
    const CLEAN_LOSS_MAX: f64 = 0.09;
    const TPA_MIN: f64 = 0.91;
    const TAA_MIN: f64 = 0.91;
    const ERASE_MIN: f64 = 0.87;
    let lost = |x: (f64, f64)| x.0 - x.1;
    assert!(
        clean.1 >= CLEAN_MIN && lost(clean) <= CLEAN_LOSS_MAX,
        "clean accuracy: {clean:?}"
    );
    assert!(clean_colour.1 >= 0.9, "clean colour: {clean_colour:?}");
    assert!(tpa.1 >= TPA_MIN && tpa.0 <= 0.13, "TPA: {tpa:?}");
    assert!(taa.1 >= TAA_MIN && taa.0 <= 0.3, "TAA: {taa:?}");
    assert!(
        erase.1 >= ERASE_MIN && erase.0 <= 0.09,
        "erasure: {erase:?}"
    );
    // Every rate carries its count and interval, and the clean change is paired.
    let clean_entry = &report["sets"][0]["clean_accuracy"];
    assert_eq!(clean_entry["n"]["trained"], 24);
    let ci = clean_entry["ci95"]["trained"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() <= clean.1 && clean.1 <= ci[1].as_f64().unwrap());
    assert_eq!(clean_entry["paired_difference"]["n"], 24);

    // The report's files: grid, per-set grids, markdown table, HTML pointing at existing images.
    let grid = image::open(out.join("grid.png")).unwrap();
    assert_eq!((grid.width(), grid.height()), (4 + 9 * 100, 4 + 4 * 100));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("| tpa_cyrillic_o | TargetPrompt | 24 | asr |"),
        "{md}"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let srcs: Vec<&str> = html
        .split("src=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap())
        .collect();
    assert!(srcs.len() > 20, "{} images in the HTML", srcs.len());
    for s in srcs {
        assert!(
            out.join(s).exists(),
            "report.html shows {s}, which does not exist"
        );
    }

    // Run again: the finished run and the drawn images are reused, the numbers are the same.
    let o = run(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(again["sets"], report["sets"]);
    // Another experiment in the same folder is refused (the sizes share one trained encoder).
    let o = common::bin()
        .current_dir(common::root())
        .args([
            "demo",
            "--device",
            "cpu",
            "--experiment",
            "experiments/shapes_tpa32.toml",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
}
