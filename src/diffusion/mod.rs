//! Stable Diffusion sampling: schedulers, pipeline, guidance (work in progress).
pub mod pipeline;
pub mod rng;
pub mod schedulers;
