use clap::Args;
use std::path::PathBuf;
use tch::{Kind, Tensor};

use crate::error::Result;
use crate::models::text_encoder::TextEncoder;

#[derive(Args, Debug)]
pub struct EncodeArgs {
    /// Text encoder: a folder, a diffusers pipeline or run folder, or a hub id in the HF cache.
    #[arg(long)]
    pub model: String,
    /// Prompt file: one prompt a line (.txt), or .csv/.tsv/.jsonl with --field; .gz allowed.
    #[arg(long)]
    pub prompts: PathBuf,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
    /// cpu, cuda or cuda:N (default: cuda if available).
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Compute dtype: f32, f16, bf16 (outputs are always stored as f32).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Column (CSV/TSV) or field (JSONL) holding the prompt.
    #[arg(long)]
    pub field: Option<String>,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: EncodeArgs) -> Result<()> {
    super::check_overwrite(&a.out, a.force)?;
    if a.batch_size == 0 {
        crate::input_bail!("--batch-size must be at least 1");
    }
    let device = crate::device::parse_device(a.device.as_deref())?;
    let kind = crate::device::parse_kind(&a.dtype)?;
    let prompts = crate::io::prompts::read_prompts(&a.prompts, a.field.as_deref(), true)?;
    let enc = TextEncoder::load(&a.model, device, kind)?;
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
    let pb = super::progress(prompts.len() as u64, "encode");
    let mut cols: Vec<Vec<Tensor>> = (0..5).map(|_| vec![]).collect();
    tch::no_grad(|| -> Result<()> {
        for chunk in prompts.chunks(batch_size) {
            let (ids, out) = enc.encode(chunk, true)?;
            let f = |t: &Tensor| t.to_device(tch::Device::Cpu).to_kind(Kind::Float);
            cols[0].push(ids);
            cols[1].push(f(&out.last_hidden_state));
            cols[2].push(f(&out.hidden_states[out.hidden_states.len() - 2]));
            cols[3].push(f(&out.pooled_output));
            if let Some(t) = &out.text_embeds {
                cols[4].push(f(t));
            }
            pb.inc(chunk.len() as u64);
        }
        Ok(())
    })?;
    pb.finish_and_clear();
    let names = [
        "input_ids",
        "last_hidden_state",
        "penultimate_hidden_state",
        "pooled_output",
        "text_embeds",
    ];
    Ok(names
        .iter()
        .zip(cols)
        .filter(|(_, c)| !c.is_empty())
        .map(|(n, c)| (n.to_string(), Tensor::cat(&c, 0)))
        .collect())
}
