//! The VAE's blocks: `DownEncoderBlock2D`, `UpDecoderBlock2D` and `UNetMidBlock2D` (resnets around a
//! single-head spatial self-attention).
use tch::{nn, Tensor};

use crate::models::unet::attention::{Attention, AttentionConfig, AttentionNames};
use crate::models::unet::resnet::{Downsample2D, ResnetBlock2D, ResnetBlock2DConfig, Upsample2D};

/// The VAE's resnet settings (eps 1e-6, no time embedding).
pub(crate) fn resnet_config(
    c: &ResnetBlock2DConfig,
    in_channels: i64,
    out_channels: i64,
) -> ResnetBlock2DConfig {
    ResnetBlock2DConfig {
        in_channels,
        out_channels,
        ..c.clone()
    }
}

/// `DownEncoderBlock2D`: resnets, then a stride-2 conv (padding 0, padded right/bottom).
#[derive(Debug)]
pub struct DownEncoderBlock2D {
    resnets: Vec<ResnetBlock2D>,
    downsamplers: Option<Downsample2D>,
}

impl DownEncoderBlock2D {
    pub fn new(
        p: nn::Path,
        r: &ResnetBlock2DConfig,
        in_channels: i64,
        out_channels: i64,
        num_layers: i64,
        add_downsample: bool,
    ) -> Self {
        let resnets = (0..num_layers)
            .map(|i| {
                ResnetBlock2D::new(
                    &p / "resnets" / i,
                    &resnet_config(
                        r,
                        if i == 0 { in_channels } else { out_channels },
                        out_channels,
                    ),
                )
            })
            .collect();
        let downsamplers = add_downsample
            .then(|| Downsample2D::new(&p / "downsamplers" / 0, out_channels, out_channels, 0));
        Self {
            resnets,
            downsamplers,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let x = self
            .resnets
            .iter()
            .fold(x.shallow_clone(), |x, r| r.forward(&x, None));
        match &self.downsamplers {
            Some(d) => d.forward(&x),
            None => x,
        }
    }
}

/// `UpDecoderBlock2D`: resnets, then nearest x2 + conv.
#[derive(Debug)]
pub struct UpDecoderBlock2D {
    resnets: Vec<ResnetBlock2D>,
    upsamplers: Option<Upsample2D>,
}

impl UpDecoderBlock2D {
    pub fn new(
        p: nn::Path,
        r: &ResnetBlock2DConfig,
        in_channels: i64,
        out_channels: i64,
        num_layers: i64,
        add_upsample: bool,
    ) -> Self {
        let resnets = (0..num_layers)
            .map(|i| {
                ResnetBlock2D::new(
                    &p / "resnets" / i,
                    &resnet_config(
                        r,
                        if i == 0 { in_channels } else { out_channels },
                        out_channels,
                    ),
                )
            })
            .collect();
        let upsamplers = add_upsample
            .then(|| Upsample2D::new(&p / "upsamplers" / 0, out_channels, out_channels));
        Self {
            resnets,
            upsamplers,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let x = self
            .resnets
            .iter()
            .fold(x.shallow_clone(), |x, r| r.forward(&x, None));
        match &self.upsamplers {
            Some(u) => u.forward(&x, None),
            None => x,
        }
    }
}

/// `UNetMidBlock2D` as the VAE builds it: resnet, then (attention, resnet). The attention is diffusers'
/// `Attention` with one head over all channels, an input GroupNorm, a residual connection and
/// `upcast_softmax=True` (float32 attention in f16/bf16).
#[derive(Debug)]
pub struct UNetMidBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Option<Attention>>,
}

impl UNetMidBlock2D {
    pub fn new(
        p: nn::Path,
        r: &ResnetBlock2DConfig,
        channels: i64,
        add_attention: bool,
        names: AttentionNames,
    ) -> Self {
        let rc = resnet_config(r, channels, channels);
        let attn = AttentionConfig {
            bias: true,
            upcast: true,
            group_norm: Some((r.groups, r.eps)),
            residual_connection: true,
            names,
            ..AttentionConfig::new(channels, 1, channels)
        };
        Self {
            resnets: (0..2)
                .map(|i| ResnetBlock2D::new(&p / "resnets" / i, &rc))
                .collect(),
            attentions: vec![add_attention.then(|| Attention::new(&p / "attentions" / 0, &attn))],
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut x = self.resnets[0].forward(x, None);
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            if let Some(a) = attn {
                x = a.forward(&x, None);
            }
            x = resnet.forward(&x, None);
        }
        x
    }
}
