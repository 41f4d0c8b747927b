//! Stable Diffusion sampling: schedulers, pipeline, guidance (work in progress).
pub mod rng;
pub mod schedulers;
pub mod pipeline;
