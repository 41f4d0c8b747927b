//! The Stable Diffusion pipeline: diffusers' `StableDiffusionPipeline` (classifier-free guidance,
//! negative prompts, several images per prompt, v-prediction through the scheduler config) and
//! `StableDiffusionPipelineSafe` (SLD), with any CLIP text encoder swapped in. Latents and ancestral
//! noise come from [`crate::diffusion::rng::DiffusersGenerator`], so a seed gives diffusers' image.
pub mod image;
pub mod load;
pub mod sample;
pub mod sld;

use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind};

pub use load::{pipeline_parts, resolve_pipeline_root, PipelineParts};
pub use sample::{GenerateRequest, Seeds};
pub use sld::{SldConfig, DEFAULT_SAFETY_CONCEPT, SLD_PRESETS};

use crate::diffusion::schedulers::{scheduler_by_name, Scheduler, SchedulerConfig};
use crate::error::Result;
use crate::input_bail;
use crate::models::clip_text_config::CLIPTextConfig;
use crate::models::text_encoder::TextEncoder;
use crate::models::unet::{load_unet, UNet2DConditionConfig, UNet2DConditionModel};
use crate::models::vae::{load_vae, AutoencoderKL, AutoencoderKLConfig};

/// A loaded pipeline: UNet, VAE (none in pixel space), text encoder + tokenizer, and the scheduler config.
pub struct StableDiffusionPipeline {
    pub unet: UNet2DConditionModel,
    pub vae: Option<AutoencoderKL>,
    pub text_encoder: TextEncoder,
    pub scheduler_config: SchedulerConfig,
    pub parts: PipelineParts,
    pub device: Device,
    pub kind: Kind,
    // The models' weights live in these stores; kept alive with the models.
    _unet_vs: nn::VarStore,
    _vae_vs: Option<nn::VarStore>,
}

impl StableDiffusionPipeline {
    /// Load `pipeline` (a `save_pretrained` folder or a cached hub id) on `device` in `kind`, with the
    /// text encoder of `text_encoder` (a clipdoor run folder or an encoder folder) when given.
    pub fn load(
        pipeline: &str,
        text_encoder: Option<&Path>,
        device: Device,
        kind: Kind,
    ) -> Result<Self> {
        let root = resolve_pipeline_root(pipeline)?;
        let parts = pipeline_parts(&root, text_encoder)?;
        check_compatible(&parts)?;
        let scheduler_config = SchedulerConfig::load(&parts.scheduler_config)?;
        let text_encoder = TextEncoder::load_from(&parts.encoder, device, kind)?;
        let (_unet_vs, unet) = load_unet(&parts.unet, device, kind)?;
        let (_vae_vs, vae) = match &parts.vae {
            Some(dir) => {
                let (vs, vae) = load_vae(dir, device, kind)?;
                (Some(vs), Some(vae))
            }
            None => (None, None),
        };
        Ok(Self {
            unet,
            vae,
            text_encoder,
            scheduler_config,
            parts,
            device,
            kind,
            _unet_vs,
            _vae_vs,
        })
    }

    /// `2 ** (len(vae.block_out_channels) - 1)`: pixels per latent cell (8 for SD; 1 without a VAE,
    /// where the latents are the pixels).
    pub fn vae_scale_factor(&self) -> i64 {
        match &self.vae {
            Some(vae) => 1 << (vae.config.block_out_channels.len().saturating_sub(1)),
            None => 1,
        }
    }

    /// diffusers' default image size: `unet.sample_size * vae_scale_factor` (height, width).
    pub fn default_size(&self) -> (i64, i64) {
        use crate::models::unet::OneOrMany;
        let f = self.vae_scale_factor();
        match &self.unet.config.sample_size {
            Some(OneOrMany::One(s)) => (s * f, s * f),
            Some(OneOrMany::Many(v)) if v.len() == 2 => (v[0] * f, v[1] * f),
            _ => (64 * f, 64 * f),
        }
    }

    /// A fresh scheduler: `name` (`ddim`, `pndm`, `euler`, `euler-a`, `dpm++`) built from the pipeline's
    /// scheduler config like `XScheduler.from_config`, or the config's own class when `None`.
    pub fn scheduler(&self, name: Option<&str>) -> Result<Box<dyn Scheduler>> {
        scheduler_by_name(name, &self.scheduler_config)
            .map_err(|e| e.context(format!("scheduler of {}", self.parts.root.display())))
    }

    /// The text-encoder folder in use (recorded as `encoder` in images.jsonl).
    pub fn encoder_dir(&self) -> &PathBuf {
        &self.parts.encoder.encoder_dir
    }
}

/// Mismatches between the parts, found from their configs before any weights are read.
fn check_compatible(parts: &PipelineParts) -> Result<()> {
    let unet = UNet2DConditionConfig::load(&parts.unet.join("config.json"))?;
    let enc_dir = &parts.encoder.encoder_dir;
    let enc = CLIPTextConfig::load(&enc_dir.join("config.json"))?;
    let width = unet.text_width();
    if width != enc.hidden_size {
        input_bail!(
            "the UNet in {} reads {width}-wide text states (cross_attention_dim {width}) but the text encoder in {} is {}-wide (hidden_size {}): use a text encoder trained from this pipeline's own encoder (SD 1.x: 768, SD 2.x: 1024), or the pipeline that matches it",
            parts.unet.display(),
            enc_dir.display(),
            enc.hidden_size,
            enc.hidden_size
        );
    }
    let Some(vae_dir) = &parts.vae else {
        // Pixel space: the UNet denoises the RGB image itself.
        if unet.in_channels != 3 || unet.out_channels != 3 {
            input_bail!(
                "{} declares no VAE (pixel space), but the UNet in {} maps {} to {} channels: a pixel-space UNet maps RGB to RGB (in_channels = out_channels = 3); add the pipeline's vae/ folder and its model_index.json entry",
                parts.root.join("model_index.json").display(),
                parts.unet.display(),
                unet.in_channels,
                unet.out_channels
            );
        }
        return Ok(());
    };
    let vae = AutoencoderKLConfig::load(&vae_dir.join("config.json"))?;
    if unet.in_channels != vae.latent_channels {
        input_bail!(
            "the UNet in {} takes {} input channels but the VAE in {} makes {}-channel latents: text-to-image needs a UNet with in_channels = latent_channels (inpainting UNets take 9)",
            parts.unet.display(),
            unet.in_channels,
            vae_dir.display(),
            vae.latent_channels
        );
    }
    Ok(())
}
