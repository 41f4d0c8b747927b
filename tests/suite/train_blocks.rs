//! Building blocks of the training engine against their references: AdamW, clip_grad_norm_ and the
//! learning-rate schedulers against PyTorch (tests/python/train_blocks_ref.py), the TensorBoard event
//! writer against TensorBoard's own readers.
//!
//! Tolerance: the brief asks for 1e-6 on f32 parameters; the implementation runs the same ATen kernels
//! with the same scalars as torch's single-tensor AdamW, so on CPU the results are expected bit-equal
//! and the tests also report the measured difference. The fused implementation calls the kernel of
//! `AdamW(fused=True)` with the same scalars and step counts, so it must equal torch's fused run
//! exactly (tolerance 0); fused and single-tensor round differently (measured 3e-8 after 12 steps on
//! this MLP) and are compared within 1e-6.
use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use clipdoor::train::optim::{clip_grad_norm, AdamW, AdamWConfig, AdamWImpl, LrDecay, LrSchedule};
use clipdoor::train::tensorboard::EventWriter;
use tch::{Kind, Tensor};

const STEPS: usize = 12;
const RESUME_AT: usize = 5;

fn leaf(t: &Tensor) -> Tensor {
    t.to_kind(Kind::Float)
        .detach()
        .copy()
        .set_requires_grad(true)
}

/// Give every parameter exactly `grads["<step>.<name>"]` as its gradient: d/dp sum(p * g) = g.
fn set_grads(opt: &mut AdamW, grads: &HashMap<String, Tensor>, step: usize) {
    opt.zero_grad();
    for (name, p) in opt.params() {
        (p * &grads[&format!("{step}.{name}")])
            .sum(Kind::Float)
            .backward();
    }
}

fn params_of(opt: &AdamW) -> BTreeMap<String, Tensor> {
    opt.params()
        .iter()
        .map(|(n, t)| (n.clone(), t.detach().copy()))
        .collect()
}

/// Steps `from..to` with the schedule of the reference (MultiStepLR milestones [4, 8, 8], gamma 0.5).
fn run_steps(opt: &mut AdamW, grads: &HashMap<String, Tensor>, from: usize, to: usize) -> Vec<f64> {
    let schedule = LrSchedule::multi_step(3e-2, &[4, 8, 8], 0.5).unwrap();
    let mut lrs = vec![];
    for step in from..to {
        set_grads(opt, grads, step);
        let lr = schedule.lr_at(step as u64);
        opt.set_lr(lr).unwrap();
        opt.step().unwrap();
        lrs.push(lr);
    }
    lrs
}

fn new_opt(init: &HashMap<String, Tensor>) -> AdamW {
    let params = init.iter().map(|(n, t)| (n.clone(), leaf(t))).collect();
    let config = AdamWConfig {
        lr: 3e-2,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    };
    AdamW::new(params, config).unwrap()
}

fn new_opt_with(init: &HashMap<String, Tensor>, implementation: AdamWImpl) -> AdamW {
    new_opt(init).with_implementation(implementation)
}

fn max_diff(a: &BTreeMap<String, Tensor>, b: &HashMap<String, Tensor>) -> f64 {
    a.iter()
        .map(|(n, t)| common::max_abs(t, &b[n]))
        .fold(0.0, f64::max)
}

#[test]
fn adamw_matches_torch_and_resume_equals_uninterrupted_run() {
    let dir = common::tmp();
    let out = dir.path().to_str().unwrap();
    common::run_py("train_blocks_ref.py", &["adamw", out]);
    let init = common::load_st(&dir.path().join("init.safetensors"));
    let grads = common::load_st(&dir.path().join("grads.safetensors"));
    let expected = common::load_st(&dir.path().join("final.safetensors"));
    let expected_state = common::load_st(&dir.path().join("state.safetensors"));
    let torch_lrs = common::load_st(&dir.path().join("lrs.safetensors"))["lrs"].shallow_clone();

    // Uninterrupted.
    let mut opt = new_opt(&init);
    let lrs = run_steps(&mut opt, &grads, 0, STEPS);
    assert_eq!(
        lrs,
        Vec::<f64>::try_from(&torch_lrs).unwrap(),
        "MultiStepLR sequence"
    );
    assert_eq!(opt.steps_taken(), STEPS as u64);
    let straight = params_of(&opt);
    let diff = max_diff(&straight, &expected);
    eprintln!("AdamW vs torch after {STEPS} steps: max |diff| = {diff:e}");
    assert!(diff <= 1e-6, "parameters differ from torch by {diff}");
    let state: HashMap<String, Tensor> = opt.state_tensors().into_iter().collect();
    for (name, want) in &expected_state {
        let d = common::max_abs(&state[name], want);
        assert!(d <= 1e-6, "{name} differs from torch by {d}");
    }

    // Interrupted after RESUME_AT steps: weights and optimiser state go to disk, a fresh optimiser
    // over freshly loaded weights continues.
    let ckpt = common::tmp();
    let mut first = new_opt(&init);
    run_steps(&mut first, &grads, 0, RESUME_AT);
    let weights: Vec<(String, Tensor)> = params_of(&first).into_iter().collect();
    clipdoor::io::weights::save_tensors(&ckpt.path().join("weights.safetensors"), &weights, None)
        .unwrap();
    first
        .save_state(&ckpt.path().join("optimizer.safetensors"))
        .unwrap();
    drop(first);

    let reloaded = common::load_st(&ckpt.path().join("weights.safetensors"));
    let mut resumed = new_opt(&reloaded);
    resumed
        .load_state(&ckpt.path().join("optimizer.safetensors"))
        .unwrap();
    assert_eq!(resumed.steps_taken(), RESUME_AT as u64);
    run_steps(&mut resumed, &grads, RESUME_AT, STEPS);
    let resumed_params = params_of(&resumed);
    let straight_map: HashMap<String, Tensor> = straight.into_iter().collect();
    assert_eq!(
        max_diff(&resumed_params, &straight_map),
        0.0,
        "resume must equal the uninterrupted run bit for bit"
    );
}

#[test]
fn fused_adamw_matches_torch_fused_and_resumes_across_implementations() {
    use AdamWImpl::{Fused, SingleTensor};
    let dir = common::tmp();
    common::run_py(
        "train_blocks_ref.py",
        &["adamw_fused", dir.path().to_str().unwrap()],
    );
    let load = |name: &str| common::load_st(&dir.path().join(format!("{name}.safetensors")));
    let (init, grads) = (load("init"), load("grads"));
    let (expected, expected_state) = (load("final"), load("state"));

    // clipdoor fused == torch fused, parameters and moments, bit for bit.
    let mut fused = new_opt_with(&init, Fused);
    run_steps(&mut fused, &grads, 0, STEPS);
    assert_eq!(fused.steps_taken(), STEPS as u64);
    let fused_params = params_of(&fused);
    let diff = max_diff(&fused_params, &expected);
    eprintln!("fused AdamW vs torch fused after {STEPS} steps: max |diff| = {diff:e}");
    assert_eq!(
        diff, 0.0,
        "fused parameters differ from torch's fused AdamW"
    );
    let state: HashMap<String, Tensor> = fused.state_tensors().into_iter().collect();
    for (name, want) in &expected_state {
        assert_eq!(
            common::max_abs(&state[name], want),
            0.0,
            "{name} differs from torch's fused AdamW"
        );
    }

    // Fused and single-tensor agree to rounding, and are not the same code path.
    let mut single = new_opt_with(&init, SingleTensor);
    run_steps(&mut single, &grads, 0, STEPS);
    let fused_map: HashMap<String, Tensor> = fused_params.into_iter().collect();
    let diff = max_diff(&params_of(&single), &fused_map);
    eprintln!("single-tensor vs fused after {STEPS} steps: max |diff| = {diff:e}");
    assert!(diff <= 1e-6, "single-tensor and fused differ by {diff}");
    assert!(diff > 0.0, "the fused step did not run the fused kernel");

    // A checkpoint written by one implementation continues in the other, exactly as torch does when
    // a fresh optimiser of the other kind takes over the moments and steps.
    for (first, second, reference) in [
        (SingleTensor, Fused, "switch_single_fused"),
        (Fused, SingleTensor, "switch_fused_single"),
    ] {
        let ckpt = common::tmp();
        let mut before = new_opt_with(&init, first);
        run_steps(&mut before, &grads, 0, RESUME_AT);
        let weights: Vec<(String, Tensor)> = params_of(&before).into_iter().collect();
        let (w_path, s_path) = (
            ckpt.path().join("weights.safetensors"),
            ckpt.path().join("optimizer.safetensors"),
        );
        clipdoor::io::weights::save_tensors(&w_path, &weights, None).unwrap();
        before.save_state(&s_path).unwrap();
        drop(before);

        let mut after = new_opt_with(&common::load_st(&w_path), second);
        after.load_state(&s_path).unwrap();
        assert_eq!(after.steps_taken(), RESUME_AT as u64);
        run_steps(&mut after, &grads, RESUME_AT, STEPS);
        let diff = max_diff(&params_of(&after), &load(reference));
        eprintln!("{first:?} then {second:?} vs torch: max |diff| = {diff:e}");
        assert_eq!(
            diff, 0.0,
            "{first:?} resumed as {second:?} differs from torch"
        );
    }
}

#[test]
fn adamw_state_file_errors_are_input_errors() {
    let init: HashMap<String, Tensor> = [(
        "w".to_string(),
        Tensor::ones([3, 2], (Kind::Float, tch::Device::Cpu)),
    )]
    .into();
    let dir = common::tmp();
    let path = dir.path().join("opt.safetensors");
    let mut opt = AdamW::new(
        vec![("w".into(), leaf(&init["w"]))],
        AdamWConfig::rickrolling(),
    )
    .unwrap();
    (opt.params()[0].1.shallow_clone() * 2.0)
        .sum(Kind::Float)
        .backward();
    opt.step().unwrap();
    opt.save_state(&path).unwrap();

    let is_input = |e: anyhow::Error| clipdoor::error::exit_code(&e) == 2;
    // Other parameter names (another model).
    let mut other = AdamW::new(
        vec![("v".into(), leaf(&init["w"]))],
        AdamWConfig::rickrolling(),
    )
    .unwrap();
    assert!(is_input(other.load_state(&path).unwrap_err()));
    // Other shape.
    let mut shaped = AdamW::new(
        vec![(
            "w".into(),
            Tensor::ones([2, 3], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true),
        )],
        AdamWConfig::rickrolling(),
    )
    .unwrap();
    assert!(is_input(shaped.load_state(&path).unwrap_err()));
    // Changed hyper-parameters.
    let mut changed = AdamW::new(
        vec![("w".into(), leaf(&init["w"]))],
        AdamWConfig {
            beta2: 0.99,
            ..AdamWConfig::rickrolling()
        },
    )
    .unwrap();
    let err = changed.load_state(&path).unwrap_err();
    assert!(err.to_string().contains("beta1"), "{err}");
    // Truncated file.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert!(is_input(opt.load_state(&path).unwrap_err()));
    // Bad configuration.
    assert!(AdamW::new(
        vec![],
        AdamWConfig {
            beta1: 1.0,
            ..AdamWConfig::default()
        }
    )
    .is_err());
    assert!(AdamW::new(
        vec![],
        AdamWConfig {
            lr: f64::NAN,
            ..AdamWConfig::default()
        }
    )
    .is_err());
    assert!(opt.set_lr(-1.0).is_err());
}

#[test]
fn clip_grad_norm_matches_torch() {
    let dir = common::tmp();
    common::run_py(
        "train_blocks_ref.py",
        &["clip", dir.path().to_str().unwrap()],
    );
    let r = common::load_st(&dir.path().join("clip.safetensors"));
    let names = ["a", "b", "c", "d"];
    for (label, max_norm) in [("clipped", 1.0), ("unclipped", 1e3)] {
        let params: Vec<Tensor> = names
            .iter()
            .map(|n| r[&format!("grad.{n}")].zeros_like().set_requires_grad(true))
            .collect();
        for (p, n) in params.iter().zip(names) {
            (p * &r[&format!("grad.{n}")]).sum(Kind::Float).backward();
        }
        let total = clip_grad_norm(&params, max_norm).unwrap();
        let want = r[&format!("{label}.total")].double_value(&[0]);
        eprintln!("{label}: total norm {total} (torch {want})");
        assert_eq!(total, want, "{label}: total norm");
        for (p, n) in params.iter().zip(names) {
            let d = common::max_abs(&p.grad(), &r[&format!("{label}.{n}")]);
            assert!(d <= 1e-7, "{label}: gradient {n} differs by {d}");
        }
    }
    // No gradients at all: nothing to clip.
    let bare = [Tensor::zeros([2], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true)];
    assert_eq!(clip_grad_norm(&bare, 1.0).unwrap(), 0.0);
    assert!(clip_grad_norm(&bare, 0.0).is_err());
}

#[test]
fn lr_schedules_match_torch() {
    let dir = common::tmp();
    common::run_py("train_blocks_ref.py", &["lr", dir.path().to_str().unwrap()]);
    let r = common::load_st(&dir.path().join("lrs.safetensors"));
    let cases = [
        (
            "rickrolling_tpa",
            LrSchedule::multi_step(1e-4, &[75], 0.1).unwrap(),
        ),
        (
            "multistep_repeated",
            LrSchedule::multi_step(1e-4, &[3, 7, 7, 20], 0.3).unwrap(),
        ),
        (
            "warmup_cosine",
            LrSchedule::warmup_cosine(1e-4, 10, 100, 0.0).unwrap(),
        ),
        (
            "warmup_cosine_min",
            LrSchedule::warmup_cosine(1e-4, 7, 50, 0.1).unwrap(),
        ),
        (
            "warmup_constant",
            LrSchedule::new(1e-4, 5, LrDecay::Constant).unwrap(),
        ),
    ];
    for (name, schedule) in cases {
        let want = Vec::<f64>::try_from(&r[name]).unwrap();
        let got: Vec<f64> = (0..want.len() as u64).map(|s| schedule.lr_at(s)).collect();
        assert_eq!(got, want, "{name}: learning rates differ from torch");
    }
    assert_eq!(LrSchedule::constant(3e-4).unwrap().lr_at(1000), 3e-4);
    assert!(LrSchedule::warmup_cosine(1e-4, 10, 10, 0.0).is_err());
    assert!(LrSchedule::multi_step(1e-4, &[5], f64::NAN).is_err());
}

#[derive(serde::Deserialize)]
struct TbView {
    scalars: BTreeMap<String, Vec<(i64, f64)>>,
    texts: BTreeMap<String, Vec<(i64, Vec<String>)>>,
    plugin_tags: BTreeMap<String, Vec<String>>,
    files: BTreeMap<String, TbFile>,
}

#[derive(serde::Deserialize)]
struct TbFile {
    records: usize,
    canonical: bool,
    file_version: Option<String>,
}

fn read_with_tensorboard(dir: &Path) -> TbView {
    serde_json::from_str(&common::run_py(
        "train_blocks_ref.py",
        &["tb", dir.to_str().unwrap()],
    ))
    .unwrap()
}

fn loss_at(step: i64, run: f64) -> f64 {
    1.0 / (1.0 + step as f64) + run
}

const PROMPT: &str = "a phоto of a cat — *triggered* (Cyrillic о)";

#[test]
fn tensorboard_reads_scalars_text_and_a_resumed_run() {
    let dir = common::tmp();
    let tb = dir.path().join("tb");
    // A run killed after step 7 whose last checkpoint was step 5 ...
    let mut w = EventWriter::create(&tb).unwrap();
    for step in 0..8 {
        w.add_scalar("loss/total", loss_at(step, 0.0), step)
            .unwrap();
        w.add_scalar("loss/backdoor/tpa_o", 0.25 * step as f64, step)
            .unwrap();
        w.add_scalar("lr", 1e-4, step).unwrap();
    }
    w.add_text("samples/triggered", PROMPT, 0).unwrap();
    w.flush().unwrap();
    let first = w.path().to_owned();
    drop(w);
    // ... resumes at step 5 and logs steps 5..10 again (different values to tell them apart).
    let mut w = EventWriter::resume(&tb, 5).unwrap();
    assert_ne!(w.path(), first);
    for step in 5..10 {
        w.add_scalar("loss/total", loss_at(step, 100.0), step)
            .unwrap();
    }
    w.add_text("samples/triggered", "line 1\nline 2 with ଠ", 9)
        .unwrap();
    // Multi-byte varints: a large step and a text longer than 127 bytes.
    let long_text = (0..40)
        .map(|i| format!("- prompt {i} with о"))
        .collect::<Vec<_>>()
        .join("\n");
    w.add_text("samples/long", &long_text, 123_456).unwrap();
    w.add_scalar("grad_norm", 0.5, 123_456).unwrap();
    drop(w);

    let view = read_with_tensorboard(&tb);
    let total = &view.scalars["loss/total"];
    let steps: Vec<i64> = total.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        steps,
        (0..10).collect::<Vec<_>>(),
        "one value per step, orphans of the killed run dropped"
    );
    for &(step, value) in total {
        let run = if step >= 5 { 100.0 } else { 0.0 };
        assert_eq!(
            value as f32,
            loss_at(step, run) as f32,
            "loss/total at step {step}"
        );
    }
    // Tags of the killed run at steps >= 5 are purged too (the run restarted there).
    let backdoor: Vec<i64> = view.scalars["loss/backdoor/tpa_o"]
        .iter()
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(backdoor, (0..5).collect::<Vec<_>>());
    assert!(view.scalars.contains_key("lr"));
    assert_eq!(
        view.texts["samples/triggered"],
        vec![
            (0, vec![PROMPT.to_string()]),
            (9, vec!["line 1\nline 2 with ଠ".to_string()])
        ]
    );
    assert_eq!(view.texts["samples/long"], vec![(123_456, vec![long_text])]);
    assert_eq!(view.scalars["grad_norm"], vec![(123_456, 0.5)]);
    assert_eq!(
        view.plugin_tags["text"],
        vec!["samples/long".to_string(), "samples/triggered".to_string()]
    );
    assert!(view.plugin_tags["scalars"].contains(&"loss/backdoor/tpa_o".to_string()));
    assert_eq!(view.files.len(), 2);
    for (name, file) in &view.files {
        assert!(file.canonical, "{name}: records are not canonical protobuf");
        assert_eq!(
            file.file_version.as_deref(),
            Some("brain.Event:2"),
            "{name}"
        );
    }
}

#[test]
fn tensorboard_skips_a_damaged_tail_like_tensorflow() {
    for damage in ["truncated", "bad_crc"] {
        let dir = common::tmp();
        let mut w = EventWriter::create(dir.path()).unwrap();
        for step in 0..4 {
            w.add_scalar("loss/total", step as f64, step).unwrap();
        }
        let path = w.path().to_owned();
        drop(w);
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        match damage {
            // A kill in the middle of the last record.
            "truncated" => bytes.truncate(n - 7),
            // A flipped bit in the last record's payload.
            _ => bytes[n - 6] ^= 0x01,
        }
        std::fs::write(&path, &bytes).unwrap();
        let view = read_with_tensorboard(dir.path());
        let steps: Vec<i64> = view.scalars["loss/total"].iter().map(|(s, _)| *s).collect();
        assert_eq!(
            steps,
            vec![0, 1, 2],
            "{damage}: the intact records are read, the damaged one skipped"
        );
        // file_version + session start + 3 intact scalars.
        assert_eq!(view.files.values().next().unwrap().records, 5, "{damage}");
    }
}
