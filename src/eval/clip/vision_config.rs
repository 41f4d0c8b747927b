//! `CLIPVisionConfig` as transformers writes it: standalone (`CLIPVisionModelWithProjection`,
//! `model_type: clip_vision_model`) or nested as `vision_config` in a full `CLIPConfig` (`CLIPModel`,
//! diffusers' `StableDiffusionSafetyChecker`).
use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::error::Result;
use crate::input_err;

fn d_hidden() -> i64 {
    768
}
fn d_inter() -> i64 {
    3072
}
fn d_proj() -> i64 {
    512
}
fn d_layers() -> i64 {
    12
}
fn d_heads() -> i64 {
    12
}
fn d_channels() -> i64 {
    3
}
fn d_image() -> i64 {
    224
}
fn d_patch() -> i64 {
    32
}
fn d_act() -> String {
    "quick_gelu".into()
}
fn d_eps() -> f64 {
    1e-5
}

/// Vision tower hyper-parameters. Defaults are transformers' `CLIPVisionConfig` defaults (ViT-B/32).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CLIPVisionConfig {
    /// `hidden_size`: width of the residual stream (1024 for ViT-L/14).
    #[serde(default = "d_hidden")]
    pub hidden_size: i64,
    /// `intermediate_size`: width of the MLP's hidden layer.
    #[serde(default = "d_inter")]
    pub intermediate_size: i64,
    /// `projection_dim`: output width of `visual_projection`. In a full `CLIPConfig` the top-level
    /// `projection_dim` is the one `CLIPModel` uses and overrides this (see [`CLIPVisionConfig::load`]).
    #[serde(default = "d_proj")]
    pub projection_dim: i64,
    /// `num_hidden_layers`: transformer blocks.
    #[serde(default = "d_layers")]
    pub num_hidden_layers: i64,
    /// `num_attention_heads`: heads per block.
    #[serde(default = "d_heads")]
    pub num_attention_heads: i64,
    /// `num_channels`: input channels of `patch_embedding` (3).
    #[serde(default = "d_channels")]
    pub num_channels: i64,
    /// `image_size`: side of the square input the position embeddings were trained for (224, 336).
    #[serde(default = "d_image")]
    pub image_size: i64,
    /// `patch_size`: side (and stride) of the patch convolution (14 for ViT-L/14).
    #[serde(default = "d_patch")]
    pub patch_size: i64,
    /// `hidden_act`: `quick_gelu` (OpenAI CLIP) or `gelu` (OpenCLIP).
    #[serde(default = "d_act")]
    pub hidden_act: String,
    /// `layer_norm_eps`.
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    /// Everything else transformers writes (`architectures`, `model_type`, dropout, init ranges, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl CLIPVisionConfig {
    /// Read a `config.json`: a `CLIPVisionConfig`, or a full `CLIPConfig` whose `vision_config` (older
    /// files: `vision_config_dict`) holds the tower, with the top-level `projection_dim` taking
    /// precedence as in `CLIPModel` / `StableDiffusionSafetyChecker`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            input_err!("cannot read {}: {e}. A CLIP vision model folder needs config.json beside model.safetensors.", path.display())
        })?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            input_err!(
                "{} is not valid JSON ({e}): fix or rewrite the file",
                path.display()
            )
        })?;
        Self::from_json(&v).map_err(|e| input_err!("{}: {e}", path.display()))
    }

    /// As [`CLIPVisionConfig::load`] on an already parsed JSON value.
    pub fn from_json(v: &serde_json::Value) -> std::result::Result<Self, String> {
        let nested = v
            .get("vision_config")
            .filter(|x| x.is_object())
            .or_else(|| v.get("vision_config_dict").filter(|x| x.is_object()));
        let mut cfg: Self = match nested {
            Some(vc) => serde_json::from_value(vc.clone()),
            None => {
                if v.get("model_type").and_then(|m| m.as_str()).is_some_and(|m| m == "clip_text_model") || v.get("vocab_size").is_some() {
                    return Err("this is a CLIP text config, not a vision one: give a CLIPVisionModelWithProjection or full CLIPModel folder".into());
                }
                serde_json::from_value(v.clone())
            }
        }
        .map_err(|e| format!("not a CLIP vision config ({e}): compare it with a transformers CLIPVisionConfig"))?;
        if nested.is_some() {
            if let Some(p) = v.get("projection_dim").and_then(|p| p.as_i64()) {
                cfg.projection_dim = p;
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        let pos = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("projection_dim", self.projection_dim),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_channels", self.num_channels),
            ("image_size", self.image_size),
            ("patch_size", self.patch_size),
        ];
        crate::models::clip_layers::check_sizes(&pos, self.hidden_size, self.num_attention_heads)?;
        if self.image_size % self.patch_size != 0 {
            return Err(format!(
                "`image_size` {} is not a multiple of `patch_size` {}",
                self.image_size, self.patch_size
            ));
        }
        crate::models::activation::Activation::parse(&self.hidden_act)?;
        Ok(())
    }

    /// Patches per side.
    pub fn grid(&self) -> i64 {
        self.image_size / self.patch_size
    }
}
