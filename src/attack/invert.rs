//! Textual inversion (Gal et al., *An Image is Worth One Word*, ICLR 2023): a new word whose input
//! embedding is learned, through the frozen pipeline's denoising loss, from 3–5 images, so that
//! prompts with the word draw what the images show. The seed method of the `embedding` attack
//! (CCE, Pham et al., ICLR 2024), which learns a word that brings an erased concept back.
//!
//! As diffusers' `examples/textual_inversion/textual_inversion.py`: the word starts at an existing
//! word's embedding (`--init-word`); each step draws images and "a photo of a {word}"-style
//! templates, noises the images' latents at a random timestep of the pipeline's training schedule
//! and regresses the UNet's prediction (ε, v or x0, as the scheduler config says) with AdamW
//! (weight decay 0.01) on the new embedding only. Differences, on purpose: latents are the VAE
//! posterior's mean (no sampling) and images are centre-cropped without random flips, so a seed gives
//! one result; the step draws come from a generator keyed by (seed, step).
use image::RgbImage;
use rand::{Rng, SeedableRng};
use tch::{Kind, Tensor};

use crate::diffusion::image::images_to_tensor;
use crate::diffusion::image::{image_files, read_images};
use crate::diffusion::pipeline::StableDiffusionPipeline;
use crate::diffusion::rng::DiffusersGenerator;
use crate::diffusion::schedulers::betas::{alphas_cumprod, ZeroSnr};
use crate::diffusion::schedulers::PredictionType;
use crate::error::Result;
use crate::experiment::{Experiment, RobustSlot};
use crate::input_bail;
use crate::models::learned_embeds::LearnedEmbedding;
use crate::models::text_encoder::TextEncoder;
use crate::models::unet::UNet2DConditionModel;
use crate::train::robust::{Slotted, WordAttack};

/// diffusers' `imagenet_templates_small` (the object templates of the textual-inversion example).
pub const TEMPLATES: &[&str] = &[
    "a photo of a {}",
    "a rendering of a {}",
    "a cropped photo of the {}",
    "the photo of a {}",
    "a photo of a clean {}",
    "a photo of a dirty {}",
    "a dark photo of the {}",
    "a photo of my {}",
    "a photo of the cool {}",
    "a close-up photo of a {}",
    "a bright photo of the {}",
    "a cropped photo of a {}",
    "a photo of the {}",
    "a good photo of the {}",
    "a photo of one {}",
    "a close-up photo of the {}",
    "a rendition of the {}",
    "a photo of the clean {}",
    "a rendition of a {}",
    "a photo of a nice {}",
    "a good photo of a {}",
    "a photo of the nice {}",
    "a photo of the small {}",
    "a photo of the weird {}",
    "a photo of the large {}",
    "a photo of a cool {}",
    "a photo of a small {}",
];

#[derive(Debug, Clone, serde::Serialize)]
pub struct InvertOptions {
    /// The new word, e.g. `<s*>`.
    pub token: String,
    /// An existing single-token word to start from (diffusers' `initializer_token`).
    pub init_word: String,
    pub steps: usize,
    pub lr: f64,
    /// Images per step.
    pub batch_size: usize,
    pub seed: u64,
}

/// What a run learned and how the loss moved.
pub struct Inverted {
    pub embedding: LearnedEmbedding,
    /// The training loss of every step.
    pub losses: Vec<f64>,
    /// The probe loss (fixed images, template, timesteps and noise) before and after: a
    /// deterministic measure of what the word learned, unlike the noisy per-step loss.
    pub probe: [f64; 2],
}

impl Inverted {
    /// What a report says of the run: the probe loss before and after, and the mean training loss
    /// over the first and the last tenth of the steps.
    pub fn summary(&self) -> serde_json::Value {
        let n = self.losses.len();
        let tenth = (n / 10).max(1).min(n);
        let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
        serde_json::json!({
            "probe_loss": {"before": self.probe[0], "after": self.probe[1]},
            "loss": {"first_tenth_mean": mean(&self.losses[..tenth]),
                     "last_tenth_mean": mean(&self.losses[n - tenth..])},
        })
    }
}

/// Centre-crop to a square and resize to `h`×`w` (Catmull-Rom, close to PIL's bicubic).
fn prepare(img: &RgbImage, h: u32, w: u32) -> RgbImage {
    let (iw, ih) = img.dimensions();
    let side = iw.min(ih);
    let crop =
        image::imageops::crop_imm(img, (iw - side) / 2, (ih - side) / 2, side, side).to_image();
    if (side, side) == (w, h) {
        crop
    } else {
        image::imageops::resize(&crop, w, h, image::imageops::FilterType::CatmullRom)
    }
}

/// Learn `o.token` from `images` through `pipe` (its text encoder gets the word: afterwards `pipe`
/// draws with the learned embedding).
pub fn invert(
    pipe: &mut StableDiffusionPipeline,
    images: &[RgbImage],
    o: &InvertOptions,
) -> Result<Inverted> {
    if images.is_empty() {
        input_bail!("textual inversion needs images of the concept (3–5 is the paper's setting)");
    }
    if o.steps == 0 || o.batch_size == 0 || o.lr.is_nan() || o.lr <= 0.0 {
        input_bail!("--steps and --batch-size must be at least 1 and --lr above 0");
    }
    let enc = &pipe.text_encoder;
    let init = enc.tokenizer.tokens(&o.init_word)?;
    let [init_token] = &init[..] else {
        input_bail!(
            "--init-word {:?} is {} tokens ({}): give a word that is one token, such as \"object\" or \"person\"",
            o.init_word,
            init.len(),
            init.join(" ")
        );
    };
    let init_id = enc
        .tokenizer
        .token_to_id(init_token)
        .expect("a token of the vocabulary") as i64;
    let table = enc.model.text_model.embeddings().token_embedding_weight();
    let start = table.get(init_id).detach().to_kind(Kind::Float).copy();
    pipe.freeze();
    let id = pipe.text_encoder.add_embedding(&o.token, &start)?;

    let device = pipe.device;
    let den = Denoising::new(pipe, images)?;
    // One batch's loss with `v` as the word's embedding.
    let loss_of = |v: &Tensor,
                   idx: &[i64],
                   templates: &[usize],
                   ts: &[i64],
                   noise: &Tensor|
     -> Result<Tensor> {
        let enc = &pipe.text_encoder;
        let prompts: Vec<String> = templates
            .iter()
            .map(|&k| TEMPLATES[k].replace("{}", &o.token))
            .collect();
        let ids = enc.tokenizer.encode_batch(&prompts)?.to_device(device);
        let table = enc.model.text_model.embeddings().token_embedding_weight();
        let (b, t) = ids.size2()?;
        let rows = table
            .index_select(0, &ids.reshape([-1]))
            .reshape([b, t, -1]);
        let mask = ids.eq(id).unsqueeze(-1);
        let embeds = rows.where_self(
            &mask.logical_not(),
            &v.to_kind(rows.kind()).reshape([1, 1, -1]),
        );
        let hidden = enc
            .model
            .text_model
            .forward_token_embeds(&embeds, &ids)
            .last_hidden_state;
        den.loss(&pipe.unet, &hidden, idx, ts, noise)
    };
    // The probe: every image, the first template, five fixed timesteps, fixed noise.
    let probe_ts: Vec<i64> = (0..5)
        .map(|k| ((2 * k + 1) * den.n_t / 10) as i64)
        .collect();
    let n_img = images.len() as i64;
    let (probe_idx, probe_t): (Vec<i64>, Vec<i64>) = (0..n_img)
        .flat_map(|i| probe_ts.iter().map(move |&t| (i, t)))
        .unzip();
    let probe_noise = DiffusersGenerator::single(o.seed ^ 0x9e37_79b9).randn(
        &den.shape(probe_idx.len()),
        Kind::Float,
        device,
    )?;
    let probe = |v: &Tensor| -> Result<f64> {
        tch::no_grad(|| {
            let z = vec![0; probe_idx.len()];
            Ok(loss_of(v, &probe_idx, &z, &probe_t, &probe_noise)?.double_value(&[]))
        })
    };
    let mut v = start.to_device(device);
    let before = probe(&v)?;
    let (mut m, mut s2) = (v.zeros_like(), v.zeros_like());
    let task = crate::progress::task("inverting", o.steps as u64);
    let mut losses = Vec::with_capacity(o.steps);
    for step in 0..o.steps {
        crate::fault::point("invert-step")?;
        let (idx, tpl, ts, noise) = den.draws(o.seed, step, o.batch_size, device)?;
        let x = v.detach().set_requires_grad(true);
        let loss = loss_of(&x, &idx, &tpl, &ts, &noise)?;
        let grad = Tensor::f_run_backward(&[&loss], &[&x], false, false)?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("no gradient for the learned embedding"))?;
        let value = loss.double_value(&[]);
        if !value.is_finite() {
            crate::input_bail!("the loss became {value} at step {step}: lower --lr");
        }
        losses.push(value);
        adamw_step(&mut v, &mut m, &mut s2, &grad, o.lr, step + 1);
        task.set_position(step as u64 + 1);
        task.set_message(&format!("loss {value:.4}"));
    }
    task.finish();
    let after = probe(&v)?;
    // The pipeline draws with what was learned.
    tch::no_grad(|| {
        let table = pipe
            .text_encoder
            .model
            .text_model
            .embeddings()
            .token_embedding_weight();
        table.get(id).copy_(&v.to_kind(table.kind()));
    });
    Ok(Inverted {
        embedding: LearnedEmbedding {
            token: o.token.clone(),
            vector: v.to_device(tch::Device::Cpu),
        },
        losses,
        probe: [before, after],
    })
}

/// The denoising loss textual inversion regresses: the images' latents (the VAE posterior's mean)
/// noised at a timestep of the pipeline's training schedule, the UNet's prediction (ε, v or x0, as
/// the scheduler config says) against its target.
struct Denoising {
    latents: Tensor,
    acp: Tensor,
    n_t: usize,
    prediction: PredictionType,
}

impl Denoising {
    fn new(pipe: &StableDiffusionPipeline, images: &[RgbImage]) -> Result<Self> {
        let device = pipe.device;
        let (h, w) = pipe.default_size();
        let f = pipe.vae_scale_factor();
        let prepared: Vec<RgbImage> = images
            .iter()
            .map(|i| prepare(i, h as u32, w as u32))
            .collect();
        let x = images_to_tensor(&prepared).to_device(device);
        let latents = tch::no_grad(|| match &pipe.vae {
            Some(vae) => vae.encode(&x).mean.to_kind(Kind::Float) * vae.config.scaling_factor,
            None => x.shallow_clone(),
        });
        debug_assert_eq!(latents.size()[2], h / f);
        let acp = alphas_cumprod(&pipe.scheduler_config, ZeroSnr::Rescale)?;
        Ok(Self {
            latents,
            n_t: acp.len(),
            acp: Tensor::from_slice(&acp).to_device(device),
            prediction: pipe.scheduler_config.prediction_type,
        })
    }

    /// The latents' shape for `b` images.
    fn shape(&self, b: usize) -> [i64; 4] {
        let s = self.latents.size();
        [b as i64, s[1], s[2], s[3]]
    }

    /// A step's draws, from a generator keyed by (seed, step): image indices, templates,
    /// timesteps and noise for `batch` rows.
    fn draws(
        &self,
        seed: u64,
        step: usize,
        batch: usize,
        device: tch::Device,
    ) -> Result<(Vec<i64>, Vec<usize>, Vec<i64>, Tensor)> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
            seed.wrapping_mul(1_000_003).wrapping_add(step as u64),
        );
        let n_img = self.latents.size()[0];
        let idx: Vec<i64> = (0..batch).map(|_| rng.random_range(0..n_img)).collect();
        let tpl: Vec<usize> = (0..batch)
            .map(|_| rng.random_range(0..TEMPLATES.len()))
            .collect();
        let ts: Vec<i64> = (0..batch)
            .map(|_| rng.random_range(0..self.n_t as i64))
            .collect();
        let noise = DiffusersGenerator::single(rng.random()).randn(
            &self.shape(batch),
            Kind::Float,
            device,
        )?;
        Ok((idx, tpl, ts, noise))
    }

    /// The loss of one batch: `hidden` the text states `[B, T, D]` for the rows `idx` (images),
    /// `ts` (timesteps) and `noise`.
    fn loss(
        &self,
        unet: &UNet2DConditionModel,
        hidden: &Tensor,
        idx: &[i64],
        ts: &[i64],
        noise: &Tensor,
    ) -> Result<Tensor> {
        let device = self.latents.device();
        let x0 = self
            .latents
            .index_select(0, &Tensor::from_slice(idx).to_device(device));
        let tt = Tensor::from_slice(ts).to_device(device);
        let a = self.acp.index_select(0, &tt).reshape([-1, 1, 1, 1]);
        let (sa, sb) = (a.sqrt(), a.neg().g_add_scalar_(1.0).sqrt());
        let noisy = &x0 * &sa + noise * &sb;
        let target = match self.prediction {
            PredictionType::Epsilon => noise.shallow_clone(),
            PredictionType::VPrediction => noise * &sa - &x0 * &sb,
            PredictionType::Sample => x0.shallow_clone(),
        };
        let pred = unet.forward(&noisy, &tt, hidden).to_kind(Kind::Float);
        Ok(pred.mse_loss(&target, tch::Reduction::Mean))
    }
}

/// One step (1-based `k`) of torch's AdamW, as diffusers' example uses it (β 0.9/0.999, ε 1e-8,
/// decoupled weight decay 0.01, bias correction) on one embedding.
fn adamw_step(v: &mut Tensor, m: &mut Tensor, s2: &mut Tensor, grad: &Tensor, lr: f64, k: usize) {
    let (b1, b2, eps, wd) = (0.9f64, 0.999f64, 1e-8, 1e-2);
    tch::no_grad(|| {
        let k = k as i32;
        *v = &*v * (1.0 - lr * wd);
        *m = &*m * b1 + grad * (1.0 - b1);
        *s2 = &*s2 * b2 + grad.square() * (1.0 - b2);
        let mhat = &*m / (1.0 - b1.powi(k));
        let vhat = &*s2 / (1.0 - b2.powi(k));
        *v = &*v - mhat / (vhat.sqrt() + eps) * lr;
    });
}

/// Robust erasure's `word` slot ([`WordAttack`]): the `embedding` attack's textual inversion run
/// inside training, against the student of the moment. Each call runs `steps` AdamW steps from the
/// given start, the word in the concept word's place in the inversion templates, on the images of
/// the concept through the pipeline's frozen UNet; `batch` rows per step (several: a call is short,
/// and one row per step would leave the word to a few noise draws).
pub struct InnerInversion {
    pipe: StableDiffusionPipeline,
    den: Denoising,
    steps: usize,
    lr: f64,
    batch: usize,
}

impl InnerInversion {
    pub fn new(
        mut pipe: StableDiffusionPipeline,
        images: &[RgbImage],
        steps: usize,
        lr: f64,
        batch: usize,
    ) -> Result<Self> {
        if images.is_empty() {
            input_bail!("the word attack needs images of the concept (3–5 is CCE's setting)");
        }
        pipe.freeze();
        let den = Denoising::new(&pipe, images)?;
        Ok(Self {
            pipe,
            den,
            steps,
            lr,
            batch: batch.max(1),
        })
    }
}

impl WordAttack for InnerInversion {
    fn learn(
        &mut self,
        student: &TextEncoder,
        concept: &str,
        start: &Tensor,
        seed: u64,
    ) -> Result<(Tensor, f64)> {
        let device = student.device();
        let mut v = start.to_kind(Kind::Float).to_device(device).detach();
        let (mut m, mut s2) = (v.zeros_like(), v.zeros_like());
        let mut last = f64::NAN;
        for step in 0..self.steps {
            let (idx, tpl, ts, noise) = self.den.draws(seed, step, self.batch, device)?;
            let prompts: Vec<String> = tpl
                .iter()
                .map(|&k| TEMPLATES[k].replace("{}", concept))
                .collect();
            let slotted = Slotted::new(student, &prompts, concept, RobustSlot::Concept)?;
            let x = v.detach().set_requires_grad(true);
            let hidden = slotted.forward(student, &x);
            let loss = self.den.loss(&self.pipe.unet, &hidden, &idx, &ts, &noise)?;
            // Gradients for the word only: the student's and the UNet's stay untouched.
            let grad = Tensor::f_run_backward(&[&loss], &[&x], false, false)?
                .pop()
                .ok_or_else(|| anyhow::anyhow!("no gradient for the learned word"))?;
            last = loss.double_value(&[]);
            if !last.is_finite() {
                crate::input_bail!(
                    "the word attack's loss became {last}: lower training.robust.word_lr"
                );
            }
            adamw_step(&mut v, &mut m, &mut s2, &grad, self.lr, step + 1);
        }
        Ok((v.detach(), last))
    }
}

/// `[training.robust] slot = "word"`: the learned-word attack through `word_pipeline`'s UNet, on
/// the images in `word_images` (read before any step, so a missing folder fails at once).
pub fn word_attack(exp: &Experiment, device: tch::Device) -> Result<Option<Box<dyn WordAttack>>> {
    let Some(r) = exp
        .training
        .robust
        .as_ref()
        .filter(|r| r.slot.contains(RobustSlot::Word))
    else {
        return Ok(None);
    };
    let (Some(pipeline), Some(images)) = (&r.word_pipeline, &r.word_images) else {
        // Experiment::validate refuses this first.
        return Ok(None);
    };
    let files = image_files(std::slice::from_ref(images))
        .map_err(|e| e.context("training.robust.word_images"))?;
    let images = read_images(&files)?;
    let pipe = StableDiffusionPipeline::load(pipeline, None, device, tch::Kind::Float)
        .map_err(|e| e.context("training.robust.word_pipeline"))?;
    // Four rows per step: the call is a few steps long, and one row would leave it to a few draws.
    Ok(Some(Box::new(InnerInversion::new(
        pipe,
        &images,
        r.word_steps,
        r.word_lr,
        4,
    )?)))
}
