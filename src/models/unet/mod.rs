//! diffusers' `UNet2DConditionModel` (Stable Diffusion 1.x/2.x block types), one struct per upstream
//! class, `VarStore` paths equal to the safetensors keys (`down_blocks.0.attentions.0.proj_in.weight`).
pub mod activation;
pub mod attention;
pub mod blocks;
pub mod config;
pub mod embeddings;
pub mod layers;
pub mod resnet;

use std::path::Path;
use tch::{nn, nn::Module, Device, Kind, Tensor};

pub use config::{OneOrMany, UNet2DConditionConfig};

use crate::error::Result;
use crate::input_err;
use crate::io::weights::{load_var_store, SafetensorsFile};
use activation::DiffusersActivation;
use attention::TransformerConfig;
use blocks::{BlockConfig, DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D};
use embeddings::{TextTimeEmbedding, TimestepEmbedding, Timesteps};
use layers::{conv2d, group_norm};
use resnet::{ResnetBlock2DConfig, TimeEmbeddingNorm};

/// `UNet2DConditionModel`: predicts noise (or v) from a noisy latent, a timestep and text encoder states.
#[derive(Debug)]
pub struct UNet2DConditionModel {
    pub config: UNet2DConditionConfig,
    conv_in: nn::Conv2D,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    time_embed_act: Option<DiffusersActivation>,
    /// `add_embedding` of `addition_embed_type: "text"`.
    add_embedding: Option<TextTimeEmbedding>,
    down_blocks: Vec<DownBlock2D>,
    mid_block: Option<UNetMidBlock2DCrossAttn>,
    up_blocks: Vec<UpBlock2D>,
    conv_norm_out: nn::GroupNorm,
    conv_act: DiffusersActivation,
    conv_out: nn::Conv2D,
}

fn act(name: &str) -> Result<DiffusersActivation> {
    DiffusersActivation::parse(name).map_err(|e| input_err!("UNet config: {e}"))
}

impl UNet2DConditionModel {
    pub fn new(p: nn::Path, cfg: &UNet2DConditionConfig) -> Result<Self> {
        cfg.validate().map_err(|e| input_err!("UNet config: {e}"))?;
        let pb = cfg
            .per_block()
            .map_err(|e| input_err!("UNet config: {e}"))?;
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let act_fn = act(&cfg.act_fn)?;
        let temb = cfg.time_embed_dim();
        let resnet = ResnetBlock2DConfig {
            in_channels: 0,
            out_channels: 0,
            temb_channels: Some(temb),
            groups: cfg.groups(),
            groups_out: None,
            eps: cfg.norm_eps,
            non_linearity: act_fn,
            time_embedding_norm: if cfg.resnet_time_scale_shift == "scale_shift" {
                TimeEmbeddingNorm::ScaleShift
            } else {
                TimeEmbeddingNorm::Default
            },
            output_scale_factor: 1.0,
        };
        let block = |i: usize, cross: bool, transformer_layers: i64| BlockConfig {
            resnet: resnet.clone(),
            attention: cross.then(|| TransformerConfig {
                heads: pb.heads[i],
                dim_head: 0, // set per block from its channels
                cross_attention_dim: pb.cross_attention_dim[i],
                only_cross_attention: pb.only_cross_attention[i],
                upcast_attention: cfg.upcast_attention,
            }),
            transformer_layers,
            use_linear_projection: cfg.use_linear_projection,
        };

        let down = &p / "down_blocks";
        let mut down_blocks = vec![];
        for (i, t) in cfg.down_block_types.iter().enumerate() {
            let ic = if i == 0 { ch[0] } else { ch[i - 1] };
            let c = block(i, t == config::CROSS_DOWN, pb.transformer_layers[i]);
            down_blocks.push(DownBlock2D::new(
                &down / i,
                &c,
                ic,
                ch[i],
                pb.layers[i],
                i + 1 < n,
                cfg.downsample_padding,
            ));
        }

        let mid_block = cfg.mid_block_type.as_ref().map(|t| {
            let mut c = block(n - 1, t == config::CROSS_MID, pb.transformer_layers[n - 1]);
            c.resnet.output_scale_factor = cfg.mid_block_scale_factor;
            UNetMidBlock2DCrossAttn::new(&p / "mid_block", &c, ch[n - 1])
        });

        // Up path: deepest level first; per-block lists are reversed (diffusers' `reversed_*`).
        let up = &p / "up_blocks";
        let mut up_blocks = vec![];
        let mut out_ch = ch[n - 1];
        for (i, t) in cfg.up_block_types.iter().enumerate() {
            let level = n - 1 - i;
            let prev = out_ch;
            out_ch = ch[level];
            let ic = ch[level.saturating_sub(1)];
            let c = block(level, t == config::CROSS_UP, pb.transformer_layers[level]);
            up_blocks.push(UpBlock2D::new(
                &up / i,
                &c,
                ic,
                prev,
                out_ch,
                pb.layers[level] + 1,
                i + 1 < n,
            ));
        }

        let (kin, kout) = (cfg.conv_in_kernel, cfg.conv_out_kernel);
        Ok(Self {
            conv_in: conv2d(
                &p / "conv_in",
                cfg.in_channels,
                ch[0],
                kin,
                1,
                (kin - 1) / 2,
            ),
            time_proj: Timesteps::new(ch[0], cfg.flip_sin_to_cos, cfg.freq_shift),
            time_embedding: TimestepEmbedding::new(
                &p / "time_embedding",
                ch[0],
                temb,
                act_fn,
                cfg.timestep_post_act.as_deref().map(act).transpose()?,
            ),
            time_embed_act: cfg.time_embedding_act_fn.as_deref().map(act).transpose()?,
            add_embedding: cfg.addition_embed_type.as_ref().map(|_| {
                TextTimeEmbedding::new(
                    &p / "add_embedding",
                    cfg.text_width(),
                    temb,
                    cfg.addition_embed_type_num_heads,
                )
            }),
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: group_norm(&p / "conv_norm_out", cfg.groups(), ch[0], cfg.norm_eps),
            conv_act: act_fn,
            conv_out: conv2d(
                &p / "conv_out",
                ch[0],
                cfg.out_channels,
                kout,
                1,
                (kout - 1) / 2,
            ),
            config: cfg.clone(),
        })
    }

    /// The kind the weights are in (the model computes in it).
    pub fn kind(&self) -> Kind {
        self.conv_in.ws.kind()
    }

    /// Shape checks `forward` relies on, as input errors (forward itself panics on bad shapes).
    pub fn check_inputs(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
    ) -> Result<()> {
        let s = sample.size();
        let e = encoder_hidden_states.size();
        if s.len() != 4 || s[1] != self.config.in_channels {
            return Err(input_err!(
                "UNet sample has shape {s:?}; expected [B, {}, H, W]",
                self.config.in_channels
            ));
        }
        let n = timestep.numel() as i64;
        if timestep.dim() > 1 || (n != 1 && n != s[0]) {
            return Err(input_err!(
                "UNet timestep has shape {:?}; expected one value or one per batch item ({})",
                timestep.size(),
                s[0]
            ));
        }
        let width = self.config.text_width();
        if e.len() != 3 || e[0] != s[0] || e[2] != width {
            return Err(input_err!(
                "encoder_hidden_states have shape {e:?} but this UNet reads [{}, T, {width}] (cross_attention_dim {width}): the text encoder does not match the UNet (SD 1.x uses 768-wide CLIP ViT-L states, SD 2.x 1024-wide OpenCLIP ViT-H)",
                s[0]
            ));
        }
        Ok(())
    }

    /// `sample` [B, C, H, W], `timestep` one value per batch item [B] (or a single value; f32 or i64),
    /// `encoder_hidden_states` [B, T, D] -> noise/v prediction [B, C_out, H, W] in the model's kind.
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
    ) -> Tensor {
        let kind = self.kind();
        let mut sample = sample.to_kind(kind);
        let b = sample.size()[0];
        let context = encoder_hidden_states.to_kind(kind);
        let timesteps = timestep
            .to_device(sample.device())
            .reshape([-1])
            .expand([b], false);
        // `Timesteps` is float32; diffusers casts to the sample's kind before the MLP.
        let mut emb = self
            .time_embedding
            .forward(&self.time_proj.forward(&timesteps).to_kind(kind));
        if let Some(add) = &self.add_embedding {
            emb += add.forward(&context);
        }
        if let Some(a) = self.time_embed_act {
            emb = a.apply(&emb);
        }
        if self.config.center_input_sample {
            sample = sample * 2.0 - 1.0;
        }

        let mut x = self.conv_in.forward(&sample);
        let mut skips = vec![x.shallow_clone()];
        for block in &self.down_blocks {
            let (y, s) = block.forward(&x, Some(&emb), &context);
            x = y;
            skips.extend(s);
        }
        if let Some(mid) = &self.mid_block {
            x = mid.forward(&x, Some(&emb), &context);
        }

        // Inputs not divisible by the total downsampling: upsample to the skip's size instead of x2.
        let factor = 1i64 << (self.up_blocks.len() - 1);
        let odd = sample.size()[2..].iter().any(|d| d % factor != 0);
        for (i, block) in self.up_blocks.iter().enumerate() {
            let own = skips.split_off(skips.len() - block.num_skips());
            let is_final = i + 1 == self.up_blocks.len();
            let upsample_size = (odd && !is_final).then(|| {
                let s = skips.last().expect("skip connections remain").size();
                [s[2], s[3]]
            });
            x = block.forward(&x, &own, Some(&emb), &context, upsample_size);
        }
        let x = self.conv_act.apply(&self.conv_norm_out.forward(&x));
        self.conv_out.forward(&x)
    }
}

/// Load `dir/config.json` + `dir/diffusion_pytorch_model.safetensors` (or `.fp16.safetensors`) into a
/// new `VarStore` on `device`, converting the stored weights (f32/f16/bf16) to `kind`.
pub fn load_unet(
    dir: &Path,
    device: Device,
    kind: Kind,
) -> Result<(nn::VarStore, UNet2DConditionModel)> {
    check_float_kind(kind)?;
    let cfg = UNet2DConditionConfig::load(&dir.join("config.json"))?;
    let file = SafetensorsFile::open(&crate::models::text_encoder::weight_file(
        dir,
        "diffusion_pytorch_model",
    )?)?;
    let mut vs = nn::VarStore::new(device);
    let model = layers::without_random_init(|| UNet2DConditionModel::new(vs.root(), &cfg))
        .map_err(|e| input_err!("{}: {e}", dir.join("config.json").display()))?;
    vs.set_kind(kind);
    load_var_store(&mut vs, &file, &[])?;
    Ok((vs, model))
}

/// Models compute in a floating kind; anything else is a caller's mistake worth a clear message.
pub(crate) fn check_float_kind(kind: Kind) -> Result<()> {
    match kind {
        Kind::Float | Kind::Half | Kind::BFloat16 | Kind::Double => Ok(()),
        other => Err(input_err!(
            "cannot run a diffusion model in {other:?}: use float32, float16 or bfloat16"
        )),
    }
}
