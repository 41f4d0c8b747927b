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

use crate::diffusion::image_set::{ImageRecord, ImageSet, MemoryKnobs};
use crate::diffusion::jobs::{
    plan_images, settings_hash, ImageSettings, Merged, PromptImages, SetPlan, Shard, ShardManifest,
};
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
    /// Adversarial prompt sets (`clipdoor attack` JSONL) drawn and judged beside the experiment's
    /// sets: one `attack-<file stem>` set each, success = the concept shown.
    pub attacks: Vec<PathBuf>,
    /// The concept the attack sets are judged by; default: the experiment's concept removal.
    pub attack_concept: Option<String>,
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

/// The stage name in a sharded run's `shard.json` (`clipdoor evaluate merge` hands the merged folder
/// back to [`finish_merge`]).
pub const STAGE: &str = "images";

/// The image-set folder of `set` under `condition`, relative to the output folder.
fn set_folder(condition: &str, set: &str) -> String {
    format!("images/{condition}/{set}")
}

/// Draw every set with both encoders (skipping images already written), with a progress bar.
pub fn draw(input: &StageInput, sets: Vec<PromptSet>) -> Result<Vec<DrawnSet>> {
    let wanted = draw_part(input, &sets, Shard::WHOLE, &input.out)?;
    let mut per_condition = vec![];
    for (condition, lists) in CONDITIONS.iter().zip(wanted) {
        let mut drawn = vec![];
        for (set, w) in sets.iter().zip(lists) {
            let folder = ImageSet::open(&input.out.join(set_folder(condition, &set.name)))?;
            let images = folder.load_images(&w)?;
            drawn.push((w, images));
        }
        per_condition.push(drawn);
    }
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

/// Draw `shard`'s block of every set with both encoders into `dir` (the output folder, or the
/// shard's). Returns, per condition and set, the whole set's records.
fn draw_part(
    input: &StageInput,
    sets: &[PromptSet],
    shard: Shard,
    dir: &Path,
) -> Result<Vec<Vec<Vec<ImageRecord>>>> {
    let s = &input.settings;
    if s.steps == 0 || s.batch_size == 0 {
        input_bail!("evaluation.steps and evaluation.batch_size must be at least 1");
    }
    let pipeline = pipeline_of(input.exp, s)?;
    let scheduler = s.scheduler;
    let total: usize = sets
        .iter()
        .map(|x| shard.range(x.prompts.len()).len())
        .sum::<usize>()
        * 2
        * s.steps;
    let bar = crate::progress::task("drawing", total as u64);
    let mut per_condition = vec![];
    for (c, condition) in CONDITIONS.iter().enumerate() {
        let encoder = (c == 1).then_some(input.trained.as_path());
        let mut pipe =
            StableDiffusionPipeline::load(&pipeline, encoder, input.device, Kind::Float)?;
        // Learned words of embedding attacks: both encoders get them (the words are new tokens,
        // so prompts without them are drawn as before); they are part of the encoder's label.
        let mut label = pipe.encoder_label();
        // One file may serve several sets: each is added once.
        let words: std::collections::BTreeSet<&str> = sets
            .iter()
            .filter_map(|x| x.origin.as_ref()?.embedding.as_deref())
            .collect();
        for file in words {
            let added = pipe.text_encoder.add_embeddings_from(Path::new(file))?;
            label += &format!(" + {file} ({})", added.join(", "));
        }
        let pipe = pipe;
        let (dh, dw) = pipe.default_size();
        let settings = ImageSettings::new(
            s.steps,
            s.guidance,
            pipe.scheduler_kind(scheduler)?,
            label,
            s.height.unwrap_or(dh),
            s.width.unwrap_or(dw),
        );
        let mut drawn = vec![];
        for set in sets {
            let mut folder = ImageSet::open(&dir.join(set_folder(condition, &set.name)))?;
            folder.knobs = MemoryKnobs {
                batch_size: "evaluation.batch_size".into(),
                dtype: None,
                size: "evaluation.height/evaluation.width".into(),
            };
            // Prompt i: index i, seed `evaluation.seed` + i.
            let jobs: Vec<PromptImages> = set
                .prompts
                .iter()
                .enumerate()
                .map(|(i, p)| PromptImages::consecutive(p, i, s.seed.wrapping_add(i as u64), 1))
                .collect();
            let wanted = plan_images(&jobs, &settings);
            let mine = shard.take(&wanted);
            let pending = folder.pending(mine)?;
            bar.inc(((mine.len() - pending.len()) * s.steps) as u64);
            folder.generate(
                &pipe,
                &wanted,
                mine,
                s.batch_size,
                scheduler,
                None,
                &mut |n| bar.inc(n as u64),
            )?;
            drawn.push(wanted);
        }
        per_condition.push(drawn);
    }
    bar.finish();
    Ok(per_condition)
}

/// Fail early on a judge the settings cannot have.
fn check_judge(input: &StageInput) -> Result<()> {
    let s = &input.settings;
    match s.judge {
        JudgeKind::Oracle if input.pixel_judge.is_none() => input_bail!(
            "evaluation.judge = \"oracle\" needs the shapes world's oracle, which only judges shapes-world images: use `clip` for other pipelines"
        ),
        JudgeKind::Clip if s.clip.is_none() => input_bail!("the clip judge needs a CLIP model: set evaluation.clip (e.g. openai/clip-vit-large-patch14) or pass --clip"),
        _ => {}
    }
    Ok(())
}

/// The prompt sets of the experiment's stage.
fn prompt_sets(input: &StageInput) -> Result<Vec<PromptSet>> {
    let s = &input.settings;
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
    let mut all = sets::build_sets(
        &captions,
        &backdoors,
        s.clean,
        s.triggered,
        input.exp.seed,
        &slot_words,
    )?;
    if !input.attacks.is_empty() {
        let concept = match &input.attack_concept {
            Some(c) => c.clone(),
            None => attack_concept_of(&backdoors)?,
        };
        for path in &input.attacks {
            let set = sets::attack_set_from_file(path, &concept)?;
            if all.iter().any(|x| x.name == set.name) {
                input_bail!(
                    "{}: a second set named `{}`: give attack files distinct names",
                    path.display(),
                    set.name
                );
            }
            all.push(set);
        }
    }
    Ok(all)
}

/// The concept attack sets are judged by when none is given: the experiment's one concept removal.
fn attack_concept_of(backdoors: &[crate::experiment::backdoor::Backdoor]) -> Result<String> {
    let mut concepts: Vec<&str> = backdoors
        .iter()
        .filter(|b| {
            matches!(
                b.kind,
                crate::experiment::backdoor::BackdoorKind::RemoveConcept { .. }
            )
        })
        .map(|b| b.trigger.as_str())
        .collect();
    concepts.dedup();
    match concepts[..] {
        [one] => Ok(one.to_string()),
        [] => input_bail!("the experiment removes no concept, so attack sets have nothing to be judged by: give --attack-concept WORD (the concept whose appearance is the attack's success)"),
        _ => input_bail!("the experiment removes several concepts ({}): say which one the attack sets target with --attack-concept", concepts.join(", ")),
    }
}

/// The judges named by the settings.
struct Judges {
    clip: Option<clip_judge::ClipJudge>,
    inception: Option<crate::eval::inception::FidInception>,
    nudenet: Option<crate::eval::nudenet::NudeDetector>,
}

impl Judges {
    fn load(s: &EvaluationSection, device: Device) -> Result<Self> {
        Ok(Self {
            clip: s
                .clip
                .as_deref()
                .map(|c| clip_judge::ClipJudge::load(c, device))
                .transpose()?,
            inception: s
                .inception
                .as_deref()
                .map(|p| crate::eval::inception::FidInception::load(p, device))
                .transpose()?,
            nudenet: if s.nudenet {
                Some(crate::eval::nudenet::NudeDetector::load(None, None)?)
            } else {
                None
            },
        })
    }
}

/// What a run records of itself: the report's header, and (sharded) the manifest's settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StageSettings {
    pub pipeline: String,
    pub trained_encoder: String,
    pub evaluation: EvaluationSection,
    pub seed: u64,
    pub sets: Vec<PromptSet>,
}

impl StageSettings {
    fn header(&self) -> serde_json::Value {
        serde_json::json!({
            "pipeline": self.pipeline,
            "trained_encoder": self.trained_encoder,
            "judge": self.evaluation.judge,
            "settings": self.evaluation,
            "seed": self.seed,
        })
    }
}

fn stage_settings(input: &StageInput, sets: &[PromptSet]) -> Result<StageSettings> {
    Ok(StageSettings {
        pipeline: pipeline_of(input.exp, &input.settings)?,
        trained_encoder: input.trained.display().to_string(),
        evaluation: input.settings.clone(),
        seed: input.exp.seed,
        sets: sets.to_vec(),
    })
}

/// Judge drawn sets and write the report into `out`.
fn judge_and_report(
    drawn: &[DrawnSet],
    st: &StageSettings,
    judges: &Judges,
    pixel_judge: Option<&dyn ImageJudge>,
    out: &Path,
) -> Result<[PathBuf; 3]> {
    let metrics_file = Path::new(&st.trained_encoder).join("metrics.json");
    let embedding_metrics = std::fs::read_to_string(&metrics_file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let criteria =
        crate::eval::nudenet::NudityCriteria::with_threshold(st.evaluation.nudenet_threshold)?;
    let report = report::build_report(
        drawn,
        st.evaluation.judge,
        pixel_judge,
        judges.clip.as_ref(),
        judges.inception.as_ref(),
        judges.nudenet.as_ref().map(|d| (d, &criteria)),
        out,
        st.header(),
        embedding_metrics,
    )?;
    report.write(out)
}

/// The whole stage: prompt sets from the experiment, drawing, judging, report files. Returns the
/// report paths.
pub fn run(input: &StageInput) -> Result<[PathBuf; 3]> {
    check_judge(input)?;
    let sets = prompt_sets(input)?;
    let judges = Judges::load(&input.settings, input.device)?;
    let st = stage_settings(input, &sets)?;
    let drawn = draw(input, sets)?;
    judge_and_report(&drawn, &st, &judges, input.pixel_judge, &input.out)
}

/// One shard `i/n` of the stage: its block of every set, under both encoders, into
/// `<out>/shards/<i>-of-<n>/images/<condition>/<set>/` with a `shard.json`; no judging (the merge
/// judges the whole set, so a sharded run reports exactly what an unsharded one does). Returns the
/// shard's folder. Merge with [`crate::diffusion::jobs::merge`], then [`finish_merge`].
pub fn run_shard(input: &StageInput, shard: Shard) -> Result<PathBuf> {
    check_judge(input)?;
    let sets = prompt_sets(input)?;
    let st = stage_settings(input, &sets)?;
    let dir = shard.dir(&input.out);
    let settings = serde_json::to_value(&st)?;
    let plans = CONDITIONS
        .iter()
        .flat_map(|c| {
            sets.iter().map(move |set| {
                let n = set.prompts.len();
                (
                    set_folder(c, &set.name),
                    SetPlan {
                        size: n,
                        indices: (0..n).collect(),
                    },
                )
            })
        })
        .collect();
    let manifest = ShardManifest {
        stage: STAGE.to_string(),
        shard,
        settings_hash: settings_hash(&settings),
        settings,
        sets: plans,
    };
    manifest.claim(&dir, &[])?;
    draw_part(input, &sets, shard, &dir)?;
    Ok(dir)
}

/// After [`crate::diffusion::jobs::merge`] of a sharded image stage: judge the merged sets as a whole
/// run would and write the report into `out`. `pixel_judge`: the oracle, for `judge = "oracle"`.
pub fn finish_merge(
    merged: &Merged,
    out: &Path,
    pixel_judge: Option<&dyn ImageJudge>,
    device: Device,
) -> Result<[PathBuf; 3]> {
    let st: StageSettings = serde_json::from_value(merged.manifest.settings.clone()).map_err(|e| {
        crate::input_err!(
            "{}: the settings are not those of an `evaluate images` run ({e}): merge it with the clipdoor version that wrote it",
            out.join(crate::diffusion::jobs::MANIFEST).display()
        )
    })?;
    if st.evaluation.judge == JudgeKind::Oracle && pixel_judge.is_none() {
        input_bail!("the run judges with the oracle, which this caller does not provide");
    }
    let judges = Judges::load(&st.evaluation, device)?;
    let mut drawn = vec![];
    for set in &st.sets {
        let mut records = vec![];
        let mut images = vec![];
        for c in CONDITIONS {
            let name = set_folder(c, &set.name);
            let recs = merged.sets.get(&name).cloned().ok_or_else(|| {
                crate::input_err!(
                    "{}: the merged run has no image set {name}: the manifest is damaged; rerun the shards",
                    out.join(crate::diffusion::jobs::MANIFEST).display()
                )
            })?;
            images.push(ImageSet::open(&out.join(&name))?.load_images(&recs)?);
            records.push(recs);
        }
        let [ro, rt]: [Vec<ImageRecord>; 2] = records.try_into().expect("two conditions");
        let [io, it]: [Vec<image::RgbImage>; 2] = images.try_into().expect("two conditions");
        drawn.push(DrawnSet {
            set: set.clone(),
            records: [ro, rt],
            images: [io, it],
        });
    }
    judge_and_report(&drawn, &st, &judges, pixel_judge, out)
}
