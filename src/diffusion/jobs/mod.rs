//! The job planner: which images a generation job draws ([`plan_images`]: prompts, per-image seeds
//! and settings in, [`ImageRecord`]s out), how a job is split over several processes and merged back
//! ([`shard`]), and the JSON-lines caches a resumable job keeps beside its images ([`jsonl`]).
//!
//! `clipdoor generate`, the image stage of an experiment and the I2P benchmark all plan through
//! [`plan_images`], so a record (and its file name `images/<index>_<seed>.png`) means the same in each,
//! and a resumed or sharded job asks for exactly the images an uninterrupted one does.
//!
//! ```
//! use clipdoor::diffusion::jobs::{plan_images, ImageSettings, PromptImages};
//! use clipdoor::settings::SchedulerKind;
//! let settings = ImageSettings::new(30, 7.5, SchedulerKind::Ddim, "sd/text_encoder".into(), 512, 512);
//! // Two images of each prompt: image j of prompt i has index 2i + j and seed 40 + 2i + j.
//! let prompts: Vec<PromptImages> = ["a cat", "a dog"]
//!     .iter()
//!     .enumerate()
//!     .map(|(i, p)| PromptImages::consecutive(p, 2 * i, 40 + 2 * i as u64, 2))
//!     .collect();
//! let records = plan_images(&prompts, &settings);
//! assert_eq!(records[3].file, "images/00003_43.png");
//! assert_eq!(records[3].scheduler, "ddim");
//! ```
pub mod jsonl;
pub mod shard;

pub use jsonl::{append_jsonl, read_jsonl, union_jsonl};
pub use shard::{
    find_shard_dirs, link_or_copy, merge, settings_diff, settings_hash, Merged, SetPlan, Shard,
    ShardManifest, MANIFEST, SHARDS_DIR,
};

use crate::diffusion::image_set::ImageRecord;
use crate::diffusion::pipeline::SegaConfig;
use crate::settings::SchedulerKind;

/// What the images of a job share: every field of an [`ImageRecord`] except prompt, seed, index and
/// file. A prompt may bring its own guidance and size ([`PromptImages`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSettings {
    pub steps: usize,
    pub guidance: f64,
    /// The scheduler the images are drawn with (resolved: never "the config's own").
    pub scheduler: SchedulerKind,
    /// The text encoder, as recorded in images.jsonl (its folder).
    pub encoder: String,
    pub negative_prompt: Option<String>,
    pub height: i64,
    pub width: i64,
    /// `--sld` preset name.
    pub sld: Option<String>,
    /// `--sld-concept` when it replaces diffusers' default concept.
    pub sld_concept: Option<String>,
    /// Semantic guidance (`--edit ...`).
    pub sega: Option<SegaConfig>,
}

impl ImageSettings {
    /// Settings without negative prompt or SLD.
    pub fn new(
        steps: usize,
        guidance: f64,
        scheduler: SchedulerKind,
        encoder: String,
        height: i64,
        width: i64,
    ) -> Self {
        Self {
            steps,
            guidance,
            scheduler,
            encoder,
            negative_prompt: None,
            height,
            width,
            sld: None,
            sld_concept: None,
            sega: None,
        }
    }
}

/// One prompt's images: image `j` has index `first_index + j` and seed `seeds[j]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptImages<'a> {
    pub prompt: &'a str,
    pub first_index: usize,
    pub seeds: Vec<u64>,
    /// The prompt's own guidance scale (I2P), else the settings'.
    pub guidance: Option<f64>,
    /// The prompt's own `(height, width)` (I2P), else the settings'.
    pub size: Option<(i64, i64)>,
}

impl<'a> PromptImages<'a> {
    /// `count` images with consecutive indices from `first_index` and consecutive seeds from
    /// `first_seed` (wrapping at `u64::MAX`).
    pub fn consecutive(prompt: &'a str, first_index: usize, first_seed: u64, count: usize) -> Self {
        Self {
            prompt,
            first_index,
            seeds: (0..count)
                .map(|j| first_seed.wrapping_add(j as u64))
                .collect(),
            guidance: None,
            size: None,
        }
    }
}

/// The records of a job, prompt by prompt and image by image in order; each image's file is
/// [`ImageRecord::file_name`] of its index and seed.
pub fn plan_images(prompts: &[PromptImages], settings: &ImageSettings) -> Vec<ImageRecord> {
    let s = settings;
    let mut out = Vec::with_capacity(prompts.iter().map(|p| p.seeds.len()).sum());
    for p in prompts {
        let (height, width) = p.size.unwrap_or((s.height, s.width));
        for (j, &seed) in p.seeds.iter().enumerate() {
            let index = p.first_index + j;
            out.push(ImageRecord {
                prompt: p.prompt.to_string(),
                seed,
                file: ImageRecord::file_name(index, seed),
                steps: s.steps,
                guidance: p.guidance.unwrap_or(s.guidance),
                scheduler: s.scheduler.name().to_string(),
                encoder: s.encoder.clone(),
                index,
                negative_prompt: s.negative_prompt.clone(),
                height,
                width,
                sld: s.sld.clone(),
                sld_concept: s.sld_concept.clone(),
                sega: s.sega.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_records_with_overrides() {
        let mut s =
            ImageSettings::new(2, 7.5, SchedulerKind::EulerAncestral, "/enc".into(), 32, 32);
        s.sld = Some("max".into());
        let mut b = PromptImages::consecutive("b", 10, u64::MAX, 2);
        b.guidance = Some(3.0);
        b.size = Some((64, 48));
        let r = plan_images(&[PromptImages::consecutive("a", 0, 5, 1), b], &s);
        assert_eq!(r.len(), 3);
        assert_eq!(
            (r[0].index, r[0].seed, r[0].file.as_str()),
            (0, 5, "images/00000_5.png")
        );
        assert_eq!((r[0].guidance, r[0].height, r[0].width), (7.5, 32, 32));
        assert_eq!((r[2].index, r[2].seed), (11, 0));
        assert_eq!((r[2].guidance, r[2].height, r[2].width), (3.0, 64, 48));
        assert!(r
            .iter()
            .all(|x| x.scheduler == "euler-a" && x.sld.as_deref() == Some("max")));
    }
}
