//! Per-image scores of an I2P run (`scores.jsonl`, one line per image, resumable): NudeNet
//! detections, the Stable Diffusion safety checker's verdict and Q16's.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

use super::plan::{ConditionSpec, ScoringSettings};
use super::prompts::I2pPrompt;
use crate::diffusion::image_set::ImageRecord;
use crate::diffusion::jobs::{append_jsonl, read_jsonl, union_jsonl, Merged};
use crate::error::Result;
use crate::eval::clip::{open_image, ClipVision};
use crate::eval::nudenet::{Detection, NudeDetector};
use crate::eval::safety::{SafetyChecker, Q16};
use crate::input_bail;

/// File name of the score cache in a run (or shard) folder.
pub const SCORES: &str = "scores.jsonl";

/// The safety checker's verdict on one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SafetyScore {
    /// diffusers' `has_nsfw_concept`.
    pub nsfw: bool,
    /// Indices (0..17) of the concepts that fired.
    pub concepts: Vec<usize>,
    /// Indices (0..3) of the special-care concepts that fired.
    pub special_care: Vec<usize>,
}

/// Q16's verdict on one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Q16Score {
    pub inappropriate: bool,
    pub p_inappropriate: f32,
}

/// One line of scores.jsonl.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreEntry {
    pub condition: String,
    pub index: usize,
    /// The image, relative to the condition folder (`images/<index>_<seed>.png`).
    pub file: String,
    /// The prompt's I2P row and labels (so a merge needs no I2P file).
    pub row: usize,
    pub prompt: String,
    pub categories: Vec<String>,
    pub hard: bool,
    /// CRC-32C of the PNG file: a cached score counts only for the same bytes.
    pub image_crc32c: u32,
    /// Every NudeNet detection (all 18 classes); which ones count is the report's criteria.
    pub nudenet: Vec<Detection>,
    pub safety: Option<SafetyScore>,
    pub q16: Option<Q16Score>,
    /// I2P's own SD 1.4 measurements for the prompt (percent), when the file has them.
    pub i2p_inappropriate_percentage: Option<f64>,
    pub i2p_nudity_percentage: Option<f64>,
}

impl ScoreEntry {
    /// `condition/file`: the key of a score in a cache or a merge.
    /// Whether this cached entry scores `crc` with every scorer `s` asks for.
    pub fn usable(&self, crc: u32, s: &ScoringSettings) -> bool {
        self.image_crc32c == crc
            && (s.safety_checker.is_none() || self.safety.is_some())
            && (s.q16.is_none() || self.q16.is_some())
    }
}

pub fn key(condition: &str, file: &str) -> String {
    format!("{condition}/{file}")
}

/// The key of a scores.jsonl line (for [`crate::diffusion::jobs::union_jsonl`]).
pub fn json_key(v: &serde_json::Value) -> Option<String> {
    Some(key(v.get("condition")?.as_str()?, v.get("file")?.as_str()?))
}

/// A line of a run's `scores.jsonl`: one judged image of one condition. I2P's [`ScoreEntry`] and the
/// relative-bias similarities share the cache, its keys and its merge.
pub trait CachedScore: serde::Serialize + serde::de::DeserializeOwned + Clone {
    fn condition(&self) -> &str;
    fn file(&self) -> &str;
    fn key(&self) -> String {
        key(self.condition(), self.file())
    }
}

impl CachedScore for ScoreEntry {
    fn condition(&self) -> &str {
        &self.condition
    }
    fn file(&self) -> &str {
        &self.file
    }
}

/// The cached entries of `dir/scores.jsonl`, by key; a later line replaces an earlier one, and lines
/// that are not entries of this kind are ignored (they are recomputed).
pub fn read_cached<T: CachedScore>(dir: &Path) -> Result<HashMap<String, T>> {
    let mut out = HashMap::new();
    for v in read_jsonl(&dir.join(SCORES))? {
        if let Ok(e) = serde_json::from_value::<T>(v) {
            out.insert(e.key(), e);
        }
    }
    Ok(out)
}

/// The cached I2P scores of `dir/scores.jsonl`.
pub fn read_scores(dir: &Path) -> Result<HashMap<String, ScoreEntry>> {
    read_cached(dir)
}

/// Rewrite `dir/scores.jsonl` with exactly `entries`, in order (atomically).
pub fn write_cached<T: CachedScore>(dir: &Path, entries: &[T]) -> Result<()> {
    let mut buf = vec![];
    for e in entries {
        buf.extend(serde_json::to_vec(e)?);
        buf.push(b'\n');
    }
    crate::io::atomic::write_atomic(&dir.join(SCORES), &buf)
}

/// [`write_cached`] for I2P scores.
pub fn write_scores(dir: &Path, entries: &[ScoreEntry]) -> Result<()> {
    write_cached(dir, entries)
}

/// After a merge: the entry of every merged image of `conditions`, in wanted order, from the union
/// of the shards' `scores.jsonl`; `current(entry, crc)` says whether a cached entry scores the
/// merged image's bytes with the run's judges. Written to `<out>/scores.jsonl`. An image without a
/// current entry is an input error naming its shard.
pub fn merged_entries<T: CachedScore>(
    merged: &Merged,
    out: &Path,
    conditions: &[ConditionSpec],
    current: impl Fn(&T, u32) -> bool,
) -> Result<Vec<T>> {
    let dirs: Vec<std::path::PathBuf> = merged.shards.iter().map(|(d, _)| d.clone()).collect();
    let union = union_jsonl(&dirs, SCORES, json_key)?;
    let mut entries = vec![];
    for c in conditions {
        let Some(records) = merged.sets.get(&c.name) else {
            input_bail!("the merged run has no image set `{}`", c.name);
        };
        for r in records {
            let crc = file_crc(&out.join(&c.name).join(&r.file))?;
            let e = union
                .get(&key(&c.name, &r.file))
                .and_then(|v| serde_json::from_value::<T>(v.clone()).ok())
                .filter(|e| current(e, crc));
            let Some(e) = e else {
                let owner = merged
                    .shards
                    .iter()
                    .find(|(d, _)| d.join(&c.name).join(&r.file).exists())
                    .map(|(d, m)| format!("shard {} ({})", m.shard, d.display()))
                    .unwrap_or_else(|| "its shard".into());
                input_bail!(
                    "image {} of `{}` has no (current) score in {owner}: rerun that shard with the same arguments (it resumes and scores), then merge again",
                    r.file,
                    c.name
                );
            };
            entries.push(e);
        }
    }
    write_cached(out, &entries)?;
    Ok(entries)
}

/// CRC-32C of a file's bytes.
pub fn file_crc(path: &Path) -> Result<u32> {
    let bytes = std::fs::read(path).map_err(|e| {
        crate::input_err!(
            "cannot read the image {} ({e}): delete its line from images.jsonl beside it and rerun to regenerate it",
            path.display()
        )
    })?;
    Ok(crc32c::crc32c(&bytes))
}

/// The loaded scorers.
pub struct Scorers {
    pub nudenet: NudeDetector,
    pub safety: Option<SafetyChecker>,
    pub q16: Option<(ClipVision, Q16)>,
}

impl Scorers {
    /// Load what `s` asks for (NudeNet always), in f32 on `device`.
    pub fn load(s: &ScoringSettings, device: Device) -> Result<Self> {
        let nudenet = NudeDetector::load(s.nudenet_model.as_deref().map(Path::new), None)?;
        let safety = s
            .safety_checker
            .as_deref()
            .map(|m| SafetyChecker::load(m, device, Kind::Float))
            .transpose()?;
        let q16 = match (&s.q16, &s.clip) {
            (Some(q), Some(c)) => {
                let q16 = Q16::load(Path::new(q))?;
                let clip = ClipVision::load(c, device, Kind::Float)?;
                if clip.config.projection_dim != q16.width() {
                    input_bail!(
                        "--clip {c} makes {}-wide image embeddings but the Q16 prompts in {q} are {}-wide: give the CLIP model the prompts were learned for (ViT-L/14, 768, for q16_vitl14_prompts.safetensors)",
                        clip.config.projection_dim,
                        q16.width()
                    );
                }
                Some((clip, q16))
            }
            (None, None) => None,
            _ => input_bail!("Q16 needs both --q16 FILE (its prompt embeddings) and --clip DIR (the CLIP model they were learned for)"),
        };
        Ok(Self {
            nudenet,
            safety,
            q16,
        })
    }

    /// Score image files: NudeNet on each file (decoded like cv2, as the package does), the safety
    /// checker and Q16 on the decoded images. Every model sees one image at a time, so an image's
    /// scores are the same bits whichever images share its batch (a sharded run equals an unsharded one).
    #[allow(clippy::type_complexity)]
    pub fn score(
        &self,
        paths: &[PathBuf],
    ) -> Result<Vec<(Vec<Detection>, Option<SafetyScore>, Option<Q16Score>)>> {
        let detections = paths
            .iter()
            .map(|p| self.nudenet.detect_path(p))
            .collect::<Result<Vec<_>>>()?;
        let images = if self.safety.is_some() || self.q16.is_some() {
            paths
                .iter()
                .map(|p| open_image(p))
                .collect::<Result<Vec<_>>>()?
        } else {
            vec![]
        };
        let safety: Vec<Option<SafetyScore>> = match &self.safety {
            Some(sc) => sc
                .check_images(&images, 1)?
                .into_iter()
                .map(|v| {
                    Some(SafetyScore {
                        nsfw: v.has_nsfw_concept,
                        concepts: v.bad_concepts,
                        special_care: v.special_care,
                    })
                })
                .collect(),
            None => vec![None; paths.len()],
        };
        let q16: Vec<Option<Q16Score>> = match &self.q16 {
            Some((clip, q)) => {
                let embeds = clip.embed_images(&images, 1)?;
                let mut out = vec![];
                for i in 0..embeds.size()[0] {
                    // One row at a time: a matrix product's kernel (and last bits) depend on its rows.
                    let v = q.classify(&embeds.narrow(0, i, 1))?.remove(0);
                    out.push(Some(Q16Score {
                        inappropriate: v.inappropriate,
                        p_inappropriate: v.p_inappropriate,
                    }));
                }
                out
            }
            None => vec![None; paths.len()],
        };
        Ok(detections
            .into_iter()
            .zip(safety)
            .zip(q16)
            .map(|((d, s), q)| (d, s, q))
            .collect())
    }
}

/// One image to score: its condition, record, prompt and folder.
pub struct ScoreJob<'a> {
    pub condition: &'a str,
    pub record: &'a ImageRecord,
    pub prompt: &'a I2pPrompt,
    pub set_dir: &'a Path,
}

/// Scores of `jobs` (in their order), from `dir/scores.jsonl` where usable, else computed (scorers
/// loaded only when something needs scoring) and appended batch by batch, so a killed run keeps what
/// it scored. Finally scores.jsonl is rewritten with exactly these entries, in order.
pub fn score_all(
    dir: &Path,
    jobs: &[ScoreJob],
    s: &ScoringSettings,
    device: Device,
    batch_size: usize,
    on_scored: &mut dyn FnMut(usize),
) -> Result<Vec<ScoreEntry>> {
    let mut cache = read_scores(dir)?;
    let mut crcs = Vec::with_capacity(jobs.len());
    let mut todo = vec![];
    for (i, j) in jobs.iter().enumerate() {
        let crc = file_crc(&j.set_dir.join(&j.record.file))?;
        crcs.push(crc);
        match cache.get(&key(j.condition, &j.record.file)) {
            Some(e) if e.usable(crc, s) => {}
            _ => todo.push(i),
        }
    }
    if !todo.is_empty() {
        if todo.len() < jobs.len() {
            crate::progress::note(&format!(
                "{}: {} of {} images already scored, scoring {}",
                dir.join(SCORES).display(),
                jobs.len() - todo.len(),
                jobs.len(),
                todo.len()
            ));
        }
        let scorers = Scorers::load(s, device)?;
        for chunk in todo.chunks(batch_size.max(1)) {
            let paths: Vec<PathBuf> = chunk
                .iter()
                .map(|&i| jobs[i].set_dir.join(&jobs[i].record.file))
                .collect();
            let scored = scorers.score(&paths)?;
            let mut lines = vec![];
            for (&i, (nudenet, safety, q16)) in chunk.iter().zip(scored) {
                let j = &jobs[i];
                let e = ScoreEntry {
                    condition: j.condition.to_string(),
                    index: j.record.index,
                    file: j.record.file.clone(),
                    row: j.prompt.row,
                    prompt: j.prompt.prompt.clone(),
                    categories: j.prompt.categories.clone(),
                    hard: j.prompt.hard,
                    image_crc32c: crcs[i],
                    nudenet,
                    safety,
                    q16,
                    i2p_inappropriate_percentage: j.prompt.inappropriate_percentage,
                    i2p_nudity_percentage: j.prompt.nudity_percentage,
                };
                lines.push(serde_json::to_value(&e)?);
                cache.insert(e.key(), e);
            }
            append_jsonl(&dir.join(SCORES), &lines)?;
            on_scored(chunk.len());
        }
    }
    let entries: Vec<ScoreEntry> = jobs
        .iter()
        .map(|j| cache[&key(j.condition, &j.record.file)].clone())
        .collect();
    write_scores(dir, &entries)?;
    Ok(entries)
}
