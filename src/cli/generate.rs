//! `clipdoor generate`: Stable Diffusion sampling with any text encoder into `<out>/images/` +
//! `<out>/images.jsonl`, resumable (images already recorded are skipped).
use anyhow::Context;
use clap::Args;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::diffusion::pipeline::image::{png_bytes, to_rgb8};
use crate::diffusion::pipeline::{GenerateRequest, Seeds, SldConfig, StableDiffusionPipeline};
use crate::error::Result;
use crate::{input_bail, input_err};

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Pipeline folder (diffusers save_pretrained layout) or cached hub id.
    #[arg(long)]
    pub pipeline: String,
    /// Text encoder replacing the pipeline's: a clipdoor run folder or its text_encoder/.
    #[arg(long)]
    pub text_encoder: Option<PathBuf>,
    /// One prompt.
    #[arg(long, conflicts_with = "prompts", required_unless_present = "prompts")]
    pub prompt: Option<String>,
    /// Prompt file: text (one a line), .csv/.tsv (column --prompt-field), .jsonl; optionally .gz.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// CSV column / JSONL field holding the prompt (default: prompt, TEXT, caption, text).
    #[arg(long)]
    pub prompt_field: Option<String>,
    /// Image j of prompt i uses seed `seed + i * images_per_prompt + j` (its own generator).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 1)]
    pub images_per_prompt: usize,
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale (<= 1: no guidance).
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
    /// ddim, pndm, euler, euler-a, dpm++ (default: the pipeline's scheduler_config.json).
    #[arg(long)]
    pub scheduler: Option<String>,
    /// Image height in pixels, a multiple of 8 (default: the UNet's sample_size x 8).
    #[arg(long)]
    pub height: Option<i64>,
    #[arg(long)]
    pub width: Option<i64>,
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// Safe Latent Diffusion preset: weak, medium, strong, max.
    #[arg(long)]
    pub sld: Option<String>,
    /// Safety concept for --sld (default: diffusers' concept text).
    #[arg(long, requires = "sld")]
    pub sld_concept: Option<String>,
    #[arg(long)]
    pub device: Option<String>,
    /// Compute dtype: f32, f16, bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Images per UNet call (the UNet batch is 2x this with guidance, 3x with SLD).
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    #[arg(long)]
    pub out: PathBuf,
}

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
}

impl ImageRecord {
    /// The settings that must agree for an existing image to count as this run's.
    fn settings(&self) -> [(&'static str, String); 10] {
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
        ]
    }
}

fn read_prompts(a: &GenerateArgs) -> Result<Vec<String>> {
    let prompts = match (&a.prompt, &a.prompts) {
        (Some(p), _) => vec![p.clone()],
        (None, Some(f)) => {
            crate::io::prompts::read_prompts(f, a.prompt_field.as_deref(), false)?.prompts
        }
        (None, None) => input_bail!("give --prompt TEXT or --prompts FILE"),
    };
    if prompts.is_empty() {
        input_bail!("no prompts to generate from: the prompt file is empty");
    }
    Ok(prompts)
}

/// Records already in images.jsonl, keyed by file. A torn last line (a run killed mid-write) is cut off.
fn read_records(jsonl: &Path) -> Result<HashMap<String, ImageRecord>> {
    let Ok(bytes) = std::fs::read(jsonl) else {
        return Ok(HashMap::new());
    };
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => &bytes[..=i],
        None => &bytes[..0],
    };
    if complete.len() != bytes.len() {
        eprintln!("{}: dropping an unfinished last line", jsonl.display());
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
    f.write_all(line.as_bytes())?;
    f.flush()?;
    f.sync_data()?;
    Ok(())
}

pub fn run(a: GenerateArgs) -> Result<()> {
    let prompts = read_prompts(&a)?;
    if a.images_per_prompt == 0 || a.batch_size == 0 || a.steps == 0 {
        input_bail!("--images-per-prompt, --batch-size and --steps must be at least 1");
    }
    let mut sld = a.sld.as_deref().map(SldConfig::preset).transpose()?;
    if let (Some(s), Some(c)) = (sld.as_mut(), &a.sld_concept) {
        s.concept = c.clone();
    }
    let device = crate::device::parse_device(a.device.as_deref())?;
    let kind = crate::device::parse_kind(&a.dtype)?;
    let pipe = StableDiffusionPipeline::load(&a.pipeline, a.text_encoder.as_deref(), device, kind)?;
    let scheduler = pipe.scheduler(a.scheduler.as_deref())?.name().to_string();
    let (dh, dw) = pipe.default_size();
    let (height, width) = (a.height.unwrap_or(dh), a.width.unwrap_or(dw));
    let encoder = pipe.encoder_dir().display().to_string();

    let jsonl = a.out.join("images.jsonl");
    std::fs::create_dir_all(a.out.join("images"))
        .with_context(|| format!("creating {}", a.out.display()))?;
    let done = read_records(&jsonl)?;
    let k = a.images_per_prompt;
    let mut pending = vec![];
    for (i, prompt) in prompts.iter().enumerate() {
        for j in 0..k {
            let index = i * k + j;
            let seed = a.seed + index as u64;
            let rec = ImageRecord {
                prompt: prompt.clone(),
                seed,
                file: format!("images/{index:05}_{seed}.png"),
                steps: a.steps,
                guidance: a.guidance,
                scheduler: scheduler.clone(),
                encoder: encoder.clone(),
                index,
                negative_prompt: a.negative_prompt.clone(),
                height,
                width,
                sld: a.sld.clone(),
                sld_concept: a.sld_concept.clone(),
            };
            match done.get(&rec.file) {
                Some(old) if a.out.join(&old.file).exists() => {
                    if let Some(((field, was), (_, now))) = old
                        .settings()
                        .into_iter()
                        .zip(rec.settings())
                        .find(|(o, n)| o != n)
                    {
                        input_bail!(
                            "{} already records {} with {field} = {was}, but this run asks for {now}: use another --out (or delete the folder to start over)",
                            jsonl.display(),
                            rec.file
                        );
                    }
                }
                _ => pending.push(rec),
            }
        }
    }
    let total = prompts.len() * k;
    if pending.len() < total {
        eprintln!(
            "{}: {} of {total} images already written, skipping them",
            a.out.display(),
            total - pending.len()
        );
    }

    let bar = crate::cli::progress((pending.len() * a.steps) as u64, "generating");
    for batch in pending.chunks(a.batch_size) {
        let mut req = GenerateRequest::new(
            batch.iter().map(|r| r.prompt.clone()).collect(),
            Seeds::PerImage(batch.iter().map(|r| r.seed).collect()),
        );
        req.negative_prompts = a.negative_prompt.clone().map(|n| vec![n]);
        req.steps = a.steps;
        req.guidance = a.guidance;
        req.height = Some(height);
        req.width = Some(width);
        req.scheduler = a.scheduler.clone();
        req.sld = sld.clone();
        let n = batch.len();
        // PNDM evaluates steps + 1 timesteps: the bar counts the scheduler's own.
        let images = pipe.generate_with_progress(&req, &mut |_, per_batch| {
            bar.set_length((pending.len() * per_batch) as u64);
            bar.inc(n as u64)
        })?;
        for (rec, img) in batch.iter().zip(to_rgb8(&images)?) {
            crate::io::atomic::write_atomic(&a.out.join(&rec.file), &png_bytes(&img)?)?;
            append_record(&jsonl, rec)?;
        }
    }
    bar.finish_and_clear();
    println!("{}", jsonl.display());
    Ok(())
}
