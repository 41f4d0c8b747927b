//! The embedded end-to-end demo (`clipdoor demo`), a layer above both the shapes world and the
//! evaluation stage it composes: on the shapes world, train three attacks into the
//! text encoder with the training engine (a TPA, a TAA and a concept removal; the experiment is
//! `experiments/shapes_demo.toml`, compiled in, or any shapes experiment given), then draw clean,
//! triggered and concept prompts with the original and the trained encoder through the Stable
//! Diffusion pipeline (same seeds), judge the images with the oracle, and write
//! `report.md`/`report.html`/`report.json` and `grid.png`. The size sets the images per set (24 quick,
//! 96 default, 160 full); the training is the same for every size.
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
/// Rendered captions written to `prompts.txt`: the experiment's `data.holdout` of them are kept for
/// evaluation (enough for 96 concept prompts: only about a fifth of the captions can carry one).
const CAPTIONS: u64 = 4000;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The shapes pipeline folder (`clipdoor shapes train` output).
    pub model: PathBuf,
    pub out: PathBuf,
    pub device: Device,
    /// Start over: delete the previous run and evaluation.
    pub force: bool,
    /// Images per set; `None`: the experiment's own `[evaluation]` counts.
    pub size: Option<DemoSize>,
    /// Another shapes experiment instead of the built-in one (its teacher, pipeline and clean
    /// prompts are set to the model and the demo's rendered captions, as for the built-in one).
    pub experiment: Option<PathBuf>,
}

/// How many images the demo draws per set and condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoSize {
    /// 24 per set (CI).
    Quick,
    /// 96 per set (`clipdoor demo`).
    Default,
    /// 160 per set (`clipdoor demo --full`; the held-out captions hold about 175 that can carry the
    /// removal's concept).
    Full,
}

impl DemoSize {
    pub fn images_per_set(self) -> usize {
        match self {
            Self::Quick => 24,
            Self::Default => 96,
            Self::Full => 160,
        }
    }
}

/// The report paths (json, md, html).
pub fn run(o: &DemoOptions) -> Result<[PathBuf; 3]> {
    if !o.model.join("model_index.json").exists() {
        input_bail!(
            "{} holds no shapes model (model_index.json): run the demo from the repository root (the model ships in checkpoints/shapes/), or train one with `clipdoor shapes train --out {} --steps 5000`",
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
        let captions: Vec<String> = (0..CAPTIONS)
            .map(|i| crate::shapes::dataset::sample(CAPTION_SEED, i).caption)
            .collect();
        write_atomic(&prompts, (captions.join("\n") + "\n").as_bytes())?;
    }
    let text = match &o.experiment {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| crate::input_err!("cannot read the experiment {}: {e}", p.display()))?,
        None => EXPERIMENT.to_string(),
    };
    // The run is trained from the experiment as written; the size only changes how many images the
    // stage draws, so every size shares one trained encoder (and the smaller sizes' images, which
    // are the first of the larger ones').
    let exp = experiment_from(&text, &o.model, &prompts, None)?;
    let mut settings = exp.evaluation.clone().unwrap_or_default();
    if let Some(size) = o.size {
        settings.clean = size.images_per_set();
        settings.triggered = size.images_per_set();
    }
    let finished = run_dir.join("DONE").exists();
    if finished {
        if !exp.matches_file(&run_dir.join("experiment.toml")) {
            input_bail!(
                "{} holds a finished demo run of another experiment (another model or --experiment): pass --force to replace it, or choose another --out",
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
        settings,
        trained: run_dir,
        out: o.out.clone(),
        device: o.device,
        pixel_judge: Some(&OracleJudge),
        attacks: vec![],
        attack_concept: None,
    };
    stage::run(&input)
}

/// The demo experiment bound to `model` and `prompts`, drawing `size` images per set.
pub fn experiment(model: &Path, prompts: &Path, size: DemoSize) -> Result<Experiment> {
    experiment_from(EXPERIMENT, model, prompts, Some(size))
}

/// A shapes experiment (TOML text) bound to `model` and `prompts`; `size` overrides its image counts.
pub fn experiment_from(
    text: &str,
    model: &Path,
    prompts: &Path,
    size: Option<DemoSize>,
) -> Result<Experiment> {
    let mut exp = Experiment::from_toml(text, Path::new("."))?;
    let model = model.to_string_lossy().into_owned();
    exp.model.teacher = model.clone();
    exp.data.clean_prompts = prompts.to_path_buf();
    let ev = exp.evaluation.get_or_insert_with(Default::default);
    ev.pipeline = Some(model);
    if let Some(size) = size {
        ev.clean = size.images_per_set();
        ev.triggered = size.images_per_set();
    }
    Ok(exp)
}
