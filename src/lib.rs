//! clipdoor: attack and defend the text encoders of text-to-image models.
//!
//! Layers, bottom first, each usable as a library (docs/architecture.md; `tests/suite/architecture.rs`
//! keeps imports going down): [`error`], [`fault`] (test-only fault points), [`torch_error`]
//! (libtorch failures as errors); [`device`], [`progress`], [`settings`], [`torch_ext`] (libtorch calls tch lacks); [`io`] (weights,
//! hub, prompt files); [`text`] (tokenizer, homoglyphs); [`models`] (CLIP and diffusion networks);
//! [`experiment`] (experiment files, backdoors, prompt pools) and [`adversary`] (discrete token
//! searches, which robust erasure and the attacks share); [`train`] (teacher–student
//! fine-tuning); [`diffusion`] (schedulers, pipeline, job planner); [`eval`] and [`scan`];
//! [`shapes`], [`bench`] and [`zoo`] (the scanner benchmark); [`demo`]; and the thin [`cli`].
pub mod adversary;
pub mod attack;
pub mod bench;
pub mod cli;
pub mod demo;
pub mod device;
pub mod diffusion;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod fault;
pub mod io;
pub mod models;
pub mod progress;
pub mod scan;
pub mod settings;
pub mod shapes;
pub mod text;
pub mod torch_error;
pub mod torch_ext;
pub mod train;
pub mod zoo;

pub use error::{InputError, Result};
