//! `clipdoor generate`: Stable Diffusion sampling with any text encoder into `<out>/images/` +
//! `<out>/images.jsonl`, resumable (images already recorded are skipped).
use clap::Args;
use std::path::PathBuf;

use crate::diffusion::image_set::ImageSet;
use crate::diffusion::jobs::{plan_images, ImageSettings, PromptImages, Shard, ShardManifest};
use crate::diffusion::pipeline::sega::EditLists;
use crate::diffusion::pipeline::{SegaConfig, SldConfig, StableDiffusionPipeline};
use crate::error::Result;
use crate::input_bail;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Pipeline folder (diffusers save_pretrained layout) or cached hub id.
    #[arg(long)]
    pub pipeline: String,
    /// Text encoder replacing the pipeline's: a clipdoor run folder or its text_encoder/.
    #[arg(long)]
    pub text_encoder: Option<PathBuf>,
    /// A learned word (`clipdoor invert`, or any diffusers learned_embeds.safetensors) that prompts
    /// may use (repeatable)
    #[arg(long, value_name = "FILE")]
    pub embedding: Vec<PathBuf>,
    /// One prompt.
    #[arg(long, conflicts_with = "prompts", required_unless_present = "prompts")]
    pub prompt: Option<String>,
    /// Prompt file: text (one a line), .csv/.tsv (column --field), .jsonl; optionally .gz.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// CSV column / JSONL field holding the prompt (default: prompt, TEXT, caption, text).
    #[arg(long, alias = "prompt-field")]
    pub field: Option<String>,
    /// Image j of prompt i uses seed `seed + i * images_per_prompt + j` (its own generator).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images drawn per prompt (each with its own seed).
    #[arg(long, default_value_t = 1)]
    pub images_per_prompt: usize,
    #[command(flatten)]
    pub sampler: super::args::SamplerArgs,
    /// Classifier-free guidance scale (<= 1: no guidance).
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
    /// Image height in pixels, a multiple of 8 (default: the UNet's sample_size x 8).
    #[arg(long)]
    pub height: Option<i64>,
    /// Image width in pixels, a multiple of 8 (default: the UNet's sample_size x 8).
    #[arg(long)]
    pub width: Option<i64>,
    /// Negative prompt: replaces the empty prompt of classifier-free guidance, for every image.
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// Safe Latent Diffusion preset (diffusers' SafetyConfig).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(crate::diffusion::pipeline::sld::SLD_PRESETS))]
    pub sld: Option<String>,
    /// Safety concept for --sld (default: diffusers' concept text).
    #[arg(long, requires = "sld")]
    pub sld_concept: Option<String>,
    #[command(flatten)]
    pub edit: EditArgs,
    #[command(flatten)]
    pub draw: super::args::DrawArgs,
    /// Output folder: images/ and images.jsonl (rerun the same command to resume).
    #[arg(long)]
    pub out: PathBuf,
    /// Draw only shard I of N (0-based; a contiguous block of the images) into OUT/shards/I-of-N/;
    /// `clipdoor evaluate merge --out OUT` joins the shards once all are done.
    #[arg(long)]
    pub shard: Option<String>,
}

/// Semantic guidance (SEGA, diffusers' `SemanticStableDiffusionPipeline`). Per-edit flags take one
/// value for every edit or one per `--edit` (repeat the flag or comma-separate).
#[derive(Args, Debug, Clone, Default)]
pub struct EditArgs {
    /// SEGA: steer the image toward this prompt (repeat for several edit directions).
    #[arg(long = "edit", value_name = "PROMPT")]
    pub edit: Vec<String>,
    /// Steer away from the edit prompt instead (alone: every edit; or true/false per edit).
    #[arg(long, num_args = 0.., value_delimiter = ',', default_missing_value = "true", requires = "edit")]
    pub edit_reverse: Vec<bool>,
    /// Edit guidance scale (diffusers' default 5).
    #[arg(long, value_delimiter = ',', requires = "edit")]
    pub edit_guidance: Vec<f64>,
    /// Denoising-loop iterations before an edit is applied (default 10; momentum builds up before).
    #[arg(long, value_delimiter = ',', requires = "edit")]
    pub edit_warmup: Vec<usize>,
    /// Loop iteration from which an edit is off (default: never).
    #[arg(long, value_delimiter = ',', requires = "edit")]
    pub edit_cooldown: Vec<usize>,
    /// Quantile of |edit guidance| per channel below which it is dropped (default 0.9).
    #[arg(long, value_delimiter = ',', requires = "edit")]
    pub edit_threshold: Vec<f64>,
    /// Relative weight of each edit (default 1).
    #[arg(long, value_delimiter = ',', requires = "edit")]
    pub edit_weight: Vec<f64>,
    /// Scale of the edit momentum added to the edit guidance (shared by all edits).
    #[arg(long, default_value_t = 0.1, requires = "edit")]
    pub edit_momentum: f64,
    /// How much of the previous edit momentum is kept (shared by all edits).
    #[arg(long, default_value_t = 0.4, requires = "edit")]
    pub edit_beta: f64,
}

impl EditArgs {
    /// The SEGA config, or `None` without `--edit`.
    pub fn config(&self) -> Result<Option<SegaConfig>> {
        if self.edit.is_empty() {
            return Ok(None);
        }
        SegaConfig::from_lists(&EditLists {
            prompts: &self.edit,
            reverse: &self.edit_reverse,
            guidance_scale: &self.edit_guidance,
            warmup_steps: &self.edit_warmup,
            cooldown_steps: &self.edit_cooldown,
            threshold: &self.edit_threshold,
            weight: &self.edit_weight,
            momentum_scale: self.edit_momentum,
            mom_beta: self.edit_beta,
        })
        .map(Some)
    }
}

fn read_prompts(a: &GenerateArgs) -> Result<Vec<String>> {
    let prompts = match (&a.prompt, &a.prompts) {
        (Some(p), _) => vec![p.clone()],
        (None, Some(f)) => {
            crate::io::prompts::read_prompt_lines(f, a.field.as_deref(), false)?.prompts
        }
        (None, None) => input_bail!("give --prompt TEXT or --prompts FILE"),
    };
    if prompts.is_empty() {
        input_bail!("no prompts to generate from: the prompt file is empty");
    }
    Ok(prompts)
}

pub fn run(a: GenerateArgs) -> Result<()> {
    let prompts = read_prompts(&a)?;
    if a.images_per_prompt == 0 || a.draw.batch_size == 0 || a.sampler.steps == 0 {
        input_bail!("--images-per-prompt, --batch-size and --steps must be at least 1");
    }
    let mut sld = a.sld.as_deref().map(SldConfig::preset).transpose()?;
    if let (Some(s), Some(c)) = (sld.as_mut(), &a.sld_concept) {
        s.concept = c.clone();
    }
    let sega = a.edit.config()?;
    if sega.is_some() && sld.is_some() {
        input_bail!("--edit (SEGA) and --sld cannot be combined: diffusers has no pipeline that runs both; choose one");
    }
    if sega.is_some() && a.guidance <= 1.0 {
        input_bail!(
            "semantic guidance (--edit) steers classifier-free guidance, which is off at --guidance {}: use --guidance > 1",
            a.guidance
        );
    }
    let device = a.draw.device.device();
    let kind = a.draw.dtype.dtype.kind();
    let mut pipe =
        StableDiffusionPipeline::load(&a.pipeline, a.text_encoder.as_deref(), device, kind)?;
    let mut encoder_label = pipe.encoder_label();
    for e in &a.embedding {
        let words = pipe.text_encoder.add_embeddings_from(e)?;
        // Part of the settings: images drawn without the word are not reused for prompts with it.
        encoder_label += &format!(" + {} ({})", e.display(), words.join(", "));
    }
    let pipe = pipe;
    let scheduler = pipe.scheduler_kind(a.sampler.scheduler)?;
    let (dh, dw) = pipe.default_size();
    let (height, width) = (a.height.unwrap_or(dh), a.width.unwrap_or(dw));

    let shard = match &a.shard {
        Some(s) => Shard::parse(s)?,
        None => Shard::WHOLE,
    };
    let dir = shard.dir(&a.out);
    let mut set = ImageSet::open(&dir)?;
    let k = a.images_per_prompt;
    let mut settings = ImageSettings::new(
        a.sampler.steps,
        a.guidance,
        scheduler,
        encoder_label,
        height,
        width,
    );
    settings.negative_prompt = a.negative_prompt.clone();
    settings.sld = a.sld.clone();
    settings.sld_concept = a.sld_concept.clone();
    settings.sega = sega.clone();
    // Image j of prompt i: index i·k + j, seed `--seed` + index.
    let jobs: Vec<PromptImages> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| PromptImages::consecutive(p, i * k, a.seed.wrapping_add((i * k) as u64), k))
        .collect();
    let wanted = plan_images(&jobs, &settings);
    if !shard.is_whole() {
        let settings = serde_json::json!({
            "pipeline": a.pipeline, "text_encoder": a.text_encoder, "seed": a.seed,
            "images_per_prompt": k, "steps": a.sampler.steps, "guidance": a.guidance, "scheduler": scheduler,
            "size": [height, width], "negative_prompt": a.negative_prompt, "sld": a.sld,
            "sld_concept": a.sld_concept, "sega": sega, "dtype": a.draw.dtype.dtype, "batch_size": a.draw.batch_size,
        });
        ShardManifest::new("generate", shard, settings, &[(".", &wanted)])?.claim(&dir, &[])?;
    }
    let whole = wanted;
    let wanted = shard.take(&whole);
    let pending = set.pending(wanted)?;
    if pending.len() < wanted.len() {
        eprintln!(
            "{}: {} of {} images already written, skipping them",
            dir.display(),
            wanted.len() - pending.len(),
            wanted.len()
        );
    }
    let bar = crate::progress::task("generating", (pending.len() * a.sampler.steps) as u64);
    set.generate(
        &pipe,
        &whole,
        wanted,
        a.draw.batch_size,
        a.sampler.scheduler,
        sld.as_ref(),
        &mut |n| bar.inc(n as u64),
    )?;
    bar.finish();
    println!("{}", set.jsonl().display());
    Ok(())
}
