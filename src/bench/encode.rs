//! `clipdoor bench encode`: prompts/s of the text encoder, clipdoor vs transformers, same weights,
//! prompts, batch size and threads.
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::reference::{bench_prompts, run_reference, sync, EncoderRun};
use crate::error::Result;
use crate::models::text_encoder::TextEncoder;

pub struct EncodeBench {
    /// Encoder folder (the Python side loads the same files).
    pub model_dir: PathBuf,
    pub prompts: usize,
    pub batch_size: usize,
    pub threads: i32,
    pub repeats: usize,
    pub device: tch::Device,
    pub python: Option<PathBuf>,
}

pub fn run(b: &EncodeBench, work: &Path) -> Result<serde_json::Value> {
    tch::set_num_threads(b.threads);
    let enc = TextEncoder::load(
        b.model_dir.to_str().unwrap_or_default(),
        b.device,
        tch::Kind::Float,
    )?;
    let prompts = bench_prompts(b.prompts);
    let prompt_file = work.join("bench_prompts.txt");
    std::fs::write(&prompt_file, prompts.join("\n"))?;
    let batches: Vec<&[String]> = prompts.chunks(b.batch_size).collect();
    let elapsed = tch::no_grad(|| -> Result<f64> {
        let _ = enc.encode(batches[0], false)?; // warm-up
        sync(b.device);
        let t0 = Instant::now();
        for _ in 0..b.repeats {
            for batch in &batches {
                let _ = enc.encode(batch, false)?;
            }
        }
        sync(b.device);
        Ok(t0.elapsed().as_secs_f64())
    })?;
    let n = (b.repeats * prompts.len()) as f64;
    let ours = n / elapsed;
    let device = format!("{:?}", b.device)
        .to_lowercase()
        .replace("cuda(", "cuda:")
        .replace(')', "");
    let mut report = serde_json::json!({
        "benchmark": "encode",
        "model": b.model_dir,
        "hidden_size": enc.config.hidden_size,
        "layers": enc.config.num_hidden_layers,
        "prompts": b.prompts, "batch_size": b.batch_size, "threads": b.threads, "repeats": b.repeats,
        "device": device,
        "clipdoor_prompts_per_s": ours,
    });
    if let Some(py) = &b.python {
        let args = EncoderRun {
            what: "encode",
            model: b.model_dir.to_str().unwrap_or_default(),
            prompts: &prompt_file,
            batch_size: b.batch_size,
            threads: b.threads,
            device: &device,
            repeats: b.repeats,
        }
        .args(&[]);
        let r = run_reference(py, &args)?;
        let theirs = r["prompts_per_s"].as_f64().unwrap_or(f64::NAN);
        report["transformers_prompts_per_s"] = serde_json::json!(theirs);
        report["ratio_clipdoor_over_transformers"] = serde_json::json!(ours / theirs);
        report["reference"] = r;
    }
    Ok(report)
}
