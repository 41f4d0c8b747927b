//! `clipdoor evaluate images`: the image stage of an experiment. Draw the clean set and every
//! backdoor's triggered (or concept) set with the pipeline's original text encoder and with the
//! trained one — same prompts, same seeds — then judge them (a pixel judge such as the shapes world's
//! oracle, given by the caller as an [`ImageJudge`], or `clip` zero-shot) and write `report.json`/`report.md`/`report.html` with side-by-side grids.
//!
//! Layout of `<out>`: `images/<condition>/<set>/` (an [`ImageSet`] each: resumable),
//! `grid_<set>.png` (rows: prompts; columns: original, trained), `report.*`.
pub mod clip_judge;
pub mod judge;
pub mod report;
pub mod sets;

use std::path::{Path, PathBuf};
use tch::{Device, Kind};

use crate::diffusion::image_set::{ImageRecord, ImageSet};
use crate::diffusion::jobs::{plan_images, ImageSettings, PromptImages};
use crate::diffusion::pipeline::StableDiffusionPipeline;
use crate::error::Result;
use crate::experiment::{EvaluationSection, Experiment};
use crate::input_bail;
use crate::settings::JudgeKind;
pub use judge::ImageJudge;
use sets::PromptSet;

/// The two encoders every set is drawn with.
pub const CONDITIONS: [&str; 2] = ["original", "trained"];

/// What to evaluate and where.
pub struct StageInput<'a> {
    pub exp: &'a Experiment,
    pub settings: EvaluationSection,
    /// The trained encoder: a clipdoor run folder (or a text-encoder folder).
    pub trained: PathBuf,
    pub out: PathBuf,
    pub device: Device,
    /// The judge for `evaluation.judge = "oracle"` (the shapes world's `OracleJudge`).
    pub pixel_judge: Option<&'a dyn ImageJudge>,
}

/// The images of one set under both conditions.
pub struct DrawnSet {
    pub set: PromptSet,
    /// `[original, trained]` records, in prompt order.
    pub records: [Vec<ImageRecord>; 2],
    pub images: [Vec<image::RgbImage>; 2],
}

/// The pipeline of the stage: `evaluation.pipeline`, else the teacher when it is a pipeline folder.
pub fn pipeline_of(exp: &Experiment, settings: &EvaluationSection) -> Result<String> {
    if let Some(p) = &settings.pipeline {
        return Ok(p.clone());
    }
    if Path::new(&exp.model.teacher)
        .join("model_index.json")
        .exists()
    {
        return Ok(exp.model.teacher.clone());
    }
    input_bail!(
        "the experiment names no pipeline to draw with: set `pipeline` in its [evaluation] section (a diffusers folder or hub id such as CompVis/stable-diffusion-v1-4), or pass --pipeline"
    )
}

/// Draw every set with both encoders (skipping images already written), with a progress bar.
pub fn draw(input: &StageInput, sets: Vec<PromptSet>) -> Result<Vec<DrawnSet>> {
    let s = &input.settings;
    if s.steps == 0 || s.batch_size == 0 {
        input_bail!("evaluation.steps and evaluation.batch_size must be at least 1");
    }
    let pipeline = pipeline_of(input.exp, s)?;
    let scheduler = s.scheduler;
    let total: usize = sets.iter().map(|x| x.prompts.len()).sum::<usize>() * 2 * s.steps;
    let bar = crate::progress::task("drawing", total as u64);
    let mut per_condition: Vec<Vec<(Vec<ImageRecord>, Vec<image::RgbImage>)>> = vec![];
    for (c, condition) in CONDITIONS.iter().enumerate() {
        let encoder = (c == 1).then_some(input.trained.as_path());
        let pipe = StableDiffusionPipeline::load(&pipeline, encoder, input.device, Kind::Float)?;
        let (dh, dw) = pipe.default_size();
        let settings = ImageSettings::new(
            s.steps,
            s.guidance,
            pipe.scheduler_kind(scheduler)?,
            pipe.encoder_label(),
            s.height.unwrap_or(dh),
            s.width.unwrap_or(dw),
        );
        let mut drawn = vec![];
        for set in &sets {
            let mut folder =
                ImageSet::open(&input.out.join("images").join(condition).join(&set.name))?;
            // Prompt i: index i, seed `evaluation.seed` + i.
            let jobs: Vec<PromptImages> = set
                .prompts
                .iter()
                .enumerate()
                .map(|(i, p)| PromptImages::consecutive(p, i, s.seed.wrapping_add(i as u64), 1))
                .collect();
            let wanted = plan_images(&jobs, &settings);
            let pending = folder.pending(&wanted)?;
            bar.inc(((wanted.len() - pending.len()) * s.steps) as u64);
            folder.generate(
                &pipe,
                &wanted,
                &wanted,
                s.batch_size,
                scheduler,
                None,
                &mut |n| bar.inc(n as u64),
            )?;
            let images = folder.load_images(&wanted)?;
            drawn.push((wanted, images));
        }
        per_condition.push(drawn);
    }
    bar.finish();
    let trained = per_condition.pop().expect("two conditions");
    let original = per_condition.pop().expect("two conditions");
    Ok(sets
        .into_iter()
        .zip(original.into_iter().zip(trained))
        .map(|(set, ((ro, io), (rt, it)))| DrawnSet {
            set,
            records: [ro, rt],
            images: [io, it],
        })
        .collect())
}

/// The whole stage: prompt sets from the experiment, drawing, judging, report files. Returns the
/// report paths.
pub fn run(input: &StageInput) -> Result<[PathBuf; 3]> {
    let s = &input.settings;
    match s.judge {
        JudgeKind::Oracle if input.pixel_judge.is_none() => input_bail!(
            "evaluation.judge = \"oracle\" needs the shapes world's oracle, which only judges shapes-world images: use `clip` for other pipelines"
        ),
        JudgeKind::Clip if s.clip.is_none() => input_bail!("the clip judge needs a CLIP model: set evaluation.clip (e.g. openai/clip-vit-large-patch14) or pass --clip"),
        _ => {}
    }
    let backdoors = crate::experiment::build_backdoors(input.exp);
    let pools = crate::experiment::PromptPools::build(input.exp, &backdoors)?;
    let captions = crate::experiment::eval_captions(input.exp, &pools)?;
    let slot_words = |attr: &str| {
        input
            .pixel_judge
            .filter(|_| s.judge == JudgeKind::Oracle)
            .map(|j| j.attribute_words(attr))
            .unwrap_or_default()
    };
    let sets = sets::build_sets(
        &captions,
        &backdoors,
        s.clean,
        s.triggered,
        input.exp.seed,
        &slot_words,
    )?;
    let clip = s
        .clip
        .as_deref()
        .map(|c| clip_judge::ClipJudge::load(c, input.device))
        .transpose()?;
    let inception = s
        .inception
        .as_deref()
        .map(|p| crate::eval::inception::FidInception::load(p, input.device))
        .transpose()?;
    let nudenet = if s.nudenet {
        Some(crate::eval::nudenet::NudeDetector::load(None, None)?)
    } else {
        None
    };
    let drawn = draw(input, sets)?;
    let metrics_file = input.trained.join("metrics.json");
    let embedding_metrics = std::fs::read_to_string(&metrics_file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let header = serde_json::json!({
        "pipeline": pipeline_of(input.exp, s)?,
        "trained_encoder": input.trained.display().to_string(),
        "judge": s.judge,
        "settings": s,
        "seed": input.exp.seed,
    });
    let report = report::build_report(
        &drawn,
        s.judge,
        input.pixel_judge,
        clip.as_ref(),
        inception.as_ref(),
        nudenet.as_ref(),
        &input.out,
        header,
        embedding_metrics,
    )?;
    report.write(&input.out)
}
