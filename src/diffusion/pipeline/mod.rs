//! The Stable Diffusion pipeline: diffusers' `StableDiffusionPipeline` (classifier-free guidance,
//! negative prompts, several images per prompt, v-prediction through the scheduler config),
//! `StableDiffusionPipelineSafe` (SLD) and `SemanticStableDiffusionPipeline` (SEGA), with any CLIP
//! text encoder swapped in. Latents and ancestral noise come from [`crate::diffusion::rng::DiffusersGenerator`], so a seed gives diffusers' image.
pub mod export;
pub mod load;
pub mod sample;
pub mod sega;
pub mod sld;

use std::path::Path;
use tch::{nn, Device, Kind};

/// The image module (`crate::diffusion::image`), also reachable here.
pub use crate::diffusion::image;
pub use export::{export_pipeline, ExportFormat, ExportOptions};
pub use load::{pipeline_parts, resolve_pipeline_root, single_file_pipeline, PipelineParts};
pub use sample::{GenerateRequest, Seeds};
pub use sega::{EditPrompt, SegaConfig};
pub use sld::{SldConfig, DEFAULT_SAFETY_CONCEPT, SLD_PRESETS};

use crate::diffusion::schedulers::{
    resolve_scheduler, scheduler_by_name, Scheduler, SchedulerConfig,
};
use crate::error::Result;
use crate::input_bail;
use crate::models::clip_text_config::CLIPTextConfig;
use crate::models::text_encoder::{EncoderLocation, TextEncoder};
use crate::models::unet::{load_unet, UNet2DConditionConfig, UNet2DConditionModel};
use crate::models::vae::{load_vae, AutoencoderKL, AutoencoderKLConfig};
use crate::settings::SchedulerKind;

/// A loaded pipeline: UNet, VAE (none in pixel space), text encoder + tokenizer, and the scheduler config.
pub struct StableDiffusionPipeline {
    pub unet: UNet2DConditionModel,
    pub vae: Option<AutoencoderKL>,
    pub text_encoder: TextEncoder,
    pub scheduler_config: SchedulerConfig,
    /// The folders the parts were read from (set by [`Self::load`]; `None` for a pipeline built in
    /// memory). Its `encoder` is the encoder chosen at load time; see [`Self::encoder_location`].
    pub parts: Option<PipelineParts>,
    /// Where the text encoder in use (and its tokenizer) was read from: recorded as `encoder` in
    /// images.jsonl. `None` for an encoder built in memory.
    pub encoder_location: Option<EncoderLocation>,
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
        let encoder = TextEncoder::load_from(&parts.encoder, device, kind)?;
        let unet = load_unet(&parts.unet, device, kind)?;
        let vae = parts
            .vae
            .as_ref()
            .map(|dir| load_vae(dir, device, kind))
            .transpose()?;
        let location = parts.encoder.clone();
        let mut pipe = Self::from_parts(unet, vae, encoder, scheduler_config)?;
        pipe.parts = Some(parts);
        pipe.with_text_encoder_at(None, Some(location))
    }

    /// A pipeline from loaded parts: the UNet and (except in pixel space, e.g. the shapes world) the
    /// VAE with the `VarStore`s holding their weights, a text encoder (with its tokenizer) and the
    /// scheduler config. Device and dtype are the UNet's. The parts must fit together: the encoder
    /// as wide as the UNet's cross-attention, the UNet's channels those of the VAE's latents (RGB
    /// without a VAE). The result has no folders (`parts` and `encoder_location` are `None`).
    pub fn from_parts(
        unet: (nn::VarStore, UNet2DConditionModel),
        vae: Option<(nn::VarStore, AutoencoderKL)>,
        text_encoder: TextEncoder,
        scheduler_config: SchedulerConfig,
    ) -> Result<Self> {
        let (unet_vs, unet) = unet;
        let (vae_vs, vae) = match vae {
            Some((vs, vae)) => (Some(vs), Some(vae)),
            None => (None, None),
        };
        let c = &unet.config;
        match &vae {
            Some(v) if c.in_channels != v.config.latent_channels => input_bail!(
                "the UNet takes {} input channels but the VAE makes {}-channel latents: text-to-image needs a UNet with in_channels = latent_channels (inpainting UNets take 9)",
                c.in_channels,
                v.config.latent_channels
            ),
            None if c.in_channels != 3 || c.out_channels != 3 => input_bail!(
                "without a VAE (pixel space) the UNet must map RGB to RGB, but it maps {} to {} channels",
                c.in_channels,
                c.out_channels
            ),
            _ => {}
        }
        Self {
            device: unet_vs.device(),
            kind: unet_vs.kind(),
            unet,
            vae,
            text_encoder,
            scheduler_config,
            parts: None,
            encoder_location: None,
            _unet_vs: unet_vs,
            _vae_vs: vae_vs,
        }
        .with_text_encoder_at(None, None)
    }

    /// The pipeline with `text_encoder` (and its tokenizer) in place of its own; it must be as wide
    /// as the UNet's cross-attention. Where it was read from is unknown afterwards
    /// ([`Self::encoder_location`] is `None`): use [`Self::with_text_encoder_from`] for a folder.
    pub fn with_text_encoder(self, text_encoder: TextEncoder) -> Result<Self> {
        self.with_text_encoder_at(Some(text_encoder), None)
    }

    /// The pipeline with the text encoder of `dir` (a clipdoor run folder, its `text_encoder/`, or a
    /// CLIP text-encoder folder; its tokenizer, else the pipeline's) in place of its own, on the
    /// pipeline's device and dtype. Needs a pipeline loaded from a folder.
    pub fn with_text_encoder_from(self, dir: &Path) -> Result<Self> {
        let Some(parts) = &self.parts else {
            input_bail!(
                "cannot swap in the text encoder {}: the pipeline was built in memory, not loaded from a folder",
                dir.display()
            );
        };
        let located = pipeline_parts(&parts.root, Some(dir))?;
        let encoder = TextEncoder::load_from(&located.encoder, self.device, self.kind)?;
        self.with_text_encoder_at(Some(encoder), Some(located.encoder))
            .map_err(|e| e.context(format!("text encoder {}", dir.display())))
    }

    /// The one place a text encoder is put in ([`Self::from_parts`], [`Self::load`] and the swaps):
    /// `text_encoder` (`None`: the one in place), read from `location` (`None`: built in memory),
    /// checked against the UNet.
    fn with_text_encoder_at(
        mut self,
        text_encoder: Option<TextEncoder>,
        location: Option<EncoderLocation>,
    ) -> Result<Self> {
        if let Some(enc) = text_encoder {
            self.text_encoder = enc;
        }
        let (width, enc) = (self.unet.config.text_width(), &self.text_encoder);
        if width != enc.config.hidden_size {
            input_bail!(
                "the UNet reads {width}-wide text states (cross_attention_dim {width}) but the text encoder is {}-wide (hidden_size {}): use a text encoder trained from this pipeline's own encoder (SD 1.x: 768, SD 2.x: 1024), or the pipeline that matches it",
                enc.config.hidden_size,
                enc.config.hidden_size
            );
        }
        self.encoder_location = location;
        Ok(self)
    }

    /// `2 ** (len(vae.block_out_channels) - 1)`: pixels per latent cell (8 for SD; 1 without a VAE,
    /// where the latents are the pixels).
    /// Stop gradients into every weight (UNet, VAE, text encoder): for methods that learn inputs
    /// (textual inversion) through the frozen pipeline.
    pub fn freeze(&mut self) {
        self._unet_vs.freeze();
        if let Some(vs) = self._vae_vs.as_mut() {
            vs.freeze();
        }
        self.text_encoder.vs.freeze();
    }

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

    /// A fresh scheduler: `kind` built from the pipeline's scheduler config like
    /// `XScheduler.from_config`, or the config's own class when `None`.
    pub fn scheduler(&self, kind: Option<SchedulerKind>) -> Result<Box<dyn Scheduler>> {
        scheduler_by_name(kind, &self.scheduler_config).map_err(|e| self.scheduler_context(e))
    }

    /// The scheduler `kind` stands for (the config's own class when `None`), checked to build from
    /// the pipeline's scheduler config.
    pub fn scheduler_kind(&self, kind: Option<SchedulerKind>) -> Result<SchedulerKind> {
        let kind = resolve_scheduler(kind, &self.scheduler_config)
            .map_err(|e| self.scheduler_context(e))?;
        self.scheduler(Some(kind))?;
        Ok(kind)
    }

    fn scheduler_context(&self, e: anyhow::Error) -> anyhow::Error {
        match &self.parts {
            Some(p) => e.context(format!("scheduler of {}", p.root.display())),
            None => e.context("scheduler of the pipeline"),
        }
    }

    /// The folder of the text encoder in use (`None`: built in memory).
    pub fn encoder_dir(&self) -> Option<&Path> {
        self.encoder_location
            .as_ref()
            .map(|l| l.encoder_dir.as_path())
    }

    /// The text encoder in use as recorded in images.jsonl (`encoder`): its folder, or `(in memory)`.
    pub fn encoder_label(&self) -> String {
        match self.encoder_dir() {
            Some(d) => d.display().to_string(),
            None => "(in memory)".to_string(),
        }
    }
}

/// Mismatches between the parts (the encoder's width and the UNet's cross-attention, the UNet's
/// channels and the VAE's latents), found from their configs before any weights are read.
pub fn check_compatible(parts: &PipelineParts) -> Result<()> {
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
