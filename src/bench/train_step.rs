//! `clipdoor bench train-step`: [`Trainer::step`] itself — one Rickrolling training step (utility on
//! a clean batch + one target-prompt backdoor, cosine distance on flattened last hidden states, AdamW,
//! TensorBoard scalars) at a real encoder size, clipdoor vs the same step in PyTorch/transformers, and the share of the machine's measured
//! matmul peak the step reaches.
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

use super::reference::{bench_prompts, run_reference, sync, EncoderRun};
use crate::error::Result;
use crate::experiment::Experiment;
use crate::models::text_encoder::TextEncoder;
use crate::settings::{AdamWChoice, Precision};
use crate::train::optim::AdamWImpl;
use crate::train::trainer::{TrainOptions, Trainer};

pub struct TrainStepBench {
    pub model_dir: PathBuf,
    pub clean_batch: usize,
    pub poisoned: usize,
    pub threads: i32,
    pub repeats: usize,
    pub device: Device,
    pub python: Option<PathBuf>,
    /// The experiment's `training.adamw`, so both AdamW implementations can be timed.
    pub adamw: AdamWChoice,
    /// The experiment's `training.precision`; the reference runs the same (`--precision`).
    pub precision: Precision,
}

/// GFLOP/s of a large f32 matmul on `device`: the peak the step is compared with.
pub fn matmul_peak_gflops(device: Device) -> f64 {
    let n = 2048;
    let a = Tensor::randn([n, n], (Kind::Float, device));
    let b = Tensor::randn([n, n], (Kind::Float, device));
    let _ = a.matmul(&b);
    sync(device);
    let reps = 5;
    let t0 = Instant::now();
    for _ in 0..reps {
        let _ = a.matmul(&b);
    }
    sync(device);
    2.0 * (n as f64).powi(3) * reps as f64 / t0.elapsed().as_secs_f64() / 1e9
}

/// FLOPs of one step: teacher forward on the clean batch, student forward + backward (≈ 3× forward)
/// on clean + poisoned, counting the linear layers (2 · params · tokens) and attention (4 · T² · H per
/// layer and sequence).
fn step_flops(enc: &TextEncoder, clean: usize, poisoned: usize) -> f64 {
    let c = &enc.config;
    let h = c.hidden_size as f64;
    let t = 77.0;
    let per_layer_params = 4.0 * h * h + 2.0 * h * c.intermediate_size as f64;
    let per_seq = c.num_hidden_layers as f64 * (2.0 * per_layer_params * t + 4.0 * t * t * h);
    per_seq * (clean as f64 + 3.0 * (clean + poisoned) as f64)
}

pub fn run(b: &TrainStepBench, work: &Path) -> Result<serde_json::Value> {
    tch::set_num_threads(b.threads);
    let name = b.model_dir.to_str().unwrap_or_default();
    // Measured in a scope of its own: the models and optimiser state are freed before the Python
    // reference loads its copies (at ViT-L/14 size with the paper's batch, each side needs ~12 GB).
    let mut report = measure(b, work, name)?;
    if let Some(py) = &b.python {
        let ours = report["clipdoor_seconds_per_step"]
            .as_f64()
            .unwrap_or(f64::NAN);
        let device = report["device"].as_str().unwrap_or("cpu").to_string();
        let prompt_file = work.join("bench_prompts.txt");
        let args = EncoderRun {
            what: "train-step",
            model: name,
            prompts: &prompt_file,
            batch_size: b.clean_batch,
            threads: b.threads,
            device: &device,
            repeats: b.repeats,
        }
        .args(&[
            ("--poisoned", b.poisoned.to_string()),
            ("--precision", b.precision.name().to_string()),
        ]);
        let r = run_reference(py, &args)?;
        let theirs = r["seconds_per_step"].as_f64().unwrap_or(f64::NAN);
        report["pytorch_seconds_per_step"] = serde_json::json!(theirs);
        report["speedup_clipdoor_over_pytorch"] = serde_json::json!(theirs / ours);
        report["reference"] = r;
    }
    Ok(report)
}

/// The benchmark's experiment: one TPA (Cyrillic о), the bench prompts as clean data (none held
/// out), the given batch sizes, no checkpoints.
fn experiment(b: &TrainStepBench, model: &str, prompts: &Path) -> Result<Experiment> {
    let text = format!(
        "seed = 0\n[model]\nteacher = {model:?}\n[data]\nclean_prompts = {prompts:?}\nholdout = 0\n\
         [training]\nsteps = {}\nclean_batch_size = {}\npoisoned_samples_per_step = {}\ncheckpoint_every = 0\nadamw = \"{}\"\nprecision = \"{}\"\n\
         [[backdoor]]\nkind = \"target_prompt\"\ntrigger = \"о\"\nreplaced_character = \"o\"\n\
         target_prompt = \"a photo of a rick astley dancing\"\n",
        2 * b.repeats + 2,
        b.clean_batch,
        b.poisoned,
        b.adamw.name(),
        b.precision.name()
    );
    Experiment::from_toml(&text, Path::new("."))
}

/// Times [`Trainer::step`] itself: steps 0 (no clean batch: student = teacher) and 1 warm up, then
/// `repeats` steps are timed, with the per-phase profile ([`Trainer::profile`]) taken from them on
/// CPU and from `repeats` more steps on a GPU (where phase timers synchronise).
fn measure(b: &TrainStepBench, work: &Path, name: &str) -> Result<serde_json::Value> {
    let prompts = bench_prompts(b.clean_batch.max(b.poisoned));
    let prompt_file = work.join("bench_prompts.txt");
    std::fs::write(&prompt_file, prompts.join("\n"))?;
    let exp = experiment(b, name, &prompt_file)?;
    let opts = TrainOptions {
        out: work.join("run"),
        resume: false,
        force: true,
        device: b.device,
        stop_after: None,
    };
    let mut trainer = Trainer::new(&exp, &opts)?;
    trainer.step()?;
    trainer.step()?;
    sync(b.device);
    // The whole-step time comes from steps without phase timers (on CUDA those synchronise); the
    // profile from as many steps again with them.
    // On CPU a lap is a clock read, so the timed steps carry the profile themselves.
    trainer.set_profiling(b.device == Device::Cpu);
    let t0 = Instant::now();
    for _ in 0..b.repeats {
        trainer.step()?;
    }
    sync(b.device);
    let ours = t0.elapsed().as_secs_f64() / b.repeats as f64;
    if b.device != Device::Cpu {
        trainer.set_profiling(true);
        for _ in 0..b.repeats {
            trainer.step()?;
        }
    }
    let profile = trainer.profile();
    let student = trainer.student();
    let flops = step_flops(student, b.clean_batch, b.poisoned);
    let peak = matmul_peak_gflops(b.device);
    let device = format!("{:?}", b.device)
        .to_lowercase()
        .replace("cuda(", "cuda:")
        .replace(')', "");
    let report = serde_json::json!({
        "benchmark": "train-step",
        "model": b.model_dir,
        "hidden_size": student.config.hidden_size, "layers": student.config.num_hidden_layers,
        "clean_batch": b.clean_batch, "poisoned": b.poisoned, "threads": b.threads, "repeats": b.repeats,
        "device": device,
        "adamw": AdamWImpl::resolve(b.adamw, b.device).name(),
        "precision": b.precision.name(),
        "clipdoor_seconds_per_step": ours,
        "step_gflop": flops / 1e9,
        "clipdoor_gflops": flops / ours / 1e9,
        "matmul_peak_gflops": peak,
        "share_of_matmul_peak": flops / ours / 1e9 / peak,
        "clipdoor_phase_seconds_per_step": profile,
    });
    Ok(report)
}
