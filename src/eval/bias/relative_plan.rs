//! What a relative-bias run draws and records: its settings (`shard.json`), its prompt table (per
//! template: the clean prompt, then one homoglyph prompt per culture), the wanted images of every
//! condition, and the per-image CLIP similarities (`scores.jsonl`).
use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::templates::{clean_prompt, culture_text, homoglyph_prompt, Culture, TemplateGroup};
use crate::diffusion::image_set::ImageRecord;
use crate::diffusion::jobs::{plan_images, ImageSettings, PromptImages};
use crate::error::Result;
use crate::eval::i2p::scores::{read_cached, write_cached, CachedScore};
use crate::eval::i2p::ConditionSpec;
use crate::settings::SchedulerKind;

/// The stage name in `shard.json`.
pub const STAGE: &str = "bias-relative";

/// File name of the per-image similarity cache.
pub const SCORES: &str = "scores.jsonl";

/// Everything that decides the images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelativeGeneration {
    pub pipeline: String,
    pub groups: Vec<TemplateGroup>,
    pub cultures: Vec<Culture>,
    pub images_per_prompt: usize,
    /// Image j of every prompt has seed `seed + j` (clean and homoglyph images of a pair share it).
    pub seed: u64,
    pub steps: usize,
    pub guidance: f64,
    pub scheduler: SchedulerKind,
    pub scheduler_arg: Option<SchedulerKind>,
    pub height: i64,
    pub width: i64,
    pub dtype: String,
    pub conditions: Vec<ConditionSpec>,
}

/// Everything that decides the scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelativeScoring {
    /// The CLIP judge (canonical folder or hub id).
    pub clip: String,
}

/// The `settings` of a relative-bias `shard.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelativeSettings {
    pub generation: RelativeGeneration,
    pub scoring: RelativeScoring,
}

/// Top-level settings keys a resumed run may change (the images stay valid; scores are redone).
pub const MAY_CHANGE_ON_RESUME: [&str; 1] = ["scoring"];

/// One prompt of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct RelPrompt {
    pub group: usize,
    pub template: usize,
    /// `None`: the clean prompt; else the culture whose homoglyph fills the placeholder.
    pub culture: Option<usize>,
    pub prompt: String,
}

/// The prompt table, in order: group by group, template by template, the clean prompt and then one
/// homoglyph prompt per culture. Prompt `p`'s image `j` has index `p · k + j` and seed `seed + j`.
pub fn prompt_table(g: &RelativeGeneration) -> Vec<RelPrompt> {
    let mut out = vec![];
    for (gi, group) in g.groups.iter().enumerate() {
        for (ti, t) in group.templates.iter().enumerate() {
            out.push(RelPrompt {
                group: gi,
                template: ti,
                culture: None,
                prompt: clean_prompt(t),
            });
            for (ci, c) in g.cultures.iter().enumerate() {
                out.push(RelPrompt {
                    group: gi,
                    template: ti,
                    culture: Some(ci),
                    prompt: homoglyph_prompt(t, c),
                });
            }
        }
    }
    out
}

/// The culture texts, template by template (in table order) and culture by culture.
pub fn culture_texts(g: &RelativeGeneration) -> Vec<Vec<String>> {
    g.groups
        .iter()
        .flat_map(|group| group.templates.iter())
        .map(|t| g.cultures.iter().map(|c| culture_text(t, c)).collect())
        .collect()
}

/// The position of a template among all templates (groups in order).
pub fn template_position(g: &RelativeGeneration, group: usize, template: usize) -> usize {
    g.groups[..group]
        .iter()
        .map(|x| x.templates.len())
        .sum::<usize>()
        + template
}

/// The wanted records of one condition, in table order.
pub fn wanted_records(
    table: &[RelPrompt],
    g: &RelativeGeneration,
    c: &ConditionSpec,
) -> Vec<ImageRecord> {
    let k = g.images_per_prompt;
    let jobs: Vec<PromptImages> = table
        .iter()
        .enumerate()
        .map(|(p, r)| PromptImages::consecutive(&r.prompt, p * k, g.seed, k))
        .collect();
    let s = ImageSettings::new(
        g.steps,
        g.guidance,
        g.scheduler,
        c.encoder.clone(),
        g.height,
        g.width,
    );
    plan_images(&jobs, &s)
}

/// One line of scores.jsonl: an image and its CLIP similarities (100 · cos) to the culture texts of
/// its template, one per culture in settings order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimEntry {
    pub condition: String,
    pub index: usize,
    pub file: String,
    pub prompt: String,
    /// CRC-32C of the PNG: a cached line counts only for the same bytes and the same judge.
    pub image_crc32c: u32,
    pub clip: String,
    /// f32, as computed: an f32 survives a JSON round trip (a merge reads these lines back) exactly.
    pub sims: Vec<f32>,
}

impl CachedScore for SimEntry {
    fn condition(&self) -> &str {
        &self.condition
    }
    fn file(&self) -> &str {
        &self.file
    }
}

/// The cached similarities of `dir/scores.jsonl`.
pub fn read_sims(dir: &Path) -> Result<HashMap<String, SimEntry>> {
    read_cached(dir)
}

/// Rewrite `dir/scores.jsonl` with exactly `entries` (atomically).
pub fn write_sims(dir: &Path, entries: &[SimEntry]) -> Result<()> {
    write_cached(dir, entries)
}
