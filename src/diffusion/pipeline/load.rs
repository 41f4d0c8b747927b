//! Finding and checking the parts of a diffusers `save_pretrained` pipeline folder (or hub snapshot)
//! and of a swapped-in text encoder, before anything heavy is loaded.
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::io::{hub, single_file};
use crate::models::text_encoder::{locate, EncoderLocation};
use crate::{input_bail, input_err};

/// The diffusers folder a single file (`.safetensors`, LDM layout) converts to (cached, see
/// [`crate::io::single_file::extract`]); `config`: a diffusers config folder, else `NAME.config/` beside
/// the file, else the standard configs of the family. The embedded CLIP tokenizer completes it when the
/// config folder brings none (SD 2.x pads with `!`).
pub fn single_file_pipeline(file: &Path, config: Option<&Path>) -> Result<PathBuf> {
    let sf = single_file::SingleFile::open(file, config)?;
    let root = single_file::extract(&sf, single_file::Parts::ALL)?;
    crate::models::text_encoder::single_file_tokenizer(&root, sf.family)?;
    Ok(root)
}

/// Files of a hub pipeline repo, with the weight names a plain `save_pretrained` writes.
const HUB_FILES: [&str; 11] = [
    "model_index.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer_config.json",
    "scheduler/scheduler_config.json",
];

/// The folder of a `--pipeline` argument: a local folder, else a hub id resolved through the HF cache
/// (the `--variant` weights when one was chosen, else full precision, else the `.fp16` variant).
pub fn resolve_pipeline_root(pipeline: &str) -> Result<PathBuf> {
    let p = Path::new(pipeline);
    if p.is_dir() {
        return Ok(p.to_path_buf());
    }
    if single_file::is_single_file(p) {
        return single_file_pipeline(p, None);
    }
    if !hub::is_hub_id(pipeline) {
        input_bail!(
            "pipeline `{pipeline}` is neither a folder nor a hub id (owner/name) nor a single file (.safetensors): give a folder written by StableDiffusionPipeline.save_pretrained, an SD 1.x/2.x .safetensors file, or a cached hub id such as CompVis/stable-diffusion-v1-4"
        );
    }
    if hub::variant().is_some() {
        let files: Vec<String> = HUB_FILES.iter().map(|f| hub::variant_file(f)).collect();
        let files: Vec<&str> = files.iter().map(String::as_str).collect();
        return hub::resolve_repo_files(pipeline, &files);
    }
    match hub::resolve_repo_files(pipeline, &HUB_FILES) {
        Ok(root) => Ok(root),
        Err(full) => {
            let fp16: Vec<String> = HUB_FILES
                .iter()
                .map(|f| f.replace(".safetensors", ".fp16.safetensors"))
                .collect();
            let fp16: Vec<&str> = fp16.iter().map(String::as_str).collect();
            hub::resolve_repo_files(pipeline, &fp16).map_err(|_| full)
        }
    }
}

/// The parts of a pipeline folder the sampler reads.
#[derive(Debug, Clone)]
pub struct PipelineParts {
    pub root: PathBuf,
    pub unet: PathBuf,
    /// `None` for a pixel-space pipeline: `model_index.json` says `"vae": [null, null]` and there is
    /// no `vae/` (the shapes world). The VAE is then the identity (see [`super::StableDiffusionPipeline::decode`]).
    pub vae: Option<PathBuf>,
    pub scheduler_config: PathBuf,
    /// The text encoder (the pipeline's own, or the swapped-in one) and its tokenizer.
    pub encoder: EncoderLocation,
}

fn has_tokenizer(dir: &Path) -> bool {
    dir.join("tokenizer.json").exists()
        || (dir.join("vocab.json").exists() && dir.join("merges.txt").exists())
}

fn require(root: &Path, sub: &str, file: &str, holds: &str) -> Result<PathBuf> {
    let dir = root.join(sub);
    if !dir.join(file).exists() {
        let what = if dir.is_dir() {
            format!("{} has no {file}", dir.display())
        } else {
            format!(
                "the pipeline folder {} has no {sub}/ subfolder",
                root.display()
            )
        };
        input_bail!(
            "{what}: a Stable Diffusion pipeline needs {sub}/ with {holds}, as StableDiffusionPipeline.save_pretrained writes it; re-save the pipeline with diffusers (pipe.save_pretrained(DIR)) or point --pipeline at a complete folder"
        );
    }
    Ok(dir)
}

/// Whether `model_index.json` declares the pipeline VAE-less (`"vae": [null, null]` or `null`).
fn declares_no_vae(root: &Path) -> Result<bool> {
    let path = root.join("model_index.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| input_err!("cannot read {}: {e}", path.display()))?;
    let index: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        input_err!(
            "{} is not valid JSON ({e}): re-save the pipeline with StableDiffusionPipeline.save_pretrained",
            path.display()
        )
    })?;
    Ok(match index.get("vae") {
        Some(serde_json::Value::Null) => true,
        Some(serde_json::Value::Array(a)) => a.iter().all(serde_json::Value::is_null),
        _ => false,
    })
}

/// Check the folder layout and pick the text encoder: `text_encoder` (a clipdoor run folder, its
/// `text_encoder/`, or any CLIP text-encoder folder) replaces the pipeline's; its tokenizer is used only
/// when the run folder (or the encoder folder itself) brings one, else the pipeline's `tokenizer/`.
pub fn pipeline_parts(root: &Path, text_encoder: Option<&Path>) -> Result<PipelineParts> {
    if !root.join("model_index.json").exists() {
        input_bail!(
            "{} is not a diffusers pipeline folder: model_index.json is missing. Save one with StableDiffusionPipeline.save_pretrained(DIR), or pass a hub id",
            root.display()
        );
    }
    let unet = require(
        root,
        "unet",
        "config.json",
        "config.json + diffusion_pytorch_model.safetensors",
    )?;
    let vae = if declares_no_vae(root)? && !root.join("vae").join("config.json").exists() {
        None
    } else {
        Some(require(
            root,
            "vae",
            "config.json",
            "config.json + diffusion_pytorch_model.safetensors",
        )?)
    };
    let scheduler = require(
        root,
        "scheduler",
        "scheduler_config.json",
        "scheduler_config.json",
    )?;
    let pipeline_tokenizer = root.join("tokenizer");
    let encoder = match text_encoder {
        Some(dir) => {
            if !dir.is_dir() && !single_file::is_single_file(dir) {
                input_bail!(
                    "--text-encoder {}: no such folder; give a clipdoor run folder, its text_encoder/, or a folder with config.json + model.safetensors",
                    dir.display()
                );
            }
            let arg = dir.to_str().ok_or_else(|| {
                input_err!(
                    "--text-encoder {}: the path is not valid UTF-8",
                    dir.display()
                )
            })?;
            let mut loc = locate(arg)?;
            if loc.tokenizer_dir.is_none() {
                if !has_tokenizer(&pipeline_tokenizer) {
                    input_bail!(
                        "neither --text-encoder {} nor the pipeline {} has a tokenizer (vocab.json + merges.txt, or tokenizer.json): add tokenizer/ to the run folder or to the pipeline",
                        dir.display(),
                        root.display()
                    );
                }
                loc.tokenizer_dir = Some(pipeline_tokenizer);
            }
            loc
        }
        None => {
            let enc = require(
                root,
                "text_encoder",
                "config.json",
                "config.json + model.safetensors (a CLIPTextModel)",
            )?;
            require(
                root,
                "tokenizer",
                "vocab.json",
                "vocab.json + merges.txt + tokenizer_config.json",
            )
            .or_else(|e| {
                if has_tokenizer(&pipeline_tokenizer) {
                    Ok(pipeline_tokenizer.clone())
                } else {
                    Err(e)
                }
            })?;
            EncoderLocation {
                encoder_dir: enc,
                tokenizer_dir: Some(pipeline_tokenizer),
            }
        }
    };
    Ok(PipelineParts {
        root: root.to_path_buf(),
        unet,
        vae,
        scheduler_config: scheduler.join("scheduler_config.json"),
        encoder,
    })
}
