//! AdamW, gradient-norm clipping and learning-rate schedules that reproduce PyTorch step for step,
//! with optimiser state that is saved to and restored from safetensors (tch's own optimiser cannot
//! save its state, and `--resume` must give the same weights as an uninterrupted run).
//!
//! The update has two implementations ([`AdamWImpl`]): the single-tensor one uses the same ATen
//! kernels, in the same order and with the same scalars, as `torch.optim.AdamW` (`foreach=False`),
//! so on the same device the parameters match PyTorch's bit for bit; the fused one calls libtorch's
//! `_fused_adamw_` as `torch.optim.AdamW(fused=True)` does (one kernel over all parameters, faster on
//! CUDA, rounded differently). Both keep the same state, so a run may resume with either.
//! docs/training-internals.md explains each choice.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::error::Result;
use crate::input_err;
use crate::io::weights::{save_tensors, SafetensorsFile};
use crate::settings::AdamWChoice;
use crate::torch_ext::{fused_adamw, FusedAdamW};

/// How [`AdamW::step`] updates the parameters (what `training.adamw` resolves to on a device).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdamWImpl {
    /// `torch.optim.AdamW(foreach=False)`: one parameter at a time, bit-exact with torch.
    SingleTensor,
    /// `torch.optim.AdamW(fused=True)`: `torch._fused_adamw_` once per device and dtype.
    Fused,
}

impl AdamWImpl {
    /// `auto` is single-tensor on CPU (bit-exact with torch's default CPU path, which the parity
    /// tests compare with) and fused on CUDA (one kernel instead of ~10 launches per parameter);
    /// other devices keep the single-tensor path. An explicit choice is taken as it is.
    pub fn resolve(choice: AdamWChoice, device: Device) -> Self {
        match choice {
            AdamWChoice::SingleTensor => Self::SingleTensor,
            AdamWChoice::Fused => Self::Fused,
            AdamWChoice::Auto if device.is_cuda() => Self::Fused,
            AdamWChoice::Auto => Self::SingleTensor,
        }
    }

    /// The name `training.adamw` gives it (reported in metrics.json).
    pub fn name(self) -> &'static str {
        match self {
            Self::SingleTensor => AdamWChoice::SingleTensor.name(),
            Self::Fused => AdamWChoice::Fused.name(),
        }
    }
}

/// AdamW hyper-parameters; `Default` is `torch.optim.AdamW`'s defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
        }
    }
}

impl AdamWConfig {
    /// The Rickrolling reference: lr 1e-4, betas (0.9, 0.999), eps 1e-8, no weight decay.
    pub fn rickrolling() -> Self {
        Self {
            lr: 1e-4,
            weight_decay: 0.0,
            ..Self::default()
        }
    }

    /// The range checks `torch.optim.AdamW` makes, as input errors.
    pub fn validate(&self) -> Result<()> {
        check_lr(self.lr)?;
        if !(self.eps >= 0.0 && self.eps.is_finite()) {
            return Err(input_err!(
                "AdamW eps must be a finite number >= 0, got {}",
                self.eps
            ));
        }
        for (name, beta) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return Err(input_err!("AdamW {name} must be in [0, 1), got {beta}"));
            }
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(input_err!(
                "AdamW weight_decay must be a finite number >= 0, got {}",
                self.weight_decay
            ));
        }
        Ok(())
    }
}

fn check_lr(lr: f64) -> Result<()> {
    if lr >= 0.0 && lr.is_finite() {
        Ok(())
    } else {
        Err(input_err!(
            "learning rate must be a finite number >= 0, got {lr}"
        ))
    }
}

/// Per-parameter state, created at the parameter's first update (as torch does lazily).
struct ParamState {
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: u64,
}

impl ParamState {
    /// Zero moments shaped like `param`, before its first update.
    fn new(param: &Tensor) -> Result<Self> {
        Ok(Self {
            exp_avg: param.f_zeros_like()?,
            exp_avg_sq: param.f_zeros_like()?,
            step: 0,
        })
    }
}

/// AdamW over named parameters (shallow handles: updates land in the caller's tensors/VarStore).
pub struct AdamW {
    config: AdamWConfig,
    params: Vec<(String, Tensor)>,
    state: Vec<Option<ParamState>>,
    implementation: AdamWImpl,
}

// Names inside the state file: `<prefix><parameter name>`, plus the hyper-parameters that must not
// change across a resume.
const EXP_AVG: &str = "exp_avg.";
const EXP_AVG_SQ: &str = "exp_avg_sq.";
const STEP: &str = "step.";
const HYPER: &str = "adamw.beta1_beta2_eps_weight_decay";

impl AdamW {
    /// An optimiser over `params` (name, tensor); names must be unique, tensors floating point.
    pub fn new(params: Vec<(String, Tensor)>, config: AdamWConfig) -> Result<Self> {
        config.validate()?;
        let mut seen = HashSet::new();
        for (name, t) in &params {
            if !seen.insert(name.as_str()) {
                return Err(input_err!("parameter `{name}` was given to AdamW twice"));
            }
            if !t.is_floating_point() {
                return Err(input_err!(
                    "parameter `{name}` has kind {:?}; AdamW trains floating-point tensors only",
                    t.kind()
                ));
            }
        }
        let state = params.iter().map(|_| None).collect();
        Ok(Self {
            config,
            params,
            state,
            implementation: AdamWImpl::SingleTensor,
        })
    }

    /// The same optimiser updating with `implementation` (single-tensor unless set).
    pub fn with_implementation(mut self, implementation: AdamWImpl) -> Self {
        self.implementation = implementation;
        self
    }

    /// Switch the implementation of the next steps; the state carries over unchanged.
    pub fn set_implementation(&mut self, implementation: AdamWImpl) {
        self.implementation = implementation;
    }

    pub fn implementation(&self) -> AdamWImpl {
        self.implementation
    }

    /// An optimiser over every trainable variable (`requires_grad`) of `vs`, in name order.
    pub fn from_var_store(vs: &VarStore, config: AdamWConfig) -> Result<Self> {
        let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
        let params = vars
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        Self::new(params, config)
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// The parameters, in the order they were given.
    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }

    pub fn lr(&self) -> f64 {
        self.config.lr
    }

    /// Set the learning rate of the next steps (from [`LrSchedule::lr_at`]).
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        check_lr(lr)?;
        self.config.lr = lr;
        Ok(())
    }

    /// How many updates the most-updated parameter has had (0 before the first step).
    pub fn steps_taken(&self) -> u64 {
        self.state
            .iter()
            .flatten()
            .map(|s| s.step)
            .max()
            .unwrap_or(0)
    }

    /// Zero every parameter's gradient in place. Unlike torch's default `zero_grad(set_to_none=True)`
    /// the gradient stays defined, so a parameter that then receives no gradient is still updated
    /// (with a zero gradient) where torch would skip it; with every parameter in the graph (a text
    /// encoder's student) both give identical results.
    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// Set every parameter's gradient to none, as torch's `zero_grad()` does by default: the next
    /// backward then stores its gradients instead of adding them to zeros (one pass over the
    /// parameters less), and a parameter that receives no gradient is skipped by [`AdamW::step`].
    pub fn clear_grads(&mut self) -> Result<()> {
        for (_, p) in &self.params {
            crate::torch_ext::clear_grad(p)?;
        }
        Ok(())
    }

    /// One AdamW update of every parameter that has a gradient (others are skipped, as in torch).
    pub fn step(&mut self) -> Result<()> {
        match self.implementation {
            AdamWImpl::SingleTensor => self.step_single_tensor(),
            AdamWImpl::Fused => self.step_fused(),
        }
    }

    fn step_single_tensor(&mut self) -> Result<()> {
        let AdamWConfig {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        tch::no_grad(|| -> Result<()> {
            for ((name, param), slot) in self.params.iter_mut().zip(self.state.iter_mut()) {
                let grad = param.grad();
                if !grad.defined() {
                    continue;
                }
                let state = match slot {
                    Some(s) => s,
                    None => slot.insert(ParamState::new(param)?),
                };
                adamw_update(param, &grad, state, lr, beta1, beta2, eps, weight_decay)
                    .map_err(|e| e.context(format!("AdamW step for parameter `{name}`")))?;
            }
            Ok(())
        })
    }

    /// torch's `_fused_adamw`: the parameters with a gradient are grouped by device and dtype (in
    /// the order given, as `_group_tensors_by_device_and_dtype`), their steps counted up first (the
    /// kernel reads the count *after* this update), then one `_fused_adamw_` per group.
    fn step_fused(&mut self) -> Result<()> {
        let AdamWConfig {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        let hyper = FusedAdamW {
            lr,
            beta1,
            beta2,
            weight_decay,
            eps,
        };
        tch::no_grad(|| -> Result<()> {
            let mut groups: Vec<FusedGroup> = vec![];
            for ((_, param), slot) in self.params.iter().zip(self.state.iter_mut()) {
                let grad = param.grad();
                if !grad.defined() {
                    continue;
                }
                let state = match slot {
                    Some(s) => s,
                    None => slot.insert(ParamState::new(param)?),
                };
                state.step += 1;
                let key = (param.device(), param.kind());
                let group = match groups.iter_mut().position(|g| g.key == key) {
                    Some(i) => &mut groups[i],
                    None => {
                        groups.push(FusedGroup::new(key));
                        groups.last_mut().expect("just pushed")
                    }
                };
                group.params.push(param.shallow_clone());
                group.grads.push(grad);
                group.exp_avgs.push(state.exp_avg.shallow_clone());
                group.exp_avg_sqs.push(state.exp_avg_sq.shallow_clone());
                group.steps.push(state.step);
            }
            for g in &groups {
                let steps = step_tensors(&g.steps, g.key.0)?;
                fused_adamw(
                    &g.params,
                    &g.grads,
                    &g.exp_avgs,
                    &g.exp_avg_sqs,
                    &steps,
                    hyper,
                    None,
                    None,
                )
                .map_err(|e| {
                    e.context(format!(
                        "fused AdamW step of the {:?} parameters on {:?}",
                        g.key.1, g.key.0
                    ))
                })?;
            }
            Ok(())
        })
    }

    /// Clip the gradients of this optimiser's parameters; see [`clip_grad_norm`].
    pub fn clip_grad_norm(&self, max_norm: f64) -> Result<f64> {
        let params: Vec<&Tensor> = self.params.iter().map(|(_, t)| t).collect();
        clip_grad_norm(&params, max_norm)
    }

    /// [`AdamW::clip_grad_norm`] with the norm left on the device ([`clip_grad_norm_tensor`]).
    pub fn clip_grad_norm_tensor(&self, max_norm: f64) -> Result<Tensor> {
        let params: Vec<&Tensor> = self.params.iter().map(|(_, t)| t).collect();
        clip_grad_norm_tensor(&params, max_norm)
    }

    /// The state as named tensors (shallow handles), as written by [`AdamW::save_state`].
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let c = &self.config;
        let hyper = Tensor::from_slice(&[c.beta1, c.beta2, c.eps, c.weight_decay]);
        let mut out = vec![(HYPER.to_string(), hyper)];
        for ((name, _), slot) in self.params.iter().zip(&self.state) {
            if let Some(s) = slot {
                out.push((format!("{EXP_AVG}{name}"), s.exp_avg.shallow_clone()));
                out.push((format!("{EXP_AVG_SQ}{name}"), s.exp_avg_sq.shallow_clone()));
                out.push((
                    format!("{STEP}{name}"),
                    Tensor::from_slice(&[s.step as i64]),
                ));
            }
        }
        out
    }

    /// Write the state (moments in their own precision, steps, hyper-parameters) atomically.
    pub fn save_state(&self, path: &Path) -> Result<()> {
        save_tensors(path, &self.state_tensors(), None)
    }

    /// Replace the state with the one in `path` (written by [`AdamW::save_state`] for parameters of
    /// the same names and shapes). On any error the current state is left untouched.
    pub fn load_state(&mut self, path: &Path) -> Result<()> {
        let file = SafetensorsFile::open(path)?;
        let shown = path.display();
        let mut tensors = file.tensors()?;
        let hyper = tensors.remove(HYPER).ok_or_else(|| {
            input_err!("{shown} is not an AdamW state file written by clipdoor (no `{HYPER}`)")
        })?;
        self.check_hyper(&hyper, path)?;

        let index: HashMap<&str, usize> = self
            .params
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.as_str(), i))
            .collect();
        let mut parts: Vec<[Option<Tensor>; 3]> =
            self.params.iter().map(|_| [None, None, None]).collect();
        for (key, tensor) in tensors {
            let (slot, name) = [EXP_AVG_SQ, EXP_AVG, STEP]
                .iter()
                .enumerate()
                .find_map(|(slot, prefix)| key.strip_prefix(prefix).map(|n| (slot, n)))
                .ok_or_else(|| input_err!("{shown} holds an unknown entry `{key}`; it is not an AdamW state file of this version"))?;
            let &i = index.get(name).ok_or_else(|| {
                input_err!("{shown} has optimiser state for `{name}`, which this model does not train: the checkpoint belongs to another model or experiment")
            })?;
            parts[i][slot] = Some(tensor);
        }

        let mut state = Vec::with_capacity(self.params.len());
        for ((name, param), [avg_sq, avg, step]) in self.params.iter().zip(parts) {
            state.push(match (avg, avg_sq, step) {
                (None, None, None) => None,
                (Some(avg), Some(avg_sq), Some(step)) => Some(restore_param_state(name, param, avg, avg_sq, &step, path)?),
                _ => return Err(input_err!("{shown} has incomplete optimiser state for `{name}` (exp_avg, exp_avg_sq and step are all needed): the file is damaged; resume from an earlier checkpoint")),
            });
        }
        self.state = state;
        Ok(())
    }

    fn check_hyper(&self, hyper: &Tensor, path: &Path) -> Result<()> {
        let saved: Vec<f64> = Vec::<f64>::try_from(hyper.to_kind(Kind::Double).flatten(0, -1))?;
        let c = &self.config;
        let now = [c.beta1, c.beta2, c.eps, c.weight_decay];
        if saved.as_slice() != now {
            return Err(input_err!(
                "{} was written with AdamW (beta1, beta2, eps, weight_decay) = {saved:?} but the experiment now sets {now:?}: resume with the same optimiser settings, or start a new run",
                path.display()
            ));
        }
        Ok(())
    }
}

/// The parameters of one device and dtype, updated by one fused kernel call.
struct FusedGroup {
    key: (Device, Kind),
    params: Vec<Tensor>,
    grads: Vec<Tensor>,
    exp_avgs: Vec<Tensor>,
    exp_avg_sqs: Vec<Tensor>,
    steps: Vec<u64>,
}

impl FusedGroup {
    fn new(key: (Device, Kind)) -> Self {
        Self {
            key,
            params: vec![],
            grads: vec![],
            exp_avgs: vec![],
            exp_avg_sqs: vec![],
            steps: vec![],
        }
    }
}

/// The kernel's `state_steps`: one f32 scalar per parameter on `device` (torch keeps fused steps as
/// f32 tensors). Built as views of one tensor: a single fill when every count is the same (always,
/// unless parameters joined the training at different steps), else one copy of the counts.
fn step_tensors(steps: &[u64], device: Device) -> Result<Vec<Tensor>> {
    let all = match steps {
        [first, rest @ ..] if rest.iter().all(|s| s == first) => {
            Tensor::f_full([steps.len() as i64], *first as f64, (Kind::Float, device))?
        }
        _ => {
            let counts: Vec<f32> = steps.iter().map(|&s| s as f32).collect();
            Tensor::f_from_slice(&counts)?.f_to_device(device)?
        }
    };
    Ok(all.f_unbind(0)?)
}

fn restore_param_state(
    name: &str,
    param: &Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: &Tensor,
    path: &Path,
) -> Result<ParamState> {
    for (what, t) in [("exp_avg", &exp_avg), ("exp_avg_sq", &exp_avg_sq)] {
        if t.size() != param.size() {
            return Err(input_err!(
                "{} has {what} of shape {:?} for `{name}`, whose shape is {:?}: the checkpoint belongs to another model",
                path.display(), t.size(), param.size()
            ));
        }
    }
    if step.numel() != 1 || step.kind() != Kind::Int64 {
        return Err(input_err!(
            "{} has a malformed step for `{name}`",
            path.display()
        ));
    }
    let step = step.int64_value(&[0]);
    if step < 1 {
        return Err(input_err!(
            "{} has step {step} for `{name}`; steps start at 1",
            path.display()
        ));
    }
    // As torch's load_state_dict: moments follow the parameter's device and kind.
    let place = |t: Tensor| t.f_to_device(param.device())?.f_to_kind(param.kind());
    Ok(ParamState {
        exp_avg: place(exp_avg)?,
        exp_avg_sq: place(exp_avg_sq)?,
        step: step as u64,
    })
}

/// torch's `_single_tensor_adam` with `decoupled_weight_decay=True`. The scalar arithmetic is done
/// in f64 like Python floats; `addcmul_`/`addcdiv_` with `value=v` are applied as `t1 * v` followed by
/// the value-1 kernel, which rounds exactly as the fused kernel's `self + v * t1 * t2` (tch exposes no
/// `value` argument).
#[allow(clippy::too_many_arguments)]
fn adamw_update(
    param: &mut Tensor,
    grad: &Tensor,
    s: &mut ParamState,
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
) -> Result<()> {
    s.step += 1;
    if weight_decay != 0.0 {
        let _ = param.f_mul_scalar_(1.0 - lr * weight_decay)?;
    }
    let _ = s.exp_avg.f_lerp_(grad, 1.0 - beta1)?;
    let _ = s.exp_avg_sq.f_mul_scalar_(beta2)?;
    let _ = s
        .exp_avg_sq
        .f_addcmul_(&grad.f_mul_scalar(1.0 - beta2)?, grad)?;

    let step = s.step as f64;
    let bias_correction1 = 1.0 - beta1.powf(step);
    let bias_correction2 = 1.0 - beta2.powf(step);
    let step_size = lr / bias_correction1;
    // Python computes `bias_correction2 ** 0.5` (pow, not sqrt).
    let bias_correction2_sqrt = bias_correction2.powf(0.5);

    let mut denom = s.exp_avg_sq.f_sqrt()?.f_div_scalar(bias_correction2_sqrt)?;
    let _ = denom.f_add_scalar_(eps)?;
    let _ = param.f_addcdiv_(&s.exp_avg.f_mul_scalar(-step_size)?, &denom)?;
    Ok(())
}

/// `torch.nn.utils.clip_grad_norm_(params, max_norm)` (2-norm, `foreach=False`): scales every
/// gradient by `min(max_norm / (total_norm + 1e-6), 1)` in place and returns the total norm before
/// clipping (NaN/inf are returned as they are, as with torch's `error_if_nonfinite=False`; the
/// caller decides to stop). Parameters without a gradient are ignored; none at all gives 0.
pub fn clip_grad_norm<T: std::borrow::Borrow<Tensor>>(params: &[T], max_norm: f64) -> Result<f64> {
    Ok(clip_grad_norm_tensor(params, max_norm)?.f_double_value(&[])?)
}

/// [`clip_grad_norm`] without reading the norm back to the host: the norm stays a 0-d tensor on the
/// gradients' device, so a training step can read it together with its losses in one transfer. With
/// an infinite `max_norm` the scale factor is exactly 1 and the gradients are left alone (torch
/// multiplies them by 1.0, one pass over every gradient that changes nothing).
pub fn clip_grad_norm_tensor<T: std::borrow::Borrow<Tensor>>(
    params: &[T],
    max_norm: f64,
) -> Result<Tensor> {
    if max_norm.is_nan() || max_norm <= 0.0 {
        return Err(input_err!(
            "gradient clipping max_norm must be > 0, got {max_norm}"
        ));
    }
    let mut grads: Vec<Tensor> = params
        .iter()
        .map(|p| p.borrow().grad())
        .filter(Tensor::defined)
        .collect();
    if grads.is_empty() {
        return Ok(Tensor::from(0f32));
    }
    tch::no_grad(|| -> Result<Tensor> {
        // torch.linalg.vector_norm(g, 2) of each gradient, then of the stacked norms. A 1-D input
        // makes linalg_norm exactly vector_norm (tch does not expose vector_norm itself).
        let norms = grads.iter().map(vector_norm).collect::<Result<Vec<_>>>()?;
        let device = grads[0].device();
        let norms = norms
            .iter()
            .map(|n| n.to_device(device))
            .collect::<Vec<_>>();
        let total = vector_norm(&Tensor::f_stack(&norms, 0)?)?;
        if max_norm.is_infinite() {
            return Ok(total);
        }
        // Python's `max_norm / t` is `t.reciprocal() * max_norm`.
        let coef = total
            .f_add_scalar(1e-6)?
            .f_reciprocal()?
            .f_mul_scalar(max_norm)?
            .f_clamp_max(1.0)?;
        for g in &mut grads {
            let _ = g.f_mul_(&coef.to_device(g.device()))?;
        }
        Ok(total)
    })
}

fn vector_norm(t: &Tensor) -> Result<Tensor> {
    Ok(t.f_reshape([-1])?
        .f_linalg_norm(2.0, None::<&[i64]>, false, None::<Kind>)?)
}

/// How the learning rate falls after the warm-up.
#[derive(Clone, Debug, PartialEq)]
pub enum LrDecay {
    /// The base rate throughout.
    Constant,
    /// `torch.optim.lr_scheduler.MultiStepLR(milestones, gamma)`: times `gamma` at each milestone
    /// (a step index; a milestone listed n times multiplies by `gamma ** n`).
    MultiStep { milestones: Vec<u64>, gamma: f64 },
    /// Half-cosine from the base rate (at the end of the warm-up) to `min_lr_ratio` × base at
    /// `total_steps`.
    Cosine { total_steps: u64, min_lr_ratio: f64 },
}

/// A learning-rate schedule: linear warm-up over `warmup_steps` (from 0, as transformers' warm-up
/// schedules start), then the decay. `lr_at(step)` is the rate for the update of step `step`
/// (0-based), i.e. the rate torch's scheduler has set after `step` calls of `scheduler.step()`.
#[derive(Clone, Debug, PartialEq)]
pub struct LrSchedule {
    lr: f64,
    warmup_steps: u64,
    decay: LrDecay,
}

impl LrSchedule {
    pub fn new(lr: f64, warmup_steps: u64, decay: LrDecay) -> Result<Self> {
        check_lr(lr)?;
        match &decay {
            LrDecay::Constant => {}
            LrDecay::MultiStep { gamma, .. } => {
                if !(*gamma > 0.0 && gamma.is_finite()) {
                    return Err(input_err!(
                        "MultiStep gamma must be a finite number > 0, got {gamma}"
                    ));
                }
            }
            LrDecay::Cosine {
                total_steps,
                min_lr_ratio,
            } => {
                if *total_steps <= warmup_steps {
                    return Err(input_err!("cosine schedule: total_steps ({total_steps}) must be larger than warmup_steps ({warmup_steps})"));
                }
                if !(0.0..=1.0).contains(min_lr_ratio) {
                    return Err(input_err!(
                        "cosine schedule: min_lr_ratio must be in [0, 1], got {min_lr_ratio}"
                    ));
                }
            }
        }
        Ok(Self {
            lr,
            warmup_steps,
            decay,
        })
    }

    pub fn constant(lr: f64) -> Result<Self> {
        Self::new(lr, 0, LrDecay::Constant)
    }

    /// The Rickrolling schedule (e.g. lr 1e-4, milestones [75], gamma 0.1).
    pub fn multi_step(lr: f64, milestones: &[u64], gamma: f64) -> Result<Self> {
        Self::new(
            lr,
            0,
            LrDecay::MultiStep {
                milestones: milestones.to_vec(),
                gamma,
            },
        )
    }

    pub fn warmup_cosine(
        lr: f64,
        warmup_steps: u64,
        total_steps: u64,
        min_lr_ratio: f64,
    ) -> Result<Self> {
        Self::new(
            lr,
            warmup_steps,
            LrDecay::Cosine {
                total_steps,
                min_lr_ratio,
            },
        )
    }

    pub fn base_lr(&self) -> f64 {
        self.lr
    }

    pub fn warmup_steps(&self) -> u64 {
        self.warmup_steps
    }

    pub fn decay(&self) -> &LrDecay {
        &self.decay
    }

    /// The learning rate of step `step`, computed as torch computes it (same f64 operations):
    /// warm-up and cosine as `LambdaLR` with transformers' `get_cosine_with_min_lr_schedule_with_warmup`
    /// / `get_constant_schedule_with_warmup` lambdas; MultiStep as `MultiStepLR`'s chained updates.
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step as f64 / self.warmup_steps.max(1) as f64);
        }
        match &self.decay {
            LrDecay::Constant => self.lr * 1.0,
            LrDecay::MultiStep { milestones, gamma } => {
                // MultiStepLR multiplies the current rate at each milestone reached (chained form),
                // which can differ in the last bit from base * gamma^k.
                let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
                for &m in milestones.iter().filter(|&&m| m <= step) {
                    *counts.entry(m).or_default() += 1;
                }
                counts
                    .values()
                    .fold(self.lr, |lr, &n| lr * gamma.powf(n as f64))
            }
            LrDecay::Cosine {
                total_steps,
                min_lr_ratio,
            } => {
                let span = (total_steps - self.warmup_steps).max(1) as f64;
                let progress = (step - self.warmup_steps) as f64 / span;
                let num_cycles = 0.5;
                let cosine =
                    0.5 * (1.0 + (std::f64::consts::PI * num_cycles * 2.0 * progress).cos());
                self.lr * (cosine * (1.0 - min_lr_ratio) + min_lr_ratio).max(0.0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_single_tensor_on_cpu_and_fused_on_cuda() {
        let resolve = AdamWImpl::resolve;
        assert_eq!(
            resolve(AdamWChoice::Auto, Device::Cpu),
            AdamWImpl::SingleTensor
        );
        assert_eq!(
            resolve(AdamWChoice::Auto, Device::Cuda(0)),
            AdamWImpl::Fused
        );
        assert_eq!(
            resolve(AdamWChoice::Auto, Device::Cuda(3)),
            AdamWImpl::Fused
        );
        assert_eq!(
            resolve(AdamWChoice::Auto, Device::Mps),
            AdamWImpl::SingleTensor
        );
        for device in [Device::Cpu, Device::Cuda(0)] {
            assert_eq!(resolve(AdamWChoice::Fused, device), AdamWImpl::Fused);
            assert_eq!(
                resolve(AdamWChoice::SingleTensor, device),
                AdamWImpl::SingleTensor
            );
        }
        assert_eq!(AdamWImpl::Fused.name(), "fused");
        assert_eq!(AdamWImpl::SingleTensor.name(), "single-tensor");
    }

    #[test]
    fn step_tensors_hold_each_count_as_an_f32_scalar() {
        for counts in [vec![7u64, 7, 7], vec![3, 1, 12], vec![5]] {
            let steps = step_tensors(&counts, Device::Cpu).unwrap();
            assert_eq!(steps.len(), counts.len());
            for (t, &c) in steps.iter().zip(&counts) {
                assert_eq!(t.kind(), Kind::Float);
                assert_eq!(t.dim(), 0);
                assert_eq!(t.double_value(&[]), c as f64);
            }
        }
        assert!(step_tensors(&[], Device::Cpu).unwrap().is_empty());
    }

    /// Parameters of two dtypes are updated in two kernel calls, each like a lone fused step.
    #[test]
    fn fused_steps_groups_of_dtypes_like_separate_optimisers() {
        let make = |kind: Kind, seed: i64| {
            crate::models::init::seeded(seed, || Tensor::randn([4, 3], (kind, Device::Cpu)))
                .set_requires_grad(true)
        };
        let grad_of = |p: &Tensor| {
            (p * p.detach().sin()).sum(p.kind()).backward();
        };
        let run = |params: Vec<(String, Tensor)>| {
            let mut opt = AdamW::new(params, AdamWConfig::default())
                .unwrap()
                .with_implementation(AdamWImpl::Fused);
            for _ in 0..3 {
                opt.zero_grad();
                for (_, p) in opt.params() {
                    grad_of(p);
                }
                opt.step().unwrap();
            }
            assert_eq!(opt.steps_taken(), 3);
            opt.params()
                .iter()
                .map(|(_, p)| p.detach().copy())
                .collect::<Vec<_>>()
        };
        let together = run(vec![
            ("a".into(), make(Kind::Float, 1)),
            ("b".into(), make(Kind::Double, 2)),
            ("c".into(), make(Kind::Float, 3)),
        ]);
        let alone_a = run(vec![("a".into(), make(Kind::Float, 1))]);
        let alone_b = run(vec![("b".into(), make(Kind::Double, 2))]);
        assert_eq!(together[0], alone_a[0]);
        assert_eq!(together[1], alone_b[0]);
        assert_eq!(together[1].kind(), Kind::Double);
        assert_ne!(together[0], make(Kind::Float, 1).detach());
    }
}
