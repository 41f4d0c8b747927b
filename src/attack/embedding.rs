//! The `embedding` attack: Concept Inversion (Pham et al., *Circumventing Concept Erasure Methods
//! for Text-to-Image Generative Models*, ICLR 2024, "CCE"). Textual inversion ([`super::invert`])
//! through the pipeline with the **erased** encoder in place: a new word learned from images of the
//! erased concept, which the erasure never saw, so the erased encoder passes it through. The prompt
//! set is the word in prompt templates; the learned embedding is written beside it
//! (`<out stem>.embeds.safetensors`, diffusers' format), and its summary names that file so that
//! `evaluate images --attack` gives the word to the encoders it draws with.
use image::RgbImage;
use std::path::{Path, PathBuf};

use super::invert::{invert, InvertOptions, TEMPLATES};
use super::prompt_set::summary_path;
use crate::diffusion::pipeline::StableDiffusionPipeline;
use crate::error::Result;
use crate::input_bail;

/// `<out stem>.embeds.safetensors` beside `<out>`.
pub fn embeds_path(out: &Path) -> PathBuf {
    out.with_extension("embeds.safetensors")
}

/// The prompts of the set: each line with `{}` replaced by the word; default: diffusers' 27
/// textual-inversion templates.
pub fn prompt_lines(lines: Option<Vec<String>>, token: &str) -> Result<Vec<(String, String)>> {
    let lines = lines.unwrap_or_else(|| TEMPLATES.iter().map(|t| t.to_string()).collect());
    if lines.is_empty() {
        input_bail!("no prompt lines: give lines with {{}} where the learned word goes");
    }
    lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            if !l.contains("{}") {
                input_bail!(
                    "prompt line {} ({l:?}) has no {{}}: write where the learned word goes, e.g. \"a photo of a {{}}\"",
                    i + 1
                );
            }
            Ok((l.replace("{}", token), l))
        })
        .collect()
}

/// Learn the word through `pipe` (its text encoder the one under attack) and write the prompt set
/// `out` (JSONL), the embedding and the summary. Returns (prompt set, summary).
pub fn run(
    pipe: &mut StableDiffusionPipeline,
    images: &[RgbImage],
    opts: &InvertOptions,
    prompts: &[(String, String)],
    settings: serde_json::Value,
    out: &Path,
) -> Result<(PathBuf, PathBuf)> {
    let t = std::time::Instant::now();
    let done = invert(pipe, images, opts)?;
    let seconds = t.elapsed().as_secs_f64();
    let embeds = embeds_path(out);
    let embeds_name = embeds
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    crate::models::learned_embeds::save(&embeds, std::slice::from_ref(&done.embedding))?;
    let mut jsonl = String::new();
    for (i, (prompt, source)) in prompts.iter().enumerate() {
        jsonl += &serde_json::json!({
            "prompt": prompt, "index": i, "source": source, "method": "embedding",
            "token": opts.token, "embedding": embeds_name,
        })
        .to_string();
        jsonl += "\n";
    }
    let mut settings = settings;
    settings["method"] = "embedding".into();
    settings["embedding"] = embeds_name.into();
    settings["invert"] = serde_json::to_value(opts)?;
    let mut summary = done.summary();
    summary["settings"] = settings;
    summary["n"] = prompts.len().into();
    summary["seconds"] = seconds.into();
    summary["seconds_per_prompt"] = (seconds / prompts.len().max(1) as f64).into();
    // The prompt set last: it marks the attack finished, so its summary (which names the word's
    // file for the image stage) and the word are already there when it appears.
    let summary_file = summary_path(out);
    crate::io::atomic::write_json(&summary_file, &summary)?;
    crate::io::atomic::write_atomic(out, jsonl.as_bytes())?;
    Ok((out.to_path_buf(), summary_file))
}
