//! `clipdoor shapes train`: the denoising loss (the UNet predicts what `--prediction` says, v by
//! default, weighted per timestep as objective.rs says) on SD's scaled_linear betas (1000 training
//! steps) on freshly rendered batches, AdamW with warm-up + cosine decay, an EMA copy of the
//! UNet (what is saved), 10% empty captions for classifier-free guidance, resumable checkpoints, and
//! the diffusers layout at the end.
//!
//! Images are noised by the scheduler the run saves (its `add_noise`, `alphas_cumprod` and
//! `get_velocity`), and the output folder follows the one run-folder policy of
//! [`RunFolder`] (`--resume`, `--force`, DONE, atomic checkpoint swaps).
//!
//! Every random choice (items, caption drops, timesteps, noise) comes from seeded ChaCha streams
//! indexed by step, so a resumed run draws exactly what the uninterrupted run would have.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Tensor};

use super::dataset::{item_seed, render_sample, sample_with_share};
use super::model::{save_pipeline, scheduler_config_json_with, scheduler_config_with, ShapesModel};
use super::noise::{images_to_tensor, randn};
use super::objective::{self, Weighting};
use super::text_stage::{train_encoder, TextStageOptions};
use crate::diffusion::schedulers::{scheduler_by_name, PredictionType, Scheduler};
use crate::error::Result;
use crate::io::atomic::write_json;
use crate::io::weights::{load_var_store, save_tensors, save_var_store, SafetensorsFile};
use crate::train::optim::{AdamW, AdamWConfig};
use crate::train::run_folder::{RunFolder, Start};
use crate::{input_bail, input_err};

/// Settings of one training run. Fields missing from an older `state.json` take today's defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TrainOptions {
    /// Stop after this many optimiser steps (in total, counting resumed ones).
    pub steps: Option<u64>,
    /// Stop after this many minutes of training (in total, counting resumed sessions).
    pub minutes: Option<f64>,
    pub seed: u64,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    /// Share of captions replaced by the empty prompt (classifier-free guidance).
    pub caption_drop: f64,
    pub ema_decay: f64,
    /// Write a checkpoint every this many steps (and at the end).
    pub checkpoint_every: u64,
    /// What the UNet predicts (saved as the scheduler's `prediction_type`).
    pub prediction: PredictionType,
    /// How each timestep's clean-image error is weighted (see [`objective`](super::objective)).
    pub weighting: Weighting,
    /// γ of the Min-SNR weightings.
    pub snr_gamma: f64,
    /// The text encoder's own stage before the UNet's (text_stage.rs); 0 steps keeps it random.
    pub text_stage: TextStageOptions,
    /// Share of the training items that are bare backgrounds with shape-less captions.
    pub no_object_share: f64,
    /// Rescale the betas to zero terminal SNR (saved as the scheduler's `rescale_betas_zero_snr`).
    pub zero_terminal_snr: bool,
    /// Start from a saved shapes model (its UNet, as the UNet and its EMA, and its text encoder, with
    /// no text stage) instead of random weights: a second training phase under another recipe.
    pub init_from: Option<std::path::PathBuf>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            steps: None,
            minutes: Some(15.0),
            seed: 0,
            batch_size: 32,
            lr: 1e-3,
            warmup_steps: 100,
            caption_drop: 0.1,
            ema_decay: 0.995,
            checkpoint_every: 100,
            prediction: PredictionType::VPrediction,
            weighting: Weighting::MinSnr,
            snr_gamma: 5.0,
            text_stage: TextStageOptions::default(),
            no_object_share: super::dataset::NO_OBJECT_SHARE,
            zero_terminal_snr: false,
            init_from: None,
        }
    }
}

impl TrainOptions {
    pub fn validate(&self) -> Result<()> {
        if self.steps.is_none() && self.minutes.is_none() {
            input_bail!("give --steps or --minutes (or both): training needs a stopping point");
        }
        if self.minutes.is_some_and(|m| !(m > 0.0 && m.is_finite())) {
            input_bail!("--minutes must be a positive number");
        }
        if self.batch_size == 0 || self.checkpoint_every == 0 {
            input_bail!("the batch size and the checkpoint interval must be positive");
        }
        if !(0.0..1.0).contains(&self.caption_drop) || !(0.0..1.0).contains(&self.ema_decay) {
            input_bail!("caption_drop and ema_decay must be in [0, 1)");
        }
        if !(0.0..=1.0).contains(&self.no_object_share) {
            input_bail!("--no-object-share must be in [0, 1]");
        }
        if !(self.snr_gamma > 0.0 && self.snr_gamma.is_finite()) {
            input_bail!("--snr-gamma must be a positive number");
        }
        if self.text_stage.steps > 0
            && (self.text_stage.batch_size == 0
                || !(self.text_stage.lr > 0.0 && self.text_stage.lr.is_finite()))
        {
            input_bail!("the text stage needs a positive batch size and learning rate");
        }
        AdamWConfig {
            lr: self.lr,
            ..AdamWConfig::default()
        }
        .validate()
    }

    /// Share of the run done (by steps or by time, whichever is further), in [0, 1].
    fn progress(&self, step: u64, elapsed_s: f64) -> f64 {
        let by_steps = self.steps.map_or(0.0, |s| step as f64 / s.max(1) as f64);
        let by_time = self.minutes.map_or(0.0, |m| elapsed_s / (m * 60.0));
        by_steps.max(by_time).clamp(0.0, 1.0)
    }

    /// Linear warm-up, then half-cosine from `lr` to `lr / 10` over the run's progress.
    fn lr_at(&self, step: u64, elapsed_s: f64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let p = self.progress(step, elapsed_s);
        self.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()))
    }
}

/// What `checkpoint/state.json` holds besides the tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainState {
    options: TrainOptions,
    step: u64,
    elapsed_s: f64,
    /// The loss of every step so far.
    losses: Vec<f32>,
    /// The text stage's loss per step and held-out accuracy (done before step 0).
    #[serde(default)]
    text_losses: Vec<f32>,
    #[serde(default)]
    text_accuracy: Option<f64>,
}

/// One progress report (after each step).
#[derive(Debug, Clone, Copy)]
pub struct StepInfo {
    pub step: u64,
    pub loss: f32,
    pub lr: f64,
    pub elapsed_s: f64,
    /// Share of the run done, in [0, 1].
    pub progress: f64,
    /// A step of the text encoder's stage (text_stage.rs), not of the UNet's.
    pub text_stage: bool,
}

/// The outcome of [`train`].
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub out: PathBuf,
    /// Steps done in total (including resumed ones).
    pub steps: u64,
    /// The loss of every step (including resumed ones).
    pub losses: Vec<f32>,
    pub elapsed_s: f64,
    /// The text stage's held-out accuracy (all attributes right), when it ran.
    pub text_accuracy: Option<f64>,
}

/// Entries `train` writes into its output folder (what `--force` removes).
const OUTPUTS: &[&str] = &[
    "model_index.json",
    "unet",
    "text_encoder",
    "tokenizer",
    "scheduler",
    "checkpoint",
    "checkpoint.tmp",
    "checkpoint.old",
    "metrics.json",
    "DONE",
];

/// The EMA copy of the trained parameters, in the optimiser's order.
fn ema_init(opt: &AdamW) -> Vec<(String, Tensor)> {
    opt.params()
        .iter()
        .map(|(n, t)| (n.clone(), t.detach().copy()))
        .collect()
}

/// The UNet weights to save: the EMA copy of every trained parameter, the rest as they are.
fn ema_weights(model: &ShapesModel, ema: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    let by_name: std::collections::HashMap<&str, &Tensor> =
        ema.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut vars: Vec<(String, Tensor)> = model.unet_vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars.into_iter()
        .map(|(n, t)| {
            let w = by_name.get(n.as_str()).map_or(t, |e| e.shallow_clone());
            (n, w)
        })
        .collect()
}

/// One training batch: noisy images, timesteps, the regression target, the per-item loss weights,
/// and the (possibly dropped) captions.
struct Batch {
    noisy: Tensor,
    timesteps: Tensor,
    target: Tensor,
    /// `[B]`: the timestep weights (see [`objective::loss_weights`]).
    weights: Tensor,
    captions: Vec<String>,
}

fn make_batch(opts: &TrainOptions, step: u64, scheduler: &dyn Scheduler) -> Result<Batch> {
    let b = opts.batch_size as u64;
    let items: Vec<_> = (0..b)
        .map(|i| sample_with_share(opts.seed, step * b + i, opts.no_object_share).0)
        .collect();
    let images: Vec<_> = items.iter().map(render_sample).collect();
    let x0 = images_to_tensor(&images);
    // A stream of its own per step: caption drops, timesteps, noise.
    let mut rng = ChaCha8Rng::seed_from_u64(item_seed(opts.seed ^ 0x5eed_0f_7a1e, step));
    let captions = items
        .into_iter()
        .map(|s| {
            if rng.random::<f64>() < opts.caption_drop {
                String::new()
            } else {
                s.caption
            }
        })
        .collect();
    let t: Vec<i64> = (0..b).map(|_| rng.random_range(0..1000)).collect();
    let timesteps = Tensor::from_slice(&t);
    let noise = randn(&mut rng, &x0.size());
    let noisy = scheduler.add_noise(&x0, &noise, &timesteps)?;
    let acp = Tensor::from_slice(scheduler.alphas_cumprod()).index_select(0, &timesteps);
    let weights = objective::loss_weights(opts.prediction, opts.weighting, opts.snr_gamma, &acp);
    let target = objective::target(opts.prediction, scheduler, &x0, &noise, &timesteps)?;
    Ok(Batch {
        noisy,
        timesteps,
        target,
        weights,
        captions,
    })
}

fn save_checkpoint(
    folder: &RunFolder,
    model: &ShapesModel,
    ema: &[(String, Tensor)],
    opt: &AdamW,
    state: &TrainState,
) -> Result<()> {
    folder.commit_checkpoint(|dir| {
        save_var_store(&dir.join("unet.safetensors"), &model.unet_vs, None)?;
        save_var_store(
            &dir.join("text_encoder.safetensors"),
            &model.encoder.vs,
            None,
        )?;
        save_tensors(&dir.join("ema.safetensors"), ema, None)?;
        opt.save_state(&dir.join("optimizer.safetensors"))?;
        write_json(&dir.join("state.json"), state)
    })
}

fn load_checkpoint(
    folder: &RunFolder,
    model: &mut ShapesModel,
    ema: &mut [(String, Tensor)],
    opt: &mut AdamW,
) -> Result<TrainState> {
    let dir = folder.checkpoint();
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path)?;
    let state: TrainState = serde_json::from_str(&text).map_err(|e| {
        input_err!(
            "{}: not a shapes training state ({e}); pass --force to start over",
            state_path.display()
        )
    })?;
    load_var_store(
        &mut model.unet_vs,
        &SafetensorsFile::open(&dir.join("unet.safetensors"))?,
        &[],
    )?;
    load_var_store(
        &mut model.encoder.vs,
        &SafetensorsFile::open(&dir.join("text_encoder.safetensors"))?,
        &[],
    )?;
    model.encoder.vs.freeze();
    let file = SafetensorsFile::open(&dir.join("ema.safetensors"))?;
    tch::no_grad(|| -> Result<()> {
        for (name, t) in ema.iter_mut() {
            t.copy_(&file.tensor(name)?.to_device(t.device()));
        }
        Ok(())
    })?;
    opt.load_state(&dir.join("optimizer.safetensors"))?;
    Ok(state)
}

/// Train into `out` (see the module docs); `on_step` is called after every step.
pub fn train(
    out: &Path,
    opts: &TrainOptions,
    resume: bool,
    force: bool,
    device: Device,
    mut on_step: impl FnMut(&StepInfo),
) -> Result<TrainReport> {
    opts.validate()?;
    let (folder, start) = RunFolder::open_with(out, resume, force, OUTPUTS)?;
    let resuming = start == Start::Resume;
    let mut model = match &opts.init_from {
        Some(dir) => {
            let mut m = ShapesModel::load(dir, device)
                .map_err(|e| input_err!("--init-from {}: {e}", dir.display()))?;
            m.unet_vs.unfreeze();
            m
        }
        None => ShapesModel::new(opts.seed as i64, opts.prediction, device)?,
    };
    model.scheduler = scheduler_config_with(opts.prediction, opts.zero_terminal_snr)?;
    let mut opt = AdamW::from_var_store(
        &model.unet_vs,
        AdamWConfig {
            lr: opts.lr,
            ..AdamWConfig::default()
        },
    )?;
    let mut ema = ema_init(&opt);
    let mut state = TrainState {
        options: opts.clone(),
        step: 0,
        elapsed_s: 0.0,
        losses: vec![],
        text_losses: vec![],
        text_accuracy: None,
    };
    if !resuming && opts.text_stage.steps > 0 && opts.init_from.is_none() {
        let t0 = Instant::now();
        let report = train_encoder(
            &mut model.encoder,
            &opts.text_stage,
            opts.seed,
            |step, loss| {
                on_step(&StepInfo {
                    step,
                    loss,
                    lr: opts.text_stage.lr,
                    elapsed_s: t0.elapsed().as_secs_f64(),
                    progress: 0.0,
                    text_stage: true,
                })
            },
        )?;
        state.elapsed_s = t0.elapsed().as_secs_f64();
        state.text_losses = report.losses;
        state.text_accuracy = Some(report.heldout_accuracy);
        save_checkpoint(&folder, &model, &ema, &opt, &state)?;
    }
    if resuming {
        let saved = load_checkpoint(&folder, &mut model, &mut ema, &mut opt)?;
        let (a, b) = (&saved.options, opts);
        let key = |o: &TrainOptions| {
            (
                o.seed,
                o.batch_size,
                o.caption_drop,
                o.prediction,
                o.weighting,
                o.snr_gamma,
                o.zero_terminal_snr,
                o.init_from.clone(),
                o.no_object_share.to_bits(),
            )
        };
        if key(a) != key(b) {
            input_bail!(
                "{} was started with seed {}, batch size {}, caption drop {}, prediction {}, weighting {:?}, snr gamma {}, zero terminal SNR {}, init from {:?}: resume with the same settings or pass --force",
                out.display(), a.seed, a.batch_size, a.caption_drop, a.prediction, a.weighting, a.snr_gamma, a.zero_terminal_snr, a.init_from
            );
        }
        state = TrainState {
            options: opts.clone(),
            ..saved
        };
    }

    // The scheduler the folder's scheduler_config.json describes: it noises the training images.
    let scheduler = scheduler_by_name(None, &model.scheduler)?;
    let start = Instant::now();
    let elapsed0 = state.elapsed_s;
    let elapsed = || elapsed0 + start.elapsed().as_secs_f64();
    while opts.progress(state.step, elapsed()) < 1.0 {
        let lr = opts.lr_at(state.step, elapsed());
        let batch = make_batch(opts, state.step, scheduler.as_ref())?;
        let context = model.encode(&batch.captions)?;
        let pred = model.unet.forward(
            &batch.noisy.to_device(device),
            &batch.timesteps.to_device(device),
            &context,
        );
        // Per-item MSE on the prediction, weighted so that it is the chosen weighting of the
        // implied x0 error (objective.rs), averaged over the batch.
        let target = batch.target.to_device(device);
        let err =
            (pred - target)
                .square()
                .mean_dim([1i64, 2, 3].as_slice(), false, tch::Kind::Float);
        let loss = (err * batch.weights.to_device(device)).mean(tch::Kind::Float);
        opt.zero_grad();
        loss.backward();
        opt.clip_grad_norm(1.0)?;
        opt.set_lr(lr)?;
        opt.step()?;
        // EMA with the usual warm-up, so early copies are not dominated by the random init.
        let decay = opts
            .ema_decay
            .min((1 + state.step) as f64 / (10 + state.step) as f64);
        tch::no_grad(|| {
            for ((_, e), (_, p)) in ema.iter_mut().zip(opt.params()) {
                let _ = e.lerp_(p, 1.0 - decay);
            }
        });
        let loss_value = loss.double_value(&[]) as f32;
        if !loss_value.is_finite() {
            anyhow::bail!(
                "the loss became {loss_value} at step {}: lower --lr",
                state.step
            );
        }
        state.losses.push(loss_value);
        state.step += 1;
        state.elapsed_s = elapsed();
        on_step(&StepInfo {
            step: state.step,
            loss: loss_value,
            lr,
            elapsed_s: state.elapsed_s,
            progress: opts.progress(state.step, state.elapsed_s),
            text_stage: false,
        });
        if state.step.is_multiple_of(opts.checkpoint_every) {
            save_checkpoint(&folder, &model, &ema, &opt, &state)?;
        }
    }
    save_checkpoint(&folder, &model, &ema, &opt, &state)?;
    save_pipeline(
        out,
        &model.encoder,
        &ema_weights(&model, &ema),
        &scheduler_config_json_with(opts.prediction, opts.zero_terminal_snr),
    )?;
    write_metrics(out, &state)?;
    crate::io::atomic::write_atomic(&out.join("DONE"), b"")?;
    Ok(TrainReport {
        out: out.to_path_buf(),
        steps: state.step,
        losses: state.losses,
        elapsed_s: state.elapsed_s,
        text_accuracy: state.text_accuracy,
    })
}

/// `metrics.json`: the loss curve (mean per 50 steps) and the run's totals.
fn write_metrics(out: &Path, state: &TrainState) -> Result<()> {
    let curve: Vec<f32> = state
        .losses
        .chunks(50)
        .map(|c| c.iter().sum::<f32>() / c.len() as f32)
        .collect();
    let tail = &state.losses[state.losses.len().saturating_sub(100)..];
    let final_loss = tail.iter().sum::<f32>() / tail.len().max(1) as f32;
    write_json(
        &out.join("metrics.json"),
        &serde_json::json!({
            "steps": state.step,
            "seconds": state.elapsed_s,
            "loss/total": final_loss,
            "loss/total_per_50_steps": curve,
            "options": state.options,
            "text_stage/loss_first": state.text_losses.first(),
            "text_stage/loss_last": state.text_losses.last(),
            "text_stage/heldout_accuracy": state.text_accuracy,
        }),
    )
}
