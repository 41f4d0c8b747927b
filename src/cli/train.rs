use clap::Args;
use std::path::PathBuf;

use super::args::choice;
use crate::diffusion::pipeline::{
    check_compatible, export_pipeline, pipeline_parts, resolve_pipeline_root, ExportOptions,
};
use crate::error::Result;
use crate::experiment::Experiment;
use crate::settings::{AdamWChoice, Precision};
use crate::train::run_folder::PIPELINE_DIR;
use crate::train::trainer::{train_with, TrainOptions, TrainOutcome};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Experiment TOML (see experiments/).
    pub experiment: PathBuf,
    /// Run folder (default: checkpoints/<experiment name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue an interrupted run from its checkpoint/.
    #[arg(long)]
    pub resume: bool,
    /// Replace a finished or unfinished run in --out.
    #[arg(long)]
    pub force: bool,
    /// Override the experiment's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub device: super::args::DeviceArgs,
    /// Compute precision, overriding training.precision: f32; tf32 (TF32 matmuls, CUDA only); bf16
    /// or f16 (autocast on CPU or CUDA; f16 with dynamic loss scaling). Weights, optimiser state
    /// and the saved encoder stay f32.
    #[arg(long, ignore_case = true, value_parser = choice::<Precision>())]
    pub precision: Option<Precision>,
    /// Overrides training.adamw: `single-tensor` (torch's AdamW(foreach=False), bit-exact), `fused`
    /// (AdamW(fused=True), one kernel) or `auto` (single-tensor on CPU, fused on CUDA). A run may
    /// resume with another choice than it started with.
    #[arg(long, value_parser = choice::<AdamWChoice>())]
    pub adamw: Option<AdamWChoice>,
    /// Stop after this many steps with a checkpoint, as if interrupted (continue with --resume).
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// When the run finishes, also write a complete diffusers pipeline with the trained encoder to
    /// <run>/pipeline/: the base pipeline (folder or cached hub id) with its components hard-linked
    /// (see `clipdoor export`); a single-file base (SD 1.x/2.x .safetensors) gives
    /// <run>/pipeline.safetensors, a copy of it with the trained encoder inside. With --resume of a
    /// finished run, only a missing output is written.
    #[arg(long, value_name = "BASE")]
    pub save_pipeline: Option<String>,
}

pub fn run(a: TrainArgs) -> Result<()> {
    let mut exp = Experiment::load(&a.experiment)?;
    if let Some(s) = a.seed {
        exp.seed = s;
    }
    if let Some(p) = a.precision {
        exp.training.precision = p;
    }
    if let Some(k) = a.adamw {
        exp.training.adamw = k;
    }
    let out = a.out.unwrap_or_else(|| {
        let stem = a
            .experiment
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        PathBuf::from("checkpoints").join(stem)
    });
    if let Some(base) = &a.save_pipeline {
        // Fail before training on a base that cannot take the run's encoder.
        check_base(base, &exp.model.teacher)?;
        if a.resume && !a.force && out.join("DONE").exists() {
            // A finished run is not trained again: only its pipeline is written when missing.
            let dir = save_pipeline(base, &out, false)?;
            println!("{}", dir.display());
            println!("{}", out.display());
            return Ok(());
        }
    }
    let opts = TrainOptions {
        out: out.clone(),
        resume: a.resume,
        force: a.force,
        device: a.device.device(),
        stop_after: a.stop_after,
    };
    let word_attack = crate::attack::invert::word_attack(&exp, opts.device)?;
    let outcome = train_with(&exp, &opts, word_attack)?;
    if let (TrainOutcome::Finished { .. }, Some(base)) = (&outcome, &a.save_pipeline) {
        // The run just (re)trained its encoder: a pipeline left from before is replaced.
        let dir = save_pipeline(base, &out, true)?;
        println!("{}", dir.display());
    }
    match outcome {
        TrainOutcome::Finished { metrics, seconds } => {
            eprintln!(
                "trained in {seconds:.1}s; sim_clean {:.4}",
                metrics.sim_clean
            );
            for m in &metrics.backdoors {
                eprintln!(
                    "  {} ({}): sim_target {:.4} (before {:.4}), z_score {:.2}",
                    m.name, m.kind, m.sim_target, m.sim_target_before, m.z_score
                );
            }
        }
        TrainOutcome::Stopped { step } => {
            eprintln!("stopped after step {step}; continue with --resume")
        }
    }
    println!("{}", out.display());
    Ok(())
}

/// Check that `base` is a pipeline whose UNet reads text states as wide as the teacher's (when the
/// teacher is a folder or cached model whose config can be read; a `random:` teacher is checked at
/// export time).
fn check_base(base: &str, teacher: &str) -> Result<()> {
    let root = resolve_pipeline_root(base).map_err(|e| e.context("--save-pipeline"))?;
    let parts = pipeline_parts(&root, None).map_err(|e| e.context("--save-pipeline"))?;
    if let Ok(loc) = crate::models::text_encoder::locate(teacher) {
        let mut teacher_parts = parts.clone();
        teacher_parts.encoder = loc;
        check_compatible(&teacher_parts).map_err(|e| {
            e.context(format!(
                "--save-pipeline {base}: the run trains the teacher {teacher}'s encoder"
            ))
        })?;
    }
    Ok(())
}

/// Write `<run>/pipeline/` from `base` and the run's encoder; when `replace` is false an existing
/// one is kept.
fn save_pipeline(base: &str, run: &std::path::Path, replace: bool) -> Result<PathBuf> {
    // A single-file base gives a single-file copy with the trained encoder inside.
    let single = crate::io::single_file::is_single_file(std::path::Path::new(base));
    let dir = if single {
        run.join(format!("{PIPELINE_DIR}.safetensors"))
    } else {
        run.join(PIPELINE_DIR)
    };
    if !replace && (dir.join("model_index.json").exists() || (single && dir.is_file())) {
        eprintln!("{} already holds the exported pipeline", dir.display());
        return Ok(dir);
    }
    let opts = ExportOptions {
        copy: false,
        force: true,
        format: None,
    };
    export_pipeline(base, run, &dir, &opts)
}
