//! The homoglyph defense evaluation, at the embedding level, on trained clipdoor runs:
//! - backdoor runs: attack success with raw prompts vs with `sanitize(.., Map)` in front of the
//!   backdoored encoder (the prompt-side defense);
//! - `homoglyph_unlearn` runs: homoglyph prompts' similarity to their Latin originals in the
//!   teacher (before) and in the trained encoder (after), the encoder-side defense.
//! Every run also reports `sim_clean` (clean fidelity: student vs teacher on clean prompts).
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::embed::embed;
use crate::error::Result;
use crate::experiment::backdoor::{Backdoor, BackdoorKind};
use crate::experiment::pools::PromptPools;
use crate::experiment::Experiment;
use crate::models::text_encoder::TextEncoder;
use crate::text::homoglyph::{sanitize, Mode};
use crate::{input_bail, input_err};

pub struct DefenseOptions {
    /// Evaluation prompts; `None`: each run's held-out prompts (as `clipdoor train` split them).
    pub prompts: Option<Vec<String>>,
    pub max_prompts: usize,
    pub batch: usize,
    pub device: Device,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct DefenseRow {
    pub run: String,
    pub entry: String,
    pub kind: &'static str,
    pub trigger: String,
    pub replaced: String,
    /// Prompts (holding the replaced character) evaluated.
    pub prompts: usize,
    pub defense: &'static str,
    /// What `without` and `with` measure.
    pub measure: &'static str,
    pub without: f64,
    pub with: f64,
    /// Further numbers of the same row (see [`BackdoorNumbers`], [`UnlearnNumbers`]).
    pub details: serde_json::Value,
    pub sim_clean: f64,
}

/// A backdoor under prompt sanitisation. Both sides are the suspect's embeddings, as the Rickrolling
/// `sim_target` is defined; a prompt "succeeds" when its embedding is nearer the backdoor's target
/// than the clean prompt it was made from.
#[derive(Debug, Clone, Serialize)]
pub struct BackdoorNumbers {
    pub success_raw: f64,
    pub success_sanitized: f64,
    pub sim_target_raw: f64,
    pub sim_target_sanitized: f64,
    /// cos(clean prompt, target): what the target similarity is without any trigger.
    pub sim_target_clean: f64,
    /// Share of triggered prompts that sanitising changed.
    pub sanitized_changed: f64,
}

/// A homoglyph under unlearning.
#[derive(Debug, Clone, Serialize)]
pub struct UnlearnNumbers {
    /// cos(teacher(homoglyph prompt), teacher(Latin prompt)).
    pub sim_latin_before: f64,
    /// cos(student(homoglyph prompt), student(Latin prompt)).
    pub sim_latin_after: f64,
    /// cos(student(homoglyph prompt), teacher(Latin prompt)): the unlearning objective itself.
    pub sim_latin_after_vs_teacher: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DefenseReport {
    pub rows: Vec<DefenseRow>,
}

/// Evaluate every run.
pub fn evaluate_runs(runs: &[PathBuf], opts: &DefenseOptions) -> Result<DefenseReport> {
    let mut rows = vec![];
    for run in runs {
        rows.extend(evaluate_run(run, opts)?);
    }
    Ok(DefenseReport { rows })
}

fn evaluate_run(run: &Path, opts: &DefenseOptions) -> Result<Vec<DefenseRow>> {
    let exp_path = run.join("experiment.toml");
    if !exp_path.exists() {
        input_bail!(
            "{} has no experiment.toml: give a folder written by `clipdoor train --out`",
            run.display()
        );
    }
    let exp = Experiment::load(&exp_path)?;
    let names = exp.backdoor_names();
    let backdoors: Vec<Backdoor> = exp
        .backdoors
        .iter()
        .zip(names)
        .map(|(spec, name)| Backdoor::from_spec(spec, name, exp.training.loss_weight))
        .collect();
    let mut prompts = match &opts.prompts {
        Some(p) => p.clone(),
        None => {
            PromptPools::build(&exp, &backdoors)
                .map_err(|e| {
                    input_err!(
                        "{}: cannot rebuild the held-out prompts ({e}); pass --prompts FILE",
                        exp_path.display()
                    )
                })?
                .holdout
        }
    };
    prompts.truncate(opts.max_prompts);
    let teacher = TextEncoder::load(&exp.model.teacher, opts.device, Kind::Float)?;
    let student = TextEncoder::load(&run.to_string_lossy(), opts.device, Kind::Float)?;
    let sim_clean = mean_rowwise(
        &embed(&student, &prompts, opts.batch)?,
        &embed(&teacher, &prompts, opts.batch)?,
    );
    let run_name = run.file_name().map_or_else(
        || run.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut rows = vec![];
    for b in &backdoors {
        let subset: Vec<String> = prompts
            .iter()
            .filter(|p| b.accepts(p) && !b.triggered_in(p))
            .cloned()
            .collect();
        if subset.len() < 2 {
            continue;
        }
        let row = |defense, measure, without, with, details: serde_json::Value| DefenseRow {
            run: run_name.clone(),
            entry: b.name.clone(),
            kind: b.kind.name(),
            trigger: b.trigger.clone(),
            replaced: b.replaced.to_string(),
            prompts: subset.len(),
            defense,
            measure,
            without,
            with,
            details,
            sim_clean,
        };
        if matches!(b.kind, BackdoorKind::HomoglyphUnlearn { .. }) {
            let n = unlearn_numbers(b, &subset, &teacher, &student, opts)?;
            rows.push(row(
                "homoglyph unlearning",
                "sim to Latin",
                n.sim_latin_before,
                n.sim_latin_after,
                serde_json::to_value(&n)?,
            ));
        } else {
            let n = backdoor_numbers(b, &subset, &student, exp.seed, opts)?;
            let details = serde_json::to_value(&n)?;
            rows.push(row(
                "sanitize (map)",
                "attack success",
                n.success_raw,
                n.success_sanitized,
                details.clone(),
            ));
            rows.push(row(
                "sanitize (map)",
                "sim_target",
                n.sim_target_raw,
                n.sim_target_sanitized,
                details,
            ));
        }
    }
    Ok(rows)
}

fn backdoor_numbers(
    b: &Backdoor,
    clean: &[String],
    student: &TextEncoder,
    seed: u64,
    opts: &DefenseOptions,
) -> Result<BackdoorNumbers> {
    let (triggered, targets) = b.eval_pairs(clean, seed);
    let sanitized: Vec<String> = triggered
        .iter()
        .map(|x| sanitize(x, Mode::Map))
        .collect::<Result<_>>()?;
    let changed = triggered
        .iter()
        .zip(&sanitized)
        .filter(|(a, b)| a != b)
        .count();
    let e = |p: &[String]| embed(student, p, opts.batch);
    let (raw, san, tgt, cln) = (e(&triggered)?, e(&sanitized)?, e(&targets)?, e(clean)?);
    let success = |x: &Tensor| -> f64 {
        let to_target = rowwise(x, &tgt);
        let to_clean = rowwise(x, &cln);
        to_target
            .gt_tensor(&to_clean)
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[])
    };
    Ok(BackdoorNumbers {
        success_raw: success(&raw),
        success_sanitized: success(&san),
        sim_target_raw: mean_rowwise(&raw, &tgt),
        sim_target_sanitized: mean_rowwise(&san, &tgt),
        sim_target_clean: mean_rowwise(&cln, &tgt),
        sanitized_changed: changed as f64 / triggered.len() as f64,
    })
}

fn unlearn_numbers(
    b: &Backdoor,
    clean: &[String],
    teacher: &TextEncoder,
    student: &TextEncoder,
    opts: &DefenseOptions,
) -> Result<UnlearnNumbers> {
    // `poison` of a homoglyph_unlearn backdoor is deterministic: the first `count` occurrences.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let homoglyph: Vec<String> = clean.iter().map(|c| b.poison(c, &mut rng).0).collect();
    let t_latin = embed(teacher, clean, opts.batch)?;
    let s_latin = embed(student, clean, opts.batch)?;
    let t_h = embed(teacher, &homoglyph, opts.batch)?;
    let s_h = embed(student, &homoglyph, opts.batch)?;
    Ok(UnlearnNumbers {
        sim_latin_before: mean_rowwise(&t_h, &t_latin),
        sim_latin_after: mean_rowwise(&s_h, &s_latin),
        sim_latin_after_vs_teacher: mean_rowwise(&s_h, &t_latin),
    })
}

/// Row-wise cosines of unit rows.
fn rowwise(a: &Tensor, b: &Tensor) -> Tensor {
    (a * b).sum_dim_intlist([1i64].as_slice(), false, Kind::Double)
}

fn mean_rowwise(a: &Tensor, b: &Tensor) -> f64 {
    rowwise(a, b).mean(Kind::Double).double_value(&[])
}

/// The report as one Markdown table.
pub fn markdown(r: &DefenseReport) -> String {
    let mut s = String::from(
        "| run | entry | kind | trigger → replaces | prompts | defense | measure | without defense | with defense | Δ | sim_clean |\n\
         |---|---|---|---|---:|---|---|---:|---:|---:|---:|\n",
    );
    for row in &r.rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} (U+{:04X}) → {} | {} | {} | {} | {:.4} | {:.4} | {:+.4} | {:.4} |\n",
            row.run,
            row.entry,
            row.kind,
            row.trigger,
            row.trigger.chars().next().map_or(0, |c| c as u32),
            row.replaced,
            row.prompts,
            row.defense,
            row.measure,
            row.without,
            row.with,
            row.with - row.without,
            row.sim_clean
        ));
    }
    s
}
