//! `UNet2DConditionModel`'s `config.json` as diffusers writes it. Defaults are diffusers' constructor
//! defaults; keys this implementation does not read are kept in `extra` (and ignored).
use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::error::Result;
use crate::input_err;

/// A config value that is either one value for every block or one value per block
/// (diffusers writes both forms, e.g. `attention_head_dim: 8` or `[5, 10, 20, 20]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone + std::fmt::Debug> OneOrMany<T> {
    /// One value per block; `key` names the config key in the error.
    pub fn per_block(&self, blocks: usize, key: &str) -> std::result::Result<Vec<T>, String> {
        match self {
            Self::One(v) => Ok(vec![v.clone(); blocks]),
            Self::Many(v) if v.len() == blocks => Ok(v.clone()),
            Self::Many(v) => Err(format!(
                "`{key}` has {} entries ({v:?}) but there are {blocks} blocks: give one value, or one per entry of `down_block_types`",
                v.len()
            )),
        }
    }
}

fn d_in() -> i64 {
    4
}
fn d_out() -> i64 {
    4
}
fn d_true() -> bool {
    true
}
fn d_down() -> Vec<String> {
    [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn d_mid() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn d_up() -> Vec<String> {
    [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn d_only_cross() -> OneOrMany<bool> {
    OneOrMany::One(false)
}
fn d_channels() -> Vec<i64> {
    vec![320, 640, 1280, 1280]
}
fn d_layers() -> OneOrMany<i64> {
    OneOrMany::One(2)
}
fn d_one() -> i64 {
    1
}
fn d_one_f() -> f64 {
    1.0
}
fn d_silu() -> String {
    "silu".into()
}
fn d_groups() -> Option<i64> {
    Some(32)
}
fn d_eps() -> f64 {
    1e-5
}
fn d_cross() -> OneOrMany<i64> {
    OneOrMany::One(1280)
}
fn d_tlayers() -> OneOrMany<i64> {
    OneOrMany::One(1)
}
fn d_addition_heads() -> i64 {
    64
}
fn d_heads() -> OneOrMany<i64> {
    OneOrMany::One(8)
}
fn d_default() -> String {
    "default".into()
}
fn d_positional() -> String {
    "positional".into()
}
fn d_kernel() -> i64 {
    3
}

/// UNet hyper-parameters, one field per diffusers `UNet2DConditionModel.__init__` argument it uses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UNet2DConditionConfig {
    /// `sample_size`: latent height/width the model was trained at (an int or `[h, w]`); informational.
    #[serde(default)]
    pub sample_size: Option<OneOrMany<i64>>,
    /// `in_channels`: latent channels in (4 for SD; 9 for inpainting UNets).
    #[serde(default = "d_in")]
    pub in_channels: i64,
    /// `out_channels`: channels of the prediction.
    #[serde(default = "d_out")]
    pub out_channels: i64,
    /// `center_input_sample`: feed `2 * sample - 1` instead of `sample`.
    #[serde(default)]
    pub center_input_sample: bool,
    /// `flip_sin_to_cos`: timestep embedding order `cos, sin` (true for SD) instead of `sin, cos`.
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    /// `freq_shift`: `downscale_freq_shift` of the sinusoidal timestep embedding (0 for SD).
    #[serde(default)]
    pub freq_shift: f64,
    /// `down_block_types`: `CrossAttnDownBlock2D` or `DownBlock2D` per level.
    #[serde(default = "d_down")]
    pub down_block_types: Vec<String>,
    /// `mid_block_type`: `UNetMidBlock2DCrossAttn`, `UNetMidBlock2D` or null (no mid block).
    #[serde(default = "d_mid")]
    pub mid_block_type: Option<String>,
    /// `up_block_types`: `CrossAttnUpBlock2D` or `UpBlock2D` per level (deepest first).
    #[serde(default = "d_up")]
    pub up_block_types: Vec<String>,
    /// `only_cross_attention`: per down block, the first attention of each transformer block also
    /// attends to the encoder states (no self-attention).
    #[serde(default = "d_only_cross")]
    pub only_cross_attention: OneOrMany<bool>,
    /// `block_out_channels`: channels of each level.
    #[serde(default = "d_channels")]
    pub block_out_channels: Vec<i64>,
    /// `layers_per_block`: resnets per down block (up blocks have one more).
    #[serde(default = "d_layers")]
    pub layers_per_block: OneOrMany<i64>,
    /// `downsample_padding`: padding of the stride-2 downsampling convolutions.
    #[serde(default = "d_one")]
    pub downsample_padding: i64,
    /// `mid_block_scale_factor`: the mid block's resnets divide their output by this.
    #[serde(default = "d_one_f")]
    pub mid_block_scale_factor: f64,
    /// `act_fn`: activation of resnets and the time embedding (`silu`, `swish`, `mish`, `gelu`, `relu`).
    #[serde(default = "d_silu")]
    pub act_fn: String,
    /// `norm_num_groups`: GroupNorm groups everywhere (null is not supported by these block types).
    #[serde(default = "d_groups")]
    pub norm_num_groups: Option<i64>,
    /// `norm_eps`: epsilon of the resnets' GroupNorms and of `conv_norm_out`.
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    /// `cross_attention_dim`: width of the text encoder states the cross-attentions read
    /// (768 for SD 1.x, 1024 for SD 2.x); one value or one per down block.
    #[serde(default = "d_cross")]
    pub cross_attention_dim: OneOrMany<i64>,
    /// `transformer_layers_per_block`: `BasicTransformerBlock`s in each `Transformer2DModel`.
    #[serde(default = "d_tlayers")]
    pub transformer_layers_per_block: OneOrMany<i64>,
    /// `attention_head_dim`: despite the name, the number of attention heads per block (diffusers'
    /// historical naming: SD 1.x writes 8, SD 2.x `[5, 10, 20, 20]`); head width = channels / heads.
    #[serde(default = "d_heads")]
    pub attention_head_dim: OneOrMany<i64>,
    /// `num_attention_heads`: must be null; diffusers rejects it too.
    #[serde(default)]
    pub num_attention_heads: Option<serde_json::Value>,
    /// `dual_cross_attention`: not supported (must be false).
    #[serde(default)]
    pub dual_cross_attention: bool,
    /// `use_linear_projection`: `proj_in`/`proj_out` of the transformers are Linear (SD 2.x) instead
    /// of 1x1 convolutions (SD 1.x).
    #[serde(default)]
    pub use_linear_projection: bool,
    /// `class_embed_type`: not supported (must be null).
    #[serde(default)]
    pub class_embed_type: Option<String>,
    /// `addition_embed_type`: null, or `text` (a pooled text embedding added to the time embedding,
    /// `TextTimeEmbedding`); SDXL's `text_time` and the others are not supported.
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    /// `addition_embed_type_num_heads`: heads of the `text` embedding's attention pooling (default 64).
    #[serde(default = "d_addition_heads")]
    pub addition_embed_type_num_heads: i64,
    /// `num_class_embeds`: not supported (must be null).
    #[serde(default)]
    pub num_class_embeds: Option<i64>,
    /// `upcast_attention`: compute attention in float32 when the model runs in f16/bf16 (SD 2.1).
    #[serde(default)]
    pub upcast_attention: bool,
    /// `resnet_time_scale_shift`: `default` (add the time embedding) or `scale_shift`.
    #[serde(default = "d_default")]
    pub resnet_time_scale_shift: String,
    /// `time_embedding_type`: only `positional` (sinusoidal) is supported.
    #[serde(default = "d_positional")]
    pub time_embedding_type: String,
    /// `time_embedding_dim`: width of the time embedding (default `4 * block_out_channels[0]`).
    #[serde(default)]
    pub time_embedding_dim: Option<i64>,
    /// `time_embedding_act_fn`: optional activation applied once to the time embedding.
    #[serde(default)]
    pub time_embedding_act_fn: Option<String>,
    /// `timestep_post_act`: optional activation after `time_embedding.linear_2`.
    #[serde(default)]
    pub timestep_post_act: Option<String>,
    /// `time_cond_proj_dim`: not supported (must be null; LCM's guidance embedding).
    #[serde(default)]
    pub time_cond_proj_dim: Option<i64>,
    /// `conv_in_kernel`: kernel size of `conv_in`.
    #[serde(default = "d_kernel")]
    pub conv_in_kernel: i64,
    /// `conv_out_kernel`: kernel size of `conv_out`.
    #[serde(default = "d_kernel")]
    pub conv_out_kernel: i64,
    /// `encoder_hid_dim`: not supported (must be null).
    #[serde(default)]
    pub encoder_hid_dim: Option<i64>,
    /// `attention_type`: only `default` is supported (no GLIGEN).
    #[serde(default = "d_default")]
    pub attention_type: String,
    /// `reverse_transformer_layers_per_block`: not supported (must be null).
    #[serde(default)]
    pub reverse_transformer_layers_per_block: Option<serde_json::Value>,
    /// Everything else diffusers writes (`_class_name`, `dropout`, keys of other block types, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

pub(crate) const CROSS_DOWN: &str = "CrossAttnDownBlock2D";
pub(crate) const PLAIN_DOWN: &str = "DownBlock2D";
pub(crate) const CROSS_UP: &str = "CrossAttnUpBlock2D";
pub(crate) const PLAIN_UP: &str = "UpBlock2D";
pub(crate) const CROSS_MID: &str = "UNetMidBlock2DCrossAttn";
pub(crate) const PLAIN_MID: &str = "UNetMidBlock2D";

/// The per-block lists a config expands to (diffusers' `isinstance(x, int)` broadcasting).
#[derive(Debug, Clone)]
pub(crate) struct PerBlock {
    pub heads: Vec<i64>,
    pub cross_attention_dim: Vec<i64>,
    pub layers: Vec<i64>,
    pub transformer_layers: Vec<i64>,
    pub only_cross_attention: Vec<bool>,
}

impl UNet2DConditionConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            input_err!("cannot read {}: {e}. A UNet folder needs config.json beside diffusion_pytorch_model.safetensors.", path.display())
        })?;
        let cfg: Self = serde_json::from_str(&text).map_err(|e| {
            input_err!("{} is not a diffusers UNet2DConditionModel config ({e}): compare it with the config.json diffusers writes", path.display())
        })?;
        cfg.validate()
            .map_err(|e| input_err!("{}: {e}", path.display()))?;
        Ok(cfg)
    }

    /// The width of the encoder states every cross-attention reads (the text encoder's hidden size).
    /// For a config with several widths, the first block's.
    pub fn text_width(&self) -> i64 {
        match &self.cross_attention_dim {
            OneOrMany::One(d) => *d,
            OneOrMany::Many(v) => v.first().copied().unwrap_or(0),
        }
    }

    pub(crate) fn groups(&self) -> i64 {
        self.norm_num_groups.unwrap_or(32)
    }

    pub(crate) fn time_embed_dim(&self) -> i64 {
        self.time_embedding_dim
            .unwrap_or(self.block_out_channels.first().copied().unwrap_or(0) * 4)
    }

    pub(crate) fn per_block(&self) -> std::result::Result<PerBlock, String> {
        let n = self.down_block_types.len();
        Ok(PerBlock {
            heads: self.attention_head_dim.per_block(n, "attention_head_dim")?,
            cross_attention_dim: self
                .cross_attention_dim
                .per_block(n, "cross_attention_dim")?,
            layers: self.layers_per_block.per_block(n, "layers_per_block")?,
            transformer_layers: self
                .transformer_layers_per_block
                .per_block(n, "transformer_layers_per_block")?,
            only_cross_attention: self
                .only_cross_attention
                .per_block(n, "only_cross_attention")?,
        })
    }

    /// Everything `UNet2DConditionModel::new` relies on; the message names the key and the fix.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let unsupported = [
            (
                "num_attention_heads",
                self.num_attention_heads
                    .as_ref()
                    .is_some_and(|v| !v.is_null()),
            ),
            ("dual_cross_attention", self.dual_cross_attention),
            ("class_embed_type", self.class_embed_type.is_some()),
            (
                "addition_embed_type (other than \"text\")",
                self.addition_embed_type
                    .as_deref()
                    .is_some_and(|t| t != "text"),
            ),
            ("num_class_embeds", self.num_class_embeds.is_some()),
            ("time_cond_proj_dim", self.time_cond_proj_dim.is_some()),
            ("encoder_hid_dim", self.encoder_hid_dim.is_some()),
            (
                "reverse_transformer_layers_per_block",
                self.reverse_transformer_layers_per_block
                    .as_ref()
                    .is_some_and(|v| !v.is_null()),
            ),
            ("norm_num_groups = null", self.norm_num_groups.is_none()),
        ];
        if let Some((key, _)) = unsupported.iter().find(|(_, set)| *set) {
            return Err(format!("`{key}` is set, which clipdoor's UNet2DConditionModel does not support (Stable Diffusion 1.x/2.x UNets leave it unset)"));
        }
        for (key, value, ok) in [
            (
                "time_embedding_type",
                &self.time_embedding_type,
                &["positional"][..],
            ),
            ("attention_type", &self.attention_type, &["default"][..]),
            (
                "resnet_time_scale_shift",
                &self.resnet_time_scale_shift,
                &["default", "scale_shift"][..],
            ),
        ] {
            if !ok.contains(&value.as_str()) {
                return Err(format!(
                    "`{key}` = `{value}` is not supported (supported: {})",
                    ok.join(", ")
                ));
            }
        }
        for act in [
            Some(&self.act_fn),
            self.time_embedding_act_fn.as_ref(),
            self.timestep_post_act.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            super::activation::DiffusersActivation::parse(act)?;
        }
        if self.addition_embed_type.is_some() {
            let (w, h) = (self.text_width(), self.addition_embed_type_num_heads);
            if h <= 0 || w % h != 0 {
                return Err(format!(
                    "`addition_embed_type_num_heads` ({h}) must divide `cross_attention_dim` ({w})"
                ));
            }
        }
        let n = self.down_block_types.len();
        if n == 0 || self.up_block_types.len() != n || self.block_out_channels.len() != n {
            return Err(format!(
                "`down_block_types` ({n}), `up_block_types` ({}) and `block_out_channels` ({}) must have the same non-zero length",
                self.up_block_types.len(),
                self.block_out_channels.len()
            ));
        }
        for t in &self.down_block_types {
            if t != CROSS_DOWN && t != PLAIN_DOWN {
                return Err(format!("down block type `{t}` is not supported (supported: {CROSS_DOWN}, {PLAIN_DOWN})"));
            }
        }
        for t in &self.up_block_types {
            if t != CROSS_UP && t != PLAIN_UP {
                return Err(format!(
                    "up block type `{t}` is not supported (supported: {CROSS_UP}, {PLAIN_UP})"
                ));
            }
        }
        if let Some(t) = &self.mid_block_type {
            if t != CROSS_MID && t != PLAIN_MID {
                return Err(format!("`mid_block_type` `{t}` is not supported (supported: {CROSS_MID}, {PLAIN_MID}, null)"));
            }
        }
        let pb = self.per_block()?;
        let groups = self.groups();
        let positive = [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("norm_num_groups", groups),
            ("conv_in_kernel", self.conv_in_kernel),
            ("conv_out_kernel", self.conv_out_kernel),
            ("time_embedding_dim", self.time_embed_dim()),
        ];
        for (k, v) in positive {
            if v <= 0 {
                return Err(format!("`{k}` must be positive, got {v}"));
            }
        }
        for i in 0..n {
            let c = self.block_out_channels[i];
            let heads = pb.heads[i];
            let checks = [
                (c > 0 && c % groups == 0, format!("`block_out_channels[{i}]` = {c} must be a positive multiple of `norm_num_groups` = {groups}")),
                (heads > 0 && c % heads == 0, format!("`block_out_channels[{i}]` = {c} is not divisible by the {heads} attention heads of `attention_head_dim[{i}]`")),
                (pb.layers[i] > 0, format!("`layers_per_block[{i}]` must be positive")),
                (pb.transformer_layers[i] > 0, format!("`transformer_layers_per_block[{i}]` must be positive")),
                (pb.cross_attention_dim[i] > 0, format!("`cross_attention_dim[{i}]` must be positive")),
            ];
            if let Some((_, msg)) = checks.into_iter().find(|(ok, _)| !ok) {
                return Err(msg);
            }
        }
        Ok(())
    }
}
