//! A minimal reference sampler for the shapes model: the scheduler trait directly (DDIM by default),
//! classifier-free guidance with the empty prompt, noise from a seeded ChaCha stream. The Stable
//! Diffusion pipeline is the real sampler; this one exists so tests and `clipdoor shapes sample` can
//! measure the model without it.
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::dataset::item_seed;
use super::labels::{Color, Shape, IMAGE_SIZE};
use super::model::ShapesModel;
use super::noise::{randn, tensor_to_images};
use super::oracle::{judge, Judgement};
use crate::diffusion::schedulers::scheduler_by_name;
use crate::error::Result;
use crate::settings::SchedulerKind;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SampleOptions {
    /// A deterministic sampler (`ddim`, `pndm`, `euler`, `dpm++`; not the ancestral one).
    pub scheduler: SchedulerKind,
    pub steps: usize,
    pub guidance: f64,
    pub batch_size: usize,
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            scheduler: SchedulerKind::Ddim,
            steps: 20,
            guidance: 4.0,
            batch_size: 32,
        }
    }
}

/// Images for `prompts`; image `i` starts from the noise of seed `seeds[i]`.
pub fn sample_images(
    model: &ShapesModel,
    prompts: &[String],
    seeds: &[u64],
    opts: &SampleOptions,
) -> Result<Vec<image::RgbImage>> {
    if prompts.len() != seeds.len() {
        crate::input_bail!(
            "{} prompts but {} seeds: give one seed per prompt",
            prompts.len(),
            seeds.len()
        );
    }
    let mut out = Vec::with_capacity(prompts.len());
    for (p, s) in prompts
        .chunks(opts.batch_size.max(1))
        .zip(seeds.chunks(opts.batch_size.max(1)))
    {
        out.extend(sample_batch(model, p, s, opts)?);
    }
    Ok(out)
}

fn sample_batch(
    model: &ShapesModel,
    prompts: &[String],
    seeds: &[u64],
    opts: &SampleOptions,
) -> Result<Vec<image::RgbImage>> {
    let mut scheduler = scheduler_by_name(Some(opts.scheduler), &model.scheduler)?;
    if scheduler.needs_noise() {
        crate::input_bail!("the reference sampler runs deterministic schedulers only; use ddim, pndm, euler or dpm++");
    }
    scheduler.set_timesteps(opts.steps)?;
    let device = model.unet_vs.device();
    let b = prompts.len() as i64;
    let side = IMAGE_SIZE as i64;
    let noise: Vec<Tensor> = seeds
        .iter()
        .map(|&s| {
            randn(
                &mut ChaCha8Rng::seed_from_u64(item_seed(s, 0)),
                &[1, 3, side, side],
            )
        })
        .collect();
    let mut x = (Tensor::cat(&noise, 0) * scheduler.init_noise_sigma()).to_device(device);
    let empty = vec![String::new(); prompts.len()];
    let context = Tensor::cat(&[model.encode(&empty)?, model.encode(prompts)?], 0);
    tch::no_grad(|| -> Result<()> {
        for &t in scheduler.timesteps().to_vec().iter() {
            let input = scheduler.scale_model_input(&x, t)?;
            let t_batch = Tensor::full([2 * b], t, (Kind::Float, device));
            let eps = model
                .unet
                .forward(&Tensor::cat(&[&input, &input], 0), &t_batch, &context);
            let (uncond, cond) = (eps.narrow(0, 0, b), eps.narrow(0, b, b));
            let guided = &uncond + (&cond - &uncond) * opts.guidance;
            x = scheduler.step(&guided, t, &x, None)?;
        }
        Ok(())
    })?;
    tensor_to_images(&x)
}

/// One judged sample of [`evaluate`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JudgedSample {
    pub prompt: String,
    pub seed: u64,
    pub color: Color,
    pub shape: Shape,
    pub judgement: Judgement,
}

impl JudgedSample {
    pub fn color_ok(&self) -> bool {
        self.judgement.color == Some(self.color)
    }
    pub fn shape_ok(&self) -> bool {
        self.judgement.shape == Some(self.shape)
    }
}

/// Prompts "a {colour} {shape}" for every colour × shape, `per_pair` seeds each (from `seed`).
pub fn clean_prompts(per_pair: usize, seed: u64) -> Vec<(String, u64, Color, Shape)> {
    let mut out = vec![];
    for &c in Color::ALL {
        for &s in Shape::ALL {
            let article = if c.word().starts_with(['a', 'e', 'i', 'o', 'u']) {
                "an"
            } else {
                "a"
            };
            for _ in 0..per_pair {
                out.push((
                    format!("{article} {c} {s}"),
                    item_seed(seed, out.len() as u64),
                    c,
                    s,
                ));
            }
        }
    }
    out
}

/// Sample and judge every clean prompt; returns the samples, their images and judgements.
pub fn evaluate(
    model: &ShapesModel,
    per_pair: usize,
    seed: u64,
    opts: &SampleOptions,
) -> Result<(Vec<JudgedSample>, Vec<image::RgbImage>)> {
    let items = clean_prompts(per_pair, seed);
    let prompts: Vec<String> = items.iter().map(|i| i.0.clone()).collect();
    let seeds: Vec<u64> = items.iter().map(|i| i.1).collect();
    let images = sample_images(model, &prompts, &seeds, opts)?;
    let judged = items
        .into_iter()
        .zip(&images)
        .map(|((prompt, seed, color, shape), img)| JudgedSample {
            prompt,
            seed,
            color,
            shape,
            judgement: judge(img),
        })
        .collect();
    Ok((judged, images))
}

/// (colour accuracy, shape accuracy, both) of judged samples.
pub fn accuracy(samples: &[JudgedSample]) -> (f64, f64, f64) {
    let n = samples.len().max(1) as f64;
    let count =
        |f: &dyn Fn(&JudgedSample) -> bool| samples.iter().filter(|s| f(s)).count() as f64 / n;
    (
        count(&|s| s.color_ok()),
        count(&|s| s.shape_ok()),
        count(&|s| s.color_ok() && s.shape_ok()),
    )
}
