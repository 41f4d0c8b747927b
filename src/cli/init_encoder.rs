use clap::Args;
use std::path::PathBuf;

use crate::error::Result;
use crate::models::clip_text_config::CLIPTextConfig;
use crate::models::text_encoder::TextEncoder;
use crate::text::tokenizer::{ClipTokenizer, EOS};

#[derive(Args, Debug)]
pub struct InitEncoderArgs {
    /// tiny (64 wide, 2 layers), sd1 (ViT-L/14 text tower) or sd2 (OpenCLIP ViT-H/14 text tower).
    #[arg(long)]
    pub arch: String,
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
    /// Output folder (config.json, model.safetensors and the tokenizer files).
    #[arg(long)]
    pub out: PathBuf,
    /// Write a CLIPTextModelWithProjection (adds `text_projection`).
    #[arg(long)]
    pub projection: bool,
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: InitEncoderArgs) -> Result<()> {
    super::check_overwrite(&a.out, a.force)?;
    let enc = init_encoder(&a.arch, a.seed, a.projection)?;
    enc.save(&a.out, None)?;
    enc.tokenizer.save(&a.out)?;
    println!("{}", a.out.display());
    Ok(())
}

/// A random-weight encoder of a named architecture, deterministic per seed (on CPU).
pub fn init_encoder(arch: &str, seed: i64, projection: bool) -> Result<TextEncoder> {
    let cfg = CLIPTextConfig::preset(arch)
        .ok_or_else(|| crate::input_err!("unknown --arch `{arch}`: use tiny, sd1 or sd2"))?;
    // SD 2.x pads with `!`, SD 1.x with the end-of-text token.
    let tok = ClipTokenizer::embedded(if arch == "sd2" { "!" } else { EOS })?;
    TextEncoder::random(cfg, tok, projection, seed, tch::Device::Cpu)
}
