//! A folder of generated images: `<dir>/images/<index>_<seed>.png` plus one JSON line per image in
//! `<dir>/images.jsonl` (../shared/conventions.md). Writing is resumable: an image is written
//! atomically, then its line is appended and synced, so a killed job leaves every recorded image
//! complete and [`ImageSet::pending`] hands out exactly what is still missing.
use anyhow::Context;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::diffusion::image::{png_bytes, to_rgb8};
use crate::diffusion::pipeline::{
    GenerateRequest, Seeds, SegaConfig, SldConfig, StableDiffusionPipeline,
};
use crate::error::Result;
use crate::settings::SchedulerKind;
use crate::{input_bail, input_err};

/// One line of images.jsonl.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageRecord {
    pub prompt: String,
    pub seed: u64,
    /// Relative to the output folder: `images/<index>_<seed>.png`.
    pub file: String,
    pub steps: usize,
    pub guidance: f64,
    pub scheduler: String,
    pub encoder: String,
    pub index: usize,
    pub negative_prompt: Option<String>,
    pub height: i64,
    pub width: i64,
    pub sld: Option<String>,
    /// `--sld-concept` when it replaces diffusers' default concept.
    #[serde(default)]
    pub sld_concept: Option<String>,
    /// Semantic guidance (`--edit ...`), when used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sega: Option<SegaConfig>,
}

impl ImageRecord {
    /// `images/<index zero-padded to 5>_<seed>.png`.
    pub fn file_name(index: usize, seed: u64) -> String {
        format!("images/{index:05}_{seed}.png")
    }

    /// The settings that must agree for an existing image to count as this run's.
    fn settings(&self) -> [(&'static str, String); 11] {
        [
            ("prompt", self.prompt.clone()),
            ("seed", self.seed.to_string()),
            ("steps", self.steps.to_string()),
            ("guidance", self.guidance.to_string()),
            ("scheduler", self.scheduler.clone()),
            ("encoder", self.encoder.clone()),
            ("negative_prompt", format!("{:?}", self.negative_prompt)),
            ("size", format!("{}x{}", self.height, self.width)),
            ("sld", format!("{:?}", self.sld)),
            ("sld_concept", format!("{:?}", self.sld_concept)),
            (
                "sega",
                self.sega
                    .as_ref()
                    .map(|s| serde_json::to_string(s).unwrap_or_default())
                    .unwrap_or_else(|| "none".into()),
            ),
        ]
    }

    /// Settings a batch must share (one pipeline call).
    fn batch_key(&self) -> (usize, u64, i64, i64, &Option<String>, &Option<SegaConfig>) {
        (
            self.steps,
            self.guidance.to_bits(),
            self.height,
            self.width,
            &self.negative_prompt,
            &self.sega,
        )
    }
}

/// An image folder being written (or read back).
pub struct ImageSet {
    pub dir: PathBuf,
    /// Records already in images.jsonl, keyed by file.
    pub done: HashMap<String, ImageRecord>,
    /// How the user sets what a batch costs in memory, named in an out-of-memory message.
    pub knobs: MemoryKnobs,
}

/// Where the settings that decide a batch's memory come from (flags of `generate`, or keys of an
/// experiment's `[evaluation]`), so an out-of-memory message names the ones to lower.
#[derive(Debug, Clone)]
pub struct MemoryKnobs {
    /// Images per UNet call: `--batch-size`.
    pub batch_size: String,
    /// How to draw in half precision (`--dtype f16` or `--dtype bf16`); `None` where the command has
    /// no such setting.
    pub dtype: Option<String>,
    /// The image size: `--height`/`--width`.
    pub size: String,
}

impl Default for MemoryKnobs {
    /// The drawing flags shared by `generate`, `evaluate i2p` and `evaluate bias` (`cli::args::DrawArgs`).
    fn default() -> Self {
        Self {
            batch_size: "--batch-size".into(),
            dtype: Some("--dtype f16 or --dtype bf16".into()),
            size: "--height/--width".into(),
        }
    }
}

impl ImageSet {
    /// Open (creating `dir/images/`) and read what images.jsonl already records. A torn last line
    /// (a run killed mid-write) is cut off.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir.join("images"))
            .with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            done: read_records(&dir.join("images.jsonl"))?,
            knobs: MemoryKnobs::default(),
        })
    }

    /// [`Self::open`] and [`Self::pending`] of `wanted`, noting how many a resumed run skips.
    pub fn open_with_pending(
        dir: &Path,
        wanted: &[ImageRecord],
    ) -> Result<(Self, Vec<ImageRecord>)> {
        let set = Self::open(dir)?;
        let pending = set.pending(wanted)?;
        if pending.len() < wanted.len() {
            crate::progress::note(&format!(
                "{}: {} of {} images already written, generating {}",
                set.dir.display(),
                wanted.len() - pending.len(),
                wanted.len(),
                pending.len()
            ));
        }
        Ok((set, pending))
    }

    pub fn jsonl(&self) -> PathBuf {
        self.dir.join("images.jsonl")
    }

    /// The records of `wanted` not yet written. A recorded image with other settings is an input
    /// error: the folder belongs to another run.
    pub fn pending(&self, wanted: &[ImageRecord]) -> Result<Vec<ImageRecord>> {
        let mut pending = vec![];
        for rec in wanted {
            match self.done.get(&rec.file) {
                Some(old) if self.dir.join(&old.file).exists() => {
                    if let Some(((field, was), (_, now))) = old
                        .settings()
                        .into_iter()
                        .zip(rec.settings())
                        .find(|(o, n)| o != n)
                    {
                        input_bail!(
                            "{} already records {} with {field} = {was}, but this run asks for {now}: use another output folder (or delete it to start over)",
                            self.jsonl().display(),
                            rec.file
                        );
                    }
                }
                _ => pending.push(rec.clone()),
            }
        }
        Ok(pending)
    }

    /// Draw what is missing of `wanted` (checked with [`Self::pending`] first). Images are drawn in
    /// fixed batches — consecutive records with the same `index / batch_size` that share steps,
    /// guidance, size and negative prompt — and a batch with any missing image is drawn whole (only the
    /// missing images are written): libtorch's CPU kernels round differently per batch size, so this is
    /// what makes a resumed or sharded run give the same bytes as an uninterrupted one.
    /// Batches are formed over `whole` (the set `wanted` is part of: a shard's slice of it, or itself),
    /// so a shard draws its edge images with the same batch-mates as an unsharded run.
    /// `on_step` is called after every denoising step with the number of missing images in the batch.
    #[allow(clippy::too_many_arguments)]
    pub fn generate(
        &mut self,
        pipe: &StableDiffusionPipeline,
        whole: &[ImageRecord],
        wanted: &[ImageRecord],
        batch_size: usize,
        scheduler: Option<SchedulerKind>,
        sld: Option<&SldConfig>,
        on_step: &mut dyn FnMut(usize),
    ) -> Result<()> {
        let in_whole: std::collections::HashSet<&str> =
            whole.iter().map(|r| r.file.as_str()).collect();
        if let Some(r) = wanted.iter().find(|r| !in_whole.contains(r.file.as_str())) {
            anyhow::bail!("image {} is not part of the set it is drawn with", r.file);
        }
        let pending = self.pending(wanted)?;
        let wanted = whole;
        let missing: std::collections::HashSet<&str> =
            pending.iter().map(|r| r.file.as_str()).collect();
        let bs = batch_size.max(1);
        let mut batches = vec![];
        let mut start = 0;
        while start < wanted.len() {
            let key = (wanted[start].batch_key(), wanted[start].index / bs);
            let mut end = start + 1;
            while end < wanted.len() && (wanted[end].batch_key(), wanted[end].index / bs) == key {
                end += 1;
            }
            batches.push(start..end);
            start = end;
        }
        for (number, rows) in batches.iter().enumerate() {
            let batch = &wanted[rows.clone()];
            let todo = batch
                .iter()
                .filter(|r| missing.contains(r.file.as_str()))
                .count();
            if todo == 0 {
                continue;
            }
            let first = &batch[0];
            let mut req = GenerateRequest::new(
                batch.iter().map(|r| r.prompt.clone()).collect(),
                Seeds::PerImage(batch.iter().map(|r| r.seed).collect()),
            );
            req.negative_prompts = first.negative_prompt.clone().map(|n| vec![n]);
            req.steps = first.steps;
            req.guidance = first.guidance;
            req.height = Some(first.height);
            req.width = Some(first.width);
            req.scheduler = scheduler;
            req.sld = sld.cloned();
            req.sega = first.sega.clone();
            // A libtorch error while drawing (out of memory above all) ends the job here: the images
            // recorded so far stay, and the rerun draws the rest.
            let images = crate::torch_error::catch(|| {
                crate::fault::point("generate-batch")?;
                pipe.generate_with_progress(&req, &mut |_, _| on_step(todo))
            })
            .map_err(|e| {
                let at = format!(
                    "batch {} of {} (images {}-{})",
                    number + 1,
                    batches.len(),
                    first.index,
                    batch[batch.len() - 1].index
                );
                self.explain_batch_failure(e, &at, bs, pipe, first, wanted)
            })?;
            for (rec, img) in batch.iter().zip(to_rgb8(&images)?) {
                if !missing.contains(rec.file.as_str()) {
                    continue;
                }
                crate::io::atomic::write_atomic(&self.dir.join(&rec.file), &png_bytes(&img)?)?;
                // A crash here leaves an image without its record: the rerun makes it again.
                crate::fault::point("image-written")?;
                append_record(&self.jsonl(), rec)?;
                self.done.insert(rec.file.clone(), rec.clone());
            }
        }
        Ok(())
    }

    /// A batch's libtorch error as a message naming the batch, what ran out and what to lower, and
    /// that the images already written are kept; any other error is returned as it is.
    fn explain_batch_failure(
        &self,
        err: anyhow::Error,
        batch: &str,
        batch_size: usize,
        pipe: &StableDiffusionPipeline,
        first: &ImageRecord,
        set: &[ImageRecord],
    ) -> anyhow::Error {
        let Some(torch) = crate::torch_error::find(&err) else {
            return err;
        };
        let written = set
            .iter()
            .filter(|r| self.done.contains_key(&r.file))
            .count();
        let kept = format!(
            "The {written} image(s) already written are kept in {}: rerun the same command to draw the rest",
            self.jsonl().display()
        );
        let Some(memory) = torch.memory() else {
            return anyhow::anyhow!(
                "{}: {batch}: libtorch error: {}. {kept}",
                self.dir.display(),
                torch.message
            );
        };
        let k = &self.knobs;
        let dtype = match &k.dtype {
            Some(flag) if pipe.kind == tch::Kind::Float => {
                format!(", draw in half precision ({flag}; now f32)")
            }
            _ => String::new(),
        };
        anyhow::anyhow!(
            "{}: {batch}: out of {memory} ({}). Lower {} (now {batch_size} image(s) per UNet call){dtype}, or draw smaller images ({}; now height {}, width {}). {kept}",
            self.dir.display(),
            torch.message,
            k.batch_size,
            k.size,
            first.height,
            first.width
        )
    }

    /// The recorded images of `records` (in their order), decoded. An image whose size or colour mode
    /// is not what its record says (a file replaced by hand, or another run's) is an input error.
    pub fn load_images(&self, records: &[ImageRecord]) -> Result<Vec<image::RgbImage>> {
        records
            .iter()
            .map(|r| {
                let path = self.dir.join(&r.file);
                let fix = format!(
                    "delete it and its line in {} and rerun to draw it again",
                    self.jsonl().display()
                );
                let img = image::open(&path).map_err(|e| {
                    input_err!("cannot read the image {} ({e}): {fix}", path.display())
                })?;
                if img.color() != image::ColorType::Rgb8 {
                    input_bail!(
                        "{} is a {:?} image, but generated images are 8-bit RGB: {fix}",
                        path.display(),
                        img.color()
                    );
                }
                if (img.width() as i64, img.height() as i64) != (r.width, r.height) {
                    input_bail!(
                        "{} is {}x{} pixels, but {} records it as {}x{}: {fix}",
                        path.display(),
                        img.width(),
                        img.height(),
                        self.jsonl().display(),
                        r.width,
                        r.height
                    );
                }
                Ok(img.to_rgb8())
            })
            .collect()
    }
}

/// Records in `jsonl`, keyed by file. A torn last line is cut off (rewritten atomically).
pub fn read_records(jsonl: &Path) -> Result<HashMap<String, ImageRecord>> {
    let Ok(bytes) = std::fs::read(jsonl) else {
        return Ok(HashMap::new());
    };
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => &bytes[..=i],
        None => &bytes[..0],
    };
    if complete.len() != bytes.len() {
        crate::progress::note(&format!(
            "{}: dropping an unfinished last line",
            jsonl.display()
        ));
        crate::io::atomic::write_atomic(jsonl, complete)?;
    }
    let mut out = HashMap::new();
    for (n, line) in String::from_utf8_lossy(complete).lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: ImageRecord = serde_json::from_str(line).map_err(|e| {
            input_err!("{} line {}: not an images.jsonl record ({e}): use another --out, or remove the file", jsonl.display(), n + 1)
        })?;
        out.insert(r.file.clone(), r);
    }
    Ok(out)
}

fn append_record(jsonl: &Path, r: &ImageRecord) -> Result<()> {
    let mut line = serde_json::to_string(r)?;
    line.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(jsonl)
        .with_context(|| format!("opening {}", jsonl.display()))?;
    // One write of a whole line, then flush to disk: a kill leaves the line complete or absent.
    f.write_all(line.as_bytes())
        .and_then(|()| f.flush())
        .and_then(|()| f.sync_data())
        .with_context(|| format!("appending to {}", jsonl.display()))?;
    Ok(())
}
