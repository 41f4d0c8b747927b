//! Running a relative-bias evaluation (whole or one shard) and finishing a merged one. Layout:
//!
//! ```text
//! <out>/shard.json                  settings + plan (stage `bias-relative`)
//! <out>/<condition>/images/*.png    index = prompt-table position · k + j, seed = seed + j
//! <out>/<condition>/images.jsonl
//! <out>/scores.jsonl                per image: CLIP similarities to its template's culture texts
//! <out>/report.{json,md,html}
//! <out>/shards/<i>-of-<n>/...       the same, per shard (no report); `clipdoor evaluate merge`
//! ```
use std::path::{Path, PathBuf};

use tch::{Device, Kind};

use super::relative_plan::{
    culture_texts, prompt_table, read_sims, wanted_records, write_sims, RelativeGeneration,
    RelativeScoring, RelativeSettings, SimEntry, MAY_CHANGE_ON_RESUME, SCORES, STAGE,
};
use super::relative_report::build_report;
use super::templates::{Culture, TemplateGroup};
use crate::diffusion::image_set::{ImageRecord, ImageSet};
use crate::diffusion::jobs::{append_jsonl, Merged, Shard, ShardManifest};
use crate::diffusion::pipeline::{pipeline_parts, resolve_pipeline_root, StableDiffusionPipeline};
use crate::diffusion::schedulers::{resolve_scheduler, scheduler_by_name, SchedulerConfig};
use crate::error::Result;
use crate::eval::clip::metrics::l2_normalize;
use crate::eval::clip::open_image;
use crate::eval::i2p::plan::canonical;
use crate::eval::i2p::scores::key;
use crate::eval::i2p::{ConditionSpec, ORIGINAL};
use crate::eval::stage::clip_judge::ClipJudge;
use crate::settings::SchedulerKind;
use crate::{input_bail, input_err};

/// What `clipdoor evaluate bias relative` was asked to do.
#[derive(Debug, Clone)]
pub struct RelativeOptions {
    pub pipeline: String,
    /// `(name, folder)` of each text encoder evaluated besides the pipeline's own.
    pub encoders: Vec<(String, PathBuf)>,
    pub groups: Vec<TemplateGroup>,
    pub cultures: Vec<Culture>,
    pub clip: String,
    pub out: PathBuf,
    pub images_per_prompt: usize,
    pub seed: u64,
    pub steps: usize,
    pub guidance: f64,
    pub scheduler: Option<SchedulerKind>,
    pub width: i64,
    pub height: i64,
    pub shard: Shard,
    pub device: Device,
    pub kind: Kind,
    pub batch_size: usize,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RelativeOutcome {
    pub dir: PathBuf,
    pub generated: usize,
    pub scores: Vec<SimEntry>,
    pub report: Option<[PathBuf; 3]>,
}

/// The conditions of a run on `pipeline`: `original` (its own encoder), then each `--encoder`.
pub fn conditions(pipeline: &str, encoders: &[(String, PathBuf)]) -> Result<Vec<ConditionSpec>> {
    let root = resolve_pipeline_root(pipeline)?;
    let own = pipeline_parts(&root, None)?;
    let mut out = vec![ConditionSpec {
        name: ORIGINAL.into(),
        encoder: canonical(&own.encoder.encoder_dir.display().to_string()),
        encoder_arg: None,
        sld: None,
    }];
    for (name, dir) in encoders {
        let c = crate::eval::i2p::run::encoder_condition(&root, name, dir, &out)?;
        out.push(c);
    }
    Ok(out)
}

fn settings(o: &RelativeOptions) -> Result<RelativeSettings> {
    if o.steps == 0 || o.images_per_prompt == 0 || o.batch_size == 0 {
        input_bail!("--steps, --images-per-prompt and --batch-size must be at least 1");
    }
    for (flag, v) in [("--width", o.width), ("--height", o.height)] {
        if v < 8 || v % 8 != 0 {
            input_bail!("{flag} {v}: image sides must be positive multiples of 8");
        }
    }
    if o.groups.is_empty() || o.groups.iter().any(|g| g.templates.is_empty()) {
        input_bail!("no templates: give --templates FILE with one template (holding `#`) per line");
    }
    if o.cultures.is_empty() {
        input_bail!("no cultures: give --cultures (e.g. greek,cyrillic)");
    }
    if !o.guidance.is_finite() {
        input_bail!("--guidance {} is not a number", o.guidance);
    }
    let root = resolve_pipeline_root(&o.pipeline)?;
    let own = pipeline_parts(&root, None)?;
    let scheduler_config = SchedulerConfig::load(&own.scheduler_config)?;
    let scheduler = resolve_scheduler(o.scheduler, &scheduler_config)?;
    scheduler_by_name(Some(scheduler), &scheduler_config)?;
    Ok(RelativeSettings {
        generation: RelativeGeneration {
            pipeline: canonical(&o.pipeline),
            groups: o.groups.clone(),
            cultures: o.cultures.clone(),
            images_per_prompt: o.images_per_prompt,
            seed: o.seed,
            steps: o.steps,
            guidance: o.guidance,
            scheduler,
            scheduler_arg: o.scheduler,
            height: o.height,
            width: o.width,
            dtype: crate::settings::Dtype::of(o.kind)
                .map_or("f32", crate::settings::Dtype::name)
                .into(),
            conditions: conditions(&o.pipeline, &o.encoders)?,
        },
        scoring: RelativeScoring {
            clip: canonical(&o.clip),
        },
    })
}

/// Run (or resume) a relative-bias evaluation, or one shard of it.
pub fn run_relative(o: &RelativeOptions) -> Result<RelativeOutcome> {
    let settings = settings(o)?;
    let g = &settings.generation;
    let table = prompt_table(g);
    let dir = o.shard.dir(&o.out);
    let wanted: Vec<Vec<ImageRecord>> = g
        .conditions
        .iter()
        .map(|c| wanted_records(&table, g, c))
        .collect();
    let sets: Vec<(&str, &[ImageRecord])> = g
        .conditions
        .iter()
        .zip(&wanted)
        .map(|(c, w)| (c.name.as_str(), w.as_slice()))
        .collect();
    let manifest = ShardManifest::new(STAGE, o.shard, serde_json::to_value(&settings)?, &sets)?;
    manifest.claim(&dir, &MAY_CHANGE_ON_RESUME)?;

    let mut image_sets = vec![];
    let mut pending = vec![];
    for (c, w) in g.conditions.iter().zip(&wanted) {
        let (set, p) = ImageSet::open_with_pending(&dir.join(&c.name), o.shard.take(w))?;
        pending.push(p);
        image_sets.push(set);
    }
    let total: usize = pending.iter().map(Vec::len).sum();
    if total > 0 {
        let mut pipe = StableDiffusionPipeline::load(&o.pipeline, None, o.device, o.kind)?;
        let bar = crate::progress::task("relative bias: generating", (total * g.steps) as u64);
        for (((c, set), p), w) in g
            .conditions
            .iter()
            .zip(&mut image_sets)
            .zip(&pending)
            .zip(&wanted)
        {
            if p.is_empty() {
                continue;
            }
            if let Some(arg) = &c.encoder_arg {
                pipe = pipe.with_text_encoder_from(arg)?;
            }
            bar.set_message(&format!("relative bias: generating {}", c.name));
            set.generate(
                &pipe,
                w,
                o.shard.take(w),
                o.batch_size,
                g.scheduler_arg,
                None,
                &mut |n| bar.inc(n as u64),
            )?;
        }
        bar.finish();
    }

    let jobs: Vec<(&str, &ImageRecord, &Path)> = g
        .conditions
        .iter()
        .zip(&image_sets)
        .zip(&wanted)
        .flat_map(|((c, set), w)| {
            o.shard
                .take(w)
                .iter()
                .map(move |r| (c.name.as_str(), r, set.dir.as_path()))
        })
        .collect();
    let scores = score_all(&dir, &jobs, &settings, o.device)?;
    let report = if o.shard.is_whole() {
        Some(build_report(&scores, &settings)?.write(&o.out)?)
    } else {
        None
    };
    Ok(RelativeOutcome {
        dir,
        generated: total,
        scores,
        report,
    })
}

/// The CLIP similarities of `jobs` (condition, record, set folder), from `dir/scores.jsonl` where the
/// same image was scored by the same judge, else computed one image at a time (so a shard's scores are
/// the bits of an unsharded run's) and appended as they come; scores.jsonl ends with exactly these.
fn score_all(
    dir: &Path,
    jobs: &[(&str, &ImageRecord, &Path)],
    s: &RelativeSettings,
    device: Device,
) -> Result<Vec<SimEntry>> {
    let g = &s.generation;
    let k = g.images_per_prompt;
    let per_template = 1 + g.cultures.len();
    let mut cache = read_sims(dir)?;
    let mut crcs = vec![];
    let mut todo = vec![];
    for (i, (c, r, set_dir)) in jobs.iter().enumerate() {
        let crc = crate::eval::i2p::scores::file_crc(&set_dir.join(&r.file))?;
        crcs.push(crc);
        match cache.get(&key(c, &r.file)) {
            Some(e)
                if e.image_crc32c == crc
                    && e.clip == s.scoring.clip
                    && e.sims.len() == g.cultures.len() => {}
            _ => todo.push(i),
        }
    }
    if !todo.is_empty() {
        let judge = ClipJudge::load(&s.scoring.clip, device)?;
        // Every culture text of the run, in one fixed order whatever the shard: the same bits everywhere.
        let texts: Vec<Vec<String>> = culture_texts(g);
        let flat: Vec<String> = texts.iter().flatten().cloned().collect();
        let text_embeds = l2_normalize(&judge.text_embeds(&flat)?);
        let nc = g.cultures.len() as i64;
        let bar = crate::progress::task("relative bias: CLIP judge", todo.len() as u64);
        for chunk in todo.chunks(16) {
            let mut lines = vec![];
            for &i in chunk {
                let (c, r, set_dir) = jobs[i];
                let img = open_image(&set_dir.join(&r.file))?.to_rgb8();
                let e = l2_normalize(&judge.image_embeds(&[img])?);
                let t = r.index / k / per_template;
                let tt = text_embeds.narrow(0, t as i64 * nc, nc);
                let sims: Vec<f32> = Vec::<f32>::try_from(
                    &(tt.matmul(&e.tr()).squeeze_dim(1) * 100.0)
                        .to_kind(Kind::Float)
                        .to_device(Device::Cpu),
                )?;
                let e = SimEntry {
                    condition: c.to_string(),
                    index: r.index,
                    file: r.file.clone(),
                    prompt: r.prompt.clone(),
                    image_crc32c: crcs[i],
                    clip: s.scoring.clip.clone(),
                    sims,
                };
                lines.push(serde_json::to_value(&e)?);
                cache.insert(key(c, &r.file), e);
            }
            append_jsonl(&dir.join(SCORES), &lines)?;
            bar.inc(chunk.len() as u64);
        }
        bar.finish();
    }
    let entries: Vec<SimEntry> = jobs
        .iter()
        .map(|(c, r, _)| cache[&key(c, &r.file)].clone())
        .collect();
    write_sims(dir, &entries)?;
    Ok(entries)
}

/// After [`crate::diffusion::jobs::merge`] of a relative-bias run: union the shards' scores, check
/// every merged image has its score (same bytes), write `<out>/scores.jsonl` and the report.
pub fn finish_merge(merged: &Merged, out: &Path) -> Result<[PathBuf; 3]> {
    let settings: RelativeSettings = serde_json::from_value(merged.manifest.settings.clone())
        .map_err(|e| {
            input_err!(
                "{}: the settings are not those of a relative-bias run ({e}): merge it with the clipdoor version that wrote it",
                out.join(crate::diffusion::jobs::MANIFEST).display()
            )
        })?;
    let entries = crate::eval::i2p::scores::merged_entries(
        merged,
        out,
        &settings.generation.conditions,
        |e: &SimEntry, crc| e.image_crc32c == crc && e.clip == settings.scoring.clip,
    )?;
    build_report(&entries, &settings)?.write(out)
}
