//! Stable Diffusion sampling: schedulers, pipeline, guidance and resumable image folders.
pub mod image_set;
pub mod pipeline;
pub mod rng;
pub mod schedulers;
