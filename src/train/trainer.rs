//! The Rickrolling teacher–student loop: utility loss on clean prompts + β · Σ backdoor losses,
//! AdamW, the reference's LR schedule, checkpoints for `--resume`, TensorBoard scalars.
//!
//! [`Trainer`] is the loop's state: [`Trainer::new`] opens (or resumes) the run folder and loads the
//! teacher and student, [`Trainer::step`] is one optimisation step, [`Trainer::checkpoint`] commits
//! the resume state, [`Trainer::finish`] saves the encoder and the metrics. [`train`] drives it with
//! progress and the checkpoint cadence; benchmarks time `step` alone.
use anyhow::Context;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

use super::grad_scaler::GradScaler;
use super::metrics::{evaluate, EmbeddingMetrics};
use super::optim::{AdamW, AdamWConfig, AdamWImpl, LrDecay, LrSchedule};
use super::robust::{BankedPrompt, WordAttack};
use super::run_folder::{RunFolder, Start};
use super::step_timer::{Phase, StepTimer};
use super::tensorboard::EventWriter;
use crate::adversary::space::{concept_words, TokenSpace};
use crate::adversary::token_search::target_pooled;
use crate::error::Result;
use crate::experiment::{
    build_backdoors, eval_captions, Backdoor, BackdoorKind, Experiment, PromptPools, RobustSection,
    RobustSlot, Target,
};
use crate::io::atomic::{write_atomic, write_json};
use crate::io::weights::{load_var_store, save_var_store, SafetensorsFile};
use crate::models::text_encoder::TextEncoder;
use crate::settings::{Distance, LrScheduleKind, Precision};
use crate::torch_ext::{set_float32_matmul_precision, MatmulPrecision};
use crate::{input_bail, input_err};

pub struct TrainOptions {
    pub out: PathBuf,
    pub resume: bool,
    pub force: bool,
    pub device: Device,
    /// Stop (with a checkpoint) after this many steps, as if interrupted; for tests and time-boxed jobs.
    pub stop_after: Option<u64>,
}

#[derive(Debug)]
pub enum TrainOutcome {
    Finished {
        metrics: EmbeddingMetrics,
        seconds: f64,
    },
    Stopped {
        step: u64,
    },
}

/// What one step did (also written to TensorBoard).
#[derive(Debug, Clone)]
pub struct StepReport {
    /// The step's index (0-based).
    pub step: u64,
    pub lr: f64,
    pub loss: f64,
    pub utility: f64,
    /// Per backdoor, in experiment order.
    pub backdoor_losses: Vec<f64>,
    /// NaN on a step skipped by f16 loss scaling.
    pub grad_norm: f64,
    /// f16 only: the loss scale this step used.
    pub loss_scale: Option<f64>,
    /// f16 only: the gradients overflowed, so the update was skipped and the scale backed off.
    pub skipped: bool,
    /// Robust erasure, on attacked steps, per backdoor and inner attack: (tag: the backdoor's name,
    /// with `/slot` when `[training.robust] slot` lists several; distance the inner attack reached,
    /// NaN where none ran (a `word_every` step trains the word bank only); loss of what it found,
    /// or of the banked words, to the erased target).
    pub robust: Vec<(String, f64, f64)>,
    /// Robust erasure with a retain set, on attacked steps: the retain batch's distance to the
    /// teacher.
    pub retain: Option<f64>,
}

/// One step's prompts.
pub struct StepBatch {
    /// The student's batch: `n_clean` clean prompts, then each backdoor's poisoned prompts.
    pub student: Vec<String>,
    /// The teacher's batch: the clean prompts, then the per-sample targets (fixed targets, such as
    /// a TPA's target prompt, are embedded once in [`Trainer::new`]).
    pub teacher: Vec<String>,
    pub n_clean: usize,
    rows: Vec<BackdoorRows>,
    /// One poisoned prompt per backdoor, for TensorBoard.
    samples: Vec<String>,
}

/// Where one backdoor's prompts sit in the step's student and teacher batches.
struct BackdoorRows {
    /// Rows of the student batch (the poisoned prompts).
    student: std::ops::Range<usize>,
    /// Rows of the teacher batch (per-sample targets); empty when the target is fixed.
    teacher: std::ops::Range<usize>,
}

fn schedule(exp: &Experiment) -> Result<LrSchedule> {
    let t = &exp.training;
    match t.lr_schedule {
        LrScheduleKind::MultiStep => LrSchedule::multi_step(t.lr, &t.lr_milestones, t.lr_gamma),
        LrScheduleKind::Cosine => LrSchedule::warmup_cosine(t.lr, t.warmup_steps, t.steps, 0.0),
        LrScheduleKind::Constant => LrSchedule::new(t.lr, t.warmup_steps, LrDecay::Constant),
    }
}

/// The state of a training run between steps.
pub struct Trainer<'a> {
    exp: &'a Experiment,
    run: RunFolder,
    backdoors: Vec<Backdoor>,
    pools: PromptPools,
    teacher: TextEncoder,
    student: TextEncoder,
    distance: Distance,
    opt: AdamW,
    sched: LrSchedule,
    /// Per backdoor: its constant target (a TPA's target prompt), embedded once.
    fixed: Vec<Option<Tensor>>,
    /// Per backdoor, with `[training.robust] slot = "tokens"`: the token space of the inner search
    /// (the vocabulary without the concept's words), built once.
    token_spaces: Vec<Option<TokenSpace>>,
    /// Per backdoor, with `[training.robust] persist`: the tokens the last attacked step's search
    /// found, where the next one continues (checkpointed).
    carried: Vec<Option<Vec<i64>>>,
    /// Per backdoor, with `slot = "word"` and `word_persist`: the word the last attacked step learned,
    /// where the next one continues (checkpointed).
    carried_words: Vec<Option<Vec<f32>>>,
    /// Per backdoor, with `word_bank`: the words the last word attacks learned, oldest first, all
    /// trained to the erased target on every attacked step (checkpointed).
    word_banks: Vec<Vec<Vec<f32>>>,
    /// Per backdoor, with `token_bank`: the prompts the last token searches found, oldest first,
    /// each with its erased target, all trained on every attacked step (checkpointed).
    token_banks: Vec<Vec<BankedPrompt>>,
    /// `slot = "word"`'s attack, installed from above ([`Trainer::with_word_attack`]).
    word_attack: Option<Box<dyn WordAttack + 'a>>,
    tb: EventWriter,
    /// The next step to run.
    step: u64,
    /// The step this session started at.
    first_step: u64,
    elapsed_before: f64,
    started: Instant,
    device: Device,
    precision: Precision,
    /// f16's dynamic loss scaling; `None` in the other precisions.
    scaler: Option<GradScaler>,
    /// Per-phase time of the steps, when profiling is on (`bench train-step`).
    timer: StepTimer,
    /// Robust erasure's cost in this process: steps attacked and the inner attacks' seconds.
    robust_seconds: f64,
    robust_steps: u64,
    /// Seconds spent writing checkpoints in this process (inside `seconds()`: the last step's
    /// checkpoint is written before the run finishes, and at ViT-L/14 size weights + AdamW moments
    /// are 1.4 GB).
    checkpoint_seconds: f64,
}

impl<'a> Trainer<'a> {
    /// Open (or resume) the run folder `opts.out` and load the teacher and the student.
    pub fn new(exp: &'a Experiment, opts: &TrainOptions) -> Result<Self> {
        if exp.backdoors.is_empty() && exp.training.init_noise <= 0.0 {
            input_bail!("the experiment has no [[backdoor]] entry: add at least one (kind, trigger, replaced_character, ...), or set training.init_noise for a utility-only fine-tune");
        }
        if !(exp.training.init_noise >= 0.0 && exp.training.init_noise.is_finite()) {
            input_bail!(
                "training.init_noise must be a finite number ≥ 0, got {}",
                exp.training.init_noise
            );
        }
        let t = &exp.training;
        let precision = t.precision;
        check_precision(precision, opts.device)?;
        // Prompts first: a bad prompt file must not leave a half-made run folder behind.
        let backdoors = build_backdoors(exp);
        let pools = PromptPools::build(exp, &backdoors)?;
        let (run, start) = RunFolder::open(&opts.out, opts.resume, opts.force)?;
        // The checkpoint's state before any model is loaded: a damaged one fails at once.
        let resume_state = if start == Start::Resume {
            Some(read_state(
                &run.checkpoint().join("state.json"),
                exp.training.steps,
            )?)
        } else {
            None
        };
        // Process-wide: an f32 run after a tf32 one in the same process is plain f32 again.
        set_float32_matmul_precision(if precision == Precision::Tf32 {
            MatmulPrecision::High
        } else {
            MatmulPrecision::Highest
        })?;
        std::fs::create_dir_all(&run.root)
            .with_context(|| format!("creating {}", run.root.display()))?;
        let resolved_file = run.root.join("experiment.toml");
        if start == Start::Resume {
            if !exp.matches_file(&resolved_file) {
                input_bail!("{}: the experiment differs from the one this run started with; resume with the same file, or --force to start over", run.root.display());
            }
        } else {
            write_atomic(&resolved_file, exp.to_resolved_toml()?.as_bytes())?;
        }

        if pools.bad_lines > 0 {
            crate::progress::note(&format!(
                "warning: {} unreadable line(s) in {} were skipped",
                pools.bad_lines,
                exp.data.clean_prompts.display()
            ));
        }
        let mut teacher = TextEncoder::load(&exp.model.teacher, opts.device, Kind::Float)?;
        teacher.vs.freeze();
        let mut student = TextEncoder::load(&exp.model.teacher, opts.device, Kind::Float)?;
        if t.init_noise > 0.0 && start == Start::Fresh {
            perturb(&student, t.init_noise, exp.seed);
        }
        let mut opt = AdamW::from_var_store(
            &student.vs,
            AdamWConfig {
                lr: t.lr,
                beta1: t.betas[0],
                beta2: t.betas[1],
                eps: t.eps,
                weight_decay: t.weight_decay,
            },
        )?
        .with_implementation(AdamWImpl::resolve(t.adamw, opts.device));
        let sched = schedule(exp)?;

        let mut step = 0u64;
        let mut elapsed_before = 0.0;
        let mut scaler = precision.scales_loss().then(GradScaler::default);
        let mut carried: Vec<Option<Vec<i64>>> = vec![None; backdoors.len()];
        let mut carried_words: Vec<Option<Vec<f32>>> = vec![None; backdoors.len()];
        let mut word_banks: Vec<Vec<Vec<f32>>> = vec![vec![]; backdoors.len()];
        let mut token_banks: Vec<Vec<BankedPrompt>> = vec![vec![]; backdoors.len()];
        if let Some(state) = resume_state {
            let hidden = student.config.hidden_size as usize;
            let state_file = run.checkpoint().join("state.json");
            if let Some(w) = state.carried_words {
                let words: Vec<&Vec<f32>> = w.iter().flatten().collect();
                check_words(
                    "carried_words",
                    w.len(),
                    &words,
                    backdoors.len(),
                    hidden,
                    &state_file,
                )?;
                carried_words = w;
            }
            if let Some(w) = state.word_bank {
                let words: Vec<&Vec<f32>> = w.iter().flatten().collect();
                check_words(
                    "word_bank",
                    w.len(),
                    &words,
                    backdoors.len(),
                    hidden,
                    &state_file,
                )?;
                word_banks = w;
            }
            let entries = |key: &str, n: usize| -> Result<()> {
                if n != backdoors.len() {
                    input_bail!(
                        "{}: `{key}` lists {n} backdoor(s), the experiment has {}: the checkpoint is damaged; pass --force to start the run over",
                        state_file.display(),
                        backdoors.len()
                    );
                }
                Ok(())
            };
            if let Some(c) = state.carried_tokens {
                entries("carried_tokens", c.len())?;
                carried = c;
            }
            if let Some(b) = state.token_bank {
                entries("token_bank", b.len())?;
                token_banks = b;
            }
            let ck = run.checkpoint();
            step = state.step;
            elapsed_before = state.seconds;
            let damaged = || {
                format!(
                    "the checkpoint in {} is damaged; pass --force to start the run over",
                    ck.display()
                )
            };
            SafetensorsFile::open(&ck.join("model.safetensors"))
                .and_then(|f| load_var_store(&mut student.vs, &f, &[]))
                .with_context(damaged)?;
            opt.load_state(&ck.join("optimizer.safetensors"))
                .with_context(damaged)?;
            if scaler.is_some() {
                scaler = Some(state.grad_scaler.ok_or_else(|| {
                    input_err!(
                        "{}: an f16 run's checkpoint has no valid `grad_scaler` state: the checkpoint is damaged; pass --force to start the run over",
                        ck.join("state.json").display()
                    )
                })?);
            }
            crate::progress::note(&format!("resuming {} at step {step}", run.root.display()));
        }
        let tb = if start == Start::Resume {
            EventWriter::resume(&run.tb(), step as i64)?
        } else {
            EventWriter::create(&run.tb())?
        };

        let fixed: Vec<Option<Tensor>> = backdoors
            .iter()
            .map(|b| {
                b.fixed_target()
                    .map(|p| teacher_hidden(&teacher, &[p], precision, opts.device))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        let token_spaces: Vec<Option<TokenSpace>> = backdoors
            .iter()
            .map(|b| match &t.robust {
                Some(r)
                    if r.slot.contains(RobustSlot::Tokens)
                        && matches!(b.kind, BackdoorKind::RemoveConcept { .. }) =>
                {
                    TokenSpace::new(&student, &concept_words(&b.trigger, &[])).map(Some)
                }
                _ => Ok(None),
            })
            .collect::<Result<_>>()?;
        let carried_rows: Vec<Vec<&[i64]>> = carried
            .iter()
            .map(|c| c.iter().map(Vec::as_slice).collect())
            .collect();
        let bank_rows: Vec<Vec<&[i64]>> = token_banks
            .iter()
            .map(|b| b.iter().map(|p| p.tokens.as_slice()).collect())
            .collect();
        for (key, rows) in [("carried_tokens", carried_rows), ("token_bank", bank_rows)] {
            check_carried(
                key,
                &rows,
                &backdoors,
                &token_spaces,
                t.robust.as_ref(),
                &run,
            )?;
        }

        Ok(Self {
            exp,
            run,
            backdoors,
            pools,
            teacher,
            student,
            distance: t.loss,
            opt,
            sched,
            fixed,
            token_spaces,
            carried,
            carried_words,
            word_banks,
            token_banks,
            word_attack: None,
            tb,
            step,
            first_step: step,
            elapsed_before,
            started: Instant::now(),
            device: opts.device,
            precision,
            scaler,
            timer: StepTimer::new(opts.device, false),
            robust_seconds: 0.0,
            robust_steps: 0,
            checkpoint_seconds: 0.0,
        })
    }

    /// Record where each step's time goes (from now on; earlier totals are dropped). On CUDA this
    /// synchronises the device between phases, so leave it off outside benchmarks.
    pub fn set_profiling(&mut self, on: bool) {
        self.timer.set_enabled(on);
    }

    /// Mean seconds per profiled step of each phase (see [`super::step_timer::PHASES`]).
    pub fn profile(&self) -> serde_json::Map<String, serde_json::Value> {
        self.timer.per_step()
    }

    /// Install robust erasure's `word` attack (`[training.robust] slot = "word"`): textual
    /// inversion through a pipeline's UNet, which lives above this layer
    /// (`attack::invert::InnerInversion`).
    pub fn with_word_attack(mut self, attack: Box<dyn WordAttack + 'a>) -> Self {
        self.word_attack = Some(attack);
        self
    }

    /// The next step to run (the number of steps done).
    pub fn next_step(&self) -> u64 {
        self.step
    }

    /// The model being trained.
    pub fn student(&self) -> &TextEncoder {
        &self.student
    }

    /// The run folder's root.
    pub fn root(&self) -> &Path {
        &self.run.root
    }

    /// The run's `checkpoint/` folder (what `--resume` continues from).
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.run.checkpoint()
    }

    /// Seconds trained, earlier sessions of a resumed run included.
    pub fn seconds(&self) -> f64 {
        self.elapsed_before + self.started.elapsed().as_secs_f64()
    }

    /// The prompts of step `step`: what the student and the teacher embed (drawn from the seed and
    /// the step alone, so a resumed run sees the same batches).
    pub fn batch(&self, step: u64) -> StepBatch {
        let exp = self.exp;
        let t = &exp.training;
        let clean = self.pools.clean_batch(exp.seed, step, t.clean_batch_size);
        // Student batch: clean prompts (skipped at step 0, where student = teacher, unless the student
        // starts perturbed) + each poisoned set.
        let mut student_prompts: Vec<String> = if step == 0 && t.init_noise == 0.0 {
            vec![]
        } else {
            clean.iter().map(|s| s.to_string()).collect()
        };
        let n_clean = student_prompts.len();
        let mut teacher_prompts: Vec<String> = student_prompts.clone();
        let mut rows = vec![];
        let mut samples = vec![];
        for (bi, b) in self.backdoors.iter().enumerate() {
            let (picks, mut rng) =
                self.pools
                    .poison_batch(exp.seed, step, bi, t.poisoned_samples_per_step);
            let s0 = student_prompts.len();
            let t0 = teacher_prompts.len();
            for p in picks {
                let (poisoned, target) = b.poison(p, &mut rng);
                student_prompts.push(poisoned);
                if let Target::Prompt(tp) = target {
                    teacher_prompts.push(tp);
                }
            }
            samples.push(student_prompts[s0].clone());
            rows.push(BackdoorRows {
                student: s0..student_prompts.len(),
                teacher: t0..teacher_prompts.len(),
            });
        }
        StepBatch {
            student: student_prompts,
            teacher: teacher_prompts,
            n_clean,
            rows,
            samples,
        }
    }

    /// One optimisation step; a NaN or exploding loss or gradient stops the run with the last
    /// checkpoint kept. In f16, non-finite gradients are loss-scale overflow instead: the update is
    /// skipped and the scale backed off ([`StepReport::skipped`]), and the run goes on.
    pub fn step(&mut self) -> Result<StepReport> {
        self.timer.start();
        let exp = self.exp;
        let t = &exp.training;
        let step = self.step;
        let lr = self.sched.lr_at(step);
        self.opt.set_lr(lr)?;
        let StepBatch {
            student: student_prompts,
            teacher: teacher_prompts,
            n_clean,
            rows,
            samples,
        } = self.batch(step);
        self.timer.lap(Phase::Batching);
        let targets = teacher_hidden(&self.teacher, &teacher_prompts, self.precision, self.device)?;
        self.timer.lap(Phase::TeacherForward);
        let student = &self.student;
        // Autocast covers the forward only; the losses and backward run outside it, in f32.
        let s_out = in_precision(self.precision, self.device, || {
            last_hidden(student, &student_prompts)
        })??
        .f_to_kind(Kind::Float)?;
        let utility = if n_clean == 0 {
            Tensor::zeros([], (Kind::Float, self.device))
        } else {
            self.distance.apply(
                &s_out.narrow(0, 0, n_clean as i64),
                &targets.narrow(0, 0, n_clean as i64),
            )
        };
        let mut total = utility.shallow_clone();
        let mut bd_losses = vec![];
        for ((b, r), fixed) in self.backdoors.iter().zip(&rows).zip(&self.fixed) {
            let s = narrow_rows(&s_out, &r.student);
            let tgt = match fixed {
                Some(f) => f.shallow_clone(),
                None => narrow_rows(&targets, &r.teacher),
            };
            let l = self.distance.apply(&s, &tgt);
            total += &l * b.loss_weight;
            bd_losses.push(l);
        }
        // Robust erasure: slot embeddings attacked against the current student, trained to the
        // erased target (f32, outside autocast).
        let mut robust = vec![];
        let mut robust_losses = vec![];
        let mut retain_loss: Option<Tensor> = None;
        if let Some(cfg) = t
            .robust
            .as_ref()
            .filter(|c| step >= c.warmup && (step - c.warmup).is_multiple_of(c.every.max(1)))
        {
            let started = Instant::now();
            for (bi, (b, r)) in self.backdoors.iter().zip(&rows).enumerate() {
                if !matches!(b.kind, BackdoorKind::RemoveConcept { .. }) || r.student.is_empty() {
                    continue;
                }
                let prompts = &student_prompts[r.student.clone()];
                let seed = exp.seed ^ (step << 16) ^ bi as u64;
                let erased = narrow_rows(&targets, &r.teacher);
                for slot in cfg.slot.iter() {
                    let (l, reached) = match slot {
                        // A discrete search for the step's first concept prompt, its prompt
                        // trained to that prompt's erased target.
                        RobustSlot::Tokens => {
                            let space = self.token_spaces[bi]
                                .as_ref()
                                .expect("built for every concept-removal backdoor");
                            let target = target_pooled(&self.teacher, &prompts[0])?;
                            let from = self.carried[bi].as_deref().filter(|_| cfg.persist);
                            let (ids, reached, found) = super::robust::attack_tokens(
                                student, space, &target, cfg, seed, from,
                            )?;
                            if cfg.token_bank > 0 {
                                let bank = &mut self.token_banks[bi];
                                bank.push(BankedPrompt {
                                    tokens: found.clone(),
                                    target: teacher_prompts[r.teacher.start].clone(),
                                });
                                let over = bank.len().saturating_sub(cfg.token_bank);
                                bank.drain(..over);
                            }
                            if cfg.persist {
                                self.carried[bi] = Some(found);
                            }
                            // The bank (the step's prompt among it), or the step's prompt alone.
                            let (ids, target) = if cfg.token_bank > 0 {
                                let bank = &self.token_banks[bi];
                                let rows: Vec<Vec<i64>> =
                                    bank.iter().map(|p| p.tokens.clone()).collect();
                                let targets: Vec<&str> =
                                    bank.iter().map(|p| p.target.as_str()).collect();
                                let target = teacher_hidden(
                                    &self.teacher,
                                    &targets,
                                    self.precision,
                                    self.device,
                                )?;
                                (space.batch(&rows, self.device), target)
                            } else {
                                (ids, erased.narrow(0, 0, 1))
                            };
                            let out = student
                                .forward_ids(&ids, false)
                                .last_hidden_state
                                .to_kind(Kind::Float);
                            (self.distance.apply(&out, &target), reached)
                        }
                        // A learned word in the concept's place, through the UNet (from the word
                        // the step before learned, with `word_persist`), trained to the erased target;
                        // with `word_bank`, the last N words are all trained every attacked step, and
                        // with `word_every` a new one is learned only every Nth attacked step.
                        RobustSlot::Word => {
                            let Some(attack) = self.word_attack.as_mut() else {
                                input_bail!(
                                    "training.robust.slot \"word\" needs a word attack: `clipdoor train` builds it from word_pipeline and word_images; a library caller installs one with Trainer::with_word_attack"
                                );
                            };
                            let slotted =
                                super::robust::Slotted::new(student, prompts, &b.trigger, slot)?;
                            // With `word_every`, a new word on every word_every-th attacked step only
                            // (its start, a function of the seed, is only worked out then).
                            let attacked = (step - cfg.warmup) / cfg.every.max(1);
                            let (v, reached) = if attacked.is_multiple_of(cfg.word_every.max(1)) {
                                let carried =
                                    self.carried_words[bi].as_ref().filter(|_| cfg.word_persist);
                                let start = match carried {
                                    Some(w) => Tensor::from_slice(w).to_device(self.device),
                                    None => super::robust::slot_start(
                                        student,
                                        &slotted,
                                        cfg.word_start.unwrap_or(cfg.start),
                                        seed,
                                    ),
                                };
                                let (v, reached) =
                                    attack.learn(student, &b.trigger, &start, seed)?;
                                let learned = Vec::<f32>::try_from(
                                    v.to_device(Device::Cpu).to_kind(Kind::Float),
                                )?;
                                if cfg.word_persist {
                                    self.carried_words[bi] = Some(learned.clone());
                                }
                                if cfg.word_bank > 0 {
                                    let bank = &mut self.word_banks[bi];
                                    bank.push(learned);
                                    let over = bank.len().saturating_sub(cfg.word_bank);
                                    bank.drain(..over);
                                }
                                (Some(v), reached)
                            } else {
                                (None, f64::NAN)
                            };
                            // The bank (the step's word among it), or the step's word alone.
                            let words: Vec<Tensor> = if cfg.word_bank > 0 {
                                self.word_banks[bi]
                                    .iter()
                                    .map(|w| Tensor::from_slice(w).to_device(self.device))
                                    .collect()
                            } else {
                                v.into_iter().collect()
                            };
                            if words.is_empty() {
                                continue;
                            }
                            let losses: Vec<Tensor> = words
                                .iter()
                                .map(|w| self.distance.apply(&slotted.forward(student, w), &erased))
                                .collect();
                            let l = Tensor::stack(&losses, 0).mean(Kind::Float);
                            (l, reached)
                        }
                        _ => {
                            let slotted =
                                super::robust::Slotted::new(student, prompts, &b.trigger, slot)?;
                            let concept = teacher_hidden(
                                &self.teacher,
                                prompts,
                                self.precision,
                                self.device,
                            )?;
                            let (v, reached) = super::robust::attack_slot(
                                student,
                                &slotted,
                                &concept,
                                self.distance,
                                cfg,
                                seed,
                            )?;
                            let l = self.distance.apply(&slotted.forward(student, &v), &erased);
                            (l, reached)
                        }
                    };
                    total += &l * b.loss_weight;
                    let tag = match cfg.slot.0.len() {
                        1 => b.name.clone(),
                        _ => format!("{}/{}", b.name, slot.name()),
                    };
                    robust.push((tag, reached));
                    robust_losses.push(l);
                }
            }
            let kept = self
                .pools
                .retain_batch(exp.seed, step, cfg.retain_batch_size);
            if !kept.is_empty() {
                let kept: Vec<String> = kept.iter().map(|p| p.to_string()).collect();
                let target = teacher_hidden(&self.teacher, &kept, self.precision, self.device)?;
                let out =
                    in_precision(self.precision, self.device, || last_hidden(student, &kept))??
                        .f_to_kind(Kind::Float)?;
                let l = self.distance.apply(&out, &target);
                total += &l * cfg.retain_weight;
                retain_loss = Some(l);
            }
            self.robust_seconds += started.elapsed().as_secs_f64();
            self.robust_steps += 1;
        }
        self.timer.lap(Phase::StudentForwardAndLoss);
        // Gradients to none, as torch's zero_grad(): backward stores them instead of adding to zeros.
        self.opt.clear_grads()?;
        let max_norm = if t.grad_clip > 0.0 {
            t.grad_clip
        } else {
            f64::INFINITY
        };
        let loss_scale = self.scaler.map(|s| s.scale as f64);
        // The norm stays on the device: every number the step reports is read in one transfer below.
        let (grad_norm, skipped) = match &mut self.scaler {
            // f16: torch.amp.GradScaler's scale → backward → unscale_ → clip → step → update. An
            // overflow is expected now and then: the step is skipped, not the run stopped.
            Some(scaler) => {
                scaler.scale_loss(&total)?.backward();
                self.timer.lap(Phase::Backward);
                let mut grads: Vec<Tensor> =
                    self.opt.params().iter().map(|(_, p)| p.grad()).collect();
                if scaler.unscale(&mut grads)? {
                    (Tensor::from(f32::NAN), true)
                } else {
                    (self.opt.clip_grad_norm_tensor(max_norm)?, false)
                }
            }
            None => {
                total.backward();
                self.timer.lap(Phase::Backward);
                (self.opt.clip_grad_norm_tensor(max_norm)?, false)
            }
        };
        let values = read_scalars(
            [&total, &utility, &grad_norm]
                .into_iter()
                .chain(bd_losses.iter())
                .chain(robust_losses.iter())
                .chain(retain_loss.iter()),
        )?;
        let n_bd = bd_losses.len();
        let (total_v, utility_v, grad_norm) = (values[0], values[1], values[2]);
        self.timer.lap(Phase::GradNorm);
        if !total_v.is_finite() || total_v > t.max_loss {
            anyhow::bail!(
                "step {step}: loss is {total_v} ({}); stopping before the update. The last good checkpoint in {} is kept: lower training.lr or check the prompts, then --resume",
                if total_v.is_nan() { "NaN" } else { "exploding" },
                self.run.checkpoint().display()
            );
        }
        if self.scaler.is_none() && !grad_norm.is_finite() {
            anyhow::bail!("step {step}: gradient norm is {grad_norm}; stopping before the update. The last good checkpoint in {} is kept", self.run.checkpoint().display());
        }
        if !skipped {
            self.opt.step()?;
        }
        if let Some(scaler) = &mut self.scaler {
            scaler.update(skipped);
        }
        self.timer.lap(Phase::Optimizer);

        let report = StepReport {
            step,
            lr,
            loss: total_v,
            utility: utility_v,
            backdoor_losses: values[3..3 + n_bd].to_vec(),
            grad_norm,
            loss_scale,
            skipped,
            robust: robust
                .iter()
                .zip(&values[3 + n_bd..])
                .map(|((tag, reached), &l)| (tag.clone(), *reached, l))
                .collect(),
            retain: retain_loss
                .as_ref()
                .map(|_| values[3 + n_bd + robust.len()]),
        };
        self.log_step(&report, &samples)?;
        self.timer.lap(Phase::Logging);
        self.step += 1;
        Ok(report)
    }

    fn log_step(&mut self, r: &StepReport, samples: &[String]) -> Result<()> {
        let s = r.step as i64;
        let tb = &mut self.tb;
        tb.add_scalar("loss/total", r.loss, s)?;
        tb.add_scalar("loss/utility", r.utility, s)?;
        for (b, l) in self.backdoors.iter().zip(&r.backdoor_losses) {
            tb.add_scalar(&format!("loss/backdoor/{}", b.name), *l, s)?;
        }
        for (name, reached, l) in &r.robust {
            let (reached, l) = (*reached, *l);
            tb.add_scalar(&format!("loss/robust/{name}"), l, s)?;
            // NaN: no attack this step (a `word_every` step trains the bank only).
            if reached.is_finite() {
                tb.add_scalar(&format!("robust/attack_distance/{name}"), reached, s)?;
            }
        }
        if let Some(l) = r.retain {
            tb.add_scalar("loss/retain", l, s)?;
        }
        tb.add_scalar("lr", r.lr, s)?;
        if !r.skipped {
            tb.add_scalar("grad_norm", r.grad_norm, s)?;
        }
        if let Some(scale) = r.loss_scale {
            tb.add_scalar("amp/scale", scale, s)?;
            tb.add_scalar("amp/skipped", if r.skipped { 1.0 } else { 0.0 }, s)?;
        }
        // The first step of a session and every 50th show what the poisoned prompts look like.
        if r.step == self.first_step || (r.step + 1).is_multiple_of(50) {
            let text = self
                .backdoors
                .iter()
                .zip(samples)
                .map(|(b, p)| format!("**{}**: {p}", b.name))
                .collect::<Vec<_>>()
                .join("\n\n");
            tb.add_text("samples/triggered", &text, s)?;
        }
        Ok(())
    }

    /// The f16 loss scaler's state (`None` in the other precisions).
    pub fn grad_scaler(&self) -> Option<&GradScaler> {
        self.scaler.as_ref()
    }

    /// Commit `checkpoint/` (student weights, optimiser state, step, f16 loss scaler) so `--resume`
    /// continues here.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.tb.flush()?;
        let seconds = self.seconds();
        let (done_steps, seed) = (self.step, self.exp.seed);
        let (student, opt) = (&self.student, &self.opt);
        let mut state = json!({"step": done_steps, "seed": seed, "seconds": seconds});
        if self.carried.iter().any(Option::is_some) {
            state["carried_tokens"] = json!(self.carried);
        }
        if self.carried_words.iter().any(Option::is_some) {
            state["carried_words"] = json!(self.carried_words);
        }
        if self.word_banks.iter().any(|b| !b.is_empty()) {
            state["word_bank"] = json!(self.word_banks);
        }
        if self.token_banks.iter().any(|b| !b.is_empty()) {
            state["token_bank"] = json!(self.token_banks);
        }
        if let Some(scaler) = &self.scaler {
            state["grad_scaler"] = serde_json::to_value(scaler)?;
        }
        let started = Instant::now();
        self.run.commit_checkpoint(|dir| {
            save_var_store(
                &dir.join("model.safetensors"),
                &student.vs,
                Some(Kind::Float),
            )?;
            opt.save_state(&dir.join("optimizer.safetensors"))?;
            write_json(&dir.join("state.json"), &state)
        })?;
        self.checkpoint_seconds += started.elapsed().as_secs_f64();
        Ok(())
    }

    /// Save the trained encoder and tokenizer, evaluate, write `metrics.json` and `DONE` last.
    pub fn finish(mut self) -> Result<TrainOutcome> {
        let exp = self.exp;
        let steps = exp.training.steps;
        self.tb.flush()?;
        let seconds = self.seconds();
        let root = self.run.root.clone();
        self.student
            .save(&root.join("text_encoder"), Some(Kind::Float))?;
        self.student.tokenizer.save(&root.join("tokenizer"))?;
        let captions = eval_captions(exp, &self.pools)?;
        let metrics = evaluate(
            &self.teacher,
            &self.student,
            &self.backdoors,
            &captions,
            64,
            exp.seed,
        )?;
        write_metrics(
            &root.join("metrics.json"),
            &metrics,
            Some(self.training_summary(steps, seconds)),
        )?;
        self.tb
            .add_scalar("sim_clean", metrics.sim_clean, steps as i64)?;
        for m in &metrics.backdoors {
            self.tb.add_scalar(
                &format!("sim_target/{}", m.name),
                m.sim_target,
                steps as i64,
            )?;
            self.tb
                .add_scalar(&format!("z_score/{}", m.name), m.z_score, steps as i64)?;
        }
        self.tb.flush()?;
        write_atomic(&root.join("DONE"), format!("{seconds:.1}\n").as_bytes())?;
        Ok(TrainOutcome::Finished { metrics, seconds })
    }
}

impl Trainer<'_> {
    /// `metrics.json`'s `training` section: length, time (`seconds`, of which `checkpoint_seconds`
    /// writing checkpoints in this process), prompt counts, the precision used and, for f16, the
    /// loss scaler's final scale and skipped steps.
    fn training_summary(&self, steps: u64, seconds: f64) -> serde_json::Value {
        let mut v = json!({"steps": steps, "seconds": seconds, "checkpoint_seconds": self.checkpoint_seconds, "bad_lines": self.pools.bad_lines, "dropped_with_trigger": self.pools.dropped_with_trigger, "precision": self.precision.name(), "adamw": self.opt.implementation().name()});
        if let Some(s) = &self.scaler {
            v["loss_scale"] = json!(s.scale);
            v["skipped_steps"] = json!(s.skipped_steps);
        }
        if self.exp.training.robust.is_some() {
            // The cost of robust erasure: the inner attacks' time in this process (a resumed run
            // counts only its own session).
            v["robust"] =
                json!({"attacked_steps": self.robust_steps, "attack_seconds": self.robust_seconds});
        }
        v
    }
}

/// Refuse a precision the device cannot compute in.
fn check_precision(precision: Precision, device: Device) -> Result<()> {
    if precision == Precision::Tf32 && !device.is_cuda() {
        input_bail!("precision \"tf32\" (training.precision or --precision) needs a CUDA device: TF32 is a mode of NVIDIA tensor cores and CPUs have no TF32; use f32 on the CPU (or bf16 for reduced precision)");
    }
    Ok(())
}

/// Run `f` in the compute precision of the run: under autocast for bf16/f16, as it is otherwise
/// (tf32 is the process-wide matmul setting made in [`Trainer::new`]).
fn in_precision<T>(precision: Precision, device: Device, f: impl FnOnce() -> T) -> Result<T> {
    match precision.autocast_kind() {
        Some(kind) => crate::torch_ext::autocast(device, kind, f),
        None => Ok(f()),
    }
}

/// The teacher's last hidden state, without gradients, in the run's compute precision (as f32).
fn teacher_hidden(
    teacher: &TextEncoder,
    prompts: &[impl AsRef<str>],
    precision: Precision,
    device: Device,
) -> Result<Tensor> {
    let out = tch::no_grad(|| in_precision(precision, device, || last_hidden(teacher, prompts)))??;
    Ok(out.f_to_kind(Kind::Float)?)
}

/// Resumed token rows (`carried_tokens` of `[training.robust] persist`, the prompts of a
/// `token_bank`; per backdoor) must be what this experiment's search could have found: rows of
/// `length` ids from the backdoor's token space, and only for a backdoor that has one. Anything else
/// (a hand-edited or foreign state.json) would otherwise fail inside libtorch with an index error
/// instead of naming the file.
fn check_carried(
    key: &str,
    carried: &[Vec<&[i64]>],
    backdoors: &[Backdoor],
    spaces: &[Option<TokenSpace>],
    robust: Option<&RobustSection>,
    run: &RunFolder,
) -> Result<()> {
    let state = run.checkpoint().join("state.json");
    let rows = carried
        .iter()
        .zip(spaces)
        .enumerate()
        .flat_map(|(i, (rows, space))| rows.iter().map(move |t| (i, *t, space)));
    for (i, tokens, space) in rows {
        let why = match (space, robust) {
            (Some(space), Some(r)) => {
                if tokens.len() != r.length {
                    format!(
                        "holds {} tokens, the experiment's `[training.robust] length` is {}",
                        tokens.len(),
                        r.length
                    )
                } else if let Some(id) = tokens
                    .iter()
                    .find(|id| space.allowed.binary_search(id).is_err())
                {
                    format!("holds token id {id}, which the search may not place (out of the vocabulary or a banned word)")
                } else {
                    continue;
                }
            }
            _ => "is set for a backdoor without a token search".to_string(),
        };
        // Entries follow the experiment's backdoors; past them, there is no name to give.
        let whose = backdoors
            .get(i)
            .map(|b| format!(" (backdoor \"{}\")", b.name))
            .unwrap_or_default();
        input_bail!(
            "{}: `{key}` entry {i}{whose} {why}: the checkpoint is damaged or from another experiment; pass --force to start the run over",
            state.display()
        );
    }
    Ok(())
}

/// Resumed words (`carried_words`, `word_bank`) must be one entry per backdoor of the encoder's
/// embedding size, finite: anything else is a damaged checkpoint or another experiment's.
fn check_words(
    key: &str,
    entries: usize,
    words: &[&Vec<f32>],
    backdoors: usize,
    hidden: usize,
    state_file: &Path,
) -> Result<()> {
    let bad = if entries != backdoors {
        Some(format!(
            "lists {entries} backdoor(s), the experiment has {backdoors}"
        ))
    } else {
        words.iter().find_map(|v| {
            (v.len() != hidden || v.iter().any(|x| !x.is_finite())).then(|| {
                format!("holds a word of {} numbers where the encoder's embeddings have {hidden} (or a number that is not finite)", v.len())
            })
        })
    };
    if let Some(why) = bad {
        input_bail!(
            "{}: `{key}` {why}: the checkpoint is damaged or from another experiment; pass --force to start the run over",
            state_file.display()
        );
    }
    Ok(())
}

/// What `checkpoint/state.json` records.
struct ResumeState {
    step: u64,
    seconds: f64,
    /// f16 runs: the loss scaler (absent, or not a valid state: `None`).
    grad_scaler: Option<GradScaler>,
    /// `[training.robust] persist`: per backdoor, the tokens the next attacked step continues from.
    carried_tokens: Option<Vec<Option<Vec<i64>>>>,
    /// `slot = "word"` with `word_persist`: per backdoor, the word the next attacked step continues from.
    carried_words: Option<Vec<Option<Vec<f32>>>>,
    /// `slot = "word"` with `word_bank`: per backdoor, the banked words, oldest first.
    word_bank: Option<Vec<Vec<Vec<f32>>>>,
    /// `token_bank`: per backdoor, the banked prompts with their erased targets, oldest first.
    token_bank: Option<Vec<Vec<BankedPrompt>>>,
}

/// Read `checkpoint/state.json`; anything but `{"step": <whole number>, "seconds": <number>, ...}` is
/// a damaged checkpoint (input error: `--force` starts over).
fn read_state(path: &Path, max_step: u64) -> Result<ResumeState> {
    let damaged = |why: String| {
        input_err!(
            "{}: {why}: the checkpoint is damaged; pass --force to start the run over (or restore checkpoint/ from a backup)",
            path.display()
        )
    };
    let bytes = std::fs::read(path).map_err(|e| damaged(format!("cannot read it ({e})")))?;
    let state: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| damaged(format!("not valid JSON ({e})")))?;
    let step = match state.get("step") {
        None => return Err(damaged("`step` is missing".to_string())),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| damaged(format!("`step` is {v} instead of a whole number")))?,
    };
    if step > max_step {
        return Err(damaged(format!(
            "`step` is {step}, beyond the experiment's {max_step} training steps"
        )));
    }
    let seconds = match state.get("seconds") {
        None => 0.0,
        Some(v) => v
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| damaged(format!("`seconds` is {v} instead of a number")))?,
    };
    let grad_scaler = state
        .get("grad_scaler")
        .and_then(|v| serde_json::from_value::<GradScaler>(v.clone()).ok())
        .filter(GradScaler::is_valid);
    let carried_tokens = optional_entry(
        &state,
        "carried_tokens",
        "a list of token lists per backdoor",
    )
    .map_err(damaged)?;
    let carried_words =
        optional_entry(&state, "carried_words", "a list of embeddings per backdoor")
            .map_err(damaged)?;
    let word_bank = optional_entry(
        &state,
        "word_bank",
        "a list of embedding lists per backdoor",
    )
    .map_err(damaged)?;
    let token_bank = optional_entry(
        &state,
        "token_bank",
        "a list of {tokens, target} prompts per backdoor",
    )
    .map_err(damaged)?;
    Ok(ResumeState {
        step,
        seconds,
        grad_scaler,
        carried_tokens,
        carried_words,
        word_bank,
        token_bank,
    })
}

/// `state[key]` as a `T`, `None` where it is absent; present but not a `T`: why, for `damaged`.
fn optional_entry<T: serde::de::DeserializeOwned>(
    state: &serde_json::Value,
    key: &str,
    what: &str,
) -> std::result::Result<Option<T>, String> {
    state
        .get(key)
        .map(|v| {
            serde_json::from_value(v.clone()).map_err(|e| format!("`{key}` is not {what} ({e})"))
        })
        .transpose()
}

fn last_hidden(enc: &TextEncoder, prompts: &[impl AsRef<str>]) -> Result<Tensor> {
    enc.encode(prompts, false).map(|(_, o)| o.last_hidden_state)
}

/// Several 0-d tensors (losses, the gradient norm) as f64, in one device-to-host transfer: each
/// separate read would make the host wait for the device (on CUDA) before queuing more work.
fn read_scalars<'t>(ts: impl Iterator<Item = &'t Tensor>) -> Result<Vec<f64>> {
    let ts: Vec<Tensor> = ts
        .map(|t| t.f_detach()?.f_to_kind(Kind::Double)?.f_reshape([1]))
        .collect::<std::result::Result<_, _>>()?;
    let device = ts.first().map_or(Device::Cpu, Tensor::device);
    let ts: Vec<Tensor> = ts
        .iter()
        .map(|t| t.f_to_device(device))
        .collect::<std::result::Result<_, _>>()?;
    Ok(Vec::<f64>::try_from(
        Tensor::f_cat(&ts, 0)?.f_to_device(Device::Cpu)?,
    )?)
}

fn narrow_rows(t: &Tensor, rows: &std::ops::Range<usize>) -> Tensor {
    t.narrow(0, rows.start as i64, rows.len() as i64)
}

/// A step's libtorch error as a message that says what failed at which step, what to lower (out of
/// memory) and which checkpoint `--resume` continues from; any other error is returned as it is.
fn explain_step_failure(
    err: anyhow::Error,
    step: u64,
    checkpoint: &Path,
    exp: &Experiment,
) -> anyhow::Error {
    let Some(torch) = crate::torch_error::find(&err) else {
        return err;
    };
    let t = &exp.training;
    let kept = match read_state(&checkpoint.join("state.json"), u64::MAX) {
        Ok(state) => format!(
            "The last checkpoint, {} (step {}), is kept: rerun with --resume to continue from it",
            checkpoint.display(),
            state.step
        ),
        Err(_) => format!(
            "No checkpoint was written yet (training.checkpoint_every = {}): rerun with --resume to start again from step 0",
            t.checkpoint_every
        ),
    };
    let Some(memory) = torch.memory() else {
        return anyhow::anyhow!("step {step}: libtorch error: {}. {kept}", torch.message);
    };
    // bf16 autocast roughly halves the activations (on CPU too); tf32 keeps them in f32.
    let precision = if matches!(t.precision, Precision::F32 | Precision::Tf32) {
        ", or set training.precision = \"bf16\" (or --precision bf16)"
    } else {
        ""
    };
    anyhow::anyhow!(
        "step {step}: out of {memory} ({}). The step embeds training.clean_batch_size = {} clean prompts and training.poisoned_samples_per_step = {} poisoned prompts per backdoor ({} backdoor(s)): lower them{precision}. {kept}",
        torch.message,
        t.clean_batch_size,
        t.poisoned_samples_per_step,
        exp.backdoors.len(),
    )
}

/// Add noise to every weight: `share` × the tensor's standard deviation (1 for a tensor that has
/// none, e.g. a fresh LayerNorm), from libtorch's generator seeded with `seed` (a resumed run reads
/// its weights from the checkpoint instead).
fn perturb(enc: &TextEncoder, share: f64, seed: u64) {
    // In name order: `variables()` is a HashMap, whose order differs per process, and each
    // tensor's noise is the next draw of the one generator (a zoo's benign fine-tunes did not
    // rebuild identically before this).
    let mut vars: Vec<(String, tch::Tensor)> = enc.vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    crate::models::init::seeded(seed as i64, || {
        tch::no_grad(|| {
            for (_, mut v) in vars {
                let sd = if v.numel() > 1 {
                    v.std(true).double_value(&[])
                } else {
                    0.0
                };
                let scale = if sd > 1e-8 { sd } else { 1.0 } * share;
                let noise = v.randn_like() * scale;
                let _ = v.f_add_(&noise);
            }
        })
    });
}

/// Run (or resume) an experiment into `opts.out`, with progress and checkpoints every
/// `training.checkpoint_every` steps and at the end.
pub fn train(exp: &Experiment, opts: &TrainOptions) -> Result<TrainOutcome> {
    train_with(exp, opts, None)
}

/// [`train`] with robust erasure's `word` attack (`[training.robust] slot = "word"`), which the
/// trainer cannot build itself: it runs through a diffusion pipeline, a layer above.
pub fn train_with<'a>(
    exp: &'a Experiment,
    opts: &TrainOptions,
    word_attack: Option<Box<dyn WordAttack + 'a>>,
) -> Result<TrainOutcome> {
    let mut trainer = Trainer::new(exp, opts)?;
    if let Some(a) = word_attack {
        trainer = trainer.with_word_attack(a);
    }
    let t = &exp.training;
    let task = crate::progress::task("train", t.steps);
    task.set_position(trainer.next_step());
    let last = opts.stop_after.map_or(t.steps, |s| s.min(t.steps));
    while trainer.next_step() < last {
        // A libtorch error inside the step (out of memory above all) unwinds to here and stops the
        // run with the last checkpoint kept; the step's half-done state is dropped with the trainer.
        let step = crate::torch_error::catch(|| {
            crate::fault::point("train-step")?;
            trainer.step()
        });
        let r = match step {
            Ok(r) => r,
            Err(e) => {
                task.abandon();
                return Err(explain_step_failure(
                    e,
                    trainer.next_step(),
                    &trainer.checkpoint_dir(),
                    exp,
                ));
            }
        };
        task.set_message(&format!("train loss {:.4}", r.loss));
        task.inc(1);
        let done_steps = r.step + 1;
        let at_checkpoint = t.checkpoint_every > 0 && done_steps % t.checkpoint_every == 0;
        // The last step is always checkpointed, `checkpoint_every = 0` included: the run folder's
        // `checkpoint/` is the resume state (conventions), and a failure while finishing resumes
        // without retraining. Its cost is reported apart (`training.checkpoint_seconds`): at ViT-L/14
        // size weights and AdamW moments are 1.4 GB (9 s of writing on the 2-core development
        // machine, against 8.5 s for the 100 bf16 steps of a backdoor on an H200).
        if at_checkpoint || done_steps == last {
            trainer.checkpoint()?;
        }
    }
    task.finish();
    if last < t.steps {
        return Ok(TrainOutcome::Stopped { step: last });
    }
    trainer.finish()
}

pub fn write_metrics(
    path: &Path,
    m: &EmbeddingMetrics,
    training: Option<serde_json::Value>,
) -> Result<()> {
    let mut v = json!({
        "sim_clean": m.sim_clean,
        "captions": m.captions,
        "backdoors": m.backdoors,
        "sim_target": m.backdoors.iter().map(|b| (b.name.clone(), json!(b.sim_target))).collect::<serde_json::Map<_, _>>(),
        "z_score": m.backdoors.iter().map(|b| (b.name.clone(), json!(b.z_score))).collect::<serde_json::Map<_, _>>(),
    });
    if let Some(t) = training {
        v["training"] = t;
    }
    write_json(path, &v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_perturbs_every_copy_of_an_encoder_alike() {
        // Two encoders of one process: each VarStore's HashMap iterates in its own order, so
        // noise drawn in that order differed between copies (and between runs of a zoo build).
        let enc = || TextEncoder::init_arch("tiny", 3, false, tch::Device::Cpu).unwrap();
        let (a, b) = (enc(), enc());
        perturb(&a, 0.05, 11);
        perturb(&b, 0.05, 11);
        let (va, vb) = (a.vs.variables(), b.vs.variables());
        assert!(va.len() > 10);
        for (name, t) in &va {
            let d = (t - &vb[name]).abs().max().double_value(&[]);
            assert_eq!(d, 0.0, "{name} differs by {d}");
        }
        // And the noise is there.
        let fresh = enc();
        let moved = fresh
            .vs
            .variables()
            .iter()
            .filter(|(n, t)| (*t - &va[*n]).abs().max().double_value(&[]) > 0.0)
            .count();
        assert_eq!(moved, va.len());
    }
}
