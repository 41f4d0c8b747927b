use clap::Args;
use std::path::PathBuf;

use crate::error::Result;
use crate::models::text_encoder::TextEncoder;

#[derive(Args, Debug)]
pub struct InitEncoderArgs {
    /// tiny (64 wide, 2 layers), sd1 (ViT-L/14 text tower) or sd2 (OpenCLIP ViT-H/14 text tower).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["tiny", "sd1", "sd2"]))]
    pub arch: String,
    /// Seed of the random weights (transformers' init: normal(0, 0.02)); same seed, same weights.
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
    /// Output folder (config.json, model.safetensors and the tokenizer files).
    #[arg(long)]
    pub out: PathBuf,
    /// Write a CLIPTextModelWithProjection (adds `text_projection`).
    #[arg(long)]
    pub projection: bool,
    #[command(flatten)]
    pub force: super::args::ForceArgs,
}

pub fn run(a: InitEncoderArgs) -> Result<()> {
    a.force.check(&a.out)?;
    let enc = init_encoder(&a.arch, a.seed, a.projection)?;
    enc.save(&a.out, None)?;
    enc.tokenizer.save(&a.out)?;
    println!("{}", a.out.display());
    Ok(())
}

/// A random-weight encoder of a named architecture, deterministic per seed (on CPU).
pub fn init_encoder(arch: &str, seed: i64, projection: bool) -> Result<TextEncoder> {
    TextEncoder::init_arch(arch, seed, projection, tch::Device::Cpu)
}
