//! A minimal reference sampler for the shapes model: the scheduler trait directly (DDIM by default),
//! classifier-free guidance with the empty prompt, noise from a seeded ChaCha stream. The Stable
//! Diffusion pipeline is the real sampler; this one exists so tests and `clipdoor shapes sample` can
//! measure the model without it.
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::dataset::item_seed;
use super::labels::{Background, Color, Position, Shape, ShapeLabel, Size, IMAGE_SIZE};
use super::model::ShapesModel;
use super::noise::{randn, tensor_to_images};
use super::oracle::{judge, Judgement};
use crate::diffusion::schedulers::scheduler_by_name;
use crate::error::Result;
use crate::eval::rates::Rate;
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
            // Chosen on a calibration seed (docs/shapes-world.md, "The shipped model").
            guidance: 2.5,
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

/// The model's quality on three prompt sets, judged by the oracle (each rate with its count and 95%
/// interval; `clipdoor shapes sample` writes it as `quality.json`):
/// - `pairs`: "a {colour} {shape}" for every pair, `per_pair` seeds each: colour, shape, both;
/// - `attributes`: the same number of prompts that state every attribute ("a small red circle in the
///   top left, gray background"), sizes, positions and backgrounds cycled over the set: each
///   attribute's accuracy and all of them at once;
/// - `no_object`: captions without a shape word, with and without a background word, `per_pair`
///   rounds: the empty picture (on the asked background, where one is asked).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QualityReport {
    pub settings: SampleOptions,
    pub seed: u64,
    pub pairs: PairRates,
    pub attributes: AttributeRates,
    pub no_object: NoObjectRates,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairRates {
    pub colour: Rate,
    pub shape: Rate,
    pub both: Rate,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttributeRates {
    pub colour_and_shape: Rate,
    pub size: Rate,
    pub position: Rate,
    pub background: Rate,
    pub all: Rate,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NoObjectRates {
    pub empty_picture: Rate,
}

/// Prompts of the `attributes` set: `n` full captions, attributes cycled so every class appears.
pub fn attribute_prompts(n: usize, seed: u64) -> Vec<(String, u64, ShapeLabel)> {
    (0..n)
        .map(|i| {
            // Co-prime-ish strides so the attributes do not move in lock-step.
            let pick = |len: usize, stride: usize| (i / stride + i) % len;
            let color = Color::ALL[i % Color::ALL.len()];
            let shape = Shape::ALL[(i + i / Color::ALL.len()) % Shape::ALL.len()];
            let size = Size::ALL[pick(Size::ALL.len(), 3)];
            let position = Position::ALL[pick(Position::ALL.len(), 5)];
            let background = Background::ALL[pick(Background::ALL.len(), 7)];
            let label = ShapeLabel {
                color,
                shape,
                size,
                position,
                background,
                cx: 0.0,
                cy: 0.0,
                radius: 0.0,
            };
            // The training captions' full template ("{z} {c} {s} {p}, {b} background").
            let body = format!(
                "{} {} {} {}, {} background",
                size.word(),
                color.word(),
                shape.word(),
                position.phrase(),
                background.word()
            );
            (
                format!("a {body}"),
                item_seed(seed ^ 0xa77, i as u64),
                label,
            )
        })
        .collect()
}

/// Prompts of the `no_object` set, `per` rounds of: per background, "an empty {b} background" and
/// "a small {colour} on a {b} background"; and two captions that name no background either ("a
/// {colour}", "a large {colour} {position}"), which must give the empty picture on any clean
/// background. `None`: no background asked.
pub fn no_object_prompts(per: usize, seed: u64) -> Vec<(String, u64, Option<Background>)> {
    let mut out = vec![];
    for round in 0..per {
        for (k, &b) in Background::ALL.iter().enumerate() {
            let colour = Color::ALL[(round * 3 + k) % Color::ALL.len()];
            let other = Color::ALL[(round * 3 + k + 2) % Color::ALL.len()];
            let position = Position::ALL[(round * 3 + k) % Position::ALL.len()];
            let article = |c: Color| {
                if c.word().starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "an"
                } else {
                    "a"
                }
            };
            for (p, bg) in [
                (format!("an empty {} background", b.word()), Some(b)),
                (
                    format!("a small {} on a {} background", colour.word(), b.word()),
                    Some(b),
                ),
                (format!("{} {}", article(other), other.word()), None),
                (
                    format!("a large {} {}", colour.word(), position.phrase()),
                    None,
                ),
            ] {
                out.push((p, item_seed(seed ^ 0xe3b7, out.len() as u64), bg));
            }
        }
    }
    out
}

/// Sample and judge the three sets of [`QualityReport`].
pub fn quality(
    model: &ShapesModel,
    per_pair: usize,
    seed: u64,
    opts: &SampleOptions,
) -> Result<(QualityReport, Vec<JudgedSample>, Vec<image::RgbImage>)> {
    let (pairs, pair_images) = evaluate(model, per_pair, seed, opts)?;
    let rate = |f: &dyn Fn(&JudgedSample) -> bool| {
        Rate::new(pairs.iter().filter(|s| f(s)).count(), pairs.len())
    };
    let pair_rates = PairRates {
        colour: rate(&|s| s.color_ok()),
        shape: rate(&|s| s.shape_ok()),
        both: rate(&|s| s.color_ok() && s.shape_ok()),
    };

    let attrs = attribute_prompts(pairs.len(), seed);
    let prompts: Vec<String> = attrs.iter().map(|a| a.0.clone()).collect();
    let seeds: Vec<u64> = attrs.iter().map(|a| a.1).collect();
    let judged: Vec<Judgement> = sample_images(model, &prompts, &seeds, opts)?
        .iter()
        .map(judge)
        .collect();
    let count = |f: &dyn Fn(&Judgement, &ShapeLabel) -> bool| {
        let k = judged
            .iter()
            .zip(&attrs)
            .filter(|(j, a)| f(j, &a.2))
            .count();
        Rate::new(k, attrs.len())
    };
    let cs = |j: &Judgement, l: &ShapeLabel| j.color == Some(l.color) && j.shape == Some(l.shape);
    let size = |j: &Judgement, l: &ShapeLabel| j.size() == Some(l.size);
    let position = |j: &Judgement, l: &ShapeLabel| j.position() == Some(l.position);
    let background =
        |j: &Judgement, l: &ShapeLabel| j.clean_background() && j.background == Some(l.background);
    let attributes = AttributeRates {
        colour_and_shape: count(&cs),
        size: count(&size),
        position: count(&position),
        background: count(&background),
        all: count(&|j, l| cs(j, l) && size(j, l) && position(j, l) && background(j, l)),
    };

    let empty = no_object_prompts(per_pair, seed);
    let prompts: Vec<String> = empty.iter().map(|a| a.0.clone()).collect();
    let seeds: Vec<u64> = empty.iter().map(|a| a.1).collect();
    let k = sample_images(model, &prompts, &seeds, opts)?
        .iter()
        .zip(&empty)
        .filter(|(img, e)| {
            let j = judge(img);
            j.is_empty_picture() && e.2.is_none_or(|b| j.background == Some(b))
        })
        .count();
    let report = QualityReport {
        settings: opts.clone(),
        seed,
        pairs: pair_rates,
        attributes,
        no_object: NoObjectRates {
            empty_picture: Rate::new(k, empty.len()),
        },
    };
    Ok((report, pairs, pair_images))
}
