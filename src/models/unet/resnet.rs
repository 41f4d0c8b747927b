//! diffusers' `ResnetBlock2D`, `Downsample2D` and `Upsample2D` (the conv variants SD uses).
use tch::{nn, nn::Module, Tensor};

use super::activation::DiffusersActivation;
use super::layers::linear;
pub(crate) use super::layers::{conv2d, group_norm};

/// How a resnet mixes in the time embedding (`time_embedding_norm`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeEmbeddingNorm {
    /// Add the projected embedding before `norm2`.
    Default,
    /// Project to `2 * out_channels`, then `norm2(x) * (1 + scale) + shift`.
    ScaleShift,
}

/// Constructor arguments of `ResnetBlock2D` (diffusers' names).
#[derive(Debug, Clone)]
pub struct ResnetBlock2DConfig {
    pub in_channels: i64,
    pub out_channels: i64,
    /// `None`: no `time_emb_proj` (the VAE's resnets).
    pub temb_channels: Option<i64>,
    pub groups: i64,
    pub groups_out: Option<i64>,
    pub eps: f64,
    pub non_linearity: DiffusersActivation,
    pub time_embedding_norm: TimeEmbeddingNorm,
    pub output_scale_factor: f64,
}

/// `ResnetBlock2D`: GroupNorm-act-conv twice, time embedding in between, 1x1 shortcut when the width changes.
#[derive(Debug)]
pub struct ResnetBlock2D {
    norm1: nn::GroupNorm,
    conv1: nn::Conv2D,
    time_emb_proj: Option<nn::Linear>,
    norm2: nn::GroupNorm,
    conv2: nn::Conv2D,
    conv_shortcut: Option<nn::Conv2D>,
    act: DiffusersActivation,
    time_embedding_norm: TimeEmbeddingNorm,
    output_scale_factor: f64,
}

impl ResnetBlock2D {
    pub fn new(p: nn::Path, c: &ResnetBlock2DConfig) -> Self {
        let (i, o) = (c.in_channels, c.out_channels);
        let proj_out = match c.time_embedding_norm {
            TimeEmbeddingNorm::Default => o,
            TimeEmbeddingNorm::ScaleShift => 2 * o,
        };
        Self {
            norm1: group_norm(&p / "norm1", c.groups, i, c.eps),
            conv1: conv2d(&p / "conv1", i, o, 3, 1, 1),
            time_emb_proj: c
                .temb_channels
                .map(|t| linear(&p / "time_emb_proj", t, proj_out, true)),
            norm2: group_norm(&p / "norm2", c.groups_out.unwrap_or(c.groups), o, c.eps),
            conv2: conv2d(&p / "conv2", o, o, 3, 1, 1),
            conv_shortcut: (i != o).then(|| conv2d(&p / "conv_shortcut", i, o, 1, 1, 0)),
            act: c.non_linearity,
            time_embedding_norm: c.time_embedding_norm,
            output_scale_factor: c.output_scale_factor,
        }
    }

    pub fn forward(&self, input: &Tensor, temb: Option<&Tensor>) -> Tensor {
        let x = self
            .conv1
            .forward(&self.act.apply(&self.norm1.forward(input)));
        let temb = match (&self.time_emb_proj, temb) {
            (Some(proj), Some(t)) => {
                Some(proj.forward(&self.act.apply(t)).unsqueeze(-1).unsqueeze(-1))
            }
            _ => None,
        };
        let x = match (self.time_embedding_norm, temb) {
            (TimeEmbeddingNorm::Default, Some(t)) => self.norm2.forward(&(x + t)),
            (TimeEmbeddingNorm::ScaleShift, Some(t)) => {
                let st = t.chunk(2, 1);
                self.norm2.forward(&x) * (&st[0] + 1.0) + &st[1]
            }
            (_, None) => self.norm2.forward(&x),
        };
        let x = self.conv2.forward(&self.act.apply(&x));
        let shortcut = match &self.conv_shortcut {
            Some(c) => c.forward(input),
            None => input.shallow_clone(),
        };
        let out = shortcut + x;
        if self.output_scale_factor == 1.0 {
            out
        } else {
            out / self.output_scale_factor
        }
    }
}

/// `Downsample2D` with a stride-2 3x3 conv (`downsamplers.0.conv`). `padding == 0` (the VAE) pads
/// right/bottom by one first, as diffusers does.
#[derive(Debug)]
pub struct Downsample2D {
    conv: nn::Conv2D,
    pad_right_bottom: bool,
}

impl Downsample2D {
    pub fn new(p: nn::Path, channels: i64, out_channels: i64, padding: i64) -> Self {
        Self {
            conv: conv2d(&p / "conv", channels, out_channels, 3, 2, padding),
            pad_right_bottom: padding == 0,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        if self.pad_right_bottom {
            self.conv.forward(&x.constant_pad_nd([0, 1, 0, 1]))
        } else {
            self.conv.forward(x)
        }
    }
}

/// `Upsample2D`: nearest-neighbour x2 (or to `output_size`) followed by a 3x3 conv (`upsamplers.0.conv`).
#[derive(Debug)]
pub struct Upsample2D {
    conv: nn::Conv2D,
}

impl Upsample2D {
    pub fn new(p: nn::Path, channels: i64, out_channels: i64) -> Self {
        Self {
            conv: conv2d(&p / "conv", channels, out_channels, 3, 1, 1),
        }
    }

    /// `output_size`: the skip connection's [H, W] when the input size is not a multiple of the
    /// UNet's total downsampling (diffusers' `upsample_size`).
    pub fn forward(&self, x: &Tensor, output_size: Option<[i64; 2]>) -> Tensor {
        let up = match output_size {
            Some(size) => x.upsample_nearest2d(size, None, None),
            None => {
                let s = x.size();
                x.upsample_nearest2d([s[2] * 2, s[3] * 2], Some(2.0), Some(2.0))
            }
        };
        self.conv.forward(&up)
    }
}
