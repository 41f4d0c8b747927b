//! The Rickrolling teacher–student loop: utility loss on clean prompts + β · Σ backdoor losses,
//! AdamW, the reference's LR schedule, checkpoints for `--resume`, TensorBoard scalars.
use anyhow::Context;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

use super::backdoor::{Backdoor, Target};
use super::data::PromptPools;
use super::experiment::Experiment;
use super::loss::Distance;
use super::metrics::{evaluate, EmbeddingMetrics};
use super::optim::{AdamW, AdamWConfig, LrSchedule};
use super::run_folder::{RunFolder, Start};
use super::tensorboard::EventWriter;
use crate::error::Result;
use crate::io::atomic::{write_atomic, write_json};
use crate::io::prompts::read_prompts;
use crate::io::weights::{load_var_store, SafetensorsFile};
use crate::models::text_encoder::TextEncoder;
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

pub fn build_backdoors(exp: &Experiment) -> Vec<Backdoor> {
    exp.backdoors
        .iter()
        .zip(exp.backdoor_names())
        .map(|(s, n)| Backdoor::from_spec(s, n, exp.training.loss_weight))
        .collect()
}

fn schedule(exp: &Experiment) -> Result<LrSchedule> {
    let t = &exp.training;
    match t.lr_schedule.as_str() {
        "multistep" => LrSchedule::multi_step(t.lr, &t.lr_milestones, t.lr_gamma),
        "cosine" => LrSchedule::warmup_cosine(t.lr, t.warmup_steps, t.steps, 0.0),
        _ => LrSchedule::new(t.lr, t.warmup_steps, super::optim::LrDecay::Constant),
    }
}

/// Run (or resume) an experiment into `opts.out`.
pub fn train(exp: &Experiment, opts: &TrainOptions) -> Result<TrainOutcome> {
    super::experiment::require_backdoors(exp)?;
    let t = &exp.training;
    if t.autocast == "bf16" && opts.device == Device::Cpu {
        input_bail!("training.autocast = \"bf16\" needs a CUDA device: use f32 on CPU");
    }
    let (run, start) = RunFolder::open(&opts.out, opts.resume, opts.force)?;
    run.recover_checkpoint()?;
    std::fs::create_dir_all(&run.root)
        .with_context(|| format!("creating {}", run.root.display()))?;
    let resolved = toml::to_string_pretty(exp)?;
    if start == Start::Resume {
        let prev = std::fs::read_to_string(run.root.join("experiment.toml")).unwrap_or_default();
        if prev != resolved {
            input_bail!("{}: the experiment differs from the one this run started with; resume with the same file, or --force to start over", run.root.display());
        }
    } else {
        write_atomic(&run.root.join("experiment.toml"), resolved.as_bytes())?;
    }

    let backdoors = build_backdoors(exp);
    let pools = PromptPools::build(exp, &backdoors)?;
    if pools.bad_lines > 0 {
        eprintln!(
            "warning: {} unreadable line(s) in {} were skipped",
            pools.bad_lines,
            exp.data.clean_prompts.display()
        );
    }
    let teacher = TextEncoder::load(&exp.model.teacher, opts.device, Kind::Float)?;
    let mut teacher_vs = teacher.vs;
    teacher_vs.freeze();
    let teacher = TextEncoder {
        vs: teacher_vs,
        ..teacher
    };
    let mut student = TextEncoder::load(&exp.model.teacher, opts.device, Kind::Float)?;
    let distance = Distance::parse(&t.loss).map_err(|e| input_err!("{e}"))?;
    let mut opt = AdamW::from_var_store(
        &student.vs,
        AdamWConfig {
            lr: t.lr,
            beta1: t.betas[0],
            beta2: t.betas[1],
            eps: t.eps,
            weight_decay: t.weight_decay,
        },
    )?;
    let sched = schedule(exp)?;

    let mut first_step = 0u64;
    let mut elapsed_before = 0.0;
    if start == Start::Resume {
        let ck = run.checkpoint();
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(ck.join("state.json"))?)?;
        first_step = state["step"]
            .as_u64()
            .ok_or_else(|| input_err!("{}: no step", ck.join("state.json").display()))?;
        elapsed_before = state["seconds"].as_f64().unwrap_or(0.0);
        load_var_store(
            &mut student.vs,
            &SafetensorsFile::open(&ck.join("model.safetensors"))?,
            &[],
        )?;
        opt.load_state(&ck.join("optimizer.safetensors"))?;
        eprintln!("resuming {} at step {first_step}", run.root.display());
    }
    let mut tb = if start == Start::Resume {
        EventWriter::resume(&run.tb(), first_step as i64)?
    } else {
        EventWriter::create(&run.tb())?
    };

    // Constant targets (a TPA's target prompt) are embedded once.
    let fixed: Vec<Option<Tensor>> = backdoors
        .iter()
        .map(|b| {
            b.fixed_target()
                .map(|p| {
                    tch::no_grad(|| {
                        teacher
                            .encode(&[p], false)
                            .map(|(_, o)| o.last_hidden_state)
                    })
                })
                .transpose()
        })
        .collect::<Result<_>>()?;

    let pb = crate::cli::progress(t.steps, "train");
    pb.set_position(first_step);
    let started = Instant::now();
    let last = opts.stop_after.map_or(t.steps, |s| s.min(t.steps));
    for step in first_step..last {
        let lr = sched.lr_at(step);
        opt.set_lr(lr)?;
        let clean = pools.clean_batch(exp.seed, step, t.clean_batch_size);
        // Student batch: clean prompts (skipped at step 0, where student = teacher) + each poisoned set.
        let mut student_prompts: Vec<String> = if step == 0 {
            vec![]
        } else {
            clean.iter().map(|s| s.to_string()).collect()
        };
        let mut teacher_prompts: Vec<String> = student_prompts.clone();
        let mut spans = vec![]; // (student range, teacher range or fixed index)
        let mut samples = vec![];
        for (bi, b) in backdoors.iter().enumerate() {
            let (picks, mut rng) =
                pools.poison_batch(exp.seed, step, bi, t.poisoned_samples_per_step);
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
            spans.push((s0, student_prompts.len(), t0, teacher_prompts.len()));
        }
        let targets = tch::no_grad(|| {
            teacher
                .encode(&teacher_prompts, false)
                .map(|(_, o)| o.last_hidden_state)
        })?;
        let forward = || {
            student
                .encode(&student_prompts, false)
                .map(|(_, o)| o.last_hidden_state)
        };
        let s_out = if t.autocast == "bf16" {
            tch::autocast(true, forward)?
        } else {
            forward()?
        };
        let n_clean = if step == 0 { 0 } else { clean.len() as i64 };
        let utility = if n_clean == 0 {
            Tensor::zeros([], (Kind::Float, opts.device))
        } else {
            distance.apply(&s_out.narrow(0, 0, n_clean), &targets.narrow(0, 0, n_clean))
        };
        let mut total = utility.shallow_clone();
        let mut bd_losses = vec![];
        for (bi, b) in backdoors.iter().enumerate() {
            let (s0, s1, t0, t1) = spans[bi];
            let s = s_out.narrow(0, s0 as i64, (s1 - s0) as i64);
            let tgt = match &fixed[bi] {
                Some(f) => f.shallow_clone(),
                None => targets.narrow(0, t0 as i64, (t1 - t0) as i64),
            };
            let l = distance.apply(&s, &tgt);
            total += &l * b.loss_weight;
            bd_losses.push(l);
        }
        let total_v = total.double_value(&[]);
        if !total_v.is_finite() || total_v > t.max_loss {
            pb.abandon();
            anyhow::bail!(
                "step {step}: loss is {total_v} ({}); stopping. The last good checkpoint in {} is kept: lower training.lr or check the prompts, then --resume",
                if total_v.is_nan() { "NaN" } else { "exploding" },
                run.checkpoint().display()
            );
        }
        opt.zero_grad();
        total.backward();
        let grad_norm = opt.clip_grad_norm(if t.grad_clip > 0.0 {
            t.grad_clip
        } else {
            f64::INFINITY
        })?;
        if !grad_norm.is_finite() {
            pb.abandon();
            anyhow::bail!("step {step}: gradient norm is {grad_norm}; stopping before the update. The last good checkpoint in {} is kept", run.checkpoint().display());
        }
        opt.step()?;

        let s = step as i64;
        tb.add_scalar("loss/total", total_v, s)?;
        tb.add_scalar("loss/utility", utility.double_value(&[]), s)?;
        for (b, l) in backdoors.iter().zip(&bd_losses) {
            tb.add_scalar(&format!("loss/backdoor/{}", b.name), l.double_value(&[]), s)?;
        }
        tb.add_scalar("lr", lr, s)?;
        tb.add_scalar("grad_norm", grad_norm, s)?;
        if step == first_step || (step + 1) % 50 == 0 {
            let text = backdoors
                .iter()
                .zip(&samples)
                .map(|(b, p)| format!("**{}**: {p}", b.name))
                .collect::<Vec<_>>()
                .join("\n\n");
            tb.add_text("samples/triggered", &text, s)?;
        }
        pb.set_message(format!("train loss {total_v:.4}"));
        pb.inc(1);
        let done_steps = step + 1;
        let at_checkpoint = t.checkpoint_every > 0 && done_steps % t.checkpoint_every == 0;
        if at_checkpoint || done_steps == last {
            tb.flush()?;
            let seconds = elapsed_before + started.elapsed().as_secs_f64();
            run.commit_checkpoint(|dir| {
                crate::io::weights::save_var_store(
                    &dir.join("model.safetensors"),
                    &student.vs,
                    Some(Kind::Float),
                )?;
                opt.save_state(&dir.join("optimizer.safetensors"))?;
                write_json(
                    &dir.join("state.json"),
                    &json!({"step": done_steps, "seed": exp.seed, "seconds": seconds}),
                )
            })?;
        }
    }
    tb.flush()?;
    pb.finish_and_clear();
    if last < t.steps {
        return Ok(TrainOutcome::Stopped { step: last });
    }
    let seconds = elapsed_before + started.elapsed().as_secs_f64();

    student.save(&run.root.join("text_encoder"), Some(Kind::Float))?;
    student.tokenizer.save(&run.root.join("tokenizer"))?;
    let captions = eval_captions(exp, &pools)?;
    let metrics = evaluate(&teacher, &student, &backdoors, &captions, 64, exp.seed)?;
    write_metrics(
        &run.root.join("metrics.json"),
        &metrics,
        Some(
            json!({"steps": t.steps, "seconds": seconds, "bad_lines": pools.bad_lines, "dropped_with_trigger": pools.dropped_with_trigger}),
        ),
    )?;
    tb.add_scalar("sim_clean", metrics.sim_clean, t.steps as i64)?;
    for m in &metrics.backdoors {
        tb.add_scalar(
            &format!("sim_target/{}", m.name),
            m.sim_target,
            t.steps as i64,
        )?;
        tb.add_scalar(&format!("z_score/{}", m.name), m.z_score, t.steps as i64)?;
    }
    tb.flush()?;
    write_atomic(&run.root.join("DONE"), format!("{seconds:.1}\n").as_bytes())?;
    Ok(TrainOutcome::Finished { metrics, seconds })
}

/// Evaluation captions: `[evaluation].prompts`, else `data.eval_prompts`, else the held-out split.
pub fn eval_captions(exp: &Experiment, pools: &PromptPools) -> Result<Vec<String>> {
    let path = exp
        .evaluation
        .as_ref()
        .and_then(|e| e.prompts.clone())
        .or_else(|| exp.data.eval_prompts.clone());
    let mut caps = match path {
        Some(p) => read_prompts(&p, None, false)?.prompts,
        None => pools.holdout.clone(),
    };
    caps.truncate(exp.data.eval_max);
    if caps.len() < 2 {
        input_bail!(
            "fewer than 2 evaluation captions: raise data.holdout or give data.eval_prompts"
        );
    }
    Ok(caps)
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
