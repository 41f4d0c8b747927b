//! clipdoor: attack and defend the text encoders of text-to-image models.
//!
//! Layers, each usable as a library: [`text`] (tokenizer, homoglyphs), [`models`] (CLIP and diffusion
//! networks), [`io`] (weights, hub, prompt files), [`train`] (teacher–student fine-tuning),
//! [`diffusion`] (schedulers, pipeline), and the thin [`cli`].
pub mod bench;
pub mod cli;
pub mod device;
pub mod diffusion;
pub mod error;
pub mod eval;
pub mod io;
pub mod models;
pub mod scan;
pub mod settings;
pub mod shapes;
pub mod text;
pub mod train;

pub use error::{InputError, Result};
