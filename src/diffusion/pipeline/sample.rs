//! The denoising loop of diffusers' `StableDiffusionPipeline.__call__` (and, with SLD, of
//! `StableDiffusionPipelineSafe.__call__`), step by step in the same order of operations.
use tch::{Device, Kind, Tensor};

use super::sega::{SegaConfig, SegaState};
use super::sld::{SldConfig, SldState};
use super::StableDiffusionPipeline;
use crate::diffusion::rng::DiffusersGenerator;
use crate::error::Result;
use crate::input_bail;
use crate::settings::SchedulerKind;

/// The `generator` argument: one CPU generator for the whole batch, or one per image (what
/// `clipdoor generate` uses, so an image depends only on its prompt and seed, not on batching).
#[derive(Debug, Clone, PartialEq)]
pub enum Seeds {
    /// `torch.Generator("cpu").manual_seed(s)`.
    Single(u64),
    /// `[torch.Generator("cpu").manual_seed(s) for s in seeds]`, one per image in output order.
    PerImage(Vec<u64>),
}

/// One call of the pipeline; defaults are diffusers' (`num_inference_steps=50`, `guidance_scale=7.5`,
/// size from the UNet's `sample_size`, the pipeline's own scheduler, no SLD).
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompts: Vec<String>,
    /// One negative prompt per prompt, or one for all; `None` is the empty prompt.
    pub negative_prompts: Option<Vec<String>>,
    /// Images per prompt; images come out prompt-major (`p0 i0, p0 i1, p1 i0, ...`).
    pub images_per_prompt: usize,
    pub seeds: Seeds,
    pub steps: usize,
    /// Classifier-free guidance scale; `<= 1` runs the UNet on the prompt only (as diffusers).
    pub guidance: f64,
    pub height: Option<i64>,
    pub width: Option<i64>,
    /// `--scheduler`; `None` = the pipeline's `scheduler_config.json` class.
    pub scheduler: Option<SchedulerKind>,
    pub sld: Option<SldConfig>,
    /// Semantic guidance (SEGA): edit prompts steering the guidance, as diffusers'
    /// `SemanticStableDiffusionPipeline`.
    pub sega: Option<SegaConfig>,
}

impl GenerateRequest {
    pub fn new(prompts: Vec<String>, seeds: Seeds) -> Self {
        Self {
            prompts,
            negative_prompts: None,
            images_per_prompt: 1,
            seeds,
            steps: 50,
            guidance: 7.5,
            height: None,
            width: None,
            scheduler: None,
            sld: None,
            sega: None,
        }
    }

    pub fn num_images(&self) -> usize {
        self.prompts.len() * self.images_per_prompt
    }
}

/// What the loop needs after validation.
struct Plan {
    height: i64,
    width: i64,
    cfg: bool,
    sld: Option<SldConfig>,
    sega: Option<SegaConfig>,
    negatives: Vec<String>,
}

impl StableDiffusionPipeline {
    fn plan(&self, r: &GenerateRequest) -> Result<Plan> {
        if r.prompts.is_empty() || r.images_per_prompt == 0 {
            input_bail!(
                "nothing to generate: give at least one prompt and --images-per-prompt >= 1"
            );
        }
        if r.steps == 0 {
            input_bail!("--steps must be at least 1");
        }
        if !r.guidance.is_finite() {
            input_bail!("--guidance must be a finite number, got {}", r.guidance);
        }
        let (dh, dw) = self.default_size();
        let (height, width) = (r.height.unwrap_or(dh), r.width.unwrap_or(dw));
        if height <= 0 || width <= 0 || height % 8 != 0 || width % 8 != 0 {
            input_bail!("--height and --width must be positive multiples of 8 (as in diffusers), got {height}x{width}");
        }
        if let Seeds::PerImage(s) = &r.seeds {
            if s.len() != r.num_images() {
                input_bail!(
                    "{} seeds were given for {} images ({} prompts x {} per prompt): pass one seed per image",
                    s.len(),
                    r.num_images(),
                    r.prompts.len(),
                    r.images_per_prompt
                );
            }
        }
        let negatives = match &r.negative_prompts {
            None => vec![String::new(); r.prompts.len()],
            Some(n) if n.len() == 1 => vec![n[0].clone(); r.prompts.len()],
            Some(n) if n.len() == r.prompts.len() => n.clone(),
            Some(n) => input_bail!(
                "{} negative prompts for {} prompts: give one, or one per prompt",
                n.len(),
                r.prompts.len()
            ),
        };
        let cfg = r.guidance > 1.0;
        let sld = r.sld.clone().filter(SldConfig::enabled);
        if sld.is_some() && !cfg {
            input_bail!(
                "SLD steers classifier-free guidance, which is off at guidance {}: use --guidance > 1 (diffusers silently disables SLD there)",
                r.guidance
            );
        }
        if let Some(s) = &r.sega {
            s.validate()?;
            if !cfg {
                input_bail!(
                    "semantic guidance (--edit) steers classifier-free guidance, which is off at guidance {}: use --guidance > 1 (diffusers silently ignores the edits there)",
                    r.guidance
                );
            }
            if sld.is_some() {
                input_bail!("--edit (SEGA) and --sld cannot be combined: diffusers has no pipeline that runs both; choose one");
            }
        }
        Ok(Plan {
            height,
            width,
            cfg,
            sld,
            sega: r.sega.clone(),
            negatives,
        })
    }

    /// Last hidden states of the text encoder for `texts`, each repeated `k` times in a row
    /// (diffusers' `repeat(1, k, 1).view(B * k, T, D)`).
    fn embed(&self, texts: &[String], k: usize) -> Result<Tensor> {
        let (_, out) = self.text_encoder.encode(texts, false)?;
        Ok(out
            .last_hidden_state
            .repeat_interleave_self_int(k as i64, Some(0), None::<i64>))
    }

    /// [`Self::embed`] with the semantic pipeline's tokenisation (padded, not truncated, then cut).
    fn embed_sliced(&self, texts: &[String], k: usize) -> Result<Tensor> {
        let ids = self.text_encoder.tokenizer.encode_batch_sliced(texts)?;
        let ids = ids.to_device(self.text_encoder.device());
        Ok(self
            .text_encoder
            .forward_ids(&ids, false)
            .last_hidden_state
            .repeat_interleave_self_int(k as i64, Some(0), None::<i64>))
    }

    /// Generate images `[N, 3, H, W]` (float32 on the CPU, 0..1), as diffusers returns with
    /// `output_type="np"` (there `[N, H, W, 3]`).
    pub fn generate(&self, r: &GenerateRequest) -> Result<Tensor> {
        self.generate_with_progress(r, &mut |_, _| {})
    }

    /// [`Self::generate`], calling `on_step(done, total)` after every denoising step.
    pub fn generate_with_progress(
        &self,
        r: &GenerateRequest,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Tensor> {
        let plan = self.plan(r)?;
        let mut scheduler = self.scheduler(r.scheduler)?;
        tch::no_grad(|| -> Result<Tensor> {
            let k = r.images_per_prompt;
            let n = r.num_images() as i64;
            // diffusers' order: [negative, prompt(, safety concept | , edit 1, ..., edit C)].
            let mut embeds = vec![];
            if plan.cfg {
                embeds.push(self.embed(&plan.negatives, k)?);
            }
            match &plan.sega {
                None => embeds.push(self.embed(&r.prompts, k)?),
                Some(_) => embeds.push(self.embed_sliced(&r.prompts, k)?),
            }
            if let Some(s) = &plan.sld {
                embeds.push(self.embed(std::slice::from_ref(&s.concept), n as usize)?);
            }
            for edit in plan.sega.iter().flat_map(|s| &s.edits) {
                // Edit-major: each edit's rows for every prompt and image.
                embeds.push(self.embed_sliced(std::slice::from_ref(&edit.prompt), n as usize)?);
            }
            let passes = embeds.len() as i64;
            let embeds = Tensor::cat(&embeds, 0);

            scheduler.set_timesteps(r.steps)?;
            let timesteps = scheduler.timesteps().to_vec();
            let mut generator = match &r.seeds {
                Seeds::Single(s) => DiffusersGenerator::single(*s),
                Seeds::PerImage(s) => DiffusersGenerator::per_image(s)?,
            };
            let f = self.vae_scale_factor();
            let shape = [
                n,
                self.unet.config.in_channels,
                plan.height / f,
                plan.width / f,
            ];
            // `randn_tensor` in the prompt embeddings' dtype, then `* init_noise_sigma`.
            let mut latents =
                generator.randn(&shape, embeds.kind(), self.device)? * scheduler.init_noise_sigma();

            let mut sld_state = SldState::default();
            let mut sega_state = SegaState::default();
            for (i, &t) in timesteps.iter().enumerate() {
                let input = if passes > 1 {
                    Tensor::cat(&vec![&latents; passes as usize], 0)
                } else {
                    latents.shallow_clone()
                };
                let input = scheduler.scale_model_input(&input, t)?;
                let ts = Tensor::from_slice(&[t as f32]).to_device(self.device);
                if i == 0 {
                    self.unet.check_inputs(&input, &ts, &embeds)?;
                }
                let mut noise_pred = self.unet.forward(&input, &ts, &embeds);
                if plan.cfg {
                    let out = noise_pred.chunk(passes, 0);
                    let (uncond, text) = (&out[0], &out[1]);
                    noise_pred = match (&plan.sld, &plan.sega) {
                        (Some(s), _) => {
                            uncond + sld_state.guide(s, i, uncond, text, &out[2]) * r.guidance
                        }
                        (None, Some(s)) => {
                            let g = (text - uncond) * r.guidance;
                            uncond + sega_state.guide(s, i, uncond, g, &out[2..])
                        }
                        (None, None) => uncond + (text - uncond) * r.guidance,
                    };
                }
                let noise = if scheduler.needs_noise() {
                    Some(
                        generator
                            .randn_like(&noise_pred, scheduler.noise_kind(noise_pred.kind()))?,
                    )
                } else {
                    None
                };
                latents = scheduler.step(&noise_pred, t, &latents, noise.as_ref())?;
                on_step(i + 1, timesteps.len());
            }
            Ok(self.decode(&latents, plan.sld.is_some()))
        })
    }

    /// VAE decode to 0..1 float32 on the CPU. The safe pipeline writes `1 / sf * latents` and
    /// `x / 2 + 0.5`, the plain one `latents / sf` and `x * 0.5 + 0.5`; each is mirrored bit for bit.
    /// Without a VAE (pixel space) the latents are the image in [-1, 1].
    pub fn decode(&self, latents: &Tensor, safe_pipeline_arithmetic: bool) -> Tensor {
        let image = match &self.vae {
            None => latents * 0.5 + 0.5,
            Some(vae) => {
                let sf = vae.config.scaling_factor;
                if safe_pipeline_arithmetic {
                    vae.decode(&(latents * (1.0 / sf))) / 2.0 + 0.5
                } else {
                    vae.decode(&(latents / sf)) * 0.5 + 0.5
                }
            }
        };
        image
            .clamp(0.0, 1.0)
            .to_kind(Kind::Float)
            .to_device(Device::Cpu)
    }
}
