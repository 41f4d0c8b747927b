//! Stable Diffusion sampling: schedulers, pipeline, guidance, resumable image folders and the job
//! planner (which images a job draws, sharding and merging).
pub mod image;
pub mod image_set;
pub mod jobs;
pub mod pipeline;
pub mod rng;
pub mod schedulers;
