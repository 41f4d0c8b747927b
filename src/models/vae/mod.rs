//! diffusers' `AutoencoderKL` (the Stable Diffusion VAE), one struct per upstream class, `VarStore`
//! paths equal to the safetensors keys (`decoder.mid_block.attentions.0.to_q.weight`, or the legacy
//! `...attentions.0.query.weight` when the file uses those).
pub mod blocks;
pub mod coders;
pub mod config;
pub mod distribution;

use std::path::Path;
use tch::{nn, nn::Module, Device, Kind, Tensor};

pub use blocks::UNetMidBlock2D;
pub use coders::{Decoder, Encoder};
pub use config::AutoencoderKLConfig;
pub use distribution::DiagonalGaussianDistribution;

use crate::error::Result;
use crate::input_err;
use crate::io::weights::{load_var_store, SafetensorsFile};
use crate::models::unet::activation::DiffusersActivation;
use crate::models::unet::attention::AttentionNames;
use crate::models::unet::layers::{conv2d, without_random_init};

/// `AutoencoderKL`: images [-1, 1] <-> latents (unscaled; multiply by `config.scaling_factor` for the UNet).
#[derive(Debug)]
pub struct AutoencoderKL {
    pub config: AutoencoderKLConfig,
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<nn::Conv2D>,
    post_quant_conv: Option<nn::Conv2D>,
}

impl AutoencoderKL {
    pub fn new(p: nn::Path, cfg: &AutoencoderKLConfig) -> Result<Self> {
        cfg.validate().map_err(|e| input_err!("VAE config: {e}"))?;
        let act =
            DiffusersActivation::parse(&cfg.act_fn).map_err(|e| input_err!("VAE config: {e}"))?;
        let l = cfg.latent_channels;
        let conv1x1 = |name: &str, c: i64| conv2d(&p / name, c, c, 1, 1, 0);
        Ok(Self {
            encoder: Encoder::new(&p / "encoder", cfg, act),
            decoder: Decoder::new(&p / "decoder", cfg, act),
            quant_conv: cfg.use_quant_conv.then(|| conv1x1("quant_conv", 2 * l)),
            post_quant_conv: cfg
                .use_post_quant_conv
                .then(|| conv1x1("post_quant_conv", l)),
            config: cfg.clone(),
        })
    }

    /// The kind the weights are in (the model computes in it).
    pub fn kind(&self) -> Kind {
        self.encoder.kind()
    }

    /// Images [B, 3, H, W] in [-1, 1] -> the posterior over latents [B, latent_channels, H/f, W/f].
    pub fn encode(&self, x: &Tensor) -> DiagonalGaussianDistribution {
        let h = self.encoder.forward(&x.to_kind(self.kind()));
        let h = match &self.quant_conv {
            Some(c) => c.forward(&h),
            None => h,
        };
        DiagonalGaussianDistribution::new(h)
    }

    /// Latents (already divided by `scaling_factor`) -> raw decoder output in [-1, 1] space (unclamped).
    pub fn decode(&self, z: &Tensor) -> Tensor {
        let z = z.to_kind(self.kind());
        let z = match &self.post_quant_conv {
            Some(c) => c.forward(&z),
            None => z,
        };
        self.decoder.forward(&z)
    }
}

/// Which attention names a VAE weight file uses: the current ones unless only legacy ones are present.
pub fn probe_attention_names(file: &SafetensorsFile) -> AttentionNames {
    let names = file.names();
    let legacy = names.iter().any(|n| {
        n.contains(".attentions.")
            && (n.ends_with(".query.weight") || n.ends_with(".proj_attn.weight"))
    });
    if legacy {
        AttentionNames::Legacy
    } else {
        AttentionNames::Current
    }
}

/// Load `dir/config.json` + `dir/diffusion_pytorch_model.safetensors` (or `.fp16.safetensors`) into a
/// new `VarStore` on `device`, converting the stored weights (f32/f16/bf16) to `kind`. Files with the
/// pre-0.14 attention names (`query`/`key`/`value`/`proj_attn`) load as they are.
pub fn load_vae(dir: &Path, device: Device, kind: Kind) -> Result<(nn::VarStore, AutoencoderKL)> {
    crate::models::unet::check_float_kind(kind)?;
    let mut cfg = AutoencoderKLConfig::load(&dir.join("config.json"))?;
    let file = SafetensorsFile::open(&crate::models::text_encoder::weight_file(
        dir,
        "diffusion_pytorch_model",
    )?)?;
    cfg.attention_names = probe_attention_names(&file);
    let mut vs = nn::VarStore::new(device);
    let model = without_random_init(|| AutoencoderKL::new(vs.root(), &cfg))
        .map_err(|e| input_err!("{}: {e}", dir.join("config.json").display()))?;
    vs.set_kind(kind);
    load_var_store(&mut vs, &file, &[])?;
    Ok((vs, model))
}
