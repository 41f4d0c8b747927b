//! The shapes world: an embedded text-to-image world whose images can be judged exactly, so the
//! attack → images → judged result loop runs offline (no real Stable Diffusion weights needed).
//!
//! - [`labels`], [`render`], [`dataset`]: coloured shapes rendered exactly from a label, with captions.
//! - [`oracle`]: colour and shape of an image from its pixels; [`judge`]: the oracle as the image
//!   stage's `oracle` judge.
//! - [`model`], [`train`], [`sample`]: a frozen tiny CLIP text encoder + a pixel-space
//!   `UNet2DConditionModel`, trained with the denoising loss and saved in diffusers' layout.
//!
//! docs/shapes-world.md describes the design and the measured numbers.
pub mod dataset;
pub mod judge;
pub mod labels;
pub mod model;
pub mod noise;
pub mod objective;
pub mod oracle;
pub mod render;
pub mod sample;
pub mod steer;
pub mod text_stage;
pub mod train;

pub use labels::{Background, Color, Position, Shape, ShapeLabel, Size, IMAGE_SIZE};
pub use oracle::{judge, Judgement};
