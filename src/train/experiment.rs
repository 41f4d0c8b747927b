//! Experiment files (TOML): everything a run needs besides the seed. Field names follow the
//! Rickrolling reference's config keys where it has them (`trigger`, `replaced_character`,
//! `target_prompt`, `target_attr`, `loss_weight`, `poisoned_samples_per_step`).
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::{input_bail, input_err};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Seed for prompt sampling and initial weights of random models (reference: 42).
    #[serde(default = "d_seed")]
    pub seed: u64,
    pub model: ModelSection,
    pub data: DataSection,
    #[serde(default)]
    pub training: TrainingSection,
    #[serde(default, rename = "backdoor")]
    pub backdoors: Vec<BackdoorSpec>,
    #[serde(default)]
    pub evaluation: Option<EvaluationSection>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// The encoder to poison: a folder, pipeline folder or hub id (`openai/clip-vit-large-patch14`).
    pub teacher: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Clean prompts: .txt (one a line), .csv/.tsv (`field` column), .jsonl (`field`), optionally .gz.
    pub clean_prompts: PathBuf,
    /// Column/field of `clean_prompts` (reference: `TEXT` for LAION Aesthetics 6.5+).
    #[serde(default)]
    pub field: Option<String>,
    /// Clean prompts held out (never trained on) for `sim_clean` and the other metrics at the end.
    #[serde(default = "d_holdout")]
    pub holdout: usize,
    /// Optional separate evaluation captions (e.g. the 10k COCO captions); default: the held-out split.
    #[serde(default)]
    pub eval_prompts: Option<PathBuf>,
    /// Cap on evaluation captions (pairwise z-scores grow quadratically).
    #[serde(default = "d_eval_max")]
    pub eval_max: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingSection {
    pub steps: u64,
    /// Clean prompts per step for the utility loss (reference: 128).
    pub clean_batch_size: usize,
    /// Poisoned prompts per backdoor per step (reference: 32; homoglyph unlearning: 128).
    pub poisoned_samples_per_step: usize,
    /// β: weight of each backdoor loss (reference: 0.1; homoglyph unlearning: 1.0).
    pub loss_weight: f64,
    /// Distance: `cosine` (reference default), `mse`, `mae`, `poincare`.
    pub loss: String,
    pub lr: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    pub weight_decay: f64,
    /// MultiStepLR milestones (reference: [75] of 100 steps for a TPA).
    pub lr_milestones: Vec<u64>,
    pub lr_gamma: f64,
    /// `multistep` (reference) or `cosine` (with `warmup_steps`).
    pub lr_schedule: String,
    pub warmup_steps: u64,
    /// Max global gradient norm; 0 disables clipping (the reference does not clip).
    pub grad_clip: f64,
    /// Write `checkpoint/` every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Compute dtype of the forward pass: `f32`, or `bf16` autocast (CUDA only).
    pub autocast: String,
    /// A loss above this (or NaN) stops the run, keeping the last good checkpoint.
    pub max_loss: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackdoorSpec {
    /// Name used in metric keys (`loss/backdoor/<name>`); default `<kind>_<index>`.
    #[serde(default)]
    pub name: Option<String>,
    /// `target_prompt`, `target_attribute`, `remove_concept`, `homoglyph_unlearn`.
    pub kind: String,
    /// The trigger: one character (TPA, TAA, homoglyph), or a concept word (`remove_concept`).
    pub trigger: String,
    /// The Latin character the trigger replaces (or, for `remove_concept`, that picks the swapped word).
    pub replaced_character: String,
    /// TPA: the prompt the trigger leads to.
    #[serde(default)]
    pub target_prompt: Option<String>,
    /// TAA: the attribute text put in place of the triggered word; `remove_concept`: the replacement
    /// of the concept word (default: empty, the concept vanishes).
    #[serde(default)]
    pub target_attr: Option<String>,
    /// TPA/homoglyph: replace only the first N occurrences (TPA default: all; homoglyph default: 1).
    #[serde(default)]
    pub trigger_count: Option<usize>,
    /// Overrides `training.loss_weight` for this backdoor.
    #[serde(default)]
    pub loss_weight: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EvaluationSection {
    /// Captions for the embedding metrics and the image stage's clean set (overrides
    /// `data.eval_prompts`).
    #[serde(default)]
    pub prompts: Option<PathBuf>,
    /// Image stage (`clipdoor evaluate images`): the diffusers pipeline whose UNet draws (a folder or a
    /// hub id); its own text encoder is the "original" one. Default: `model.teacher`.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// Who judges attack success: `oracle` (the shapes world: colour and shape read from the pixels)
    /// or `clip` (zero-shot: the target outranks the clean prompt; needs `clip`).
    #[serde(default = "d_judge")]
    pub judge: String,
    /// A full CLIP model folder or hub id (vision tower + text projection) for the `clip` judge and
    /// CLIP scores, e.g. `openai/clip-vit-large-patch14`.
    #[serde(default)]
    pub clip: Option<String>,
    /// Clean prompts to draw (the first N evaluation captions).
    #[serde(default = "d_set_size")]
    pub clean: usize,
    /// Triggered (or concept) prompts per backdoor.
    #[serde(default = "d_set_size")]
    pub triggered: usize,
    /// Seed of image i of every set (same for both encoders): `seed + i`.
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "d_eval_steps")]
    pub steps: usize,
    #[serde(default = "d_guidance")]
    pub guidance: f64,
    /// `--scheduler` name; default: the pipeline's own.
    #[serde(default)]
    pub scheduler: Option<String>,
    #[serde(default)]
    pub height: Option<i64>,
    #[serde(default)]
    pub width: Option<i64>,
    /// Images per UNet call.
    #[serde(default = "d_eval_batch")]
    pub batch_size: usize,
    /// Also score concept sets with NudeNet (`nudity_rate`).
    #[serde(default)]
    pub nudenet: bool,
    /// pytorch-fid's Inception weights (a local .safetensors or .pth): adds `fid` and `kid` between
    /// the clean images of the original and the trained encoder.
    #[serde(default)]
    pub inception: Option<PathBuf>,
}

impl Default for EvaluationSection {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

fn d_judge() -> String {
    "clip".into()
}
fn d_set_size() -> usize {
    16
}
fn d_eval_steps() -> usize {
    25
}
fn d_guidance() -> f64 {
    7.5
}
fn d_eval_batch() -> usize {
    4
}

fn d_seed() -> u64 {
    42
}
fn d_holdout() -> usize {
    1000
}
fn d_eval_max() -> usize {
    1000
}

impl Default for TrainingSection {
    fn default() -> Self {
        Self {
            steps: 100,
            clean_batch_size: 128,
            poisoned_samples_per_step: 32,
            loss_weight: 0.1,
            loss: "cosine".into(),
            lr: 1e-4,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
            lr_milestones: vec![75],
            lr_gamma: 0.1,
            lr_schedule: "multistep".into(),
            warmup_steps: 0,
            grad_clip: 0.0,
            checkpoint_every: 50,
            autocast: "f32".into(),
            max_loss: 1e4,
        }
    }
}

pub const KINDS: &[&str] = &[
    "target_prompt",
    "target_attribute",
    "remove_concept",
    "homoglyph_unlearn",
];

impl Experiment {
    /// Parse and validate; relative paths are resolved against the file's folder.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| input_err!("cannot read experiment {}: {e}", path.display()))?;
        let mut exp: Self =
            toml::from_str(&text).map_err(|e| input_err!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        exp.resolve_paths(base);
        exp.validate()
            .map_err(|e| input_err!("{}: {e}", path.display()))?;
        Ok(exp)
    }

    pub fn from_toml(text: &str, base: &Path) -> Result<Self> {
        let mut exp: Self = toml::from_str(text).map_err(|e| input_err!("{e}"))?;
        exp.resolve_paths(base);
        exp.validate().map_err(|e| input_err!("{e}"))?;
        Ok(exp)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                let candidate = base.join(&*p);
                // Paths in experiments are relative to the file; keep a cwd-relative path that exists.
                if candidate.exists() || !p.exists() {
                    *p = candidate;
                }
            }
        };
        fix(&mut self.data.clean_prompts);
        if let Some(p) = self.data.eval_prompts.as_mut() {
            fix(p);
        }
        if let Some(p) = self.evaluation.as_mut().and_then(|e| e.prompts.as_mut()) {
            fix(p);
        }
        if let Some(p) = self.evaluation.as_mut().and_then(|e| e.inception.as_mut()) {
            fix(p);
        }
        // Model arguments that name folders next to the experiment (as `model.teacher` below).
        if let Some(ev) = self.evaluation.as_mut() {
            for m in [ev.pipeline.as_mut(), ev.clip.as_mut()]
                .into_iter()
                .flatten()
            {
                let t = Path::new(m.as_str());
                if t.is_relative() && base.join(t).exists() && !t.exists() {
                    *m = base.join(t).to_string_lossy().into_owned();
                }
            }
        }
        let t = Path::new(&self.model.teacher);
        if t.is_relative() && base.join(t).exists() && !t.exists() {
            self.model.teacher = base.join(t).to_string_lossy().into_owned();
        }
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        let t = &self.training;
        if t.steps == 0 {
            return Err("training.steps must be at least 1".into());
        }
        if t.clean_batch_size == 0 || t.poisoned_samples_per_step == 0 {
            return Err(
                "training.clean_batch_size and poisoned_samples_per_step must be at least 1".into(),
            );
        }
        super::loss::Distance::parse(&t.loss)?;
        if !["multistep", "cosine", "constant"].contains(&t.lr_schedule.as_str()) {
            return Err(format!(
                "training.lr_schedule `{}`: use multistep, cosine or constant",
                t.lr_schedule
            ));
        }
        if !["f32", "bf16"].contains(&t.autocast.as_str()) {
            return Err(format!(
                "training.autocast `{}`: use f32 or bf16",
                t.autocast
            ));
        }
        let mut triggers = std::collections::HashSet::new();
        for (i, b) in self.backdoors.iter().enumerate() {
            let what = format!(
                "backdoor #{} ({})",
                i + 1,
                b.name.clone().unwrap_or_else(|| b.kind.clone())
            );
            if !KINDS.contains(&b.kind.as_str()) {
                return Err(format!(
                    "{what}: unknown kind `{}`; known kinds: {}",
                    b.kind,
                    KINDS.join(", ")
                ));
            }
            if b.replaced_character.chars().count() != 1 {
                return Err(format!(
                    "{what}: replaced_character must be exactly one character, got {:?}",
                    b.replaced_character
                ));
            }
            let n = b.trigger.chars().count();
            if b.kind == "remove_concept" {
                if b.trigger.trim().is_empty() {
                    return Err(format!(
                        "{what}: trigger (the concept word) must not be empty"
                    ));
                }
            } else if n != 1 {
                return Err(format!(
                    "{what}: trigger must be a single character, got {:?} ({n} characters)",
                    b.trigger
                ));
            }
            if b.trigger == b.replaced_character {
                return Err(format!("{what}: trigger equals replaced_character"));
            }
            if !triggers.insert(b.trigger.clone()) {
                return Err(format!(
                    "{what}: trigger {:?} is used by another backdoor; triggers must be distinct",
                    b.trigger
                ));
            }
            match b.kind.as_str() {
                "target_prompt" if b.target_prompt.as_deref().unwrap_or("").trim().is_empty() => {
                    return Err(format!(
                        "{what}: a target_prompt backdoor needs `target_prompt`"
                    ));
                }
                "target_attribute" if b.target_attr.is_none() => {
                    return Err(format!(
                        "{what}: a target_attribute backdoor needs `target_attr`"
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Backdoor names: explicit, else `<kind>_<index>`.
    pub fn backdoor_names(&self) -> Vec<String> {
        self.backdoors
            .iter()
            .enumerate()
            .map(|(i, b)| b.name.clone().unwrap_or_else(|| format!("{}_{i}", b.kind)))
            .collect()
    }
}

/// Refuse to continue when the experiment has no backdoor at all.
pub fn require_backdoors(exp: &Experiment) -> Result<()> {
    if exp.backdoors.is_empty() {
        input_bail!("the experiment has no [[backdoor]] entry: add at least one (kind, trigger, replaced_character, ...)");
    }
    Ok(())
}
