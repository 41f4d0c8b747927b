//! Writing SD 1.x / 2.x single files: a base file with another text encoder in place of
//! `cond_stage_model.*` ([`write_with_encoder`]), and a diffusers pipeline folder as one file
//! ([`write_from_pipeline`]). Names follow [`super::keys`], the inverse of diffusers' conversion.
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use tch::Tensor;

use super::keys::{self, OpenClipTarget};
use super::stream::{self, Entry};
use super::{sidecar_config, Family, SingleFile, CONFIG_FILES};
use crate::error::Result;
use crate::io::weights::SafetensorsFile;
use crate::{input_bail, input_err};

/// How to write.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Replace an existing output file (otherwise it is an input error).
    pub overwrite: bool,
    /// Also write the pipeline's configs and tokenizer into `NAME.config/` beside `NAME.safetensors`
    /// ([`super::sidecar_config`]), so clipdoor and `from_single_file(..., config=DIR)` read a
    /// non-standard architecture back: the pipeline's for [`write_from_pipeline`], the base's config
    /// folder (if it has one) for [`write_with_encoder`].
    pub config_beside: bool,
}

fn check_output(out: &Path, opts: &WriteOptions) -> Result<()> {
    if out.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        input_bail!(
            "{}: a single file is written as NAME.safetensors",
            out.display()
        );
    }
    if out.exists() && !opts.overwrite {
        input_bail!(
            "{} already exists: choose another name, or ask to overwrite it (--force)",
            out.display()
        );
    }
    Ok(())
}

/// Transformers names with the `text_model.` prefix (transformers 5 saves a bare `CLIPTextModel`).
fn with_text_model_prefix(names: impl Iterator<Item = String>) -> Vec<(String, String)> {
    let names: Vec<String> = names.collect();
    let bare = !names.iter().any(|n| n.starts_with("text_model."));
    names
        .into_iter()
        .map(|n| {
            let full = if bare && n != "text_projection.weight" {
                format!("text_model.{n}")
            } else {
                n.clone()
            };
            (full, n)
        })
        .collect()
}

/// A tensor's bytes in `dtype` (the base file's, so the output keeps the base's precision).
fn tensor_bytes(t: &Tensor, dtype: Dtype) -> Result<Vec<u8>> {
    let kind = match dtype {
        Dtype::F32 => tch::Kind::Float,
        Dtype::F16 => tch::Kind::Half,
        Dtype::BF16 => tch::Kind::BFloat16,
        Dtype::F64 => tch::Kind::Double,
        other => anyhow::bail!("cannot store a text-encoder weight as {other:?}"),
    };
    let t = t
        .detach()
        .to_device(tch::Device::Cpu)
        .to_kind(kind)
        .contiguous();
    let n = t.numel();
    let mut bytes = vec![0u8; n * kind.elt_size_in_bytes()];
    t.f_copy_data_u8(&mut bytes, n)?;
    Ok(bytes)
}

/// Write `out`: a copy of the SD 1.x/2.x single file `base` with the text encoder `encoder` (tensors
/// named as transformers' `CLIPTextModel` writes them, with or without `text_model.`) in place of
/// its `cond_stage_model.*` weights. Every other tensor, and the base's buffers the encoder does not
/// have (`position_ids`; SD 2's unused 24th OpenCLIP block and `text_projection`), are copied
/// byte-identical; replaced weights keep the base's dtype. SD 2.x: q/k/v are merged back into
/// `in_proj`. The encoder must have the base's architecture.
pub fn write_with_encoder(
    base: &Path,
    encoder: &[(String, Tensor)],
    out: &Path,
    opts: &WriteOptions,
) -> Result<()> {
    check_output(out, opts)?;
    let sf = SingleFile::open(base, None)?;
    let enc: HashMap<String, &Tensor> = {
        let named = with_text_model_prefix(encoder.iter().map(|(n, _)| n.clone()));
        let by_name: HashMap<&str, &Tensor> =
            encoder.iter().map(|(n, t)| (n.as_str(), t)).collect();
        named
            .into_iter()
            .map(|(full, orig)| (full, by_name[orig.as_str()]))
            .collect()
    };
    let enc_layers = enc
        .keys()
        .filter_map(|n| keys::transformers_layer(n))
        .max()
        .map_or(0, |l| l + 1);
    let names = sf.file.names();
    let mut used: Vec<String> = vec![];
    let mut entries = vec![];
    let base_layers = names
        .iter()
        .filter_map(|n| match sf.family {
            Family::Sd1 => n
                .strip_prefix(keys::CLIP_PREFIX)
                .and_then(keys::transformers_layer),
            Family::Sd2 => n.strip_prefix(keys::OPEN_CLIP_PREFIX).and_then(|k| {
                match keys::open_clip_to_transformers(k)? {
                    OpenClipTarget::InProj { layer, .. } => Some(layer),
                    OpenClipTarget::Plain { name, .. } => keys::transformers_layer(&name),
                }
            }),
        })
        .max()
        .map_or(0, |l| l + 1);
    // SD 2 reads 23 of OpenCLIP's 24 blocks: the encoder may lack the last one.
    let layers_ok = match sf.family {
        Family::Sd1 => enc_layers == base_layers,
        Family::Sd2 => enc_layers == base_layers || enc_layers + 1 == base_layers,
    };
    if !layers_ok {
        input_bail!(
            "the text encoder has {enc_layers} layers but the {} text encoder of {} has {base_layers}: write an encoder trained from this checkpoint's own encoder",
            sf.family.label(),
            base.display()
        );
    }
    for name in &names {
        let (dtype, shape, data) = sf.file.raw(name)?;
        let source = match sf.family {
            Family::Sd1 => name
                .strip_prefix(keys::CLIP_PREFIX)
                .filter(|k| !k.ends_with("position_ids"))
                .map(|k| vec![k.to_string()]),
            Family::Sd2 => name
                .strip_prefix(keys::OPEN_CLIP_PREFIX)
                .and_then(keys::open_clip_to_transformers)
                .and_then(|t| match t {
                    OpenClipTarget::Plain { name, transpose } => {
                        let beyond =
                            keys::transformers_layer(&name).is_some_and(|l| l >= enc_layers);
                        (!transpose && !beyond).then(|| vec![name])
                    }
                    OpenClipTarget::InProj { layer, suffix } => (layer < enc_layers).then(|| {
                        ["q_proj", "k_proj", "v_proj"]
                            .iter()
                            .map(|p| {
                                format!("text_model.encoder.layers.{layer}.self_attn.{p}.{suffix}")
                            })
                            .collect()
                    }),
                }),
        };
        let Some(source) = source else {
            entries.push(Entry::new(name.clone(), dtype, shape, data));
            continue;
        };
        let mut pieces = vec![];
        let mut rows = 0i64;
        for s in &source {
            let t = enc.get(s).ok_or_else(|| {
                input_err!(
                    "the text encoder has no `{s}`, which the {} text encoder of {} has (`{name}`): it is another architecture",
                    sf.family.label(),
                    base.display()
                )
            })?;
            rows += t.size().first().copied().unwrap_or(1);
            pieces.push(Cow::Owned(tensor_bytes(t, dtype)?));
            used.push(s.clone());
        }
        // One tensor keeps its shape; q, k, v stack on the first dimension.
        let mut got: Vec<usize> = enc[&source[0]].size().iter().map(|&d| d as usize).collect();
        if source.len() > 1 {
            got[0] = rows as usize;
        }
        if got != shape {
            input_bail!(
                "the text encoder's `{}` has shape {got:?} but `{name}` in {} has {shape:?}: write an encoder trained from this checkpoint's own encoder",
                source[0],
                base.display()
            );
        }
        entries.push(Entry {
            name: name.clone(),
            dtype,
            shape,
            data: pieces,
        });
    }
    let ignored = |n: &str| n.ends_with("position_ids") || n == "text_projection.weight";
    let unused: Vec<&String> = enc
        .keys()
        .filter(|n| !ignored(n) && !used.contains(n))
        .collect();
    if let Some(first) = unused.first() {
        input_bail!(
            "the text encoder has {} weight(s) the {} checkpoint {} has no place for, e.g. `{first}`: it is another architecture",
            unused.len(),
            sf.family.label(),
            base.display()
        );
    }
    stream::write(out, entries, sf.file.metadata())?;
    // Same architecture as the base: its config folder describes the output too.
    if let Some(cfg) = sf.config.as_ref().filter(|_| opts.config_beside) {
        write_configs(cfg, &sidecar_config(out))?;
    }
    Ok(())
}

/// The weight file of a diffusers component folder (full precision, else the `.fp16` variant).
fn component_weights(dir: &Path, base: &str) -> Result<SafetensorsFile> {
    for name in [
        format!("{base}.safetensors"),
        format!("{base}.fp16.safetensors"),
    ] {
        let p = dir.join(&name);
        if p.is_file() {
            return SafetensorsFile::open(&p);
        }
    }
    input_bail!(
        "no {base}.safetensors in {}: a diffusers pipeline folder (save_pretrained) is needed",
        dir.display()
    )
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| input_err!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| input_err!("{} is not valid JSON ({e})", path.display()))
}

/// q, k and v of one OpenCLIP `in_proj` as they are collected: dtype, the shape of one, the bytes.
type InProjParts<'a> = (Dtype, Vec<usize>, [Option<&'a [u8]>; 3]);

/// Write the UNet, VAE and text encoder of the diffusers pipeline folder `pipeline` as one SD 1.x/2.x
/// single file `out` (the text layout follows the encoder: `gelu` = OpenCLIP = SD 2.x, else SD 1.x
/// CLIP). Tensors keep their stored dtypes and bytes. With `config_beside`, the folder's configs and
/// tokenizer go to `NAME.config/`.
pub fn write_from_pipeline(pipeline: &Path, out: &Path, opts: &WriteOptions) -> Result<PathBuf> {
    check_output(out, opts)?;
    if !pipeline.join("model_index.json").is_file() {
        input_bail!(
            "{} is not a diffusers pipeline folder (no model_index.json)",
            pipeline.display()
        );
    }
    let unet_cfg = read_json(&pipeline.join("unet/config.json"))?;
    let vae_cfg = read_json(&pipeline.join("vae/config.json"))?;
    let text_cfg = read_json(&pipeline.join("text_encoder/config.json"))?;
    let lpb = unet_cfg["layers_per_block"]
        .as_u64()
        .ok_or_else(|| input_err!("unet/config.json: no integer layers_per_block"))?
        as usize;
    let n_up = vae_cfg["up_block_types"]
        .as_array()
        .ok_or_else(|| input_err!("vae/config.json: no up_block_types"))?
        .len();
    let family = if text_cfg["hidden_act"].as_str() == Some("gelu") {
        Family::Sd2
    } else {
        Family::Sd1
    };
    let unet = component_weights(&pipeline.join("unet"), "diffusion_pytorch_model")?;
    let vae = component_weights(&pipeline.join("vae"), "diffusion_pytorch_model")?;
    let text = component_weights(&pipeline.join("text_encoder"), "model")?;
    let mut entries = vec![];

    let unet_names = unet.names();
    let up_attn: Vec<bool> = (0..16)
        .map(|b| {
            let p = format!("up_blocks.{b}.attentions.");
            unet_names.iter().any(|n| n.starts_with(&p))
        })
        .collect();
    let has_attn = |b: usize| up_attn.get(b).copied().unwrap_or(false);
    for n in &unet_names {
        let ldm = keys::unet_to_ldm(n, lpb, &has_attn).ok_or_else(|| {
            input_err!(
                "{}: UNet tensor `{n}` has no place in an SD 1.x/2.x single file (another UNet variant)",
                pipeline.display()
            )
        })?;
        let (dtype, shape, data) = unet.raw(n)?;
        entries.push(Entry::new(
            format!("{}{ldm}", keys::UNET_PREFIX),
            dtype,
            shape,
            data,
        ));
    }
    for n in vae.names() {
        let ldm = keys::vae_to_ldm(&n, n_up).ok_or_else(|| {
            input_err!(
                "{}: VAE tensor `{n}` has no place in an SD single file",
                pipeline.display()
            )
        })?;
        let (dtype, mut shape, data) = vae.raw(&n)?;
        if keys::vae_is_attention_projection(&n) && shape.len() == 2 {
            shape.extend([1, 1]);
        }
        entries.push(Entry::new(
            format!("{}{ldm}", keys::VAE_PREFIX),
            dtype,
            shape,
            data,
        ));
    }
    let mut in_proj: BTreeMap<String, InProjParts> = BTreeMap::new();
    for (full, stored) in with_text_model_prefix(text.names().into_iter()) {
        if full.ends_with("position_ids") || full == "text_projection.weight" {
            continue;
        }
        let (dtype, shape, data) = text.raw(&stored)?;
        if family == Family::Sd1 {
            entries.push(Entry::new(
                format!("{}{full}", keys::CLIP_PREFIX),
                dtype,
                shape,
                data,
            ));
            continue;
        }
        let (name, slot) = keys::transformers_to_open_clip(&full).ok_or_else(|| {
            input_err!(
                "{}: text encoder tensor `{full}` has no place in an OpenCLIP (SD 2.x) text tower",
                pipeline.display()
            )
        })?;
        match slot {
            None => entries.push(Entry::new(
                format!("{}{name}", keys::OPEN_CLIP_PREFIX),
                dtype,
                shape,
                data,
            )),
            Some(i) => {
                let e = in_proj
                    .entry(name)
                    .or_insert_with(|| (dtype, shape.clone(), [None; 3]));
                e.2[i] = Some(data);
            }
        }
    }
    for (name, (dtype, mut shape, parts)) in in_proj {
        let pieces: Vec<Cow<[u8]>> = parts
            .iter()
            .map(|p| p.map(Cow::Borrowed))
            .collect::<Option<_>>()
            .ok_or_else(|| input_err!("{}: `{name}` lacks one of q/k/v", pipeline.display()))?;
        shape[0] *= 3;
        entries.push(Entry {
            name: format!("{}{name}", keys::OPEN_CLIP_PREFIX),
            dtype,
            shape,
            data: pieces,
        });
    }
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    stream::write(out, entries, Some(meta))?;
    if opts.config_beside {
        write_configs(pipeline, &sidecar_config(out))?;
    }
    Ok(out.to_path_buf())
}

/// Copy the pipeline's config files and tokenizer (no weights) into `dest`.
fn write_configs(pipeline: &Path, dest: &Path) -> Result<()> {
    use crate::io::atomic::write_atomic;
    let copy = |rel: &Path| -> Result<()> {
        let bytes = std::fs::read(pipeline.join(rel))
            .map_err(|e| input_err!("cannot read {}: {e}", pipeline.join(rel).display()))?;
        write_atomic(&dest.join(rel), &bytes)
    };
    copy(Path::new("model_index.json"))?;
    for (sub, name) in CONFIG_FILES {
        copy(&Path::new(sub).join(name))?;
    }
    let tok = pipeline.join("tokenizer");
    if tok.is_dir() {
        for f in std::fs::read_dir(&tok)? {
            let f = f?;
            if f.path().is_file() {
                copy(&Path::new("tokenizer").join(f.file_name()))?;
            }
        }
    }
    Ok(())
}
