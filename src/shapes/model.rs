//! The shapes-world text-to-image model: the tiny CLIP text encoder (real architecture and tokenizer,
//! random weights from a fixed seed, then its own short training stage (text_stage.rs), then frozen)
//! and a small pixel-space `UNet2DConditionModel`, with the
//! diffusers `save_pretrained` layout they are saved in.
//!
//! Pixel space, no VAE: `model_index.json` says `"vae": [null, null]`, and the UNet's `in_channels`
//! (3) and `sample_size` (32) are the image's own. A pipeline treats a missing VAE as the identity:
//! latents are `[B, 3, 32, 32]` images in [-1, 1] (vae_scale_factor 1, no scaling factor), and the
//! output image is `(x + 1) / 2` clamped to [0, 1].
use anyhow::Context;
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

use crate::diffusion::schedulers::{PredictionType, SchedulerConfig};
use crate::error::Result;
use crate::io::atomic::write_json;
use crate::io::weights::save_tensors;
use crate::models::text_encoder::TextEncoder;
use crate::models::unet::{load_unet, UNet2DConditionConfig, UNet2DConditionModel};

/// Architecture of the frozen text encoder (`TextEncoder::init_arch`).
pub const TEXT_ENCODER_ARCH: &str = "tiny";
/// Its fixed weight seed: every shapes model shares this encoder, so the demo's attacks on it are
/// attacks on the encoder the UNet was trained with.
pub const TEXT_ENCODER_SEED: i64 = 5;
/// Diffusers version written into the config files (the one the parity tests ran against).
const DIFFUSERS_VERSION: &str = "0.42.1";

/// The UNet: three levels (32×32 without attention; 16×16 and 8×8 with cross-attention), a
/// cross-attention mid block, 64-wide cross-attention (= the tiny encoder's hidden size). Channels
/// stay narrow at full resolution, where a step's cost is: the shared 2-core CPU is the budget.
/// `attention_head_dim` is diffusers' (mis)name for the number of heads: one head of 32/64 channels
/// runs libtorch's CPU attention kernels 30% faster a step than four narrow ones. The pooled text
/// (`addition_embed_type: "text"`) joins the time embedding, so every resnet block, the
/// full-resolution ones too, hears the caption.
pub fn unet_config_json() -> serde_json::Value {
    serde_json::json!({
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": DIFFUSERS_VERSION,
        "sample_size": super::IMAGE_SIZE,
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "block_out_channels": [16, 32, 64],
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "cross_attention_dim": 64,
        "attention_head_dim": 1,
        "addition_embed_type": "text",
        "addition_embed_type_num_heads": 4,
        "act_fn": "silu",
        "flip_sin_to_cos": true,
        "freq_shift": 0
    })
}

pub fn unet_config() -> Result<UNet2DConditionConfig> {
    Ok(serde_json::from_value(unet_config_json())?)
}

/// Stable Diffusion's noise schedule (`scaled_linear`, 0.00085 → 0.012, 1000 steps) with the
/// prediction type the UNet was trained for; sampled with DDIM by default. Not DDPM's `linear` 1e-4 → 0.02: there ᾱ(999) = 4e-5,
/// and the first sampling step's clean-image estimate divides the model's error by √ᾱ = 0.006; a first
/// model trained with it sampled pure noise (and exploded in diffusers). `clip_sample: false` and
/// `steps_offset: 1` because diffusers' StableDiffusionPipeline forces both, so both samplers agree.
pub fn scheduler_config_json(prediction: PredictionType) -> serde_json::Value {
    scheduler_config_json_with(prediction, false)
}

/// [`scheduler_config_json`], with `rescale_betas_zero_snr` set to `zero_terminal_snr`: the betas
/// rescaled so that the last timestep is pure noise (Lin et al., "Common Diffusion Noise Schedules and
/// Sample Steps are Flawed", WACV 2024). Without it ᾱ(999) = 0.0047, a training image's mean colour
/// still shows through the noise at t = 999, the UNet learns to read the background from it instead of
/// from the caption, and sampling from pure noise falls back to the mean background (gray).
pub fn scheduler_config_json_with(
    prediction: PredictionType,
    zero_terminal_snr: bool,
) -> serde_json::Value {
    serde_json::json!({
        "_class_name": "DDIMScheduler",
        "_diffusers_version": DIFFUSERS_VERSION,
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "trained_betas": null,
        "prediction_type": prediction.name(),
        "clip_sample": false,
        "clip_sample_range": 1.0,
        "set_alpha_to_one": false,
        "steps_offset": 1,
        "timestep_spacing": "trailing",
        "thresholding": false,
        "rescale_betas_zero_snr": zero_terminal_snr
    })
}

pub fn scheduler_config(prediction: PredictionType) -> Result<SchedulerConfig> {
    SchedulerConfig::parse(&scheduler_config_json(prediction).to_string())
}

pub fn scheduler_config_with(
    prediction: PredictionType,
    zero_terminal_snr: bool,
) -> Result<SchedulerConfig> {
    SchedulerConfig::parse(&scheduler_config_json_with(prediction, zero_terminal_snr).to_string())
}

/// diffusers' `model_index.json` for a StableDiffusionPipeline without VAE (pixel space).
pub fn model_index_json() -> serde_json::Value {
    serde_json::json!({
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": DIFFUSERS_VERSION,
        "feature_extractor": [null, null],
        "image_encoder": [null, null],
        "requires_safety_checker": false,
        "safety_checker": [null, null],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": [null, null]
    })
}

/// The frozen text encoder and the UNet, each in its own `VarStore`, and the noise schedule they
/// were trained with.
pub struct ShapesModel {
    pub encoder: TextEncoder,
    pub unet_vs: nn::VarStore,
    pub unet: UNet2DConditionModel,
    /// The folder's `scheduler/scheduler_config.json` when loaded, else [`scheduler_config`]: an
    /// older folder (e.g. epsilon prediction) must be sampled with its own prediction type.
    pub scheduler: SchedulerConfig,
}

impl ShapesModel {
    /// A fresh model: the encoder as initialised (before its text stage) and a UNet with PyTorch-style random weights from `seed`,
    /// to be trained to predict `prediction`.
    pub fn new(seed: i64, prediction: PredictionType, device: Device) -> Result<Self> {
        let mut encoder =
            TextEncoder::init_arch(TEXT_ENCODER_ARCH, TEXT_ENCODER_SEED, false, device)?;
        encoder.vs.freeze();
        let unet_vs = nn::VarStore::new(device);
        let config = unet_config()?;
        let unet = crate::models::init::seeded(seed, || {
            UNet2DConditionModel::new(unet_vs.root(), &config)
        })?;
        Ok(Self {
            encoder,
            unet_vs,
            unet,
            scheduler: scheduler_config(prediction)?,
        })
    }

    /// Load a saved pipeline folder (`unet/`, `text_encoder/`, `tokenizer/`, `scheduler/`).
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let (unet_vs, unet) = load_unet(&dir.join("unet"), device, Kind::Float)?;
        let mut encoder = TextEncoder::load(&dir.to_string_lossy(), device, Kind::Float)?;
        encoder.vs.freeze();
        let scheduler_file = dir.join("scheduler").join("scheduler_config.json");
        let scheduler = if scheduler_file.exists() {
            SchedulerConfig::load(&scheduler_file)?
        } else {
            crate::input_bail!(
                "{} is missing: a shapes model folder needs its scheduler config (it says what the UNet predicts)",
                scheduler_file.display()
            )
        };
        Ok(Self {
            encoder,
            unet_vs,
            unet,
            scheduler,
        })
    }

    /// Encoder states `[B, 77, 64]` of `prompts` (no gradient: the encoder is frozen).
    pub fn encode(&self, prompts: &[impl AsRef<str>]) -> Result<Tensor> {
        tch::no_grad(|| Ok(self.encoder.encode(prompts, false)?.1.last_hidden_state))
    }
}

/// Write the diffusers layout into `dir`: `model_index.json`, `unet/` (config + the given UNet
/// weights, e.g. the EMA copy), `text_encoder/`, `tokenizer/`, `scheduler/`. Every file is atomic.
pub fn save_pipeline(
    dir: &Path,
    encoder: &TextEncoder,
    unet_weights: &[(String, Tensor)],
    scheduler: &serde_json::Value,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let unet_dir = dir.join("unet");
    save_tensors(
        &unet_dir.join("diffusion_pytorch_model.safetensors"),
        unet_weights,
        Some(Kind::Float),
    )?;
    write_json(&unet_dir.join("config.json"), &unet_config_json())?;
    encoder.save_with_tokenizer(dir, Some(Kind::Float))?;
    write_json(
        &dir.join("scheduler").join("scheduler_config.json"),
        scheduler,
    )?;
    write_json(&dir.join("model_index.json"), &model_index_json())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::schedulers::scheduler_by_name;

    /// The scheduler's ᾱ is, bit for bit, the schedule the shapes trainer used to compute on its own
    /// (SD's scaled_linear betas with libtorch's linspace, pow and cumprod), so training through the
    /// scheduler does not change the numerics of earlier runs.
    #[test]
    fn the_scheduler_has_the_schedule_the_trainer_always_used() {
        let (start, end) = (0.00085f64.powf(0.5), 0.012f64.powf(0.5));
        let betas =
            Tensor::linspace(start, end, 1000, (Kind::Float, Device::Cpu)).pow_tensor_scalar(2);
        let alphas: Tensor = 1.0 - betas;
        let before = Vec::<f32>::try_from(&alphas.cumprod(0, Kind::Float)).unwrap();
        for p in PredictionType::ALL {
            let s = scheduler_by_name(None, &scheduler_config(p).unwrap()).unwrap();
            assert_eq!(s.name(), "ddim");
            assert_eq!(s.alphas_cumprod(), before.as_slice());
        }
    }
}
