//! Stable Diffusion 1.x / 2.x single-file checkpoints (`.safetensors` in the original CompVis/LDM
//! layout: `model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.*`), read and written
//! with diffusers' key mapping (see [`keys`] and docs/single-file.md).
//!
//! Reading converts the file into a diffusers `save_pretrained` folder in a cache under the OS temp
//! dir ([`extract`]), so every loader (pipeline, text encoder, teacher) reads it unchanged. The
//! conversion is byte-level: tensors are renamed, reshaped (VAE attention 1×1 convs → linear) or split
//! (OpenCLIP `in_proj` → q/k/v), never recomputed, so the weights are bit-exact.
//! Pickled single files (`.ckpt`, `.pt`, `.pth`, `.bin`) are refused: no pickle is ever read.
pub mod extract;
pub mod keys;
mod stream;
pub mod write;

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::io::weights::SafetensorsFile;
use crate::{input_bail, input_err};

pub use extract::{cache_root, extract, Parts};
pub use write::{write_from_pipeline, write_with_encoder, WriteOptions};

/// Which text tower, hence which standard configs: SD 1.x (OpenAI CLIP ViT-L/14, transformers keys)
/// or SD 2.x (OpenCLIP ViT-H/14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Sd1,
    Sd2,
}

impl Family {
    /// Name used in messages and in the embedded config files.
    pub fn label(self) -> &'static str {
        match self {
            Family::Sd1 => "SD 1.x",
            Family::Sd2 => "SD 2.x",
        }
    }
}

/// Extensions of pickled PyTorch checkpoints, which clipdoor never unpickles.
const PICKLE_EXTENSIONS: [&str; 4] = ["ckpt", "pt", "pth", "bin"];

/// Whether `path` is a file that names a single-file checkpoint (safetensors or pickle); folders and
/// hub ids are not.
pub fn is_single_file(path: &Path) -> bool {
    path.is_file()
        && path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
            e.eq_ignore_ascii_case("safetensors")
                || PICKLE_EXTENSIONS.iter().any(|p| e.eq_ignore_ascii_case(p))
        })
}

/// An input error for a pickled checkpoint: how to convert it to safetensors first.
pub fn refuse_pickle(path: &Path) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if PICKLE_EXTENSIONS
        .iter()
        .any(|p| ext.eq_ignore_ascii_case(p))
    {
        input_bail!(
            "{} is a pickled PyTorch checkpoint (.{ext}); clipdoor reads only .safetensors, because unpickling can run arbitrary code. Convert it once in Python (only for a file you trust): \
             python -c \"import torch, safetensors.torch as st; sd = torch.load('{p}', map_location='cpu', weights_only=True); sd = sd.get('state_dict', sd); st.save_file({{k: v.contiguous() for k, v in sd.items() if hasattr(v, 'contiguous')}}, '{stem}.safetensors')\" \
             — or make a diffusers folder: StableDiffusionPipeline.from_single_file('{p}').save_pretrained('DIR') (diffusers' scripts/convert_original_stable_diffusion_to_diffusers.py does the same)",
            path.display(),
            p = path.display(),
            stem = path.with_extension("").display()
        );
    }
    Ok(())
}

/// The config folder read beside a single file by default: `NAME.config/` for `NAME.safetensors`, a
/// diffusers pipeline folder without weights (as `from_single_file(..., config=DIR)` takes).
pub fn sidecar_config(path: &Path) -> PathBuf {
    path.with_extension("config")
}

/// A single file opened and checked: its family and where its configs come from.
pub struct SingleFile {
    pub file: SafetensorsFile,
    pub family: Family,
    /// A diffusers config folder (`unet/config.json`, `vae/config.json`, `text_encoder/config.json`,
    /// `scheduler/scheduler_config.json`, optionally `tokenizer/`); `None`: the embedded SD 1.5 /
    /// SD 2.1 configs.
    pub config: Option<PathBuf>,
}

/// The four config files of a pipeline, as (subfolder, file name).
pub(crate) const CONFIG_FILES: [(&str, &str); 4] = [
    ("unet", "config.json"),
    ("vae", "config.json"),
    ("text_encoder", "config.json"),
    ("scheduler", "scheduler_config.json"),
];

impl SingleFile {
    /// Open `path`; `config`: a diffusers config folder, else `NAME.config/` beside the file when it
    /// exists, else the standard config of the family inferred from the keys.
    pub fn open(path: &Path, config: Option<&Path>) -> Result<Self> {
        refuse_pickle(path)?;
        let file = SafetensorsFile::open(path)?;
        let family = infer_family(&file)?;
        let sidecar = sidecar_config(path);
        let config = match config {
            Some(c) => Some(c.to_path_buf()),
            None => sidecar.is_dir().then_some(sidecar),
        };
        if let Some(dir) = &config {
            for (sub, name) in CONFIG_FILES {
                if !dir.join(sub).join(name).is_file() {
                    input_bail!(
                        "the config folder {} for {} has no {sub}/{name}: give a diffusers pipeline folder (its config files are enough), or remove the folder to use the standard {} configs",
                        dir.display(),
                        path.display(),
                        family.label()
                    );
                }
            }
        }
        Ok(Self {
            file,
            family,
            config,
        })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The JSON text of one component's config (`unet`, `vae`, `text_encoder`, `scheduler`).
    pub fn config_text(&self, component: &str) -> Result<String> {
        if let Some(dir) = &self.config {
            let (sub, name) = CONFIG_FILES
                .iter()
                .find(|(s, _)| *s == component)
                .ok_or_else(|| anyhow::anyhow!("no config for component {component}"))?;
            let p = dir.join(sub).join(name);
            return std::fs::read_to_string(&p)
                .map_err(|e| input_err!("cannot read {}: {e}", p.display()));
        }
        Ok(embedded_config(self.family, component)?.to_string())
    }

    /// One config value read as JSON.
    pub(crate) fn config_json(&self, component: &str) -> Result<serde_json::Value> {
        let text = self.config_text(component)?;
        serde_json::from_str(&text).map_err(|e| {
            input_err!(
                "the {component} config for {} is not valid JSON ({e})",
                self.path().display()
            )
        })
    }
}

/// The standard configs (diffusers' `runwayml/stable-diffusion-v1-5` and
/// `stabilityai/stable-diffusion-2-1`; SD 2.x defaults to 2.1's 768-pixel v-prediction model, as
/// diffusers' `from_single_file` does for a v2 checkpoint).
pub fn embedded_config(family: Family, component: &str) -> Result<&'static str> {
    Ok(match (family, component) {
        (Family::Sd1, "unet") => include_str!("configs/sd15_unet.json"),
        (Family::Sd1, "vae") => include_str!("configs/sd15_vae.json"),
        (Family::Sd1, "text_encoder") => include_str!("configs/sd15_text_encoder.json"),
        (Family::Sd1, "scheduler") => include_str!("configs/sd15_scheduler.json"),
        (Family::Sd2, "unet") => include_str!("configs/sd21_unet.json"),
        (Family::Sd2, "vae") => include_str!("configs/sd21_vae.json"),
        (Family::Sd2, "text_encoder") => include_str!("configs/sd21_text_encoder.json"),
        (Family::Sd2, "scheduler") => include_str!("configs/sd21_scheduler.json"),
        _ => anyhow::bail!("no embedded config for {component}"),
    })
}

/// SD 1.x or 2.x from the tensor names, as diffusers' `infer_diffusers_model_type` tells them apart
/// (here by the text tower, which also decides the key layout); other models are refused by name.
fn infer_family(file: &SafetensorsFile) -> Result<Family> {
    let names = file.names();
    let has = |p: &str| names.iter().any(|n| n.starts_with(p));
    let path = file.path().display();
    if has("conditioner.embedders.") {
        input_bail!(
            "{path} is an SDXL checkpoint (conditioner.embedders.*): clipdoor reads SD 1.x and SD 2.x single files only; convert SDXL to a diffusers folder (StableDiffusionXLPipeline.from_single_file(...).save_pretrained(DIR))"
        );
    }
    if !has(keys::UNET_PREFIX) {
        input_bail!(
            "{path} is not a Stable Diffusion single file: it has no {}* tensors (the original LDM layout). For a diffusers folder pass the folder; for a text encoder give a folder with config.json + model.safetensors",
            keys::UNET_PREFIX
        );
    }
    let conv_in = format!("{}input_blocks.0.0.weight", keys::UNET_PREFIX);
    if let Ok((_, shape, _)) = file.raw(&conv_in) {
        if shape.get(1).is_some_and(|&c| c != 4) {
            input_bail!(
                "{path}: the UNet takes {} input channels (an inpainting or other special model); clipdoor reads text-to-image SD 1.x/2.x checkpoints (4 latent channels)",
                shape[1]
            );
        }
    }
    if has(keys::CLIP_PREFIX) {
        Ok(Family::Sd1)
    } else if has(keys::OPEN_CLIP_PREFIX) {
        Ok(Family::Sd2)
    } else {
        input_bail!(
            "{path} has no text encoder ({}* for SD 1.x or {}* for SD 2.x): save the checkpoint with its text encoder",
            keys::CLIP_PREFIX,
            keys::OPEN_CLIP_PREFIX
        )
    }
}
