//! `training.precision`: bf16 autocast against PyTorch's CPU autocast (forward and training steps),
//! f16 dynamic loss scaling in the trainer (an overflow skips the step and backs off; the scaler's
//! state survives `--resume`), the saved encoder stays f32, and (feature `cuda-tests`) bf16 on CUDA.
//!
//! The reference is tests/python/precision_ref.py: transformers' CLIPTextModel under
//! `torch.autocast("cpu", dtype=torch.bfloat16)`, losses in f32, `torch.optim.AdamW`.
use crate::common;

use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clipdoor::experiment::Experiment;
use clipdoor::models::text_encoder::TextEncoder;
use clipdoor::train::grad_scaler::GradScaler;
use clipdoor::train::trainer::{TrainOptions, Trainer};
use tch::{Device, Kind, Tensor};

const TARGET: &str = "a photo of rick astley dancing";

/// A tiny random CLIPTextModel made and saved by transformers, with its tokenizer.
fn tiny_encoder(dir: &Path) -> PathBuf {
    let d = dir.join("tiny");
    common::run_py("clip_text_ref.py", &["make", common::s(&d), "tiny", "0"]);
    d
}

/// A one-backdoor (target prompt) experiment on `teacher` in `precision`, with `extra` lines in
/// `[training]`.
fn experiment(dir: &Path, teacher: &str, precision: &str, steps: u64, extra: &str) -> PathBuf {
    let prompts = common::root().join("experiments/smoke/prompts.txt");
    let text = format!(
        r#"seed = 42
[model]
teacher = {teacher:?}
[data]
clean_prompts = {prompts:?}
holdout = 100
[training]
steps = {steps}
clean_batch_size = 8
poisoned_samples_per_step = 4
loss_weight = 0.1
lr = 1e-3
lr_schedule = "constant"
checkpoint_every = 2
precision = "{precision}"
{extra}
[[backdoor]]
name = "cyrillic_o"
kind = "target_prompt"
trigger = "о"
replaced_character = "o"
target_prompt = "{TARGET}"
"#
    );
    let p = dir.join(format!("{precision}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn options(out: &Path) -> TrainOptions {
    TrainOptions {
        out: out.to_path_buf(),
        resume: false,
        force: false,
        device: Device::Cpu,
        stop_after: None,
    }
}

fn weights(tr: &Trainer) -> HashMap<String, Tensor> {
    tr.student()
        .vs
        .variables()
        .into_iter()
        // transformers 5 saves a CLIPTextModel's tensors without the `text_model.` prefix.
        .map(|(n, t)| {
            let bare = n.strip_prefix("text_model.").unwrap_or(&n).to_string();
            (bare, t.detach().copy())
        })
        .collect()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// max |a - b| / max |b| over every tensor of `b`.
fn rel_diff(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> (f64, f64) {
    let mut abs: f64 = 0.0;
    let mut scale: f64 = 0.0;
    for (n, t) in b {
        let mine = a
            .get(n)
            .unwrap_or_else(|| panic!("no {n} on the clipdoor side"));
        abs = abs.max(common::max_abs(mine, t));
        scale = scale.max(t.abs().max().double_value(&[]));
    }
    (abs, abs / scale)
}

#[test]
fn bf16_forward_matches_torch_cpu_autocast() {
    let t = common::tmp();
    let enc_dir = tiny_encoder(t.path());
    let prompts = t.path().join("prompts.txt");
    std::fs::write(
        &prompts,
        "a photo of a dog\na phоto of a dog\nan old castle by the ocean at night, oil painting\n\
         a\nportrait of a woman with a red hat, detailed, 4k, trending on artstation\n",
    )
    .unwrap();
    let py = t.path().join("py.safetensors");
    common::run_py(
        "precision_ref.py",
        &[
            "encode",
            common::s(&enc_dir),
            common::s(&prompts),
            common::s(&py),
            "bf16",
        ],
    );
    let want = common::load_st(&py)["last_hidden_state"].shallow_clone();

    let enc = TextEncoder::load(common::s(&enc_dir), Device::Cpu, Kind::Float).unwrap();
    let lines: Vec<String> = std::fs::read_to_string(&prompts)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let got = tch::no_grad(|| {
        clipdoor::torch_ext::autocast(Device::Cpu, Kind::BFloat16, || {
            enc.encode(&lines, false).unwrap().1.last_hidden_state
        })
    })
    .unwrap();
    let f32_out = tch::no_grad(|| enc.encode(&lines, false).unwrap().1.last_hidden_state);
    let abs = common::max_abs(&got, &want);
    let rel = abs / want.abs().max().double_value(&[]);
    // How far bf16 moves the output from f32, to show the comparison is not an f32 one.
    let bf16_vs_f32 = common::max_abs(&got, &f32_out);
    eprintln!(
        "bf16 autocast vs torch: max |diff| {abs:e} (relative {rel:e}); bf16 vs f32 {bf16_vs_f32:e}"
    );
    assert!(bf16_vs_f32 > 1e-3, "the autocast forward computed in f32");
    // Measured: bit-equal (the same ATen kernels under the same autocast casts). Allowed: one bf16
    // rounding step of the largest value, far below the bf16-vs-f32 gap above.
    assert!(rel <= 1e-2, "relative difference {rel}");
}

#[test]
fn bf16_training_steps_match_torch_and_the_saved_encoder_is_f32() {
    let t = common::tmp();
    let enc_dir = tiny_encoder(t.path());
    let exp_path = experiment(t.path(), common::s(&enc_dir), "bf16", 2, "");
    let exp = Experiment::load(&exp_path).unwrap();
    let out = t.path().join("run");
    let mut tr = Trainer::new(&exp, &options(&out)).unwrap();
    let mut steps = vec![];
    let mut losses = vec![];
    for step in 0..2 {
        let b = tr.batch(step);
        steps.push(json!({"n_clean": b.n_clean, "student": b.student, "teacher": b.teacher}));
        let r = tr.step().unwrap();
        assert!(r.loss_scale.is_none() && !r.skipped);
        losses.push(r.loss);
    }
    let trained = weights(&tr);

    let tc = &exp.training;
    let spec = json!({
        "target_prompt": TARGET, "lr": tc.lr, "betas": tc.betas, "eps": tc.eps,
        "weight_decay": tc.weight_decay, "loss_weight": tc.loss_weight, "steps": steps,
    });
    let spec_path = t.path().join("steps.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let py = t.path().join("py_student");
    let printed = common::run_py(
        "precision_ref.py",
        &[
            "train",
            common::s(&enc_dir),
            common::s(&spec_path),
            common::s(&py),
            "bf16",
        ],
    );
    let torch_losses: Vec<f64> = serde_json::from_str::<Value>(&printed).unwrap()["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let torch_weights = common::load_st(&py.join("model.safetensors"));
    let (abs, rel) = rel_diff(&trained, &torch_weights);
    eprintln!(
        "bf16 steps: losses {losses:?} vs torch {torch_losses:?}; weights max |diff| {abs:e} (relative {rel:e})"
    );
    for (a, b) in losses.iter().zip(&torch_losses) {
        assert!(
            (a - b).abs() <= 1e-3 * b.abs().max(1e-3),
            "loss {a} vs torch {b}"
        );
    }
    // Measured: losses and weights bit-equal. Adam's first updates are ±lr per element, so one
    // gradient of the other sign would move a weight by ~2e-3; the bound is a tenth of lr.
    assert!(abs <= 1e-4, "weights differ from torch by {abs}");

    // The run's outputs: f32 weights and config, the precision named.
    tr.checkpoint().unwrap();
    tr.finish().unwrap();
    let cfg = read_json(&out.join("text_encoder/config.json"));
    assert_eq!(cfg["torch_dtype"], "float32", "{cfg}");
    for (name, w) in common::load_st(&out.join("text_encoder/model.safetensors")) {
        assert_eq!(w.kind(), Kind::Float, "{name}");
    }
    for (name, w) in common::load_st(&out.join("checkpoint/model.safetensors")) {
        assert_eq!(w.kind(), Kind::Float, "{name}");
    }
    let m = read_json(&out.join("metrics.json"));
    assert_eq!(m["training"]["precision"], "bf16");
    assert!(m["training"].get("loss_scale").is_none());
    let resolved = std::fs::read_to_string(out.join("experiment.toml")).unwrap();
    assert!(resolved.contains("precision = \"bf16\""), "{resolved}");
}

#[test]
fn f16_overflow_skips_the_step_backs_off_and_keeps_the_weights() {
    let t = common::tmp();
    // β = 1e30: the f32 loss (≈ −1e30, below max_loss) stays finite, but its scaled gradient
    // overflows f16 inside the autocast region on every step.
    let exp_path = experiment(t.path(), "random:tiny:0", "f16", 2, "");
    let text = std::fs::read_to_string(&exp_path)
        .unwrap()
        .replace("loss_weight = 0.1", "loss_weight = 1e30");
    std::fs::write(&exp_path, text).unwrap();
    let exp = Experiment::load(&exp_path).unwrap();
    let out = t.path().join("run");
    let mut tr = Trainer::new(&exp, &options(&out)).unwrap();
    let before = weights(&tr);
    for (i, scale) in [(0u64, 65536.0), (1, 32768.0)] {
        let r = tr.step().unwrap();
        assert!(r.skipped, "step {i} was not skipped");
        assert!(r.loss.is_finite());
        assert_eq!(r.loss_scale, Some(scale));
        let s = tr.grad_scaler().unwrap();
        assert_eq!(
            (s.scale as f64, s.growth_tracker, s.skipped_steps),
            (scale / 2.0, 0, i + 1)
        );
    }
    let after = weights(&tr);
    for (n, w) in &before {
        assert_eq!(common::max_abs(w, &after[n]), 0.0, "{n} changed");
    }
    tr.checkpoint().unwrap();
    let state = read_json(&out.join("checkpoint/state.json"));
    assert_eq!(
        state["grad_scaler"],
        json!({"scale": 16384.0, "growth_tracker": 0, "skipped_steps": 2})
    );
    drop(tr);
    // Resuming restores the scaler as it was saved.
    let resumed = Trainer::new(
        &exp,
        &TrainOptions {
            resume: true,
            ..options(&out)
        },
    )
    .unwrap();
    assert_eq!(resumed.next_step(), 2);
    assert_eq!(
        resumed.grad_scaler(),
        Some(&GradScaler {
            scale: 16384.0,
            growth_tracker: 0,
            skipped_steps: 2
        })
    );
    resumed.finish().unwrap();
    let m = read_json(&out.join("metrics.json"));
    assert_eq!(m["training"]["precision"], "f16");
    assert_eq!(m["training"]["skipped_steps"], 2);
    assert_eq!(m["training"]["loss_scale"], 16384.0);
    // TensorBoard shows the scale of each step and the skips.
    let tb: Value = serde_json::from_str(&common::run_py(
        "tb_read.py",
        &[out.join("tb").to_str().unwrap()],
    ))
    .unwrap();
    let scale = tb["scalars"]["amp/scale"].as_array().unwrap();
    assert_eq!(scale.len(), 2);
    assert_eq!(scale[1][1], 32768.0);
    assert_eq!(tb["scalars"]["amp/skipped"][0][1], 1.0);
}

fn train_cli(exp: &Path, out: &Path, extra: &[&str]) -> (i32, String) {
    let o = common::bin()
        .args(["train", common::s(exp), "--out", common::s(out)])
        .args(["--device", "cpu"])
        .args(extra)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn f16_resume_equals_an_uninterrupted_run() {
    let t = common::tmp();
    // The file says f32; --precision f16 overrides it (and is recorded in the run).
    let exp = experiment(t.path(), "random:tiny:0", "f32", 4, "");
    let f16 = ["--precision", "f16"];
    let full = t.path().join("full");
    let (code, err) = train_cli(&exp, &full, &f16);
    assert_eq!(code, 0, "{err}");
    let part = t.path().join("part");
    let (code, err) = train_cli(&exp, &part, &[&f16[..], &["--stop-after", "2"]].concat());
    assert_eq!(code, 0, "{err}");
    let state = read_json(&part.join("checkpoint/state.json"));
    assert_eq!(
        state["grad_scaler"],
        json!({"scale": 65536.0, "growth_tracker": 2, "skipped_steps": 0}),
        "{state}"
    );
    // A checkpoint without the scaler's state cannot resume an f16 run.
    let damaged = t.path().join("damaged");
    common::copy_dir(&part, &damaged);
    let state_file = damaged.join("checkpoint/state.json");
    let mut s = read_json(&state_file);
    s.as_object_mut().unwrap().remove("grad_scaler");
    std::fs::write(&state_file, s.to_string()).unwrap();
    let (code, err) = train_cli(&exp, &damaged, &[&f16[..], &["--resume"]].concat());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("grad_scaler") && err.contains("--force"),
        "{err}"
    );
    // Resuming with another precision is another experiment.
    let (code, err) = train_cli(&exp, &part, &["--resume"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("differs"), "{err}");

    let (code, err) = train_cli(&exp, &part, &[&f16[..], &["--resume"]].concat());
    assert_eq!(code, 0, "{err}");
    let a = std::fs::read(full.join("text_encoder/model.safetensors")).unwrap();
    let b = std::fs::read(part.join("text_encoder/model.safetensors")).unwrap();
    assert!(
        a == b,
        "the resumed f16 run's weights differ from the uninterrupted run's"
    );
    let m = read_json(&part.join("metrics.json"));
    assert_eq!(m["training"]["precision"], "f16");
    assert_eq!(m["training"]["skipped_steps"], 0);
    let resolved = std::fs::read_to_string(part.join("experiment.toml")).unwrap();
    assert!(resolved.contains("precision = \"f16\""), "{resolved}");
    // The f16 run really trained in f16: its weights differ from an f32 run of the same file.
    let f32_run = t.path().join("f32");
    let (code, err) = train_cli(&exp, &f32_run, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(a != std::fs::read(f32_run.join("text_encoder/model.safetensors")).unwrap());
    assert_eq!(
        read_json(&f32_run.join("metrics.json"))["training"]["precision"],
        "f32"
    );
}

#[test]
fn tf32_on_the_cpu_is_an_input_error() {
    let t = common::tmp();
    let exp = experiment(t.path(), "random:tiny:0", "f32", 2, "");
    let (code, err) = train_cli(&exp, &t.path().join("run"), &["--precision", "tf32"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("needs a CUDA device") && err.contains("use f32"),
        "{err}"
    );
    assert!(
        !t.path().join("run").exists(),
        "a run folder was left behind"
    );
}

/// bf16 on a GPU: autocast computes in bf16 there, a bf16 run trains, and what it saves is f32;
/// a tf32 run switches the matmul precision and an f32 run switches it back.
#[cfg(feature = "cuda-tests")]
#[test]
fn bf16_and_tf32_on_cuda() {
    use clipdoor::torch_ext::{autocast, float32_matmul_precision, MatmulPrecision};
    let dev = Device::Cuda(0);
    let a = Tensor::randn([16, 16], (Kind::Float, dev));
    let y = autocast(dev, Kind::BFloat16, || a.matmul(&a)).unwrap();
    assert_eq!(y.kind(), Kind::BFloat16);

    let t = common::tmp();
    let exp_path = experiment(t.path(), "random:tiny:0", "bf16", 2, "");
    let exp = Experiment::load(&exp_path).unwrap();
    let out = t.path().join("bf16");
    let opts = TrainOptions {
        device: dev,
        ..options(&out)
    };
    let outcome = clipdoor::train::trainer::train(&exp, &opts).unwrap();
    eprintln!("{outcome:?}");
    for (name, w) in common::load_st(&out.join("text_encoder/model.safetensors")) {
        assert_eq!(w.kind(), Kind::Float, "{name}");
    }
    assert_eq!(
        read_json(&out.join("text_encoder/config.json"))["torch_dtype"],
        "float32"
    );
    assert_eq!(
        read_json(&out.join("metrics.json"))["training"]["precision"],
        "bf16"
    );

    let mut tf32 = exp.clone();
    tf32.training.precision = clipdoor::settings::Precision::Tf32;
    let opts = TrainOptions {
        device: dev,
        ..options(&t.path().join("tf32"))
    };
    let mut tr = Trainer::new(&tf32, &opts).unwrap();
    assert_eq!(float32_matmul_precision().unwrap(), MatmulPrecision::High);
    tr.step().unwrap();
    drop(tr);
    let mut f32 = exp.clone();
    f32.training.precision = clipdoor::settings::Precision::F32;
    let opts = TrainOptions {
        device: dev,
        ..options(&t.path().join("f32"))
    };
    let _tr = Trainer::new(&f32, &opts).unwrap();
    assert_eq!(
        float32_matmul_precision().unwrap(),
        MatmulPrecision::Highest
    );
}

#[test]
fn a_fused_adamw_run_resumes_from_a_single_tensor_checkpoint() {
    // `auto` is single-tensor on CPU; `--adamw fused` switches the update, and a run may change it
    // across a resume (the optimiser state is the same).
    let t = common::tmp();
    let exp = experiment(t.path(), "random:tiny:0", "f32", 4, "");
    let single = t.path().join("single");
    let (code, err) = train_cli(&exp, &single, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        read_json(&single.join("metrics.json"))["training"]["adamw"],
        "single-tensor"
    );
    let fused = t.path().join("fused");
    let (code, err) = train_cli(&exp, &fused, &["--adamw", "fused"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        read_json(&fused.join("metrics.json"))["training"]["adamw"],
        "fused"
    );
    let mixed = t.path().join("mixed");
    let (code, err) = train_cli(&exp, &mixed, &["--stop-after", "2"]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = train_cli(&exp, &mixed, &["--resume", "--adamw", "fused"]);
    assert_eq!(code, 0, "{err}");
    let load = |dir: &Path| {
        let mut w = HashMap::new();
        for (k, v) in Tensor::read_safetensors(dir.join("text_encoder/model.safetensors")).unwrap()
        {
            w.insert(k, v);
        }
        w
    };
    let (a, b, c) = (load(&single), load(&fused), load(&mixed));
    // Fused rounds differently from single-tensor, by far less than one update (lr 1e-3).
    let (abs_fs, _) = rel_diff(&a, &b);
    assert!(
        abs_fs > 0.0 && abs_fs < 1e-5,
        "fused vs single-tensor: {abs_fs}"
    );
    let (abs_mix, _) = rel_diff(&a, &c);
    assert!(
        abs_mix < 1e-5,
        "resumed with fused vs single-tensor: {abs_mix}"
    );
    assert_eq!(
        read_json(&mixed.join("metrics.json"))["training"]["adamw"],
        "fused"
    );
}
