use clap::Args;
use std::path::PathBuf;
use tch::Tensor;

use crate::error::Result;
use crate::models::text_encoder::TextEncoder;

#[derive(Args, Debug)]
pub struct EncodeArgs {
    /// Text encoder: a folder, a diffusers pipeline or run folder, or a hub id in the HF cache.
    #[arg(long)]
    pub model: String,
    /// A learned word (`clipdoor invert`, diffusers learned_embeds.safetensors) the prompts may use
    /// (repeatable)
    #[arg(long, value_name = "FILE")]
    pub embedding: Vec<PathBuf>,
    #[command(flatten)]
    pub input: super::args::PromptFileArgs,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub device: super::args::DeviceArgs,
    /// Prompts per forward pass of the text encoder.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Compute dtype (outputs are always stored as f32).
    #[command(flatten)]
    pub dtype: super::args::DtypeArgs,
    #[command(flatten)]
    pub force: super::args::ForceArgs,
}

pub fn run(a: EncodeArgs) -> Result<()> {
    a.force.check(&a.out)?;
    if a.batch_size == 0 {
        crate::input_bail!("--batch-size must be at least 1");
    }
    let device = a.device.device();
    let kind = a.dtype.dtype.kind();
    let prompts =
        crate::io::prompts::read_prompt_lines(&a.input.prompts, a.input.field.as_deref(), true)?;
    let mut enc = TextEncoder::load(&a.model, device, kind)?;
    for e in &a.embedding {
        enc.add_embeddings_from(e)?;
    }
    let enc = enc;
    let tensors = encode_all(&enc, &prompts.prompts, a.batch_size)?;
    crate::io::weights::save_tensors(&a.out, &tensors, None)?;
    println!("{}", a.out.display());
    Ok(())
}

/// Encode prompts in batches; outputs named as in the conventions, f32 on CPU.
pub fn encode_all(
    enc: &TextEncoder,
    prompts: &[String],
    batch_size: usize,
) -> Result<Vec<(String, Tensor)>> {
    let pb = crate::progress::task("encode", prompts.len() as u64);
    let out = enc.encode_batched(prompts, batch_size, true, &mut |n| pb.inc(n as u64))?;
    pb.finish();
    let mut tensors = vec![
        ("input_ids".to_string(), out.input_ids),
        ("last_hidden_state".to_string(), out.last_hidden_state),
    ];
    if let Some(t) = out.penultimate_hidden_state {
        tensors.push(("penultimate_hidden_state".to_string(), t));
    }
    tensors.push(("pooled_output".to_string(), out.pooled_output));
    if let Some(t) = out.text_embeds {
        tensors.push(("text_embeds".to_string(), t));
    }
    Ok(tensors)
}
