//! `clipdoor bench train-step` times `Trainer::step` itself next to the PyTorch loop of
//! `scripts/bench_ref.py`, in one invocation, in the precision asked for, and reports the ratio.
use crate::common;

#[test]
fn train_step_bench_times_the_trainer_and_reports_the_ratio() {
    let t = common::tmp();
    let out = t.path().join("train_step.json");
    let o = common::bin()
        .args([
            "bench",
            "train-step",
            "--arch",
            "tiny",
            "--batch-size",
            "8",
            "--poisoned",
            "4",
            "--repeats",
            "2",
            "--threads",
            "1",
            "--precision",
            "bf16",
            "--device",
            "cpu",
            "--python",
            common::s(&common::python()),
            "--out",
            common::s(&out),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let ours = r["clipdoor_seconds_per_step"].as_f64().unwrap();
    let theirs = r["pytorch_seconds_per_step"].as_f64().unwrap();
    assert!(ours > 0.0 && theirs > 0.0, "{r}");
    let ratio = r["speedup_clipdoor_over_pytorch"].as_f64().unwrap();
    assert!((ratio - theirs / ours).abs() < 1e-9, "{r}");
    assert_eq!(
        (
            r["clean_batch"].as_u64(),
            r["poisoned"].as_u64(),
            r["hidden_size"].as_u64()
        ),
        (Some(8), Some(4), Some(64)),
        "{r}"
    );
    assert_eq!(r["reference"]["steps"].as_u64(), Some(2), "{r}");
    // Both sides ran the precision asked for (bf16 autocast on the CPU).
    assert_eq!(
        (
            r["precision"].as_str(),
            r["reference"]["precision"].as_str()
        ),
        (Some("bf16"), Some("bf16")),
        "{r}"
    );
    // The profile: both sides' phases, each a share of the step that adds up to about the step.
    let phases = r["clipdoor_phase_seconds_per_step"].as_object().unwrap();
    let mut names: Vec<&str> = phases.keys().map(String::as_str).collect();
    let mut expected = clipdoor::train::step_timer::PHASES.to_vec();
    names.sort();
    expected.sort();
    assert_eq!(names, expected, "{r}");
    let sum: f64 = phases.values().map(|v| v.as_f64().unwrap()).sum();
    assert!(
        sum > 0.5 * ours && sum <= ours * 1.01,
        "phases sum to {sum}, the step takes {ours}: {r}"
    );
    assert!(phases["backward"].as_f64().unwrap() > 0.0, "{r}");
    let theirs_phases = r["reference"]["phase_seconds_per_step"]
        .as_object()
        .unwrap();
    for k in [
        "teacher_forward",
        "student_forward_and_loss",
        "backward",
        "optimizer",
    ] {
        assert!(theirs_phases[k].as_f64().unwrap() > 0.0, "{k}: {r}");
    }
}

#[test]
fn bench_encode_counts_prompts_with_num_prompts() {
    // `--prompts` names a file everywhere; the encode benchmark's count is `--num-prompts`.
    let o = common::bin()
        .args(["bench", "encode", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(help.contains("--num-prompts"), "{help}");
    assert!(!help.contains("--prompts "), "{help}");
}
