//! `clipdoor invert`: textual inversion — a new word learned from a few images through a pipeline
//! ([`crate::attack::invert`]), saved in diffusers' learned-embeds format for `generate --embedding`
//! and diffusers' `load_textual_inversion`.
use clap::Args;
use std::path::PathBuf;

use crate::attack::invert::{invert, InvertOptions};
use crate::diffusion::image::{image_files, read_images};
use crate::diffusion::pipeline::StableDiffusionPipeline;
use crate::error::Result;
use crate::input_bail;

/// The learned word's file in the output folder.
pub const EMBEDS_FILE: &str = "learned_embeds.safetensors";

#[derive(Args, Debug)]
pub struct InvertArgs {
    /// Pipeline folder (diffusers layout) or cached hub id whose UNet and text encoder learn the word.
    #[arg(long)]
    pub pipeline: String,
    /// A folder of images of the concept (PNG/JPEG; 3–5 in the paper), or image files.
    #[arg(long, num_args = 1.., required = true)]
    pub images: Vec<PathBuf>,
    /// The new word, e.g. "<s*>" (not already in the vocabulary).
    #[arg(long)]
    pub token: String,
    /// An existing one-token word the new one starts from (diffusers' initializer_token).
    #[arg(long, default_value = "object")]
    pub init_word: String,
    /// Optimisation steps (diffusers' example: 3000).
    #[arg(long, default_value_t = 3000)]
    pub steps: usize,
    /// AdamW learning rate (Gal et al.: 0.005).
    #[arg(long, default_value_t = 5e-3)]
    pub lr: f64,
    /// Images per step.
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Seed of every step's draws (images, templates, timesteps, noise): the same seed learns the
    /// same word.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub device: super::args::DeviceArgs,
    /// Output folder: learned_embeds.safetensors + invert.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace a finished inversion in --out.
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: InvertArgs) -> Result<()> {
    let target = a.out.join(EMBEDS_FILE);
    if target.exists() && !a.force {
        input_bail!(
            "{} already holds a learned word: pass --force to learn it again, or choose another --out",
            a.out.display()
        );
    }
    let files = image_files(&a.images)?;
    let images = read_images(&files)?;
    let mut pipe =
        StableDiffusionPipeline::load(&a.pipeline, None, a.device.device(), tch::Kind::Float)?;
    let opts = InvertOptions {
        token: a.token.clone(),
        init_word: a.init_word.clone(),
        steps: a.steps,
        lr: a.lr,
        batch_size: a.batch_size,
        seed: a.seed,
    };
    let t = std::time::Instant::now();
    let done = invert(&mut pipe, &images, &opts)?;
    let seconds = t.elapsed().as_secs_f64();
    std::fs::create_dir_all(&a.out)
        .map_err(|e| crate::input_err!("cannot create {}: {e}", a.out.display()))?;
    crate::models::learned_embeds::save(&target, std::slice::from_ref(&done.embedding))?;
    let mut report = done.summary();
    report["pipeline"] = a.pipeline.clone().into();
    report["images"] = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .into();
    report["settings"] = serde_json::to_value(&opts)?;
    report["loss"]["per_step"] = done.losses.clone().into();
    report["seconds"] = seconds.into();
    report["embedding"] = serde_json::json!({"file": EMBEDS_FILE, "token": done.embedding.token,
        "norm": done.embedding.vector.norm().double_value(&[])});
    crate::io::atomic::write_json(&a.out.join("invert.json"), &report)?;
    eprintln!(
        "learned {}: probe loss {:.5} -> {:.5} ({seconds:.1} s); use it with `clipdoor generate --embedding {}`",
        a.token,
        done.probe[0],
        done.probe[1],
        target.display()
    );
    println!("{}", target.display());
    Ok(())
}
