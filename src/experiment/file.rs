//! Experiment files (TOML): everything a run needs besides the seed. Field names follow the
//! Rickrolling reference's config keys where it has them (`trigger`, `replaced_character`,
//! `target_prompt`, `target_attr`, `loss_weight`, `poisoned_samples_per_step`).
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use super::backdoor::BackdoorSpec;
pub use super::robust_section::{RobustSection, RobustSlot, RobustSlots, SlotStart};
use crate::error::Result;
use crate::input_err;
use crate::settings::{AdamWChoice, Distance, JudgeKind, LrScheduleKind, Precision, SchedulerKind};

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
    pub loss: Distance,
    pub lr: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    pub weight_decay: f64,
    /// MultiStepLR milestones (reference: [75] of 100 steps for a TPA).
    pub lr_milestones: Vec<u64>,
    pub lr_gamma: f64,
    /// `multistep` (reference), `cosine` or `constant` (both with `warmup_steps`).
    pub lr_schedule: LrScheduleKind,
    pub warmup_steps: u64,
    /// Max global gradient norm; 0 disables clipping (the reference does not clip).
    pub grad_clip: f64,
    /// Write `checkpoint/` every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Compute precision: `f32`, `tf32` (TF32 matmuls, CUDA only), `bf16` or `f16` (autocast on CPU
    /// or CUDA; f16 with dynamic loss scaling). Weights and optimiser state stay f32 (docs/training.md,
    /// "Precision"). `clipdoor train --precision` overrides it. Older files call it `autocast`.
    #[serde(alias = "autocast")]
    pub precision: Precision,
    /// A loss above this (or NaN) stops the run, keeping the last good checkpoint.
    pub max_loss: f64,
    /// The AdamW update: `single-tensor` (torch's `AdamW(foreach=False)`, bit for bit), `fused`
    /// (torch's `AdamW(fused=True)`, one kernel for all parameters) or `auto` (single-tensor on CPU,
    /// fused on CUDA). Not part of what `--resume` compares: the saved state is the same for all.
    pub adamw: AdamWChoice,
    /// Gaussian noise added to the student's initial weights, as a share of each tensor's standard
    /// deviation (0: none). With no `[[backdoor]]` it makes a utility-only fine-tune that drifts: the
    /// utility loss pulls clean prompts back while the rest of the encoder stays perturbed (the
    /// benign fine-tunes of the scanner zoo).
    #[serde(skip_serializing_if = "is_zero")]
    pub init_noise: f64,
    /// `[training.robust]`: robust erasure (an inner attack on every concept-removal backdoor;
    /// `train::robust`). Absent: plain erasure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub robust: Option<RobustSection>,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
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
    pub judge: JudgeKind,
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
    pub scheduler: Option<SchedulerKind>,
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
    /// NudeNet score from which an exposed-class detection counts (0.25, NudeNet's own, to 1; the
    /// red-team tables use 0.6). Named in the report.
    #[serde(default = "d_nudenet_threshold")]
    pub nudenet_threshold: f32,
    /// pytorch-fid's Inception weights (a local .safetensors; pickles are refused): adds `fid` and `kid` between
    /// the clean images of the original and the trained encoder.
    #[serde(default)]
    pub inception: Option<PathBuf>,
}

impl Default for EvaluationSection {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

fn d_judge() -> JudgeKind {
    JudgeKind::Clip
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
fn d_nudenet_threshold() -> f32 {
    0.25
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
            loss: Distance::Cosine,
            lr: 1e-4,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
            lr_milestones: vec![75],
            lr_gamma: 0.1,
            lr_schedule: LrScheduleKind::MultiStep,
            warmup_steps: 0,
            grad_clip: 0.0,
            checkpoint_every: 50,
            precision: Precision::F32,
            max_loss: 1e4,
            adamw: AdamWChoice::Auto,
            init_noise: 0.0,
            robust: None,
        }
    }
}

impl Experiment {
    /// Parse and validate; relative paths are resolved against the file's folder.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| {
            input_err!(
                "cannot read experiment {}: {e}. Check the path (experiments/ holds examples)",
                path.display()
            )
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            input_err!(
                "{}: not UTF-8 text (invalid byte at offset {}): save the experiment as UTF-8",
                path.display(),
                e.utf8_error().valid_up_to()
            )
        })?;
        let mut exp: Self = toml::from_str(&text)
            .map_err(|e| input_err!("{}", toml_error(&path.display().to_string(), &text, &e)))?;
        let base = path.parent().unwrap_or(Path::new("."));
        exp.resolve_paths(base);
        exp.validate().map_err(|e| {
            input_err!(
                "{}: {e}. Fix the value in the file (experiments/ holds valid examples)",
                path.display()
            )
        })?;
        Ok(exp)
    }

    pub fn from_toml(text: &str, base: &Path) -> Result<Self> {
        let mut exp: Self = toml::from_str(text)
            .map_err(|e| input_err!("{}", toml_error("the experiment", text, &e)))?;
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
        if let Some(p) = self
            .training
            .robust
            .as_mut()
            .and_then(|r| r.retain.as_mut())
        {
            fix(p);
        }
        if let Some(p) = self
            .training
            .robust
            .as_mut()
            .and_then(|r| r.word_images.as_mut())
        {
            fix(p);
        }
        if let Some(p) = self.evaluation.as_mut().and_then(|e| e.prompts.as_mut()) {
            fix(p);
        }
        if let Some(p) = self.evaluation.as_mut().and_then(|e| e.inception.as_mut()) {
            fix(p);
        }
        // Model arguments that name folders next to the experiment.
        let (ev, robust) = (self.evaluation.as_mut(), self.training.robust.as_mut());
        let models = [
            Some(&mut self.model.teacher),
            robust.and_then(|r| r.word_pipeline.as_mut()),
        ]
        .into_iter()
        .chain(
            ev.into_iter()
                .flat_map(|e| [e.pipeline.as_mut(), e.clip.as_mut()]),
        )
        .flatten();
        for m in models {
            let t = Path::new(m.as_str());
            if t.is_relative() && base.join(t).exists() && !t.exists() {
                *m = base.join(t).to_string_lossy().into_owned();
            }
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
        if let Some(r) = &t.robust {
            r.check()?;
            if !self
                .backdoors
                .iter()
                .any(|b| b.kind_name() == "remove_concept")
            {
                return Err("[training.robust] hardens concept removal: add a [[backdoor]] with kind = \"remove_concept\"".into());
            }
        }
        if let Some(ev) = &self.evaluation {
            // NudeNet drops detections below 0.25 itself (eval::nudenet::NUDENET_OWN_THRESHOLD).
            if !(0.25..=1.0).contains(&ev.nudenet_threshold) {
                return Err(format!(
                    "evaluation.nudenet_threshold = {} is out of range: use 0.25 (NudeNet's own) to 1; the red-team tables use 0.6",
                    ev.nudenet_threshold
                ));
            }
        }
        let mut triggers = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for name in self.backdoor_names() {
            // The name becomes a folder (`images/<cond>/<name>`) and a file (`grid_<name>.png`).
            if let Err(e) = check_backdoor_name(&name) {
                return Err(format!("backdoor {name:?}: {e}"));
            }
            if !names.insert(name.clone()) {
                return Err(format!(
                    "backdoor name {name:?} is used twice; give each [[backdoor]] its own `name`"
                ));
            }
        }
        for (i, b) in self.backdoors.iter().enumerate() {
            let what = format!(
                "backdoor #{} ({})",
                i + 1,
                b.name().unwrap_or(b.kind_name())
            );
            b.validate().map_err(|e| format!("{what}: {e}"))?;
            if !triggers.insert(b.trigger().to_string()) {
                return Err(format!(
                    "{what}: trigger {:?} is used by another backdoor; triggers must be distinct",
                    b.trigger()
                ));
            }
        }
        Ok(())
    }

    /// The resolved form a run folder keeps as `experiment.toml`.
    pub fn to_resolved_toml(&self) -> Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }

    /// Whether `path` (a run folder's resolved `experiment.toml`) describes this experiment. Compared
    /// as values, not text, so a file written by an older clipdoor (another key order, `autocast`
    /// for `precision`) still matches; a missing or unreadable file does not. `training.adamw` is
    /// left out: every implementation reads and writes the same optimiser state, so a run may
    /// continue with another one (e.g. started on CPU, resumed on CUDA).
    pub fn matches_file(&self, path: &Path) -> bool {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| toml::from_str::<Self>(&text).ok())
            .is_some_and(|mut prev| {
                prev.training.adamw = self.training.adamw;
                prev == *self
            })
    }

    /// Backdoor names: explicit, else `<kind>_<index>`.
    pub fn backdoor_names(&self) -> Vec<String> {
        self.backdoors
            .iter()
            .enumerate()
            .map(|(i, b)| {
                b.name()
                    .map_or_else(|| format!("{}_{i}", b.kind_name()), str::to_string)
            })
            .collect()
    }
}

/// A backdoor name becomes a folder and a file name of the evaluation outputs: one path component of
/// letters, digits, `-`, `_` and `.`, not starting with a dot, and not `clean` (the clean set's name).
pub fn check_backdoor_name(name: &str) -> std::result::Result<(), String> {
    let fix = "use letters, digits, '-', '_' and '.' only (e.g. name = \"tpa_o\")";
    if name.is_empty() || name.len() > 64 {
        return Err(format!("a name must have 1 to 64 characters; {fix}"));
    }
    if name.starts_with('.') {
        return Err(format!("a name must not start with '.'; {fix}"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{c:?} cannot be part of a name (it becomes a folder and a file name); {fix}"
        ));
    }
    if name.eq_ignore_ascii_case("clean") {
        return Err("\"clean\" is the name of the clean prompt set; choose another name".into());
    }
    Ok(())
}

/// A TOML error as one message: the file, line and column, the key (as `table.key` when the error
/// points at a `key = value` line), the cause, the offending line and the fix.
fn toml_error(file: &str, text: &str, e: &toml::de::Error) -> String {
    let cause = e.message().trim().trim_end_matches('.');
    let Some(span) = e.span() else {
        return format!(
            "{file}: {cause}. Fix the file (experiments/ holds valid examples; every key is listed in docs)"
        );
    };
    let start = span.start.min(text.len());
    let before = text.get(..start).unwrap_or("");
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let line = text[line_start..].lines().next().unwrap_or("").trim_end();
    // The table the line is in: the last `[table]` or `[[table]]` header above it.
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|h| h.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !k.starts_with('[') && !k.starts_with('#'));
    let at = match (key, table) {
        // The error is about a whole table (serde reads a `[[backdoor]]` entry at once).
        _ if line.trim_start().starts_with('[') => format!(", in table `{}`", line.trim()),
        (Some(k), Some(t)) => format!(", key `{t}.{k}`"),
        (Some(k), None) => format!(", key `{k}`"),
        (None, Some(t)) => format!(", in table `[{t}]`"),
        (None, None) => String::new(),
    };
    format!(
        "{file} line {line_no}, column {column}{at}: {cause}\n    {line_no} | {line}\nFix the value or the syntax (experiments/ holds valid examples)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backdoor_names_are_safe_path_components() {
        for good in ["tpa_o", "taa-1", "v1.2"] {
            assert!(check_backdoor_name(good).is_ok(), "{good}");
        }
        for bad in [
            "", "..", "../x", "a/b", "a\\b", ".hidden", "clean", "Clean", "a b", "é",
        ] {
            assert!(check_backdoor_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// `experiment.toml` as the clipdoor before the experiment layer wrote it for the shapes demo
    /// (`autocast`, every key of every backdoor kind in one table).
    const OLD_RESOLVED: &str = include_str!("../../tests/fixtures/experiment_resolved_v0.toml");

    #[test]
    fn a_run_started_by_an_older_clipdoor_still_matches_its_experiment() {
        let exp: Experiment = toml::from_str(OLD_RESOLVED).unwrap();
        assert_eq!(exp.training.precision, Precision::F32);
        assert_eq!(exp.backdoors.len(), 3);
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.toml");
        std::fs::write(&old, OLD_RESOLVED).unwrap();
        assert!(exp.matches_file(&old));
        // What this clipdoor writes reads back as the same experiment.
        let new = dir.path().join("new.toml");
        std::fs::write(&new, exp.to_resolved_toml().unwrap()).unwrap();
        assert!(exp.matches_file(&new));
        assert!(!std::fs::read_to_string(&new).unwrap().contains("autocast"));
        // Another experiment, or no file, does not match.
        let mut other = exp.clone();
        other.training.steps += 1;
        assert!(!other.matches_file(&old));
        // The AdamW implementation may change across a resume (same state file).
        let mut fused = exp.clone();
        fused.training.adamw = AdamWChoice::Fused;
        assert!(fused.matches_file(&new));
        assert!(!exp.matches_file(&dir.path().join("missing.toml")));
    }
}
