//! `CLIPTextConfig` as transformers writes it in a text encoder's `config.json`.
use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::error::Result;
use crate::input_err;

fn d_vocab() -> i64 {
    49408
}
fn d_hidden() -> i64 {
    512
}
fn d_inter() -> i64 {
    2048
}
fn d_proj() -> i64 {
    512
}
fn d_layers() -> i64 {
    12
}
fn d_heads() -> i64 {
    8
}
fn d_maxpos() -> i64 {
    77
}
fn d_act() -> String {
    "quick_gelu".into()
}
fn d_eps() -> f64 {
    1e-5
}
fn d_pad() -> i64 {
    1
}
fn d_bos() -> i64 {
    49406
}
fn d_eos() -> i64 {
    49407
}

/// Text tower hyper-parameters. Defaults are transformers' `CLIPTextConfig` defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CLIPTextConfig {
    /// `vocab_size`: rows of `token_embedding`.
    #[serde(default = "d_vocab")]
    pub vocab_size: i64,
    /// `hidden_size`: width of the residual stream (768 for ViT-L/14, 1024 for OpenCLIP ViT-H/14).
    #[serde(default = "d_hidden")]
    pub hidden_size: i64,
    /// `intermediate_size`: width of the MLP's hidden layer.
    #[serde(default = "d_inter")]
    pub intermediate_size: i64,
    /// `projection_dim`: output width of `text_projection` (only `CLIPTextModelWithProjection`).
    #[serde(default = "d_proj")]
    pub projection_dim: i64,
    /// `num_hidden_layers`: transformer blocks.
    #[serde(default = "d_layers")]
    pub num_hidden_layers: i64,
    /// `num_attention_heads`: heads per block.
    #[serde(default = "d_heads")]
    pub num_attention_heads: i64,
    /// `max_position_embeddings`: context length (77).
    #[serde(default = "d_maxpos")]
    pub max_position_embeddings: i64,
    /// `hidden_act`: `quick_gelu` (OpenAI CLIP) or `gelu` (OpenCLIP).
    #[serde(default = "d_act")]
    pub hidden_act: String,
    /// `layer_norm_eps`.
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    /// `pad_token_id` (informational; padding comes from the tokenizer).
    #[serde(default = "d_pad")]
    pub pad_token_id: i64,
    /// `bos_token_id`.
    #[serde(default = "d_bos")]
    pub bos_token_id: i64,
    /// `eos_token_id`: the pooling position is the first `eos_token_id` in the sequence; the legacy
    /// value 2 (configs written before transformers 4.31) means "argmax of the input ids".
    #[serde(default = "d_eos")]
    pub eos_token_id: i64,
    /// Everything else transformers writes (`architectures`, `torch_dtype`, `model_type`, ...), kept so a
    /// saved config round-trips.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl CLIPTextConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            input_err!("cannot read {}: {e}. A text encoder folder needs config.json beside model.safetensors.", path.display())
        })?;
        let mut v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            input_err!(
                "{} is not valid JSON ({e}): fix or rewrite the file",
                path.display()
            )
        })?;
        // A full CLIPConfig nests the text tower under `text_config`.
        if let Some(mut tc) = v.get("text_config").cloned() {
            // In a full CLIPConfig the projection width is the top-level `projection_dim`.
            if let (Some(p), Some(obj)) = (v.get("projection_dim").cloned(), tc.as_object_mut()) {
                obj.insert("projection_dim".into(), p);
            }
            v = tc;
        }
        let cfg: Self = serde_json::from_value(v).map_err(|e| {
            input_err!(
                "{} is not a CLIP text config ({e}): compare it with a transformers CLIPTextConfig",
                path.display()
            )
        })?;
        cfg.validate()
            .map_err(|e| input_err!("{}: {e}", path.display()))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        let pos = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        crate::models::clip_layers::check_sizes(&pos, self.hidden_size, self.num_attention_heads)?;
        crate::models::activation::Activation::parse(&self.hidden_act)?;
        Ok(())
    }

    /// The encoder layer sizes.
    pub fn layer_dims(&self) -> crate::models::clip_layers::LayerDims {
        crate::models::clip_layers::LayerDims {
            hidden: self.hidden_size,
            heads: self.num_attention_heads,
            intermediate: self.intermediate_size,
            act: crate::models::activation::Activation::parse(&self.hidden_act)
                .expect("validated config"),
            eps: self.layer_norm_eps,
        }
    }

    /// The config transformers would write for this model, with `architectures` and dtype set.
    pub fn to_saved_json(&self, architecture: &str, dtype: &str) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("config serialises");
        let m = v.as_object_mut().unwrap();
        m.insert("architectures".into(), serde_json::json!([architecture]));
        m.insert("model_type".into(), serde_json::json!("clip_text_model"));
        m.insert("torch_dtype".into(), serde_json::json!(dtype));
        m.remove("dtype");
        v
    }

    /// Named architectures of `clipdoor init-encoder`.
    pub fn preset(arch: &str) -> Option<Self> {
        // The real SD configs (converted from OpenAI/OpenCLIP) carry the legacy ids bos 0 / eos 2 / pad 1,
        // so pooling uses the argmax rule; `tiny` uses the modern ids to exercise the other rule.
        let base = |hidden, layers, heads, inter, act: &str, proj, legacy: bool| Self {
            vocab_size: 49408,
            hidden_size: hidden,
            intermediate_size: inter,
            projection_dim: proj,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            max_position_embeddings: 77,
            hidden_act: act.into(),
            layer_norm_eps: 1e-5,
            pad_token_id: 1,
            bos_token_id: if legacy { 0 } else { 49406 },
            eos_token_id: if legacy { 2 } else { 49407 },
            extra: Default::default(),
        };
        match arch {
            // SD 1.x: openai/clip-vit-large-patch14 text tower.
            "sd1" => Some(base(768, 12, 12, 3072, "quick_gelu", 768, true)),
            // SD 2.x: OpenCLIP ViT-H/14 text tower (the last of 24 blocks is dropped by SD 2).
            "sd2" => Some(base(1024, 23, 16, 4096, "gelu", 1024, true)),
            // Tiny: the real structure and vocabulary at a size tests and smoke runs can afford.
            "tiny" => Some(base(64, 2, 4, 128, "quick_gelu", 64, false)),
            _ => None,
        }
    }
}
