//! diffusers' VAE `Encoder` and `Decoder`.
use tch::{nn, nn::Module, Tensor};

use super::blocks::{DownEncoderBlock2D, UNetMidBlock2D, UpDecoderBlock2D};
use super::config::AutoencoderKLConfig;
use crate::models::unet::activation::DiffusersActivation;
use crate::models::unet::resnet::{conv2d, group_norm, ResnetBlock2DConfig, TimeEmbeddingNorm};

/// The resnet settings every VAE block shares (eps fixed at 1e-6 by diffusers).
fn resnet_template(c: &AutoencoderKLConfig, act: DiffusersActivation) -> ResnetBlock2DConfig {
    ResnetBlock2DConfig {
        in_channels: 0,
        out_channels: 0,
        temb_channels: None,
        groups: c.norm_num_groups,
        groups_out: None,
        eps: 1e-6,
        non_linearity: act,
        time_embedding_norm: TimeEmbeddingNorm::Default,
        output_scale_factor: 1.0,
    }
}

/// `Encoder`: image -> `2 * latent_channels` moments (mean and log-variance), before `quant_conv`.
#[derive(Debug)]
pub struct Encoder {
    conv_in: nn::Conv2D,
    down_blocks: Vec<DownEncoderBlock2D>,
    mid_block: UNetMidBlock2D,
    conv_norm_out: nn::GroupNorm,
    conv_out: nn::Conv2D,
}

impl Encoder {
    pub fn new(p: nn::Path, c: &AutoencoderKLConfig, act: DiffusersActivation) -> Self {
        let ch = &c.block_out_channels;
        let n = ch.len();
        let r = resnet_template(c, act);
        let down = &p / "down_blocks";
        let down_blocks = (0..n)
            .map(|i| {
                DownEncoderBlock2D::new(
                    &down / i,
                    &r,
                    if i == 0 { ch[0] } else { ch[i - 1] },
                    ch[i],
                    c.layers_per_block,
                    i + 1 < n,
                )
            })
            .collect();
        Self {
            conv_in: conv2d(&p / "conv_in", c.in_channels, ch[0], 3, 1, 1),
            down_blocks,
            mid_block: UNetMidBlock2D::new(
                &p / "mid_block",
                &r,
                ch[n - 1],
                c.mid_block_add_attention,
                c.attention_names,
            ),
            conv_norm_out: group_norm(&p / "conv_norm_out", c.norm_num_groups, ch[n - 1], 1e-6),
            conv_out: conv2d(&p / "conv_out", ch[n - 1], 2 * c.latent_channels, 3, 1, 1),
        }
    }

    /// The kind of the weights.
    pub fn kind(&self) -> tch::Kind {
        self.conv_in.ws.kind()
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let x = self.conv_in.forward(x);
        let x = self.down_blocks.iter().fold(x, |x, b| b.forward(&x));
        let x = self.mid_block.forward(&x);
        // `conv_act` is nn.SiLU() whatever `act_fn` says, in both Encoder and Decoder.
        self.conv_out
            .forward(&self.conv_norm_out.forward(&x).silu())
    }
}

/// `Decoder`: latent (after `post_quant_conv`) -> image in [-1, 1] space.
#[derive(Debug)]
pub struct Decoder {
    conv_in: nn::Conv2D,
    mid_block: UNetMidBlock2D,
    up_blocks: Vec<UpDecoderBlock2D>,
    conv_norm_out: nn::GroupNorm,
    conv_out: nn::Conv2D,
}

impl Decoder {
    pub fn new(p: nn::Path, c: &AutoencoderKLConfig, act: DiffusersActivation) -> Self {
        let ch = &c.block_out_channels;
        let n = ch.len();
        let r = resnet_template(c, act);
        let up = &p / "up_blocks";
        let mut prev = ch[n - 1];
        let mut up_blocks = vec![];
        for i in 0..n {
            let out = ch[n - 1 - i];
            up_blocks.push(UpDecoderBlock2D::new(
                &up / i,
                &r,
                prev,
                out,
                c.layers_per_block + 1,
                i + 1 < n,
            ));
            prev = out;
        }
        Self {
            conv_in: conv2d(&p / "conv_in", c.latent_channels, ch[n - 1], 3, 1, 1),
            mid_block: UNetMidBlock2D::new(
                &p / "mid_block",
                &r,
                ch[n - 1],
                c.mid_block_add_attention,
                c.attention_names,
            ),
            up_blocks,
            conv_norm_out: group_norm(&p / "conv_norm_out", c.norm_num_groups, ch[0], 1e-6),
            conv_out: conv2d(&p / "conv_out", ch[0], c.out_channels, 3, 1, 1),
        }
    }

    pub fn forward(&self, z: &Tensor) -> Tensor {
        let x = self.mid_block.forward(&self.conv_in.forward(z));
        let x = self.up_blocks.iter().fold(x, |x, b| b.forward(&x));
        self.conv_out
            .forward(&self.conv_norm_out.forward(&x).silu())
    }
}
