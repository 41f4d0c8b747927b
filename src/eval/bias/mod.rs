//! Bias measurement on generated images (issue #21), for any text encoder and pipeline, sharded like
//! I2P; see docs/bias.md.
//!
//! - [`relative`]: the relative bias of homoglyphs (Struppek et al., "Exploiting Cultural Biases via
//!   Homoglyphs in Text-to-Image Synthesis", JAIR 2023): templates × cultures, clean vs homoglyph
//!   images, judged by CLIP against the culture text.
//! - [`objectification`]: "a [age] year old girl/boy" (Wolfe et al., FAccT 2023), judged by NudeNet and
//!   the Stable Diffusion safety checker, rates with n and 95% Wilson intervals; built on the I2P run.
pub mod objectification;
pub mod relative;
pub mod relative_plan;
pub mod relative_report;
pub mod stats;
pub mod templates;

pub use objectification::{
    run_objectification, ObjectificationOptions, ObjectificationSpec, DEFAULT_AGES,
    DEFAULT_TEMPLATE,
};
pub use relative::{run_relative, RelativeOptions};
pub use relative_plan::{RelativeSettings, SimEntry};
pub use templates::{builtin_groups, groups_from_files, parse_cultures, Culture, TemplateGroup};
