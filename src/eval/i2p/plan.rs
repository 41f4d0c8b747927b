//! What an I2P run generates: its conditions, settings (recorded in `shard.json`) and the wanted
//! [`ImageRecord`]s of every condition.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::prompts::{I2pFilter, I2pPrompt};
use crate::diffusion::image_set::ImageRecord;
use crate::diffusion::jobs::{plan_images, ImageSettings, PromptImages, SHARDS_DIR};
use crate::eval::nudenet::NudityCriteria;
use crate::settings::SchedulerKind;

/// Name of the condition that uses the pipeline's own text encoder.
pub const ORIGINAL: &str = "original";

/// One way of generating every prompt's images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionSpec {
    /// Folder name under the output folder: `original`, an `--encoder` NAME, or `sld-<preset>`.
    pub name: String,
    /// The text-encoder folder in use (canonical path), recorded as `encoder` in images.jsonl.
    pub encoder: String,
    /// The swapped-in encoder argument (`None`: the pipeline's own).
    pub encoder_arg: Option<PathBuf>,
    /// SLD preset (on the pipeline's own encoder).
    pub sld: Option<String>,
}

impl ConditionSpec {
    /// "NAME (text encoder DIR)" or "NAME (the pipeline's own encoder)", for report methods.
    pub fn describe(&self) -> String {
        match &self.encoder_arg {
            Some(_) => format!("{} (text encoder {})", self.name, self.encoder),
            None => format!("{} (the pipeline's own encoder)", self.name),
        }
    }

    /// [`Self::describe`] of each, comma-separated.
    pub fn describe_all(conditions: &[Self]) -> String {
        conditions
            .iter()
            .map(Self::describe)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Everything that decides the images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationSettings {
    /// Canonical pipeline folder, or the hub id as given.
    pub pipeline: String,
    /// The I2P file's name and the CRC-32C of its bytes (the path may differ between machines).
    pub prompts_file: String,
    pub prompts_crc32c: u32,
    pub filter: I2pFilter,
    /// Prompts after the filters.
    pub prompts: usize,
    pub images_per_prompt: usize,
    pub steps: usize,
    /// The scheduler (the pipeline's own when not overridden); saved as its name.
    pub scheduler: SchedulerKind,
    /// `--scheduler` as given (`None`: the pipeline's scheduler config).
    pub scheduler_arg: Option<SchedulerKind>,
    /// `--width` / `--height` overrides (else each prompt's own size).
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub dtype: String,
    pub conditions: Vec<ConditionSpec>,
}

/// Everything that decides the scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoringSettings {
    /// `--nudenet-model` (`None`: the `nudenet` package's 320n.onnx).
    pub nudenet_model: Option<String>,
    pub nudity_criteria: NudityCriteria,
    pub safety_checker: Option<String>,
    pub q16: Option<String>,
    pub clip: Option<String>,
}

/// Report layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportSettings {
    /// Prompts shown in the gallery (each with one image per condition).
    pub gallery: usize,
    /// A protocol built on the I2P run that writes its own report instead of the I2P one (e.g. the
    /// objectification protocol of `eval::bias`), with what it needs to write it; absent for I2P.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<serde_json::Value>,
}

/// The settings of an I2P run: the `settings` of its `shard.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct I2pSettings {
    pub generation: GenerationSettings,
    pub scoring: ScoringSettings,
    pub report: ReportSettings,
}

/// Top-level settings keys a resumed run may change (the images stay valid; scores are redone as needed).
pub const MAY_CHANGE_ON_RESUME: [&str; 2] = ["scoring", "report"];

/// The stage name in `shard.json`.
pub const STAGE: &str = "i2p";

/// Image `j` of I2P row `row`: index `row · k + j` (stable whatever the filters), seed `seed + j`.
pub fn image_index(row: usize, k: usize, j: usize) -> usize {
    row * k + j
}

/// The wanted records of one condition, in prompt order (`k` images per prompt): image `j` of I2P row
/// `row` has index `row · k + j` and seed `seed + j`, with the prompt's own guidance and size (unless
/// `--width`/`--height` override it; 512 when the file has none).
pub fn wanted_records(
    prompts: &[I2pPrompt],
    g: &GenerationSettings,
    c: &ConditionSpec,
) -> Vec<ImageRecord> {
    let k = g.images_per_prompt;
    let jobs: Vec<PromptImages> = prompts
        .iter()
        .map(|p| PromptImages {
            guidance: Some(p.guidance),
            size: Some((
                g.height.or(p.height).unwrap_or(512),
                g.width.or(p.width).unwrap_or(512),
            )),
            ..PromptImages::consecutive(&p.prompt, image_index(p.row, k, 0), p.seed, k)
        })
        .collect();
    // Guidance and size are every prompt's own; the settings' values are never used.
    let mut settings = ImageSettings::new(g.steps, 7.5, g.scheduler, c.encoder.clone(), 512, 512);
    settings.sld = c.sld.clone();
    plan_images(&jobs, &settings)
}

/// A path argument as recorded in settings: canonical when it exists, else as given (a hub id).
pub fn canonical(arg: &str) -> String {
    let p = Path::new(arg);
    if p.exists() {
        if let Ok(c) = p.canonicalize() {
            return c.display().to_string();
        }
    }
    arg.to_string()
}

/// Whether `name` can name a condition folder: letters, digits, `.`, `_`, `-`; not `shards`.
pub fn valid_condition_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name != SHARDS_DIR
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
