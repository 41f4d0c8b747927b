//! A CLIP text encoder with its tokenizer: resolve (folder, pipeline folder, run folder or hub id),
//! load, initialise at random, encode prompts, save in transformers' layout.
use anyhow::Context;
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

use super::clip_text::{CLIPTextModel, CLIPTextOutput};
use super::clip_text_config::CLIPTextConfig;
use super::init::{seeded, without_random_init};
use crate::error::Result;
use crate::io::{hub, single_file, weights};
use crate::text::tokenizer::ClipTokenizer;
use crate::{input_bail, input_err};

/// Tensors a full `CLIPModel` checkpoint carries besides the text tower.
const NON_TEXT: &[&str] = &["vision_model.", "visual_projection.", "logit_scale"];
/// Buffers some transformers versions saved; they are recomputed, not loaded.
const IGNORED_BUFFERS: &[&str] = &["position_ids"];

/// Where an encoder's files are.
#[derive(Debug, Clone)]
pub struct EncoderLocation {
    pub encoder_dir: PathBuf,
    /// Folder with the tokenizer; `None` means the embedded CLIP vocabulary.
    pub tokenizer_dir: Option<PathBuf>,
}

fn has_tokenizer(dir: &Path) -> bool {
    dir.join("tokenizer.json").exists()
        || (dir.join("vocab.json").exists() && dir.join("merges.txt").exists())
}

/// Resolve a model argument: a text-encoder folder, a diffusers pipeline or clipdoor run folder
/// (`text_encoder/` + `tokenizer/`), or a hub id in the Hugging Face cache.
pub fn locate(model: &str) -> Result<EncoderLocation> {
    let p = Path::new(model);
    if single_file::is_single_file(p) {
        return locate_single_file(p, None);
    }
    let dir = if p.is_dir() {
        p.to_path_buf()
    } else if hub::is_hub_id(model) {
        locate_hub(model)?
    } else {
        input_bail!(
            "model `{model}` is neither a folder nor a hub id (owner/name) nor a single file (.safetensors): give a folder with config.json + model.safetensors, a diffusers pipeline folder, an SD 1.x/2.x single file, or a cached hub id"
        );
    };
    if dir.join("text_encoder").join("config.json").exists() {
        let tok = dir.join("tokenizer");
        return Ok(EncoderLocation {
            encoder_dir: dir.join("text_encoder"),
            tokenizer_dir: has_tokenizer(&tok).then_some(tok),
        });
    }
    if dir.join("config.json").exists() {
        let sibling = dir.parent().map(|d| d.join("tokenizer"));
        let tokenizer_dir = if has_tokenizer(&dir) {
            Some(dir.clone())
        } else {
            sibling.filter(|s| has_tokenizer(s))
        };
        return Ok(EncoderLocation {
            encoder_dir: dir,
            tokenizer_dir,
        });
    }
    input_bail!(
        "{} holds no text encoder: expected config.json + model.safetensors there, or text_encoder/ (+ tokenizer/) inside it",
        dir.display()
    )
}

/// The text encoder of an SD 1.x/2.x single file (`.safetensors`, LDM layout), converted into a
/// cached transformers folder; `config`: a diffusers config folder (else `NAME.config/` beside the
/// file, else the standard SD 1.5 / 2.1 config). Its tokenizer is the config folder's, else the
/// embedded CLIP vocabulary.
pub fn locate_single_file(file: &Path, config: Option<&Path>) -> Result<EncoderLocation> {
    let sf = single_file::SingleFile::open(file, config)?;
    let root = single_file::extract(&sf, single_file::Parts::TEXT_ENCODER)?;
    let tok = single_file_tokenizer(&root, sf.family)?;
    Ok(EncoderLocation {
        encoder_dir: root.join("text_encoder"),
        tokenizer_dir: Some(tok),
    })
}

/// `root/tokenizer/` of a converted single file: the config folder's tokenizer when it brought one,
/// else the embedded CLIP vocabulary with the family's padding (SD 2.x pads with `!`, SD 1.x with
/// the end token), as diffusers' single-file loader sets it up.
pub fn single_file_tokenizer(root: &Path, family: single_file::Family) -> Result<PathBuf> {
    let tok = root.join("tokenizer");
    if !has_tokenizer(&tok) {
        let pad = match family {
            single_file::Family::Sd1 => crate::text::tokenizer::EOS,
            single_file::Family::Sd2 => "!",
        };
        ClipTokenizer::embedded(pad)?.save(&tok)?;
    }
    Ok(tok)
}

fn locate_hub(id: &str) -> Result<PathBuf> {
    let tok = [
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "tokenizer/tokenizer_config.json",
    ];
    // A diffusers pipeline repo (model_index.json) or a transformers CLIP repo.
    let weights = hub::variant_file("model.safetensors");
    let pipeline_weights = format!("text_encoder/{weights}");
    let pipeline_files: Vec<&str> = [
        "model_index.json",
        "text_encoder/config.json",
        &pipeline_weights,
    ]
    .into_iter()
    .chain(tok)
    .collect();
    let clip_files = [
        "config.json",
        &weights,
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
    ];
    if hub::resolve_repo_files(id, &["model_index.json"]).is_ok() {
        return hub::resolve_repo_files(id, &pipeline_files);
    }
    hub::resolve_repo_files(id, &clip_files).map_err(|e| {
        input_err!(
            "{e}\n(for a diffusers pipeline repo the files are: {})",
            pipeline_files.join(", ")
        )
    })
}

/// Pick the weight file of a model folder: the `--variant` file when one was asked for (as diffusers'
/// `variant=`), else full precision, else the `fp16` variant.
pub fn weight_file(dir: &Path, base: &str) -> Result<PathBuf> {
    if let Some(v) = hub::variant() {
        let p = dir.join(format!("{base}.{v}.safetensors"));
        if p.exists() {
            return Ok(p);
        }
        input_bail!(
            "no {base}.{v}.safetensors in {} (asked for with --variant {v}): drop --variant to read {base}.safetensors, or give a model that has this variant",
            dir.display()
        );
    }
    for name in [
        format!("{base}.safetensors"),
        format!("{base}.fp16.safetensors"),
    ] {
        let p = dir.join(&name);
        if p.exists() {
            return Ok(p);
        }
    }
    if dir.join(format!("{base}.safetensors.index.json")).exists() {
        input_bail!("{} holds sharded weights ({base}.safetensors.index.json); save the model unsharded (save_pretrained(..., max_shard_size=\"100GB\"))", dir.display());
    }
    if dir.join("pytorch_model.bin").exists() || dir.join("diffusion_pytorch_model.bin").exists() {
        input_bail!("{} holds only pickled .bin weights; clipdoor reads safetensors: convert with `model.save_pretrained(dir, safe_serialization=True)`", dir.display());
    }
    input_bail!(
        "no {base}.safetensors in {}: the weight file is missing",
        dir.display()
    )
}

/// A CLIP text tower (with or without `text_projection`), its `VarStore`, config and tokenizer.
pub struct TextEncoder {
    pub vs: nn::VarStore,
    pub model: CLIPTextModel,
    pub config: CLIPTextConfig,
    pub tokenizer: ClipTokenizer,
}

impl TextEncoder {
    /// Random weights (transformers' init: normal(0, 0.02), LayerNorm 1/0) from a seed.
    pub fn random(
        config: CLIPTextConfig,
        tokenizer: ClipTokenizer,
        with_projection: bool,
        seed: i64,
        device: Device,
    ) -> Result<Self> {
        config.validate().map_err(|e| input_err!("{e}"))?;
        let vs = nn::VarStore::new(device);
        let model = seeded(seed, || {
            CLIPTextModel::new(vs.root(), &config, with_projection)
        });
        Ok(Self {
            vs,
            model,
            config,
            tokenizer,
        })
    }

    /// A random-weight encoder of a named architecture (`tiny`, `sd1`, `sd2`), deterministic per
    /// seed, with the real CLIP tokenizer (SD 2.x pads with `!`).
    pub fn init_arch(arch: &str, seed: i64, with_projection: bool, device: Device) -> Result<Self> {
        let cfg = CLIPTextConfig::preset(arch)
            .ok_or_else(|| input_err!("unknown architecture `{arch}`: use tiny, sd1 or sd2"))?;
        let tok = ClipTokenizer::embedded(if arch == "sd2" {
            "!"
        } else {
            crate::text::tokenizer::EOS
        })?;
        Self::random(cfg, tok, with_projection, seed, device)
    }

    /// Load a model argument (see [`locate`]) on `device`, computing in `kind`. `random:ARCH[:SEED]`
    /// builds a random-weight encoder instead (what smoke experiments and the offline demo use).
    pub fn load(model: &str, device: Device, kind: Kind) -> Result<Self> {
        if let Some(spec) = model.strip_prefix("random:") {
            let (arch, seed) = spec.split_once(':').unwrap_or((spec, "0"));
            let seed: i64 = seed.parse().map_err(|_| {
                input_err!("`{model}`: the seed after the architecture must be an integer")
            })?;
            let mut enc = Self::init_arch(arch, seed, false, device)?;
            enc.vs.set_kind(kind);
            return Ok(enc);
        }
        let loc = locate(model)?;
        Self::load_from(&loc, device, kind)
    }

    pub fn load_from(loc: &EncoderLocation, device: Device, kind: Kind) -> Result<Self> {
        let config = CLIPTextConfig::load(&loc.encoder_dir.join("config.json"))?;
        let file = weights::SafetensorsFile::open(&weight_file(&loc.encoder_dir, "model")?)?;
        let names = file.names();
        let full_clip = names.iter().any(|n| n.starts_with("vision_model."));
        let with_projection = names.iter().any(|n| n == "text_projection.weight");
        let tokenizer = match &loc.tokenizer_dir {
            Some(d) => ClipTokenizer::from_folder(d)?,
            None => ClipTokenizer::embedded(if config.hidden_act == "gelu" {
                "!"
            } else {
                crate::text::tokenizer::EOS
            })?,
        };
        let mut vs = nn::VarStore::new(device);
        let model = without_random_init(|| CLIPTextModel::new(vs.root(), &config, with_projection));
        vs.set_kind(kind);
        let mut ignore: Vec<&str> = IGNORED_BUFFERS.to_vec();
        if full_clip {
            ignore.extend(NON_TEXT);
        }
        // transformers 5 saves a bare CLIPTextModel without the `text_model.` prefix; hub checkpoints
        // (and what clipdoor writes) have it. Accept both.
        let bare = !names.iter().any(|n| n.starts_with("text_model."));
        let rename = |v: &str| {
            if bare {
                v.strip_prefix("text_model.").unwrap_or(v).to_string()
            } else {
                v.to_string()
            }
        };
        weights::load_var_store_renamed(&mut vs, &file, &ignore, &rename)?;
        Ok(Self {
            vs,
            model,
            config,
            tokenizer,
        })
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }
    pub fn kind(&self) -> Kind {
        self.vs.kind()
    }
    pub fn has_projection(&self) -> bool {
        self.model.text_projection.is_some()
    }

    /// Forward pass on token ids already on any device.
    pub fn forward_ids(&self, input_ids: &Tensor, all_hidden: bool) -> CLIPTextOutput {
        self.model
            .forward(&input_ids.to_device(self.device()), None, all_hidden)
    }

    /// Tokenise and encode a batch of prompts.
    pub fn encode(
        &self,
        prompts: &[impl AsRef<str>],
        all_hidden: bool,
    ) -> Result<(Tensor, CLIPTextOutput)> {
        let ids = self.tokenizer.encode_batch(prompts)?;
        let out = self.forward_ids(&ids, all_hidden);
        Ok((ids, out))
    }

    /// Save `config.json` + `model.safetensors` (transformers' layout, names, dtype), atomically.
    pub fn save(&self, dir: &Path, kind: Option<Kind>) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let kind = kind.unwrap_or(self.kind());
        let arch = if self.has_projection() {
            "CLIPTextModelWithProjection"
        } else {
            "CLIPTextModel"
        };
        let cfg = self
            .config
            .to_saved_json(arch, crate::device::kind_name(kind));
        weights::save_var_store(&dir.join("model.safetensors"), &self.vs, Some(kind))?;
        crate::io::atomic::write_json(&dir.join("config.json"), &cfg)
    }

    /// Write a copy of the SD 1.x/2.x single file `base` with this encoder in place of its own
    /// (see [`single_file::write_with_encoder`]: other tensors byte-identical, atomic, no overwrite
    /// unless `opts.overwrite`).
    pub fn write_into_single_file(
        &self,
        base: &Path,
        out: &Path,
        opts: &single_file::WriteOptions,
    ) -> Result<()> {
        let vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        single_file::write_with_encoder(base, &vars, out, opts)
    }

    /// Save the encoder into `dir/text_encoder` and the tokenizer into `dir/tokenizer`.
    pub fn save_with_tokenizer(&self, dir: &Path, kind: Option<Kind>) -> Result<()> {
        self.save(&dir.join("text_encoder"), kind)?;
        self.tokenizer.save(&dir.join("tokenizer"))
    }
}
