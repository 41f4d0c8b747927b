//! Semantic guidance, SEGA (Brack et al., "SEGA: Instructing Text-to-Image Models using Semantic
//! Guidance", NeurIPS 2023; the Stable Artist), as diffusers' `SemanticStableDiffusionPipeline`
//! computes it (../shared/reference/detection-guidance-inversion.md, section b): every edit prompt
//! gets its own UNet pass, and the difference of its noise estimate from the unconditional one —
//! thresholded per channel to its largest entries, scaled, reversed for "away from" — is added to
//! the classifier-free guidance after a warm-up, with momentum.
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::Result;
use crate::input_bail;

/// One edit direction (the per-concept arguments of diffusers' `__call__`, with its defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditPrompt {
    /// `editing_prompt`.
    pub prompt: String,
    /// `reverse_editing_direction`: steer away from the prompt instead of toward it.
    pub reverse: bool,
    /// `edit_guidance_scale` (default 5).
    pub guidance_scale: f64,
    /// `edit_warmup_steps` (default 10): the edit is applied from this loop iteration on (momentum
    /// builds up before).
    pub warmup_steps: usize,
    /// `edit_cooldown_steps` (default none): from this loop iteration on the edit is off.
    pub cooldown_steps: Option<usize>,
    /// `edit_threshold` (default 0.9): per image and channel only entries at or above this quantile of
    /// |edit guidance| are kept.
    pub threshold: f64,
    /// `edit_weights[c]` (default 1): relative weight among the edits.
    pub weight: f64,
}

impl EditPrompt {
    /// An edit toward `prompt` with diffusers' defaults.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            reverse: false,
            guidance_scale: 5.0,
            warmup_steps: 10,
            cooldown_steps: None,
            threshold: 0.9,
            weight: 1.0,
        }
    }
}

/// The SEGA settings of one call: the edits and the shared momentum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegaConfig {
    pub edits: Vec<EditPrompt>,
    /// `edit_momentum_scale` (default 0.1).
    pub momentum_scale: f64,
    /// `edit_mom_beta` (default 0.4).
    pub mom_beta: f64,
}

impl SegaConfig {
    /// `edits` with diffusers' momentum defaults.
    pub fn new(edits: Vec<EditPrompt>) -> Self {
        Self {
            edits,
            momentum_scale: 0.1,
            mom_beta: 0.4,
        }
    }

    /// Values diffusers would take but that make no sense (or crash `torch.quantile`).
    pub fn validate(&self) -> Result<()> {
        if self.edits.is_empty() {
            input_bail!("semantic guidance needs at least one --edit prompt");
        }
        for e in &self.edits {
            if !(0.0..=1.0).contains(&e.threshold) {
                input_bail!(
                    "--edit-threshold must lie in [0, 1] (a quantile), got {} for edit {:?}",
                    e.threshold,
                    e.prompt
                );
            }
            if !e.guidance_scale.is_finite() || !e.weight.is_finite() {
                input_bail!(
                    "--edit-guidance and --edit-weight must be finite numbers (edit {:?})",
                    e.prompt
                );
            }
        }
        if !self.momentum_scale.is_finite() || !(0.0..=1.0).contains(&self.mom_beta) {
            input_bail!(
                "--edit-momentum must be finite and --edit-beta lie in [0, 1], got {} and {}",
                self.momentum_scale,
                self.mom_beta
            );
        }
        Ok(())
    }
}

/// Per-edit values as given on the command line: none (the default for every edit), one (for every
/// edit), or one per edit.
pub struct EditLists<'a> {
    pub prompts: &'a [String],
    pub reverse: &'a [bool],
    pub guidance_scale: &'a [f64],
    pub warmup_steps: &'a [usize],
    pub cooldown_steps: &'a [usize],
    pub threshold: &'a [f64],
    pub weight: &'a [f64],
    pub momentum_scale: f64,
    pub mom_beta: f64,
}

/// The value of edit `c` from a flag's list (`None`: the flag was not given).
fn pick<T: Copy>(flag: &str, values: &[T], c: usize, edits: usize) -> Result<Option<T>> {
    match values.len() {
        0 => Ok(None),
        1 => Ok(Some(values[0])),
        n if n == edits => Ok(Some(values[c])),
        n => input_bail!(
            "{flag} was given {n} values for {edits} edit prompts: give one value for all, or one per --edit"
        ),
    }
}

impl SegaConfig {
    /// The config of [`EditLists`], each list broadcast over the edits; checked.
    pub fn from_lists(l: &EditLists) -> Result<Self> {
        let n = l.prompts.len();
        let mut edits = vec![];
        for (c, prompt) in l.prompts.iter().enumerate() {
            let mut e = EditPrompt::new(prompt.clone());
            if let Some(v) = pick("--edit-reverse", l.reverse, c, n)? {
                e.reverse = v;
            }
            if let Some(v) = pick("--edit-guidance", l.guidance_scale, c, n)? {
                e.guidance_scale = v;
            }
            if let Some(v) = pick("--edit-warmup", l.warmup_steps, c, n)? {
                e.warmup_steps = v;
            }
            e.cooldown_steps = pick("--edit-cooldown", l.cooldown_steps, c, n)?;
            if let Some(v) = pick("--edit-threshold", l.threshold, c, n)? {
                e.threshold = v;
            }
            if let Some(v) = pick("--edit-weight", l.weight, c, n)? {
                e.weight = v;
            }
            edits.push(e);
        }
        let cfg = Self {
            edits,
            momentum_scale: l.momentum_scale,
            mom_beta: l.mom_beta,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// SEGA state across the denoising steps (the edit momentum).
#[derive(Debug, Default)]
pub struct SegaState {
    momentum: Option<Tensor>,
}

impl SegaState {
    /// The guidance of loop iteration `i`: `noise_guidance` is `guidance_scale · (ε_text − ε_uncond)`,
    /// `edits[c]` the edit prompts' noise estimates. Operations and their order are diffusers'
    /// (out of place, as there; hence `x = x * y` rather than `x *= y`).
    #[allow(clippy::assign_op_pattern)]
    pub fn guide(
        &mut self,
        cfg: &SegaConfig,
        i: usize,
        uncond: &Tensor,
        noise_guidance: Tensor,
        edits: &[Tensor],
    ) -> Tensor {
        let mut noise_guidance = noise_guidance;
        let batch = noise_guidance.size()[0];
        let momentum = self
            .momentum
            .take()
            .unwrap_or_else(|| noise_guidance.zeros_like());
        let (kind, device) = (noise_guidance.kind(), noise_guidance.device());
        let mut weights = vec![];
        let mut guidance = vec![];
        let mut warm = vec![];
        for (c, (edit, e)) in cfg.edits.iter().zip(edits).enumerate() {
            if i >= edit.warmup_steps {
                warm.push(c as i64);
            }
            // diffusers' cooldown `None` is `i + 1`: never reached.
            if edit.cooldown_steps.is_some_and(|cool| i >= cool) {
                weights.push(Tensor::zeros([batch], (kind, device)));
                guidance.push(e.zeros_like());
                continue;
            }
            let mut d = e - uncond;
            weights.push(Tensor::full([batch], edit.weight, (kind, device)));
            if edit.reverse {
                d = d * -1;
            }
            d = d * edit.guidance_scale;
            // `torch.quantile` (linear) over H·W per image and channel, in fp32.
            let flat = d.abs().flatten(2, -1).to_kind(Kind::Float);
            let q = flat
                .quantile_scalar(edit.threshold, Some(2), false, "linear")
                .to_kind(d.kind());
            let keep = d.abs().ge_tensor(&q.unsqueeze(-1).unsqueeze(-1));
            d = d.where_self(&keep, &d.zeros_like());
            guidance.push(d);
        }
        let weights = Tensor::stack(&weights, 0);
        let guidance = Tensor::stack(&guidance, 0);
        let all = cfg.edits.len();
        if warm.len() < all && !warm.is_empty() {
            // Only some edits are past their warm-up: those, with weights normalised per image and
            // no momentum.
            let idx = Tensor::from_slice(&warm).to_device(device);
            let w = weights.index_select(0, &idx);
            let w = w.zeros_like().where_self(&w.lt(0.0), &w);
            let w = &w / w.sum_dim_intlist([0i64].as_slice(), false, None::<Kind>);
            let g = guidance.index_select(0, &idx);
            noise_guidance =
                noise_guidance + Tensor::einsum("cb,cbijk->bijk", &[w, g], None::<&[i64]>);
        }
        let w = weights.zeros_like().where_self(&weights.lt(0.0), &weights);
        let w = w.nan_to_num(0.0, None, None);
        let edit_guidance = Tensor::einsum("cb,cbijk->bijk", &[w, guidance], None::<&[i64]>);
        let edit_guidance = edit_guidance + &momentum * cfg.momentum_scale;
        self.momentum = Some(&momentum * cfg.mom_beta + &edit_guidance * (1.0 - cfg.mom_beta));
        if warm.len() == all {
            noise_guidance = noise_guidance + edit_guidance;
        }
        noise_guidance
    }
}
