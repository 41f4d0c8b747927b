//! Safe Latent Diffusion (Schramowski et al., CVPR 2023) as diffusers' `StableDiffusionPipelineSafe`
//! computes it: a third UNet pass on a safety concept steers the guidance away from that concept.
use tch::Tensor;

use crate::error::Result;
use crate::input_bail;

/// diffusers' default safety concept (`StableDiffusionPipelineSafe._safety_text_concept`).
pub const DEFAULT_SAFETY_CONCEPT: &str = "an image showing hate, harassment, violence, suffering, humiliation, harm, suicide, sexual, nudity, bodily fluids, blood, obscene gestures, illegal activity, drug use, theft, vandalism, weapons, child abuse, brutality, cruelty";

/// The SLD hyper-parameters (`sld_*` arguments of `StableDiffusionPipelineSafe.__call__`).
#[derive(Debug, Clone, PartialEq)]
pub struct SldConfig {
    /// Text of the concept to steer away from.
    pub concept: String,
    /// `sld_guidance_scale`: scale of the safety guidance; <= 1 disables SLD (as in diffusers).
    pub guidance_scale: f64,
    /// `sld_warmup_steps`: SLD is applied from this step index on (momentum builds up before).
    pub warmup_steps: usize,
    /// `sld_threshold`: element-wise, where `text - concept >= threshold` no safety guidance applies.
    pub threshold: f64,
    /// `sld_momentum_scale`: weight of the accumulated momentum added to the safety guidance.
    pub momentum_scale: f64,
    /// `sld_mom_beta`: how much of the previous momentum is kept.
    pub mom_beta: f64,
}

/// The preset names `--sld` accepts, in diffusers' `SafetyConfig` order.
pub const SLD_PRESETS: [&str; 4] = ["weak", "medium", "strong", "max"];

impl SldConfig {
    /// diffusers' `SafetyConfig.WEAK/MEDIUM/STRONG/MAX` with the default safety concept.
    pub fn preset(name: &str) -> Result<Self> {
        let (warmup_steps, guidance_scale, threshold, momentum_scale, mom_beta) =
            match name.trim().to_ascii_lowercase().as_str() {
                "weak" => (15, 20.0, 0.0, 0.0, 0.0),
                "medium" => (10, 1000.0, 0.01, 0.3, 0.4),
                "strong" => (7, 2000.0, 0.025, 0.5, 0.7),
                "max" => (0, 5000.0, 1.0, 0.5, 0.7),
                other => input_bail!(
                    "unknown SLD preset `{other}`: use one of {} (diffusers' SafetyConfig)",
                    SLD_PRESETS.join(", ")
                ),
            };
        Ok(Self {
            concept: DEFAULT_SAFETY_CONCEPT.to_string(),
            guidance_scale,
            warmup_steps,
            threshold,
            momentum_scale,
            mom_beta,
        })
    }

    /// diffusers turns SLD off when `sld_guidance_scale <= 1`.
    pub fn enabled(&self) -> bool {
        self.guidance_scale > 1.0
    }
}

/// SLD state across the denoising steps (the momentum of equations 7–8).
#[derive(Debug, Default)]
pub struct SldState {
    momentum: Option<Tensor>,
}

impl SldState {
    /// Safety-adjusted guidance direction for step `step` from the three UNet predictions; the
    /// operations and their order are diffusers' (equations 3, 4, 6, 7, 8 of the paper).
    pub fn guide(
        &mut self,
        cfg: &SldConfig,
        step: usize,
        uncond: &Tensor,
        text: &Tensor,
        concept: &Tensor,
    ) -> Tensor {
        let noise_guidance = text - uncond;
        let momentum = self
            .momentum
            .take()
            .unwrap_or_else(|| noise_guidance.zeros_like());
        let diff = text - concept;
        let scale = (diff.abs() * cfg.guidance_scale).clamp_max(1.0);
        let concept_scale = scale
            .zeros_like()
            .where_self(&diff.ge(cfg.threshold), &scale);
        let safety = (concept - uncond) * concept_scale;
        let safety = safety + &momentum * cfg.momentum_scale;
        self.momentum = Some(&momentum * cfg.mom_beta + &safety * (1.0 - cfg.mom_beta));
        if step >= cfg.warmup_steps {
            noise_guidance - safety
        } else {
            noise_guidance
        }
    }
}
