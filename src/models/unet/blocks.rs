//! diffusers' UNet blocks: `CrossAttnDownBlock2D`, `DownBlock2D`, `UNetMidBlock2DCrossAttn`,
//! `CrossAttnUpBlock2D`, `UpBlock2D`.
use tch::{nn, Tensor};

use super::attention::{Transformer2DModel, TransformerConfig};
use super::resnet::{Downsample2D, ResnetBlock2D, ResnetBlock2DConfig, Upsample2D};

/// What every block of one UNet shares, plus the per-block attention settings.
#[derive(Debug, Clone)]
pub struct BlockConfig {
    /// Template for the block's resnets (`in_channels`/`out_channels` are set per resnet).
    pub resnet: ResnetBlock2DConfig,
    /// `None`: a block without attention (`DownBlock2D`, `UpBlock2D`).
    pub attention: Option<TransformerConfig>,
    pub transformer_layers: i64,
    pub use_linear_projection: bool,
}

impl BlockConfig {
    fn resnet(&self, in_channels: i64, out_channels: i64) -> ResnetBlock2DConfig {
        ResnetBlock2DConfig {
            in_channels,
            out_channels,
            ..self.resnet.clone()
        }
    }

    /// The block's `Transformer2DModel` over `channels` (heads fixed, head width = channels / heads).
    fn transformer(&self, p: nn::Path, channels: i64) -> Option<Transformer2DModel> {
        self.attention.as_ref().map(|a| {
            let t = TransformerConfig {
                dim_head: channels / a.heads,
                ..a.clone()
            };
            Transformer2DModel::new(
                p,
                channels,
                self.transformer_layers,
                self.resnet.groups,
                self.use_linear_projection,
                &t,
            )
        })
    }
}

/// `CrossAttnDownBlock2D` (with attention) or `DownBlock2D` (without): resnets, each followed by a
/// transformer when there is one, then an optional stride-2 downsampler.
#[derive(Debug)]
pub struct DownBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    downsamplers: Option<Downsample2D>,
}

impl DownBlock2D {
    pub fn new(
        p: nn::Path,
        c: &BlockConfig,
        in_channels: i64,
        out_channels: i64,
        num_layers: i64,
        add_downsample: bool,
        downsample_padding: i64,
    ) -> Self {
        let mut resnets = vec![];
        let mut attentions = vec![];
        for i in 0..num_layers {
            let ic = if i == 0 { in_channels } else { out_channels };
            resnets.push(ResnetBlock2D::new(
                &p / "resnets" / i,
                &c.resnet(ic, out_channels),
            ));
            attentions.extend(c.transformer(&p / "attentions" / i, out_channels));
        }
        let downsamplers = add_downsample.then(|| {
            Downsample2D::new(
                &p / "downsamplers" / 0,
                out_channels,
                out_channels,
                downsample_padding,
            )
        });
        Self {
            resnets,
            attentions,
            downsamplers,
        }
    }

    /// Returns the output and the skip connections it adds (one per resnet, plus the downsampled one).
    pub fn forward(
        &self,
        x: &Tensor,
        temb: Option<&Tensor>,
        context: &Tensor,
    ) -> (Tensor, Vec<Tensor>) {
        let mut x = x.shallow_clone();
        let mut skips = vec![];
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(&x, temb);
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(&x, context);
            }
            skips.push(x.shallow_clone());
        }
        if let Some(down) = &self.downsamplers {
            x = down.forward(&x);
            skips.push(x.shallow_clone());
        }
        (x, skips)
    }
}

/// `CrossAttnUpBlock2D` (with attention) or `UpBlock2D`: each resnet reads the previous output
/// concatenated with one skip connection (last in, first out).
#[derive(Debug)]
pub struct UpBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsamplers: Option<Upsample2D>,
}

impl UpBlock2D {
    pub fn new(
        p: nn::Path,
        c: &BlockConfig,
        in_channels: i64,
        prev_output_channel: i64,
        out_channels: i64,
        num_layers: i64,
        add_upsample: bool,
    ) -> Self {
        let mut resnets = vec![];
        let mut attentions = vec![];
        for i in 0..num_layers {
            let skip = if i == num_layers - 1 {
                in_channels
            } else {
                out_channels
            };
            let ic = if i == 0 {
                prev_output_channel
            } else {
                out_channels
            };
            resnets.push(ResnetBlock2D::new(
                &p / "resnets" / i,
                &c.resnet(ic + skip, out_channels),
            ));
            attentions.extend(c.transformer(&p / "attentions" / i, out_channels));
        }
        let upsamplers = add_upsample
            .then(|| Upsample2D::new(&p / "upsamplers" / 0, out_channels, out_channels));
        Self {
            resnets,
            attentions,
            upsamplers,
        }
    }

    /// How many skip connections this block consumes.
    pub fn num_skips(&self) -> usize {
        self.resnets.len()
    }

    /// `skips`: this block's skip connections in the order the down path produced them.
    pub fn forward(
        &self,
        x: &Tensor,
        skips: &[Tensor],
        temb: Option<&Tensor>,
        context: &Tensor,
        upsample_size: Option<[i64; 2]>,
    ) -> Tensor {
        let mut x = x.shallow_clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = &skips[skips.len() - 1 - i];
            x = resnet.forward(&Tensor::cat(&[&x, skip], 1), temb);
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(&x, context);
            }
        }
        match &self.upsamplers {
            Some(up) => up.forward(&x, upsample_size),
            None => x,
        }
    }
}

/// `UNetMidBlock2DCrossAttn` (one resnet, then transformer + resnet pairs), or with no attention
/// diffusers' `UNetMidBlock2D(num_layers=0, add_attention=False)`, a single resnet, which is what
/// `mid_block_type: "UNetMidBlock2D"` builds in a UNet2DConditionModel.
#[derive(Debug)]
pub struct UNetMidBlock2DCrossAttn {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
}

impl UNetMidBlock2DCrossAttn {
    pub fn new(p: nn::Path, c: &BlockConfig, channels: i64) -> Self {
        let mut resnets = vec![ResnetBlock2D::new(
            &p / "resnets" / 0,
            &c.resnet(channels, channels),
        )];
        let attentions: Vec<_> = c
            .transformer(&p / "attentions" / 0, channels)
            .into_iter()
            .collect();
        if !attentions.is_empty() {
            resnets.push(ResnetBlock2D::new(
                &p / "resnets" / 1,
                &c.resnet(channels, channels),
            ));
        }
        Self {
            resnets,
            attentions,
        }
    }

    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>, context: &Tensor) -> Tensor {
        let mut x = self.resnets[0].forward(x, temb);
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            x = resnet.forward(&attn.forward(&x, context), temb);
        }
        x
    }
}

/// diffusers' `CrossAttnDownBlock2D`: a [`DownBlock2D`] built with attention.
pub type CrossAttnDownBlock2D = DownBlock2D;
/// diffusers' `CrossAttnUpBlock2D`: an [`UpBlock2D`] built with attention.
pub type CrossAttnUpBlock2D = UpBlock2D;
