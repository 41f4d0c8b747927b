//! `clipdoor export`: a complete diffusers pipeline folder with a trained text encoder (see
//! docs/export.md and [`crate::diffusion::pipeline::export`]).
use clap::Args;
use std::path::PathBuf;

use crate::diffusion::pipeline::{export_pipeline, ExportOptions};
use crate::error::Result;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The base pipeline: a diffusers save_pretrained folder or a cached hub id
    /// (e.g. CompVis/stable-diffusion-v1-4); its UNet, VAE and scheduler are taken over.
    #[arg(long)]
    pub pipeline: String,
    /// The trained text encoder: a clipdoor run folder, its text_encoder/, or any CLIP text-encoder
    /// folder (its tokenizer, else the base's, goes into tokenizer/).
    #[arg(long)]
    pub text_encoder: PathBuf,
    /// Output pipeline folder (`StableDiffusionPipeline.from_pretrained(OUT)` loads it). A path ending
    /// in .safetensors writes a single-file checkpoint instead: then --pipeline must be a single file
    /// (SD 1.x/2.x, original LDM layout), copied with the trained encoder inside.
    #[arg(long)]
    pub out: PathBuf,
    /// Copy the base's files instead of hard-linking them (hard links are used only on the same file
    /// system anyway; copies are independent of the base's later changes).
    #[arg(long)]
    pub copy: bool,
    #[command(flatten)]
    pub force: super::args::ForceArgs,
}

pub fn run(a: ExportArgs) -> Result<()> {
    let opts = ExportOptions {
        copy: a.copy,
        force: a.force.force,
        format: None,
    };
    let out = export_pipeline(&a.pipeline, &a.text_encoder, &a.out, &opts)?;
    println!("{}", out.display());
    Ok(())
}
