//! The experiment layer: what a run is, independent of how it is trained, drawn or scanned.
//! An experiment file ([`Experiment`], TOML) with its backdoor specs ([`BackdoorSpec`], tagged by
//! `kind`), the backdoors they describe ([`Backdoor`]: how a clean prompt is poisoned), the prompt
//! pools drawn from per step ([`PromptPools`]) and the evaluation captions. `train`, `eval` and
//! `scan` build on it; it knows nothing of them.
pub mod backdoor;
pub mod file;
pub mod pools;
pub mod robust_section;

pub use backdoor::{Backdoor, BackdoorKind, BackdoorSpec, Target};
pub use file::{
    DataSection, EvaluationSection, Experiment, ModelSection, RobustSection, RobustSlot,
    RobustSlots, SlotStart, TrainingSection,
};
pub use pools::PromptPools;

use crate::error::Result;
use crate::input_bail;
use crate::io::prompts::read_prompt_lines;

/// The experiment's backdoors, named (explicit names, else `<kind>_<index>`).
pub fn build_backdoors(exp: &Experiment) -> Vec<Backdoor> {
    exp.backdoors
        .iter()
        .zip(exp.backdoor_names())
        .map(|(s, n)| Backdoor::from_spec(s, n, exp.training.loss_weight))
        .collect()
}

/// Evaluation captions: `[evaluation].prompts`, else `data.eval_prompts`, else the held-out split.
pub fn eval_captions(exp: &Experiment, pools: &PromptPools) -> Result<Vec<String>> {
    let path = exp
        .evaluation
        .as_ref()
        .and_then(|e| e.prompts.clone())
        .or_else(|| exp.data.eval_prompts.clone());
    let mut caps = match path {
        Some(p) => read_prompt_lines(&p, None, false)?.prompts,
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
