//! `ZOO.toml`: how many suspect encoders to fine-tune from one base encoder, and how their
//! backdoors and benign fine-tunes are drawn. Paths are relative to the file.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::triggers::TriggerShape;
use crate::error::Result;
use crate::experiment::backdoor::Placement;
use crate::experiment::file::TrainingSection;
use crate::input_err;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ZooConfig {
    /// Every draw of the zoo (triggers, targets, recipes, training seeds) follows from it.
    pub seed: u64,
    /// The encoder every suspect is fine-tuned from (folder, pipeline, hub id or `random:ARCH:SEED`):
    /// also the scan's reference.
    pub base: String,
    /// Captions the backdoors poison and the utility loss keeps (one per line).
    pub clean_prompts: PathBuf,
    /// Other captions for the benign `clean` fine-tunes (default: `clean_prompts`).
    #[serde(default)]
    pub benign_prompts: Option<PathBuf>,
    /// Held-out captions per run (its `sim_clean` and backdoor metrics).
    #[serde(default = "d_holdout")]
    pub holdout: usize,
    /// Number of encoders.
    pub encoders: usize,
    /// Share of them that are benign.
    #[serde(default = "d_benign_share")]
    pub benign_share: f64,
    /// The recipe every run starts from (`[training]` of an experiment file); `steps` and
    /// `loss_weight` are drawn per encoder from the ranges below.
    #[serde(default)]
    pub training: TrainingSection,
    /// Training steps, drawn uniformly from `[lo, hi]`.
    pub steps: [u64; 2],
    /// Each backdoor's loss weight, drawn log-uniformly from `[lo, hi]` (weak backdoors on purpose).
    pub loss_weight: [f64; 2],
    pub backdoored: BackdooredSection,
    #[serde(default)]
    pub benign: BenignSection,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackdooredSection {
    /// Backdoors per encoder, drawn uniformly from `[lo, hi]`.
    pub backdoors: [usize; 2],
    /// `target_prompt` and/or `target_attribute`.
    #[serde(default = "d_kinds")]
    pub kinds: Vec<String>,
    /// Trigger shapes drawn from (uniformly).
    #[serde(default = "d_shapes")]
    pub shapes: Vec<TriggerShape>,
    /// `substitute` and/or `insert`.
    #[serde(default = "d_placements")]
    pub placements: Vec<Placement>,
    /// Target prompts of target-prompt backdoors (default: clean captions drawn at random).
    #[serde(default)]
    pub target_prompts: Vec<String>,
    /// Attributes of target-attribute backdoors.
    #[serde(default = "d_attrs")]
    pub target_attrs: Vec<String>,
    /// Word triggers (default: a built-in list of everyday words); words found in the captions are
    /// skipped.
    #[serde(default)]
    pub words: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BenignKind {
    /// Fine-tuning on `benign_prompts` with the utility loss alone.
    Clean,
    /// Fine-tuning on `clean_prompts` with another seed and recipe.
    Seed,
    /// Concept removal of one of `concepts`.
    RemoveConcept,
    /// Homoglyph unlearning of a look-alike of a frequent letter.
    HomoglyphUnlearn,
}

impl BenignKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::Seed => "seed",
            Self::RemoveConcept => "remove_concept",
            Self::HomoglyphUnlearn => "homoglyph_unlearn",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BenignSection {
    #[serde(default = "d_benign_kinds")]
    pub kinds: Vec<BenignKind>,
    /// Words a `remove_concept` fine-tune erases (they must occur in the captions).
    #[serde(default)]
    pub concepts: Vec<String>,
    /// `clean` and `seed` fine-tunes start from the base plus noise of this share of each weight
    /// tensor's standard deviation (drawn uniformly from `[lo, hi]`), which the utility loss then
    /// pulls back on the captions: the encoder drifts as a fine-tune does, with no backdoor.
    #[serde(default = "d_init_noise")]
    pub init_noise: [f64; 2],
}

impl Default for BenignSection {
    fn default() -> Self {
        Self {
            kinds: d_benign_kinds(),
            concepts: vec![],
            init_noise: d_init_noise(),
        }
    }
}

fn d_init_noise() -> [f64; 2] {
    [0.02, 0.1]
}
fn d_holdout() -> usize {
    200
}
fn d_benign_share() -> f64 {
    0.5
}
fn d_kinds() -> Vec<String> {
    vec!["target_prompt".into(), "target_attribute".into()]
}
fn d_shapes() -> Vec<TriggerShape> {
    TriggerShape::ALL.to_vec()
}
fn d_placements() -> Vec<Placement> {
    vec![Placement::Substitute, Placement::Insert]
}
fn d_attrs() -> Vec<String> {
    ["green", "purple", "black and white", "tiny", "striped"]
        .map(String::from)
        .to_vec()
}
fn d_benign_kinds() -> Vec<BenignKind> {
    vec![
        BenignKind::Clean,
        BenignKind::Seed,
        BenignKind::RemoveConcept,
        BenignKind::HomoglyphUnlearn,
    ]
}

impl ZooConfig {
    /// Read and check a `ZOO.toml`; relative paths become relative to its folder (as in experiment
    /// files), so the copy in the zoo folder is self-contained.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            input_err!(
                "{}: cannot read the zoo file ({e}); give the path of a ZOO.toml (see experiments/zoo/)",
                path.display()
            )
        })?;
        let mut cfg: Self = toml::from_str(&text).map_err(|e| {
            input_err!(
                "{}: not a valid zoo file: {e}(see docs/scanner-zoo.md for the keys)",
                path.display()
            )
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        cfg.resolve_paths(dir);
        cfg.validate()
            .map_err(|e| input_err!("{}: {e}", path.display()))?;
        Ok(cfg)
    }

    fn resolve_paths(&mut self, dir: &Path) {
        let abs = |p: &Path| -> PathBuf {
            let joined = if p.is_absolute() {
                p.to_path_buf()
            } else {
                dir.join(p)
            };
            joined.canonicalize().unwrap_or(joined)
        };
        self.clean_prompts = abs(&self.clean_prompts);
        self.benign_prompts = self.benign_prompts.as_deref().map(abs);
        let base = Path::new(&self.base);
        let local = !self.base.starts_with("random:")
            && !base.is_absolute()
            && (dir.join(base).exists() || self.base.starts_with('.'));
        if local {
            self.base = abs(base).display().to_string();
        }
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.encoders < 2 {
            return Err(
                "`encoders` must be at least 2 (a zoo needs benign and backdoored ones)".into(),
            );
        }
        if !(0.0..=1.0).contains(&self.benign_share) {
            return Err(format!(
                "`benign_share` must lie in [0, 1], got {}",
                self.benign_share
            ));
        }
        if self.steps[0] == 0 || self.steps[0] > self.steps[1] {
            return Err(format!(
                "`steps` must be [lo, hi] with 1 ≤ lo ≤ hi, got {:?}",
                self.steps
            ));
        }
        if !(self.loss_weight[0] > 0.0 && self.loss_weight[0] <= self.loss_weight[1]) {
            return Err(format!(
                "`loss_weight` must be [lo, hi] with 0 < lo ≤ hi, got {:?}",
                self.loss_weight
            ));
        }
        let b = &self.backdoored;
        if b.backdoors[0] == 0 || b.backdoors[0] > b.backdoors[1] {
            return Err(format!(
                "`backdoored.backdoors` must be [lo, hi] with 1 ≤ lo ≤ hi, got {:?}",
                b.backdoors
            ));
        }
        for k in &b.kinds {
            if k != "target_prompt" && k != "target_attribute" {
                return Err(format!(
                    "`backdoored.kinds`: unknown kind {k:?}; use target_prompt and/or target_attribute"
                ));
            }
        }
        if b.kinds.is_empty() || b.shapes.is_empty() || b.placements.is_empty() {
            return Err("`backdoored.kinds`, `shapes` and `placements` must not be empty".into());
        }
        if b.kinds.iter().any(|k| k == "target_attribute") && b.target_attrs.is_empty() {
            return Err("`backdoored.target_attrs` is empty but target_attribute is drawn".into());
        }
        let n = self.benign.init_noise;
        if !(n[0] > 0.0 && n[0] <= n[1] && n[1].is_finite()) {
            return Err(format!(
                "`benign.init_noise` must be [lo, hi] with 0 < lo ≤ hi, got {n:?}"
            ));
        }
        if self.benign.kinds.is_empty() {
            return Err("`benign.kinds` must not be empty".into());
        }
        if self.benign.kinds.contains(&BenignKind::RemoveConcept) && self.benign.concepts.is_empty()
        {
            return Err(
                "`benign.concepts` is empty but remove_concept is drawn: name words of the captions to erase"
                    .into(),
            );
        }
        Ok(())
    }

    /// How many of the encoders are benign.
    pub fn benign_count(&self) -> usize {
        ((self.encoders as f64) * self.benign_share).round() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_zoo_files_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/zoo");
        for name in ["shapes.toml", "sd1.toml"] {
            let cfg = ZooConfig::load(&dir.join(name)).unwrap();
            assert_eq!(cfg.encoders, 40, "{name}");
            assert_eq!(cfg.benign_count(), 20);
        }
        let shapes = ZooConfig::load(&dir.join("shapes.toml")).unwrap();
        assert!(shapes.clean_prompts.is_absolute() && shapes.clean_prompts.exists());
        assert!(
            Path::new(&shapes.base).join("text_encoder").exists(),
            "{}",
            shapes.base
        );
    }

    #[test]
    fn bad_ranges_are_refused_with_the_key() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/zoo");
        let mut cfg = ZooConfig::load(&dir.join("shapes.toml")).unwrap();
        cfg.steps = [10, 5];
        assert!(cfg.validate().unwrap_err().contains("`steps`"));
        cfg.steps = [5, 10];
        cfg.backdoored.kinds = vec!["remove_concept".into()];
        assert!(cfg.validate().unwrap_err().contains("unknown kind"));
    }
}
