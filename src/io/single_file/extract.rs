//! LDM single file → diffusers `save_pretrained` folder, in a cache under the OS temp dir (or
//! `CLIPDOOR_SINGLE_FILE_CACHE`).
//!
//! The existing loaders read folders; converting once into the layout they read keeps one loading
//! path for every model argument. The cache folder is named after the file (path, size, mtime) and its
//! configs, so a changed file or config is converted again; each component is written to a temp
//! folder and renamed into place, so an interrupted conversion is never mistaken for a finished one.
use std::borrow::Cow;
use std::hash::Hasher;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::keys::{self, OpenClipTarget};
use super::stream::{self, Entry};
use super::{Family, SingleFile, CONFIG_FILES};
use crate::error::Result;
use crate::input_err;

/// Which components to convert (the scheduler and model index are always written: they are small).
#[derive(Debug, Clone, Copy)]
pub struct Parts {
    pub unet: bool,
    pub vae: bool,
    pub text_encoder: bool,
}

impl Parts {
    pub const ALL: Parts = Parts {
        unet: true,
        vae: true,
        text_encoder: true,
    };
    pub const TEXT_ENCODER: Parts = Parts {
        unet: false,
        vae: false,
        text_encoder: true,
    };
}

/// Bump when the conversion changes, so old cache folders are not reused.
const CACHE_VERSION: &str = "1";

/// Convert `sf`'s `parts` into a diffusers folder and return it: `unet/`, `vae/`, `text_encoder/`,
/// `scheduler/`, `model_index.json`, and `tokenizer/` when the config folder has one (else the caller
/// supplies the embedded CLIP tokenizer).
pub fn extract(sf: &SingleFile, parts: Parts) -> Result<PathBuf> {
    let root = cache_root(sf)?;
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let weights = [
        (parts.unet, "unet", "diffusion_pytorch_model.safetensors"),
        (parts.vae, "vae", "diffusion_pytorch_model.safetensors"),
        (parts.text_encoder, "text_encoder", "model.safetensors"),
    ];
    for (wanted, sub, file) in weights {
        if !wanted || root.join(sub).join(file).is_file() {
            continue;
        }
        let entries = match sub {
            "unet" => unet_entries(sf)?,
            "vae" => vae_entries(sf)?,
            _ => text_entries(sf)?,
        };
        publish(&root, sub, |tmp| {
            std::fs::write(tmp.join("config.json"), sf.config_text(sub)?)?;
            let mut meta = std::collections::HashMap::new();
            meta.insert("format".to_string(), "pt".to_string());
            stream::write(&tmp.join(file), entries, Some(meta))
        })?;
    }
    if !root.join("scheduler").is_dir() {
        publish(&root, "scheduler", |tmp| {
            std::fs::write(
                tmp.join("scheduler_config.json"),
                sf.config_text("scheduler")?,
            )?;
            Ok(())
        })?;
    }
    let tokenizer = sf.config.as_ref().map(|c| c.join("tokenizer"));
    if let Some(tok) = tokenizer.filter(|t| t.is_dir()) {
        if !root.join("tokenizer").is_dir() {
            publish(&root, "tokenizer", |tmp| {
                for f in std::fs::read_dir(&tok)? {
                    let f = f?;
                    if f.path().is_file() {
                        std::fs::copy(f.path(), tmp.join(f.file_name()))?;
                    }
                }
                Ok(())
            })?;
        }
    }
    let index = root.join("model_index.json");
    if !index.is_file() {
        let scheduler: serde_json::Value = sf.config_json("scheduler")?;
        let class = scheduler["_class_name"].as_str().unwrap_or("PNDMScheduler");
        let json = serde_json::json!({
            "_class_name": "StableDiffusionPipeline",
            "feature_extractor": [null, null],
            "safety_checker": [null, null],
            "requires_safety_checker": false,
            "scheduler": ["diffusers", class],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        });
        crate::io::atomic::write_json(&index, &json)?;
    }
    Ok(root)
}

/// Fill `root/sub` through a temp sibling folder renamed into place; a concurrent process that got
/// there first wins (its folder is equally complete).
fn publish(root: &Path, sub: &str, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".tmp-{sub}-"))
        .tempdir_in(root)
        .with_context(|| format!("creating a temp folder in {}", root.display()))?;
    fill(tmp.path()).with_context(|| format!("converting {sub} into {}", root.display()))?;
    let dest = root.join(sub);
    let tmp = tmp.keep();
    if let Err(e) = std::fs::rename(&tmp, &dest) {
        let _ = std::fs::remove_dir_all(&tmp);
        if !dest.is_dir() {
            return Err(anyhow::Error::new(e).context(format!("renaming onto {}", dest.display())));
        }
    }
    Ok(())
}

/// Where [`extract`] converts `sf`: `<temp>/clipdoor-single-file/<name>-<hash>` (the hash covers the
/// file's identity and its configs). Removing the folder only costs a new conversion.
pub fn cache_root(sf: &SingleFile) -> Result<PathBuf> {
    let path = sf.path();
    let canonical = path
        .canonicalize()
        .with_context(|| format!("resolving {}", path.display()))?;
    let meta = std::fs::metadata(&canonical)?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    h.write(CACHE_VERSION.as_bytes());
    h.write(canonical.as_os_str().as_encoded_bytes());
    h.write(&meta.len().to_le_bytes());
    h.write(&mtime.to_le_bytes());
    for (sub, _) in CONFIG_FILES {
        h.write(sf.config_text(sub)?.as_bytes());
    }
    if let Some(c) = &sf.config {
        h.write(c.as_os_str().as_encoded_bytes());
    }
    let stem = canonical
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("checkpoint");
    // Real checkpoints convert to GBs: CLIPDOOR_SINGLE_FILE_CACHE puts the cache on another disk.
    let cache = std::env::var_os("CLIPDOOR_SINGLE_FILE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("clipdoor-single-file"));
    Ok(cache.join(format!("{stem}-{:016x}", h.finish())))
}

/// FNV-1a: a stable hash (std's `DefaultHasher` may change between Rust releases).
struct Fnv(u64);
impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A usize field of a component config.
pub(crate) fn config_usize(sf: &SingleFile, component: &str, key: &str) -> Result<usize> {
    let cfg = sf.config_json(component)?;
    cfg.get(key)
        .and_then(|v| v.as_u64())
        .map(|v| v as usize)
        .ok_or_else(|| input_err!("the {component} config has no integer `{key}`"))
}

/// The number of entries of a list field (`up_block_types`).
pub(crate) fn config_len(sf: &SingleFile, component: &str, key: &str) -> Result<usize> {
    let cfg = sf.config_json(component)?;
    cfg.get(key)
        .and_then(|v| v.as_array())
        .map(Vec::len)
        .ok_or_else(|| input_err!("the {component} config has no list `{key}`"))
}

/// Names under `prefix`, without it.
fn under<'a>(names: &'a [String], prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
    names
        .iter()
        .filter_map(move |n| n.strip_prefix(prefix).map(|k| (n.as_str(), k)))
}

fn unet_entries(sf: &SingleFile) -> Result<Vec<Entry<'_>>> {
    let lpb = config_usize(sf, "unet", "layers_per_block")?;
    let names = sf.file.names();
    let mut out = vec![];
    for (full, key) in under(&names, keys::UNET_PREFIX) {
        // Like diffusers, tensors outside the mapping (none in SD 1.x/2.x) are not read.
        let Some(d) = keys::unet_to_diffusers(key, lpb) else {
            continue;
        };
        let (dtype, shape, data) = sf.file.raw(full)?;
        out.push(Entry::new(d, dtype, shape, data));
    }
    Ok(out)
}

fn vae_entries(sf: &SingleFile) -> Result<Vec<Entry<'_>>> {
    let n_up = config_len(sf, "vae", "up_block_types")?;
    let names = sf.file.names();
    let mut out = vec![];
    for (full, key) in under(&names, keys::VAE_PREFIX) {
        let Some(d) = keys::vae_to_diffusers(key, n_up) else {
            continue;
        };
        let (dtype, mut shape, data) = sf.file.raw(full)?;
        // LDM's mid-block attention uses 1×1 convs; diffusers' linear layers hold the same bytes.
        if keys::vae_is_attention_projection(&d) {
            shape.truncate(2);
        }
        out.push(Entry::new(d, dtype, shape, data));
    }
    Ok(out)
}

fn text_entries(sf: &SingleFile) -> Result<Vec<Entry<'_>>> {
    let names = sf.file.names();
    let mut out = vec![];
    if sf.family == Family::Sd1 {
        // SD 1.x stores a transformers CLIPTextModel: only the prefix differs.
        for (full, key) in under(&names, keys::CLIP_PREFIX) {
            let (dtype, shape, data) = sf.file.raw(full)?;
            out.push(Entry::new(key.to_string(), dtype, shape, data));
        }
        return Ok(out);
    }
    // SD 2.x: diffusers' `convert_open_clip_checkpoint`. SD 2 uses the penultimate layer, so the text
    // encoder has one block fewer than OpenCLIP (23 of 24); blocks beyond the config are not read,
    // nor is `text_projection` (SD's text encoder is a CLIPTextModel without one).
    let layers = config_usize(sf, "text_encoder", "num_hidden_layers")?;
    for (full, key) in under(&names, keys::OPEN_CLIP_PREFIX) {
        let Some(target) = keys::open_clip_to_transformers(key) else {
            continue;
        };
        let (dtype, shape, data) = sf.file.raw(full)?;
        match target {
            OpenClipTarget::Plain { name, transpose } => {
                let layer_beyond = keys::transformers_layer(&name).is_some_and(|l| l >= layers);
                if transpose || layer_beyond {
                    continue;
                }
                out.push(Entry::new(name, dtype, shape, data));
            }
            OpenClipTarget::InProj { layer, suffix } => {
                if layer >= layers {
                    continue;
                }
                // q, k, v are the three equal row blocks of the stacked projection.
                if shape.first().is_none_or(|r| r % 3 != 0) {
                    return Err(input_err!(
                        "tensor `{full}` in {} has shape {shape:?}: an in_proj stacks q, k and v, so its first dimension must divide by 3",
                        sf.path().display()
                    ));
                }
                let third = data.len() / 3;
                let mut s = shape.clone();
                s[0] /= 3;
                for (i, p) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                    out.push(Entry {
                        name: format!("text_model.encoder.layers.{layer}.self_attn.{p}.{suffix}"),
                        dtype,
                        shape: s.clone(),
                        data: vec![Cow::Borrowed(&data[i * third..(i + 1) * third])],
                    });
                }
            }
        }
    }
    Ok(out)
}
