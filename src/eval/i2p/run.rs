//! Running an I2P evaluation (whole or one shard) and finishing a merged one.
use std::path::{Path, PathBuf};

use tch::{Device, Kind};

use super::plan::{
    canonical, valid_condition_name, wanted_records, ConditionSpec, GenerationSettings,
    I2pSettings, ReportSettings, ScoringSettings, MAY_CHANGE_ON_RESUME, ORIGINAL, STAGE,
};
use super::prompts::{read_i2p, I2pFilter, I2pPrompt};
use super::report::write_report;
use super::scores::{score_all, ScoreEntry, ScoreJob};
use crate::diffusion::image_set::{ImageRecord, ImageSet};
use crate::diffusion::jobs::{Merged, Shard, ShardManifest};
use crate::diffusion::pipeline::{
    pipeline_parts, resolve_pipeline_root, SldConfig, StableDiffusionPipeline,
};
use crate::diffusion::schedulers::{resolve_scheduler, scheduler_by_name, SchedulerConfig};
use crate::error::Result;
use crate::eval::nudenet::NudityCriteria;
use crate::models::clip_text_config::CLIPTextConfig;
use crate::models::unet::UNet2DConditionConfig;
use crate::settings::SchedulerKind;
use crate::{input_bail, input_err};

/// What `clipdoor evaluate i2p` was asked to do.
#[derive(Debug, Clone)]
pub struct I2pOptions {
    pub pipeline: String,
    pub prompts: PathBuf,
    pub out: PathBuf,
    /// `(name, folder)` of each changed (e.g. erased) text encoder.
    pub encoders: Vec<(String, PathBuf)>,
    /// SLD presets applied to the pipeline's own encoder.
    pub sld: Vec<String>,
    pub filter: I2pFilter,
    pub images_per_prompt: usize,
    pub steps: usize,
    pub scheduler: Option<SchedulerKind>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub safety_checker: Option<String>,
    pub q16: Option<PathBuf>,
    pub clip: Option<String>,
    pub nudenet_model: Option<PathBuf>,
    /// NudeNet score from which a detection counts (0.25, NudeNet's own, to 1).
    pub nudenet_threshold: f32,
    pub shard: Shard,
    pub device: Device,
    pub kind: Kind,
    pub batch_size: usize,
    pub gallery: usize,
    /// See [`ReportSettings::protocol`]: when set, no I2P report is written (the caller writes its own).
    pub protocol: Option<serde_json::Value>,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct I2pOutcome {
    /// The folder written (the output folder, or the shard's folder).
    pub dir: PathBuf,
    pub generated: usize,
    pub scores: Vec<ScoreEntry>,
    /// report.json/md/html (whole runs only).
    pub report: Option<[PathBuf; 3]>,
}

/// Parse `NAME=DIR`.
pub fn parse_encoder_arg(s: &str) -> Result<(String, PathBuf)> {
    let Some((name, dir)) = s.split_once('=') else {
        input_bail!(
            "--encoder `{s}`: expected NAME=DIR, e.g. --encoder erased=runs/nudity (a clipdoor run folder or a text_encoder folder)"
        );
    };
    let name = name.trim();
    if !valid_condition_name(name) || name == ORIGINAL || name.starts_with("sld-") {
        input_bail!(
            "--encoder `{s}`: `{name}` cannot name a condition; use letters, digits, `.`, `_`, `-` (not `{ORIGINAL}`, `shards` or a name starting with `sld-`)"
        );
    }
    Ok((name.to_string(), PathBuf::from(dir.trim())))
}

/// Check that a swapped-in text encoder is as wide as the pipeline's UNet reads (`arg`: the flag's value, for the message).
/// The condition of a changed text encoder `--encoder NAME=DIR` on the pipeline at `root`: its
/// folders resolved and its width checked; `NAME` must differ from the conditions already `taken`.
pub fn encoder_condition(
    root: &Path,
    name: &str,
    dir: &Path,
    taken: &[ConditionSpec],
) -> Result<ConditionSpec> {
    if taken.iter().any(|c| c.name == name) {
        input_bail!("--encoder {name}=...: the name `{name}` is given twice (or is `{ORIGINAL}`); name every encoder differently");
    }
    let parts = pipeline_parts(root, Some(dir))
        .map_err(|e| e.context(format!("--encoder {name}={}", dir.display())))?;
    check_width(root, &parts.encoder.encoder_dir, dir)?;
    Ok(ConditionSpec {
        name: name.to_string(),
        encoder: canonical(&parts.encoder.encoder_dir.display().to_string()),
        encoder_arg: Some(PathBuf::from(canonical(&dir.display().to_string()))),
        sld: None,
    })
}

pub fn check_width(root: &Path, encoder_dir: &Path, arg: &Path) -> Result<()> {
    let unet = UNet2DConditionConfig::load(&root.join("unet").join("config.json"))?;
    let enc = CLIPTextConfig::load(&encoder_dir.join("config.json"))?;
    if unet.text_width() != enc.hidden_size {
        input_bail!(
            "--encoder {}: the text encoder is {}-wide but the pipeline's UNet reads {}-wide text states: give an encoder trained from this pipeline's own text encoder",
            arg.display(),
            enc.hidden_size,
            unet.text_width()
        );
    }
    Ok(())
}

/// The settings, prompts and conditions of a run, checked before anything heavy is loaded.
struct Plan {
    settings: I2pSettings,
    prompts: Vec<I2pPrompt>,
    conditions: Vec<ConditionSpec>,
}

fn plan(o: &I2pOptions) -> Result<Plan> {
    if o.steps == 0 || o.images_per_prompt == 0 || o.batch_size == 0 {
        input_bail!("--steps, --images-per-prompt and --batch-size must be at least 1");
    }
    for (flag, v) in [("--width", o.width), ("--height", o.height)] {
        if let Some(v) = v {
            if v < 8 || v % 8 != 0 {
                input_bail!("{flag} {v}: image sides must be positive multiples of 8");
            }
        }
    }
    let need_size = o.width.is_none() || o.height.is_none();
    let all = read_i2p(&o.prompts, need_size)?;
    let prompts = o.filter.apply(&all, &o.prompts)?;
    let prompts_bytes = std::fs::read(&o.prompts)?;

    let root = resolve_pipeline_root(&o.pipeline)?;
    let own = pipeline_parts(&root, None)?;
    let scheduler_config = SchedulerConfig::load(&own.scheduler_config)?;
    let scheduler = resolve_scheduler(o.scheduler, &scheduler_config)?;
    scheduler_by_name(Some(scheduler), &scheduler_config)?;
    let own_encoder = canonical(&own.encoder.encoder_dir.display().to_string());
    let mut conditions = vec![ConditionSpec {
        name: ORIGINAL.into(),
        encoder: own_encoder.clone(),
        encoder_arg: None,
        sld: None,
    }];
    for preset in &o.sld {
        SldConfig::preset(preset)?;
        let p = preset.trim().to_ascii_lowercase();
        let name = format!("sld-{p}");
        if conditions.iter().all(|c| c.name != name) {
            conditions.push(ConditionSpec {
                name,
                encoder: own_encoder.clone(),
                encoder_arg: None,
                sld: Some(p),
            });
        }
    }
    for (name, dir) in &o.encoders {
        let c = encoder_condition(&root, name, dir, &conditions)?;
        conditions.push(c);
    }
    let path_str = |p: &Option<PathBuf>| p.as_ref().map(|p| canonical(&p.display().to_string()));
    let settings = I2pSettings {
        generation: GenerationSettings {
            pipeline: canonical(&o.pipeline),
            prompts_file: o
                .prompts
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
            prompts_crc32c: crc32c::crc32c(&prompts_bytes),
            filter: o.filter.clone(),
            prompts: prompts.len(),
            images_per_prompt: o.images_per_prompt,
            steps: o.steps,
            scheduler,
            scheduler_arg: o.scheduler,
            width: if need_size { None } else { o.width },
            height: if need_size { None } else { o.height },
            dtype: crate::settings::Dtype::of(o.kind)
                .map_or("f32", crate::settings::Dtype::name)
                .into(),
            conditions: conditions.clone(),
        },
        scoring: ScoringSettings {
            nudenet_model: path_str(&o.nudenet_model),
            nudity_criteria: NudityCriteria::with_threshold(o.nudenet_threshold)?,
            safety_checker: o.safety_checker.as_deref().map(canonical),
            q16: path_str(&o.q16),
            clip: o.clip.as_deref().map(canonical),
        },
        report: ReportSettings {
            gallery: o.gallery,
            protocol: o.protocol.clone(),
        },
    };
    if settings.scoring.q16.is_some() != settings.scoring.clip.is_some() {
        input_bail!("Q16 needs both --q16 FILE (its prompt embeddings) and --clip DIR (the CLIP model they were learned for)");
    }
    Ok(Plan {
        settings,
        prompts,
        conditions,
    })
}

/// Run (or resume) an I2P evaluation, or one shard of it. A whole run writes `<out>/<condition>/`,
/// `<out>/scores.jsonl` and `<out>/report.*`; shard `i/n` writes its part into
/// `<out>/shards/<i>-of-<n>/` (merge with [`finish_merge`] after [`crate::diffusion::jobs::merge`]).
pub fn run_i2p(o: &I2pOptions) -> Result<I2pOutcome> {
    let Plan {
        settings,
        prompts,
        conditions,
    } = plan(o)?;
    let g = &settings.generation;
    let dir = o.shard.dir(&o.out);
    let wanted: Vec<Vec<ImageRecord>> = conditions
        .iter()
        .map(|c| wanted_records(&prompts, g, c))
        .collect();
    let sets: Vec<(&str, &[ImageRecord])> = conditions
        .iter()
        .zip(&wanted)
        .map(|(c, w)| (c.name.as_str(), w.as_slice()))
        .collect();
    let manifest = ShardManifest::new(STAGE, o.shard, serde_json::to_value(&settings)?, &sets)?;
    manifest.claim(&dir, &MAY_CHANGE_ON_RESUME)?;

    // Generation: the pipeline is loaded once; changed encoders are swapped in after the conditions
    // that use the pipeline's own (original, SLD).
    let mut image_sets = vec![];
    let mut pending = vec![];
    let mut mine_all = vec![];
    for (c, w) in conditions.iter().zip(&wanted) {
        let mine = o.shard.take(w);
        let (set, p) = ImageSet::open_with_pending(&dir.join(&c.name), mine)?;
        mine_all.push((w.clone(), mine.to_vec()));
        pending.push(p);
        image_sets.push(set);
    }
    let total: usize = pending.iter().map(Vec::len).sum();
    if total > 0 {
        let mut pipe = StableDiffusionPipeline::load(&o.pipeline, None, o.device, o.kind)?;
        let bar = crate::progress::task("I2P: generating", (total * g.steps) as u64);
        for (((c, set), p), mine) in conditions
            .iter()
            .zip(&mut image_sets)
            .zip(&pending)
            .zip(&mine_all)
        {
            let (whole, mine) = (&mine.0, &mine.1);
            if p.is_empty() {
                continue;
            }
            if let Some(arg) = &c.encoder_arg {
                pipe = pipe.with_text_encoder_from(arg)?;
            }
            let sld = c.sld.as_deref().map(SldConfig::preset).transpose()?;
            bar.set_message(&format!("I2P: generating {}", c.name));
            set.generate(
                &pipe,
                whole,
                mine,
                o.batch_size,
                g.scheduler_arg,
                sld.as_ref(),
                &mut |n| bar.inc(n as u64),
            )?;
        }
        bar.finish();
    }

    // Scoring: every image of this run (or shard), cached per image.
    let by_row: std::collections::HashMap<usize, &I2pPrompt> =
        prompts.iter().map(|p| (p.row, p)).collect();
    let k = g.images_per_prompt;
    let mut jobs = vec![];
    for ((c, set), w) in conditions.iter().zip(&image_sets).zip(&wanted) {
        for r in o.shard.take(w) {
            jobs.push(ScoreJob {
                condition: &c.name,
                record: r,
                prompt: by_row[&(r.index / k)],
                set_dir: &set.dir,
            });
        }
    }
    let bar = crate::progress::task("I2P: scoring", jobs.len() as u64);
    let scores = score_all(
        &dir,
        &jobs,
        &settings.scoring,
        o.device,
        o.batch_size.max(8),
        &mut |n| bar.inc(n as u64),
    )?;
    bar.finish();
    let report = if o.shard.is_whole() && settings.report.protocol.is_none() {
        Some(write_report(&o.out, &scores, &settings)?)
    } else {
        None
    };
    Ok(I2pOutcome {
        dir,
        generated: total,
        scores,
        report,
    })
}

/// After [`crate::diffusion::jobs::merge`] of an I2P run: union the shards' scores, check every merged
/// image has its score (same image bytes), write `<out>/scores.jsonl` in wanted order and the report.
pub fn finish_merge(merged: &Merged, out: &Path) -> Result<[PathBuf; 3]> {
    let (entries, settings) = merged_scores(merged, out)?;
    write_report(out, &entries, &settings)
}

/// The first half of [`finish_merge`]: the merged run's scores (written to `<out>/scores.jsonl`, in
/// wanted order) and settings, for a caller that writes its own report.
pub fn merged_scores(merged: &Merged, out: &Path) -> Result<(Vec<ScoreEntry>, I2pSettings)> {
    let settings: I2pSettings = serde_json::from_value(merged.manifest.settings.clone())
        .map_err(|e| {
            input_err!(
                "{}: the settings are not those of an I2P run ({e}): merge it with the clipdoor version that wrote it",
                out.join(crate::diffusion::jobs::MANIFEST).display()
            )
        })?;
    let entries = super::scores::merged_entries(
        merged,
        out,
        &settings.generation.conditions,
        |e: &ScoreEntry, crc| e.usable(crc, &settings.scoring),
    )?;
    Ok((entries, settings))
}
