//! `clipdoor shapes render|train|sample|judge|steer`: the embedded shapes world.

use clap::{Args, Subcommand};
use std::path::PathBuf;

use crate::diffusion::schedulers::PredictionType;
use crate::error::Result;
use crate::settings::SchedulerKind;
use crate::shapes::objective::Weighting;
use crate::shapes::train::TrainOptions;
use crate::shapes::{dataset, model::ShapesModel, oracle, sample, train};

#[derive(Args, Debug)]
pub struct ShapesArgs {
    #[command(subcommand)]
    pub command: ShapesCommand,
}

#[derive(Subcommand, Debug)]
pub enum ShapesCommand {
    /// Render N labelled images (PNGs under OUT/images/ + OUT/labels.jsonl).
    #[command(after_long_help = super::examples::SHAPES_RENDER)]
    Render(RenderArgs),
    /// Train the shapes text-to-image model (CPU by default); writes a diffusers pipeline folder.
    #[command(after_long_help = super::examples::SHAPES_TRAIN)]
    Train(TrainArgs),
    /// Sample every colour × shape prompt, full-attribute prompts and no-object prompts with a trained
    /// model and judge the images with the oracle (writes quality.json with --out).
    #[command(after_long_help = super::examples::SHAPES_SAMPLE)]
    Sample(SampleArgs),
    /// Judge PNG files with the oracle (one JSON line per file on stdout).
    #[command(after_long_help = super::examples::SHAPES_JUDGE)]
    Judge(JudgeArgs),
    /// Semantic guidance (SEGA) judged by the oracle: prompts drawn with and without an edit toward a
    /// shape or a colour; edit settings chosen on calibration seeds, rates on test seeds.
    #[command(after_long_help = super::examples::SHAPES_STEER)]
    Steer(SteerArgs),
}

#[derive(Args, Debug)]
pub struct RenderArgs {
    /// Number of images to render.
    #[arg(long)]
    pub n: u64,
    /// Seed of the drawn scenes (colour, shape, size, position, background).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder: images/ and labels.jsonl.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace a finished output (never done silently).
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Output folder: the pipeline (model_index.json, unet/, text_encoder/, tokenizer/, scheduler/),
    /// metrics.json, checkpoint/.
    #[arg(long)]
    pub out: PathBuf,
    /// Time budget in minutes (total over resumed sessions); default 15 when --steps is not given.
    #[arg(long)]
    pub minutes: Option<f64>,
    /// Number of optimiser steps (total over resumed sessions).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Seed of initialisation, data and noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images per optimiser step.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Steps between checkpoints (what --resume continues from).
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: u64,
    /// What the UNet predicts (written into scheduler/scheduler_config.json).
    #[arg(
        long,
        value_parser = super::args::choice::<PredictionType>(),
        default_value = TrainOptions::default().prediction.name()
    )]
    pub prediction: PredictionType,
    /// Weight of each timestep's clean-image error: uniform, min-snr (min(SNR, γ)) or
    /// truncated-min-snr (clamp(SNR, 1, γ)).
    #[arg(
        long,
        value_parser = super::args::choice::<Weighting>(),
        default_value = TrainOptions::default().weighting.name()
    )]
    pub weighting: Weighting,
    /// γ of the Min-SNR weightings.
    #[arg(long, default_value_t = TrainOptions::default().snr_gamma)]
    pub snr_gamma: f64,
    /// Steps of the text encoder's stage before the UNet's (0: keep the random encoder).
    #[arg(long, default_value_t = TrainOptions::default().text_stage.steps)]
    pub text_steps: u64,
    /// Rescale the noise schedule to zero terminal SNR (Lin et al. 2024): the last timestep is pure
    /// noise, so the background comes from the caption, not from the image's mean.
    #[arg(long)]
    pub zero_terminal_snr: bool,
    /// Share of training items that are bare backgrounds with captions naming no shape.
    #[arg(long, default_value_t = crate::shapes::dataset::NO_OBJECT_SHARE)]
    pub no_object_share: f64,
    /// Start from a trained shapes model (its UNet and text encoder; no text stage): a second phase.
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// Continue from OUT/checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Discard what OUT holds and start over.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub device: super::args::DeviceArgs,
    /// libtorch CPU threads (default: libtorch's choice). On a machine shared with other jobs, 1 is
    /// several times faster than oversubscribed threads that spin-wait.
    #[arg(long)]
    pub threads: Option<i32>,
}

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// A folder written by `clipdoor shapes train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Images per colour × shape pair.
    #[arg(long, default_value_t = 4)]
    pub per_pair: usize,
    /// Seed of the first image (image i uses seed + i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Denoising steps per image.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Classifier-free guidance (default: the one chosen on a calibration seed).
    #[arg(long, default_value_t = crate::shapes::sample::SampleOptions::default().guidance)]
    pub guidance: f64,
    /// A deterministic sampler (not euler-a).
    #[arg(long, default_value = "ddim", value_parser = super::args::choice::<SchedulerKind>())]
    pub scheduler: SchedulerKind,
    /// Where to write quality.json, the colour × shape PNGs and judged.jsonl (optional).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub device: super::args::DeviceArgs,
}

#[derive(Args, Debug)]
pub struct SteerArgs {
    /// A shapes pipeline folder (`clipdoor shapes train` output), e.g. checkpoints/shapes.
    #[arg(long)]
    pub model: PathBuf,
    /// What the edit steers toward: shape:WORD or colour:WORD (repeat; default shape:square and
    /// colour:blue).
    #[arg(long = "target")]
    pub targets: Vec<String>,
    /// Images per target and edit setting on the calibration seeds.
    #[arg(long, default_value_t = crate::shapes::steer::SteerStudy::default().calibration_images)]
    pub calibration_images: usize,
    /// Images per target on the test seeds.
    #[arg(long, default_value_t = crate::shapes::steer::SteerStudy::default().test_images)]
    pub test_images: usize,
    /// First calibration seed (the range must not overlap the test seeds).
    #[arg(long, default_value_t = crate::shapes::steer::SteerStudy::default().calibration_seed)]
    pub calibration_seed: u64,
    /// First test seed.
    #[arg(long, default_value_t = 0)]
    pub test_seed: u64,
    /// Output folder: report.json and report.md.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub force: super::args::ForceArgs,
    #[command(flatten)]
    pub device: super::args::DeviceArgs,
    /// libtorch CPU threads (default: libtorch's choice). On a machine shared with other jobs, 1 is
    /// several times faster than oversubscribed threads that spin-wait.
    #[arg(long)]
    pub threads: Option<i32>,
}

#[derive(Args, Debug)]
pub struct JudgeArgs {
    /// PNG files to judge.
    pub files: Vec<PathBuf>,
}

pub fn run(a: ShapesArgs) -> Result<()> {
    match a.command {
        ShapesCommand::Render(a) => render(a),
        ShapesCommand::Train(a) => train_cmd(a),
        ShapesCommand::Sample(a) => sample_cmd(a),
        ShapesCommand::Judge(a) => judge_cmd(a),
        ShapesCommand::Steer(a) => steer_cmd(a),
    }
}

fn render(a: RenderArgs) -> Result<()> {
    super::check_overwrite(&a.out.join("labels.jsonl"), a.force)?;
    let pb = crate::progress::task("rendering", a.n);
    dataset::write_dataset(&a.out, a.n, a.seed, || pb.inc(1))?;
    pb.finish();
    println!("{}", a.out.join("labels.jsonl").display());
    Ok(())
}

fn train_cmd(a: TrainArgs) -> Result<()> {
    let device = a.device.device();
    if let Some(n) = a.threads {
        if n < 1 {
            crate::input_bail!("--threads must be at least 1");
        }
        tch::set_num_threads(n);
    }
    let opts = train::TrainOptions {
        steps: a.steps,
        minutes: a
            .minutes
            .or(if a.steps.is_none() { Some(15.0) } else { None }),
        seed: a.seed,
        batch_size: a.batch_size,
        lr: a.lr,
        checkpoint_every: a.checkpoint_every,
        prediction: a.prediction,
        weighting: a.weighting,
        snr_gamma: a.snr_gamma,
        text_stage: crate::shapes::text_stage::TextStageOptions {
            steps: a.text_steps,
            ..Default::default()
        },
        zero_terminal_snr: a.zero_terminal_snr,
        no_object_share: a.no_object_share,
        init_from: a.init_from,
        ..Default::default()
    };
    // Bar over steps when a step count is given, else over seconds of the time budget.
    let len = a
        .steps
        .unwrap_or_else(|| (opts.minutes.unwrap_or(0.0) * 60.0) as u64);
    let pb = crate::progress::task("training", len);
    let mut recent = Vec::new();
    let report = train::train(&a.out, &opts, a.resume, a.force, device, |s| {
        if s.text_stage {
            pb.set_message(&format!(
                "text encoder stage: step {} loss {:.4}",
                s.step, s.loss
            ));
            return;
        }
        recent.push(s.loss);
        if recent.len() > 50 {
            recent.remove(0);
        }
        let mean = recent.iter().sum::<f32>() / recent.len() as f32;
        pb.set_position(if a.steps.is_some() {
            s.step
        } else {
            s.elapsed_s as u64
        });
        pb.set_message(&format!(
            "training step {} loss {mean:.4} lr {:.1e}",
            s.step, s.lr
        ));
    })?;
    pb.finish();
    if let Some(acc) = report.text_accuracy {
        eprintln!(
            "text encoder stage: {:.1}% of held-out end-of-text states name every attribute",
            acc * 100.0
        );
    }
    let tail = &report.losses[report.losses.len().saturating_sub(100)..];
    eprintln!(
        "{} steps in {:.0} s; loss {:.4} (first step) -> {:.4} (mean of the last {})",
        report.steps,
        report.elapsed_s,
        report.losses.first().copied().unwrap_or(f32::NAN),
        tail.iter().sum::<f32>() / tail.len().max(1) as f32,
        tail.len()
    );
    println!("{}", report.out.display());
    Ok(())
}

fn sample_cmd(a: SampleArgs) -> Result<()> {
    let device = a.device.device();
    let model = ShapesModel::load(&a.model, device)?;
    let opts = sample::SampleOptions {
        scheduler: a.scheduler,
        steps: a.steps,
        guidance: a.guidance,
        ..Default::default()
    };
    let (report, judged, images) = sample::quality(&model, a.per_pair, a.seed, &opts)?;
    if let Some(out) = &a.out {
        let mut lines = Vec::new();
        for (i, (j, img)) in judged.iter().zip(&images).enumerate() {
            let file = format!("images/{i}_{}.png", j.seed);
            dataset::save_png(img, &out.join(&file))?;
            serde_json::to_writer(&mut lines, &serde_json::json!({"file": file, "sample": j}))?;
            lines.push(b'\n');
        }
        crate::io::atomic::write_atomic(&out.join("judged.jsonl"), &lines)?;
        let json = serde_json::to_string_pretty(&report)? + "\n";
        crate::io::atomic::write_atomic(&out.join("quality.json"), json.as_bytes())?;
        println!("{}", out.join("quality.json").display());
    }
    let r = |x: &crate::eval::rates::Rate| crate::eval::rates::format_rate(Some(x));
    let (p, t) = (&report.pairs, &report.attributes);
    crate::progress::note(&format!(
        "colour x shape prompts: colour {}, shape {}, both {}\nfull-attribute prompts: colour+shape {}, size {}, position {}, background {}, all {}\nno-object prompts: empty picture on the asked background {} (oracle)",
        r(&p.colour), r(&p.shape), r(&p.both),
        r(&t.colour_and_shape), r(&t.size), r(&t.position), r(&t.background), r(&t.all),
        r(&report.no_object.empty_picture)
    ));
    Ok(())
}

fn steer_cmd(a: SteerArgs) -> Result<()> {
    use crate::diffusion::pipeline::StableDiffusionPipeline;
    use crate::shapes::steer::{run_study, SteerOptions, SteerReport, SteerStudy, SteerTarget};
    let report_path = a.out.join("report.json");
    a.force.check(&report_path)?;
    if let Some(n) = a.threads {
        if n < 1 {
            crate::input_bail!("--threads must be at least 1");
        }
        tch::set_num_threads(n);
    }
    let mut study = SteerStudy {
        calibration_images: a.calibration_images,
        test_images: a.test_images,
        calibration_seed: a.calibration_seed,
        test_seed: a.test_seed,
        ..Default::default()
    };
    if !a.targets.is_empty() {
        study.targets = a
            .targets
            .iter()
            .map(|t| SteerTarget::parse(t))
            .collect::<Result<_>>()?;
    }
    let pipe = StableDiffusionPipeline::load(
        a.model.to_str().unwrap_or_default(),
        None,
        a.device.device(),
        tch::Kind::Float,
    )?;
    let bar = crate::progress::task("SEGA images", SteerReport::images_to_draw(&study) as u64);
    let report = run_study(&pipe, &study, &SteerOptions::default(), &mut |n| {
        bar.inc(n as u64)
    })?;
    bar.finish();
    let md = report.to_markdown();
    crate::io::atomic::write_atomic(&a.out.join("report.md"), md.as_bytes())?;
    crate::io::atomic::write_json(&report_path, &report)?;
    eprint!("{md}");
    println!("{}", report_path.display());
    Ok(())
}

fn judge_cmd(a: JudgeArgs) -> Result<()> {
    for f in &a.files {
        let img = image::open(f)
            .map_err(|e| crate::input_err!("cannot read image {}: {e}", f.display()))?
            .to_rgb8();
        let j = oracle::judge(&img);
        println!(
            "{}",
            serde_json::json!({"file": f, "judgement": j, "position": j.position(), "size": j.size()})
        );
    }
    Ok(())
}
