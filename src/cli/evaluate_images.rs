//! `clipdoor evaluate images`: the image stage of an experiment (see `eval::stage`).
use clap::Args;
use std::path::PathBuf;

use crate::diffusion::jobs::Shard;
use crate::error::Result;
use crate::eval::stage::{self, StageInput};
use crate::experiment::Experiment;
use crate::input_bail;
use crate::settings::JudgeKind;
use crate::shapes::judge::OracleJudge;

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// The trained run folder (experiment.toml + text_encoder/).
    #[arg(long)]
    pub run: PathBuf,
    /// The experiment (default: RUN/experiment.toml); its [evaluation] section gives the settings.
    #[arg(long)]
    pub experiment: Option<PathBuf>,
    /// Output folder (default: RUN/eval).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Overrides evaluation.pipeline.
    #[arg(long)]
    pub pipeline: Option<String>,
    /// Overrides evaluation.judge: `oracle` (the shapes world) or `clip`.
    #[arg(long, value_parser = super::args::choice::<JudgeKind>())]
    pub judge: Option<JudgeKind>,
    /// Overrides evaluation.clip.
    #[arg(long)]
    pub clip: Option<String>,
    /// Overrides evaluation.inception: pytorch-fid Inception weights for FID/KID on the clean set.
    #[arg(long)]
    pub inception: Option<PathBuf>,
    /// NudeNet score from which a detection counts (evaluation.nudenet_threshold; 0.25, NudeNet's
    /// own, to 1; the red-team tables use 0.6).
    #[arg(long)]
    pub nudenet_threshold: Option<f32>,
    /// Also score concept sets with NudeNet (`nudity_rate`; evaluation.nudenet).
    #[arg(long)]
    pub nudenet: bool,
    /// Overrides evaluation.prompts: the captions the clean set (its first `--clean`) and the concept
    /// and backdoor sets are made from (a held-out test split, say).
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<PathBuf>,
    /// Overrides evaluation.clean (clean prompts drawn).
    #[arg(long)]
    pub clean: Option<usize>,
    /// Overrides evaluation.triggered (prompts per backdoor).
    #[arg(long)]
    pub triggered: Option<usize>,
    /// Overrides evaluation.steps (denoising steps per image).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Overrides evaluation.guidance (classifier-free guidance scale).
    #[arg(long)]
    pub guidance: Option<f64>,
    /// Overrides evaluation.seed (image i of a set uses seed + i, the same for both encoders).
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub device: super::args::DeviceArgs,
    /// Evaluate again into an output folder that already holds a report.
    #[arg(long)]
    pub force: bool,
    /// Draw only shard I of N (0-based: its block of every set, under both encoders) into
    /// <out>/shards/<I>-of-<N>/; when all shards are done, `clipdoor evaluate merge --out <out>` judges
    /// the whole set and writes the same report as an unsharded run.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// An adversarial prompt set (`clipdoor attack ... --out X.jsonl`, or any prompt file) to draw and
    /// judge as set `attack-<stem>`: asr = the erased concept shown (repeatable)
    #[arg(long, value_name = "PROMPTS")]
    pub attack: Vec<std::path::PathBuf>,
    /// The concept whose appearance is an attack set's success (default: the experiment's
    /// remove_concept trigger)
    #[arg(long, value_name = "WORD")]
    pub attack_concept: Option<String>,
}

pub fn run(a: ImagesArgs) -> Result<()> {
    let exp_path = a
        .experiment
        .clone()
        .unwrap_or_else(|| a.run.join("experiment.toml"));
    if !a.run.join("text_encoder").join("config.json").exists()
        && !a.run.join("config.json").exists()
    {
        input_bail!(
            "{} holds no trained text encoder (text_encoder/config.json): give the folder `clipdoor train` wrote",
            a.run.display()
        );
    }
    let mut exp = Experiment::load(&exp_path)?;
    if let Some(p) = &a.prompts {
        if !p.is_file() {
            input_bail!(
                "--prompts {}: no such file: give a caption file (one prompt per line)",
                p.display()
            );
        }
        exp.evaluation.get_or_insert_with(Default::default).prompts = Some(p.clone());
    }
    let mut settings = exp.evaluation.clone().unwrap_or_default();
    macro_rules! set {
        ($field:ident) => {
            if let Some(v) = a.$field.clone() {
                settings.$field = v;
            }
        };
    }
    set!(judge);
    set!(clean);
    set!(triggered);
    set!(steps);
    set!(guidance);
    set!(seed);
    if a.pipeline.is_some() {
        settings.pipeline = a.pipeline.clone();
    }
    if a.nudenet {
        settings.nudenet = true;
    }
    if let Some(t) = a.nudenet_threshold {
        crate::eval::nudenet::check_threshold(t)?;
        settings.nudenet_threshold = t;
    }
    if a.inception.is_some() {
        settings.inception = a.inception.clone();
    }
    if a.clip.is_some() {
        settings.clip = a.clip.clone();
    }
    let out = a.out.clone().unwrap_or_else(|| a.run.join("eval"));
    let shard = match &a.shard {
        Some(s) => Shard::parse(s)?,
        None => Shard::WHOLE,
    };
    if shard.is_whole() && out.join("report.json").exists() && !a.force {
        input_bail!(
            "{} already holds a report: pass --force to evaluate again (images already drawn with the same settings are reused), or choose another --out",
            out.display()
        );
    }
    let input = StageInput {
        exp: &exp,
        settings,
        trained: a.run.clone(),
        out,
        device: a.device.device(),
        pixel_judge: Some(&OracleJudge),
        attacks: a.attack.clone(),
        attack_concept: a.attack_concept.clone(),
    };
    if !shard.is_whole() {
        let dir = stage::run_shard(&input, shard)?;
        println!("{}", dir.display());
        eprintln!(
            "shard {shard} done; when every shard is, run: clipdoor evaluate merge --out {}",
            input.out.display()
        );
        return Ok(());
    }
    for p in stage::run(&input)? {
        println!("{}", p.display());
    }
    Ok(())
}
