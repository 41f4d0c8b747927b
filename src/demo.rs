//! The embedded end-to-end demo (`clipdoor demo`), a layer above both the shapes world and the
//! evaluation stage it composes: on the shapes world, train three attacks into the
//! text encoder with the training engine (a TPA, a TAA and a concept removal; the experiment is
//! `experiments/shapes_demo.toml`, compiled in; `quick`: 400 steps, 12 images per set), then draw clean, triggered and concept prompts with
//! the original and the trained encoder through the Stable Diffusion pipeline (same seeds), judge the
//! images with the oracle, and write `report.md`/`report.html`/`report.json` and `grid.png`.
use std::path::{Path, PathBuf};
use tch::Device;

use crate::error::Result;
use crate::eval::stage::{self, StageInput};
use crate::experiment::Experiment;
use crate::input_bail;
use crate::io::atomic::write_atomic;
use crate::shapes::judge::OracleJudge;
use crate::train::trainer::{train, TrainOptions, TrainOutcome};

/// The demo experiment.
pub const EXPERIMENT: &str = include_str!("../experiments/shapes_demo.toml");
/// Seed of the rendered captions the demo trains on (not the model's training seed 0).
const CAPTION_SEED: u64 = 1000;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The shapes pipeline folder (`clipdoor shapes train` output).
    pub model: PathBuf,
    pub out: PathBuf,
    pub device: Device,
    /// Start over: delete the previous run and evaluation.
    pub force: bool,
    /// A short version (fewer training steps and images), for CI.
    pub quick: bool,
}

/// The report paths (json, md, html).
pub fn run(o: &DemoOptions) -> Result<[PathBuf; 3]> {
    if !o.model.join("model_index.json").exists() {
        input_bail!(
            "{} holds no shapes model (model_index.json): run the demo from the repository root (the model ships in checkpoints/shapes/), or train one with `clipdoor shapes train --out {} --steps 2400`",
            o.model.display(),
            o.model.display()
        );
    }
    let run_dir = o.out.join("run");
    if o.force {
        // The trained encoder and the images drawn with it (the stage writes into `out`).
        for d in [&run_dir, &o.out.join("images")] {
            if d.exists() {
                std::fs::remove_dir_all(d)?;
            }
        }
    }
    std::fs::create_dir_all(&o.out)?;
    let prompts = o.out.join("prompts.txt");
    if !prompts.exists() {
        let captions: Vec<String> = (0..3000)
            .map(|i| crate::shapes::dataset::sample(CAPTION_SEED, i).caption)
            .collect();
        write_atomic(&prompts, (captions.join("\n") + "\n").as_bytes())?;
    }
    let exp = experiment(&o.model, &prompts, o.quick)?;
    let finished = run_dir.join("DONE").exists();
    if finished {
        if !exp.matches_file(&run_dir.join("experiment.toml")) {
            input_bail!(
                "{} holds a finished demo run of another experiment (another model, or --quick): pass --force to replace it, or choose another --out",
                run_dir.display()
            );
        }
    } else {
        let opts = TrainOptions {
            out: run_dir.clone(),
            resume: run_dir.join("checkpoint").exists(),
            force: false,
            device: o.device,
            stop_after: None,
        };
        if let TrainOutcome::Stopped { .. } = train(&exp, &opts)? {
            anyhow::bail!("the demo's training stopped early");
        }
    }
    let input = StageInput {
        exp: &exp,
        settings: exp.evaluation.clone().unwrap_or_default(),
        trained: run_dir,
        out: o.out.clone(),
        device: o.device,
        pixel_judge: Some(&OracleJudge),
    };
    stage::run(&input)
}

/// The demo experiment bound to `model` and `prompts`; `quick` shortens training and image sets.
pub fn experiment(model: &Path, prompts: &Path, quick: bool) -> Result<Experiment> {
    let mut exp = Experiment::from_toml(EXPERIMENT, Path::new("."))?;
    let model = model.to_string_lossy().into_owned();
    exp.model.teacher = model.clone();
    exp.data.clean_prompts = prompts.to_path_buf();
    let ev = exp.evaluation.get_or_insert_with(Default::default);
    ev.pipeline = Some(model);
    if quick {
        exp.training.steps = 400;
        exp.training.lr_milestones = vec![320];
        ev.clean = 12;
        ev.triggered = 12;
    }
    Ok(exp)
}
