//! `AutoencoderKL`'s `config.json` as diffusers writes it. Defaults are diffusers' constructor defaults.
use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::error::Result;
use crate::input_err;
use crate::models::unet::attention::AttentionNames;
use crate::models::unet::OneOrMany;

fn d_three() -> i64 {
    3
}
fn d_down() -> Vec<String> {
    vec!["DownEncoderBlock2D".into()]
}
fn d_up() -> Vec<String> {
    vec!["UpDecoderBlock2D".into()]
}
fn d_channels() -> Vec<i64> {
    vec![64]
}
fn d_one() -> i64 {
    1
}
fn d_silu() -> String {
    "silu".into()
}
fn d_latent() -> i64 {
    4
}
fn d_groups() -> i64 {
    32
}
fn d_sample() -> OneOrMany<i64> {
    OneOrMany::One(32)
}
fn d_scaling() -> f64 {
    0.18215
}
fn d_true() -> bool {
    true
}

/// VAE hyper-parameters, one field per diffusers `AutoencoderKL.__init__` argument.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AutoencoderKLConfig {
    /// `in_channels`: image channels in (3).
    #[serde(default = "d_three")]
    pub in_channels: i64,
    /// `out_channels`: image channels out (3).
    #[serde(default = "d_three")]
    pub out_channels: i64,
    /// `down_block_types`: only `DownEncoderBlock2D` (the SD VAE's).
    #[serde(default = "d_down")]
    pub down_block_types: Vec<String>,
    /// `up_block_types`: only `UpDecoderBlock2D`.
    #[serde(default = "d_up")]
    pub up_block_types: Vec<String>,
    /// `block_out_channels`: channels per level (SD: `[128, 256, 512, 512]`).
    #[serde(default = "d_channels")]
    pub block_out_channels: Vec<i64>,
    /// `layers_per_block`: resnets per encoder block (decoder blocks have one more).
    #[serde(default = "d_one")]
    pub layers_per_block: i64,
    /// `act_fn`: resnet activation (`silu`).
    #[serde(default = "d_silu")]
    pub act_fn: String,
    /// `latent_channels`: channels of the latent (4 for SD).
    #[serde(default = "d_latent")]
    pub latent_channels: i64,
    /// `norm_num_groups`: GroupNorm groups.
    #[serde(default = "d_groups")]
    pub norm_num_groups: i64,
    /// `sample_size`: image size the VAE was trained at (int or `[h, w]`); informational.
    #[serde(default = "d_sample")]
    pub sample_size: OneOrMany<i64>,
    /// `scaling_factor`: latents are `scaling_factor * z` for the UNet (0.18215 for SD 1.x/2.x);
    /// `decode` does not apply it.
    #[serde(default = "d_scaling")]
    pub scaling_factor: f64,
    /// `shift_factor`: subtracted before scaling by newer VAEs (null for SD).
    #[serde(default)]
    pub shift_factor: Option<f64>,
    /// `force_upcast`: diffusers pipelines decode in float32 when set (informational here).
    #[serde(default = "d_true")]
    pub force_upcast: bool,
    /// `use_quant_conv`: a 1x1 `quant_conv` after the encoder.
    #[serde(default = "d_true")]
    pub use_quant_conv: bool,
    /// `use_post_quant_conv`: a 1x1 `post_quant_conv` before the decoder.
    #[serde(default = "d_true")]
    pub use_post_quant_conv: bool,
    /// `mid_block_add_attention`: the mid blocks have their spatial self-attention.
    #[serde(default = "d_true")]
    pub mid_block_add_attention: bool,
    /// Not a config.json key: which attention tensor names the weight file uses. `load_vae` sets it
    /// by probing the file (`query`/`key`/`value`/`proj_attn` in VAEs saved before diffusers 0.14).
    #[serde(skip)]
    pub attention_names: AttentionNames,
    /// Everything else diffusers writes (`_class_name`, `latents_mean`, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl AutoencoderKLConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            input_err!("cannot read {}: {e}. A VAE folder needs config.json beside diffusion_pytorch_model.safetensors.", path.display())
        })?;
        let cfg: Self = serde_json::from_str(&text).map_err(|e| {
            input_err!("{} is not a diffusers AutoencoderKL config ({e}): compare it with the config.json diffusers writes", path.display())
        })?;
        cfg.validate()
            .map_err(|e| input_err!("{}: {e}", path.display()))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(format!(
                "`down_block_types` ({}), `up_block_types` ({}) and `block_out_channels` ({n}) must have the same non-zero length",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        if let Some(t) = self
            .down_block_types
            .iter()
            .find(|t| *t != "DownEncoderBlock2D")
        {
            return Err(format!(
                "down block type `{t}` is not supported (supported: DownEncoderBlock2D)"
            ));
        }
        if let Some(t) = self
            .up_block_types
            .iter()
            .find(|t| *t != "UpDecoderBlock2D")
        {
            return Err(format!(
                "up block type `{t}` is not supported (supported: UpDecoderBlock2D)"
            ));
        }
        crate::models::unet::activation::DiffusersActivation::parse(&self.act_fn)?;
        for (k, v) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("latent_channels", self.latent_channels),
            ("layers_per_block", self.layers_per_block),
            ("norm_num_groups", self.norm_num_groups),
        ] {
            if v <= 0 {
                return Err(format!("`{k}` must be positive, got {v}"));
            }
        }
        if let Some(c) = self
            .block_out_channels
            .iter()
            .find(|&&c| c <= 0 || c % self.norm_num_groups != 0)
        {
            return Err(format!("`block_out_channels` entry {c} is not a positive multiple of `norm_num_groups` = {}", self.norm_num_groups));
        }
        Ok(())
    }
}
