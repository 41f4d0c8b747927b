//! transformers' `CLIPVisionModelWithProjection` (and the vision half of `CLIPModel`), one struct per
//! upstream class, with `VarStore` paths equal to the safetensors keys
//! (`vision_model.encoder.layers.0.self_attn.q_proj.weight`, `visual_projection.weight`).
//!
//! The encoder layers are transformers' shared `CLIPEncoderLayer` (`models::clip_layers`), unmasked.
use std::path::{Path, PathBuf};
use tch::{nn, nn::Module, Device, Kind, Tensor};

use super::processor::CLIPImageProcessor;
use super::vision_config::CLIPVisionConfig;
use crate::error::Result;
use crate::io::{hub, weights};
use crate::models::activation::Activation;
use crate::models::clip_layers::{layer_norm, linear, CLIPEncoderLayer, LayerDims, Mask};
use crate::models::init::{random, seeded, without_random_init};
use crate::models::text_encoder::weight_file;
use crate::{input_bail, input_err};

/// `CLIPVisionEmbeddings`: patch convolution (no bias), class token, learned absolute positions.
#[derive(Debug)]
pub struct CLIPVisionEmbeddings {
    class_embedding: Tensor,
    patch_embedding: nn::Conv2D,
    position_embedding: nn::Embedding,
    image_size: i64,
}

impl CLIPVisionEmbeddings {
    pub fn new(p: nn::Path, c: &CLIPVisionConfig) -> Self {
        let init = random(nn::Init::Randn {
            mean: 0.,
            stdev: 0.02,
        });
        let conv = nn::ConvConfig {
            stride: c.patch_size,
            bias: false,
            ws_init: init,
            ..Default::default()
        };
        let positions = c.grid() * c.grid() + 1;
        Self {
            class_embedding: p.var("class_embedding", &[c.hidden_size], init),
            patch_embedding: nn::conv2d(
                &p / "patch_embedding",
                c.num_channels,
                c.hidden_size,
                c.patch_size,
                conv,
            ),
            position_embedding: nn::embedding(
                &p / "position_embedding",
                positions,
                c.hidden_size,
                nn::EmbeddingConfig {
                    ws_init: init,
                    ..Default::default()
                },
            ),
            image_size: c.image_size,
        }
    }

    /// `pixel_values`: [B, C, image_size, image_size] (checked by the caller).
    pub fn forward(&self, pixel_values: &Tensor) -> Tensor {
        let b = pixel_values.size()[0];
        let patches = self
            .patch_embedding
            .forward(&pixel_values.to_kind(self.class_embedding.kind()))
            .flatten(2, -1)
            .transpose(1, 2);
        let cls = self
            .class_embedding
            .view([1, 1, -1])
            .expand([b, 1, -1], false);
        let x = Tensor::cat(&[cls, patches], 1);
        let n = x.size()[1];
        let pos = Tensor::arange(n, (Kind::Int64, x.device())).unsqueeze(0);
        x + self.position_embedding.forward(&pos)
    }

    pub fn image_size(&self) -> i64 {
        self.image_size
    }
}

/// What one forward pass returns (field names as transformers' `CLIPVisionModelOutput`).
#[derive(Debug)]
pub struct CLIPVisionOutput {
    /// Encoder output (no final norm): [B, 1 + patches, hidden].
    pub last_hidden_state: Tensor,
    /// `post_layernorm` of the class token: [B, hidden].
    pub pooler_output: Tensor,
    /// `visual_projection(pooler_output)`: [B, projection_dim].
    pub image_embeds: Tensor,
}

/// `CLIPVisionTransformer` (the `vision_model.` prefix).
#[derive(Debug)]
pub struct CLIPVisionTransformer {
    embeddings: CLIPVisionEmbeddings,
    pre_layrnorm: nn::LayerNorm,
    layers: Vec<CLIPEncoderLayer>,
    post_layernorm: nn::LayerNorm,
}

impl CLIPVisionTransformer {
    pub fn new(p: nn::Path, c: &CLIPVisionConfig) -> Self {
        let enc = &p / "encoder" / "layers";
        let dims = LayerDims {
            hidden: c.hidden_size,
            heads: c.num_attention_heads,
            intermediate: c.intermediate_size,
            act: Activation::parse(&c.hidden_act).expect("validated config"),
            eps: c.layer_norm_eps,
        };
        Self {
            embeddings: CLIPVisionEmbeddings::new(&p / "embeddings", c),
            // sic: transformers' attribute name.
            pre_layrnorm: layer_norm(&p / "pre_layrnorm", c.hidden_size, c.layer_norm_eps),
            layers: (0..c.num_hidden_layers)
                .map(|i| CLIPEncoderLayer::new(&enc / i, &dims))
                .collect(),
            post_layernorm: layer_norm(&p / "post_layernorm", c.hidden_size, c.layer_norm_eps),
        }
    }

    /// (last_hidden_state, pooler_output).
    pub fn forward(&self, pixel_values: &Tensor) -> (Tensor, Tensor) {
        let mut x = self
            .pre_layrnorm
            .forward(&self.embeddings.forward(pixel_values));
        for layer in &self.layers {
            x = layer.forward(&x, Mask::Full);
        }
        let pooled = self.post_layernorm.forward(&x.select(1, 0));
        (x, pooled)
    }
}

/// `CLIPVisionModelWithProjection` (also the vision half of `CLIPModel` and of the SD safety checker).
#[derive(Debug)]
pub struct CLIPVisionModelWithProjection {
    pub vision_model: CLIPVisionTransformer,
    pub visual_projection: nn::Linear,
}

impl CLIPVisionModelWithProjection {
    pub fn new(root: nn::Path, c: &CLIPVisionConfig) -> Self {
        Self {
            vision_model: CLIPVisionTransformer::new(&root / "vision_model", c),
            visual_projection: linear(
                &root / "visual_projection",
                c.hidden_size,
                c.projection_dim,
                false,
            ),
        }
    }

    /// Unchecked forward pass; use [`ClipVision::forward`] for shape checks and input errors.
    pub fn forward(&self, pixel_values: &Tensor) -> CLIPVisionOutput {
        let (last, pooled) = self.vision_model.forward(pixel_values);
        let image_embeds = self.visual_projection.forward(&pooled);
        CLIPVisionOutput {
            last_hidden_state: last,
            pooler_output: pooled,
            image_embeds,
        }
    }
}

/// Tensors of a checkpoint that the vision tower does not use.
const NON_VISION: &[&str] = &[
    "text_model.",
    "text_projection.",
    "logit_scale",
    "position_ids",
];

/// Find where a checkpoint keeps the `CLIPVisionTransformer`: `vision_model.` (CLIPModel,
/// CLIPVisionModelWithProjection, diffusers' safety checker under transformers 5), `vision_model.vision_model.`
/// (the hub's `CompVis/stable-diffusion-safety-checker`), or nothing (a bare CLIPVisionModel).
pub(crate) fn vision_prefix(file: &weights::SafetensorsFile) -> Result<String> {
    const KEY: &str = "embeddings.class_embedding";
    let names = file.names();
    let mut hits: Vec<&String> = names
        .iter()
        .filter(|n| n.ends_with(KEY) && !n.starts_with("text_model."))
        .collect();
    hits.sort_by_key(|n| n.len());
    match hits.first() {
        Some(n) => Ok(n[..n.len() - KEY.len()].to_string()),
        None => input_bail!(
            "{} holds no CLIP vision tower (no `vision_model.embeddings.class_embedding`): give a CLIPModel, CLIPVisionModelWithProjection or safety-checker checkpoint",
            file.path().display()
        ),
    }
}

/// Rename rule: the VarStore path `vision_model.X` lives at `<prefix>X` in the file.
pub(crate) fn vision_rename(prefix: String) -> impl Fn(&str) -> String {
    move |v: &str| match v.strip_prefix("vision_model.") {
        Some(rest) => format!("{prefix}{rest}"),
        None => v.to_string(),
    }
}

/// Resolve a model argument to a folder with `config.json` + weights: a folder, a hub id in the local
/// cache, or a pipeline folder's `subfolder` (e.g. `safety_checker`).
pub(crate) fn resolve_folder(model: &str, subfolder: Option<&str>) -> Result<PathBuf> {
    let p = Path::new(model);
    let dir = if p.is_dir() {
        p.to_path_buf()
    } else if hub::is_hub_id(model) {
        hub::resolve_repo_files(
            model,
            &["config.json", &hub::variant_file("model.safetensors")],
        )?
    } else {
        input_bail!("model `{model}` is neither a folder nor a hub id (owner/name): give a folder with config.json + model.safetensors or a cached hub id")
    };
    if let Some(sub) = subfolder {
        if !dir.join("config.json").exists() && dir.join(sub).join("config.json").exists() {
            return Ok(dir.join(sub));
        }
    }
    if !dir.join("config.json").exists() {
        input_bail!("{} has no config.json: expected a transformers model folder (config.json + model.safetensors)", dir.display());
    }
    Ok(dir)
}

/// A loaded CLIP vision tower with its projection, config and image processor.
pub struct ClipVision {
    pub vs: nn::VarStore,
    pub model: CLIPVisionModelWithProjection,
    pub config: CLIPVisionConfig,
    pub processor: CLIPImageProcessor,
}

impl ClipVision {
    /// Random weights from a seed (transformers-like init), with the default OpenAI CLIP processor
    /// sized to the config's `image_size`.
    pub fn random(config: CLIPVisionConfig, seed: i64, device: Device) -> Result<Self> {
        config.validate().map_err(|e| input_err!("{e}"))?;
        let vs = nn::VarStore::new(device);
        let model = seeded(seed, || {
            CLIPVisionModelWithProjection::new(vs.root(), &config)
        });
        let processor = CLIPImageProcessor::with_size(config.image_size as u32);
        Ok(Self {
            vs,
            model,
            config,
            processor,
        })
    }

    /// Load a `CLIPVisionModelWithProjection` or full `CLIPModel` folder (or cached hub id): `config.json`,
    /// `model.safetensors` and, when present, `preprocessor_config.json` (else the OpenAI CLIP defaults).
    pub fn load(model: &str, device: Device, kind: Kind) -> Result<Self> {
        let dir = resolve_folder(model, None)?;
        Self::load_dir(&dir, device, kind)
    }

    pub fn load_dir(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        let config = CLIPVisionConfig::load(&dir.join("config.json"))?;
        let file = weights::SafetensorsFile::open(&weight_file(dir, "model")?)?;
        if !file.names().iter().any(|n| n == "visual_projection.weight") {
            input_bail!(
                "{} has no `visual_projection.weight`: this is a CLIPVisionModel without projection; CLIP metrics need CLIPVisionModelWithProjection or a full CLIPModel",
                file.path().display()
            );
        }
        let prefix = vision_prefix(&file)?;
        let mut vs = nn::VarStore::new(device);
        let model = without_random_init(|| CLIPVisionModelWithProjection::new(vs.root(), &config));
        vs.set_kind(kind);
        weights::load_var_store_renamed(&mut vs, &file, NON_VISION, &vision_rename(prefix))?;
        let processor = CLIPImageProcessor::load_or_default(dir)?;
        processor.check_fits(config.image_size, &dir.join("preprocessor_config.json"))?;
        Ok(Self {
            vs,
            model,
            config,
            processor,
        })
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }
    pub fn kind(&self) -> Kind {
        self.vs.kind()
    }

    /// Forward pass on `pixel_values` [B, C, image_size, image_size] (any device/kind); wrong shapes are
    /// input errors.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<CLIPVisionOutput> {
        check_pixel_values(pixel_values, &self.config)?;
        Ok(tch::no_grad(|| {
            self.model
                .forward(&pixel_values.to_device(self.device()).to_kind(self.kind()))
        }))
    }

    /// `image_embeds` [B, projection_dim] (f32, on the model's device) of preprocessed pixels.
    pub fn image_embeds(&self, pixel_values: &Tensor) -> Result<Tensor> {
        Ok(self
            .forward(pixel_values)?
            .image_embeds
            .to_kind(Kind::Float))
    }

    /// Preprocess and embed images in batches of `batch_size`: [N, projection_dim] f32.
    pub fn embed_images(
        &self,
        images: &[image::DynamicImage],
        batch_size: usize,
    ) -> Result<Tensor> {
        if images.is_empty() {
            input_bail!("no images to embed");
        }
        let mut out = vec![];
        for chunk in images.chunks(batch_size.max(1)) {
            let px = self.processor.preprocess_batch(chunk)?;
            out.push(self.image_embeds(&px)?);
        }
        Ok(Tensor::cat(&out, 0))
    }

    /// As [`ClipVision::embed_images`] on image files (PNG, JPEG).
    pub fn embed_files(&self, paths: &[PathBuf], batch_size: usize) -> Result<Tensor> {
        let mut out = vec![];
        for chunk in paths.chunks(batch_size.max(1)) {
            let imgs = chunk
                .iter()
                .map(|p| super::processor::open_image(p))
                .collect::<Result<Vec<_>>>()?;
            out.push(self.embed_images(&imgs, batch_size)?);
        }
        if out.is_empty() {
            input_bail!("no image files to embed");
        }
        Ok(Tensor::cat(&out, 0))
    }
}

pub(crate) fn check_pixel_values(px: &Tensor, c: &CLIPVisionConfig) -> Result<()> {
    let s = px.size();
    if s.len() != 4 || s[1] != c.num_channels || s[2] != c.image_size || s[3] != c.image_size {
        input_bail!(
            "pixel_values have shape {s:?} but this CLIP vision model takes [N, {}, {}, {}]: preprocess the images with its CLIPImageProcessor (crop_size {})",
            c.num_channels, c.image_size, c.image_size, c.image_size
        );
    }
    if s[0] == 0 {
        input_bail!("pixel_values hold no images (batch of 0)");
    }
    if !px.is_floating_point() {
        input_bail!(
            "pixel_values must be floating point (normalised pixels), got {:?}",
            px.kind()
        );
    }
    Ok(())
}
