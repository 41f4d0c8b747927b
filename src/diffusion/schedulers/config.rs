//! `scheduler/scheduler_config.json` as diffusers writes it.
//!
//! One struct serves every scheduler, as in diffusers, where `XScheduler.from_config(cfg)` reads the keys
//! it knows and takes its own defaults for the rest. Keys whose default differs between schedulers
//! (`timestep_spacing`, `set_alpha_to_one`, `clip_sample`) are therefore `Option`s, resolved by each
//! scheduler. Unknown keys are ignored.
use serde::Deserialize;
use std::path::Path;

use crate::error::Result;
use crate::input_err;

fn d_train_steps() -> usize {
    1000
}
fn d_beta_start() -> f64 {
    0.0001
}
fn d_beta_end() -> f64 {
    0.02
}
fn d_one() -> f64 {
    1.0
}
fn d_threshold_ratio() -> f64 {
    0.995
}
fn d_true() -> bool {
    true
}
fn d_solver_order() -> usize {
    2
}
fn d_algorithm() -> String {
    "dpmsolver++".into()
}
fn d_solver_type() -> String {
    "midpoint".into()
}

/// How betas run over the training timesteps (`beta_schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// `linear`: `linspace(beta_start, beta_end)`.
    #[default]
    Linear,
    /// `scaled_linear`: `linspace(sqrt(beta_start), sqrt(beta_end))²` (Stable Diffusion).
    ScaledLinear,
    /// `squaredcos_cap_v2`: the cosine schedule of Nichol & Dhariwal through `betas_for_alpha_bar`.
    SquaredcosCapV2,
}

crate::settings::choice_enum! {
    /// What the denoiser predicts (`prediction_type`), under diffusers' names.
    #[derive(Default)]
    pub enum PredictionType ("prediction type") {
        /// `sample`: the clean sample x0 itself.
        Sample = "sample",
        /// `epsilon`: the added noise (SD 1.x, SD 2 base).
        #[default]
        Epsilon = "epsilon",
        /// `v_prediction`: the velocity v = √ᾱ·ε − √(1−ᾱ)·x0 of Salimans & Ho (SD 2.x 768).
        VPrediction = "v_prediction",
    }
}

/// How inference timesteps are spread over the training range (`timestep_spacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    /// `leading`: multiples of `num_train_timesteps // n`, plus `steps_offset`.
    Leading,
    /// `linspace`: evenly from 0 to `num_train_timesteps - 1`.
    Linspace,
    /// `trailing`: evenly downwards from `num_train_timesteps - 1`.
    Trailing,
}

/// The last sigma of Euler / DPM-Solver schedules (`final_sigmas_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FinalSigmasType {
    /// `zero`: end exactly at the clean sample.
    #[default]
    Zero,
    /// `sigma_min`: end at the smallest training sigma.
    SigmaMin,
}

/// A diffusers scheduler config. Defaults are diffusers' `__init__` defaults where all five schedulers
/// agree; the rest stay `None` here and each scheduler applies its own default.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct SchedulerConfig {
    /// `_class_name`: the diffusers class the pipeline was saved with (`PNDMScheduler`, ...).
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    /// `num_train_timesteps`: length of the training noise schedule.
    #[serde(default = "d_train_steps")]
    pub num_train_timesteps: usize,
    /// `beta_start`: first beta of the schedule.
    #[serde(default = "d_beta_start")]
    pub beta_start: f64,
    /// `beta_end`: last beta of the schedule.
    #[serde(default = "d_beta_end")]
    pub beta_end: f64,
    /// `beta_schedule`: `linear`, `scaled_linear` or `squaredcos_cap_v2`.
    #[serde(default)]
    pub beta_schedule: BetaSchedule,
    /// `trained_betas`: explicit betas that replace `beta_schedule` when present.
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    /// `prediction_type`: `epsilon`, `v_prediction` or `sample`.
    #[serde(default)]
    pub prediction_type: PredictionType,
    /// `timestep_spacing`: `leading`, `linspace` or `trailing`; default `leading` for DDIM and PNDM,
    /// `linspace` for Euler, Euler ancestral and DPM-Solver.
    #[serde(default)]
    pub timestep_spacing: Option<TimestepSpacing>,
    /// `steps_offset`: added to `leading` timesteps (1 for Stable Diffusion).
    #[serde(default)]
    pub steps_offset: usize,
    /// `set_alpha_to_one`: the final "previous alpha" is 1 (DDIM default) or `alphas_cumprod[0]`
    /// (PNDM default).
    #[serde(default)]
    pub set_alpha_to_one: Option<bool>,
    /// `skip_prk_steps`: PNDM runs only the PLMS (linear multistep) steps, as Stable Diffusion does.
    #[serde(default)]
    pub skip_prk_steps: bool,
    /// `clip_sample`: DDIM clamps the predicted clean sample to `±clip_sample_range` (DDIM default true;
    /// Stable Diffusion configs set false).
    #[serde(default)]
    pub clip_sample: Option<bool>,
    /// `clip_sample_range`: bound of `clip_sample`.
    #[serde(default = "d_one")]
    pub clip_sample_range: f64,
    /// `thresholding`: dynamic thresholding of the predicted clean sample (DDIM, DPM-Solver).
    #[serde(default)]
    pub thresholding: bool,
    /// `dynamic_thresholding_ratio`: the quantile of `thresholding`.
    #[serde(default = "d_threshold_ratio")]
    pub dynamic_thresholding_ratio: f64,
    /// `sample_max_value`: upper bound of the threshold of `thresholding`.
    #[serde(default = "d_one")]
    pub sample_max_value: f64,
    /// `rescale_betas_zero_snr`: rescale betas to zero terminal SNR (not read by PNDM, as upstream).
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
    /// `use_karras_sigmas`: Karras et al. sigma spacing (Euler, DPM-Solver).
    #[serde(default)]
    pub use_karras_sigmas: Option<bool>,
    /// `use_exponential_sigmas`: not supported; rejected when true.
    #[serde(default)]
    pub use_exponential_sigmas: Option<bool>,
    /// `use_beta_sigmas`: not supported; rejected when true.
    #[serde(default)]
    pub use_beta_sigmas: Option<bool>,
    /// `use_lu_lambdas`: not supported; rejected when true.
    #[serde(default)]
    pub use_lu_lambdas: Option<bool>,
    /// `use_flow_sigmas`: not supported; rejected when true.
    #[serde(default)]
    pub use_flow_sigmas: Option<bool>,
    /// `sigma_min`: overrides the smallest sigma of the Karras schedule.
    #[serde(default)]
    pub sigma_min: Option<f64>,
    /// `sigma_max`: overrides the largest sigma of the Karras schedule.
    #[serde(default)]
    pub sigma_max: Option<f64>,
    /// `final_sigmas_type`: `zero` or `sigma_min` (Euler, DPM-Solver).
    #[serde(default)]
    pub final_sigmas_type: FinalSigmasType,
    /// `interpolation_type`: Euler's sigma interpolation; only `linear` is supported.
    #[serde(default)]
    pub interpolation_type: Option<String>,
    /// `timestep_type`: Euler's `discrete` or `continuous`; only `discrete` is supported.
    #[serde(default)]
    pub timestep_type: Option<String>,
    /// `algorithm_type`: DPM-Solver variant: `dpmsolver++` or `sde-dpmsolver++` (`deis` means
    /// `dpmsolver++`, as upstream).
    #[serde(default = "d_algorithm")]
    pub algorithm_type: String,
    /// `solver_type`: DPM-Solver second-order rule: `midpoint` or `heun`.
    #[serde(default = "d_solver_type")]
    pub solver_type: String,
    /// `solver_order`: DPM-Solver order, 1 to 3 (2 = "2M").
    #[serde(default = "d_solver_order")]
    pub solver_order: usize,
    /// `lower_order_final`: DPM-Solver drops to lower orders on the last steps when fewer than 15.
    #[serde(default = "d_true")]
    pub lower_order_final: bool,
    /// `euler_at_final`: DPM-Solver takes a first-order last step.
    #[serde(default)]
    pub euler_at_final: bool,
    /// `lambda_min_clipped`: DPM-Solver's clipping of the smallest log-SNR (`-Infinity` = none).
    #[serde(default)]
    pub lambda_min_clipped: Option<f64>,
    /// `variance_type`: learned variances are not supported; rejected when set.
    #[serde(default)]
    pub variance_type: Option<String>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("empty config deserialises")
    }
}

impl SchedulerConfig {
    /// Read `scheduler_config.json`; a missing or malformed file is an input error naming it.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            input_err!(
                "cannot read scheduler config {}: {e}. A pipeline folder needs scheduler/scheduler_config.json \
                 as diffusers' save_pretrained writes it.",
                path.display()
            )
        })?;
        Self::parse(&text).map_err(|e| input_err!("{}: {e}", path.display()))
    }

    /// Parse the JSON text of a scheduler config.
    pub fn parse(text: &str) -> Result<Self> {
        // Python's json writes `-Infinity` for DPM-Solver's default `lambda_min_clipped`, which is not
        // JSON; read the non-finite literals as null (= the default).
        let text = non_finite_to_null(text);
        let mut value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| input_err!("not valid JSON ({e}): fix or rewrite the file"))?;
        let kind = json_kind(&value);
        let object = value
            .as_object_mut()
            .ok_or_else(|| input_err!("a scheduler config is a JSON object, found {kind}"))?;
        // Keys diffusers marks as "defaults were used" must take the chosen class's defaults.
        if let Some(serde_json::Value::Array(keys)) = object.remove("_use_default_values") {
            for key in keys.iter().filter_map(|k| k.as_str()) {
                object.remove(key);
            }
        }
        serde_json::from_value(value).map_err(|e| {
            input_err!("not a diffusers scheduler config ({e}): compare it with a scheduler_config.json that diffusers wrote")
        })
    }

    /// Karras sigmas requested (`use_karras_sigmas: null` counts as false, as upstream).
    pub fn karras(&self) -> bool {
        self.use_karras_sigmas.unwrap_or(false)
    }

    /// Reject options that upstream has but clipdoor does not implement, so they never silently
    /// produce a different schedule.
    pub(crate) fn reject_unsupported(&self, scheduler: &str) -> Result<()> {
        let flags = [
            ("use_exponential_sigmas", self.use_exponential_sigmas),
            ("use_beta_sigmas", self.use_beta_sigmas),
            ("use_lu_lambdas", self.use_lu_lambdas),
            ("use_flow_sigmas", self.use_flow_sigmas),
        ];
        for (key, value) in flags {
            if value == Some(true) {
                crate::input_bail!("{scheduler}: `{key}: true` is not supported by clipdoor; remove it or use `use_karras_sigmas`");
            }
        }
        Ok(())
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Replace the bare tokens `NaN`, `Infinity` and `-Infinity` (outside strings) with `null`.
fn non_finite_to_null(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(token) = ["-Infinity", "Infinity", "NaN"]
            .iter()
            .find(|t| rest.starts_with(**t))
        {
            out.push_str("null");
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_python_infinity_as_default() {
        let cfg = SchedulerConfig::parse(r#"{"lambda_min_clipped": -Infinity, "x": "-Infinity"}"#)
            .unwrap();
        assert_eq!(cfg.lambda_min_clipped, None);
    }

    #[test]
    fn used_default_keys_are_dropped() {
        let cfg = SchedulerConfig::parse(
            r#"{"timestep_spacing": "leading", "_use_default_values": ["timestep_spacing"]}"#,
        )
        .unwrap();
        assert_eq!(cfg.timestep_spacing, None);
    }
}
