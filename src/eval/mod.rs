//! Evaluation instruments and metrics on images and embeddings.
pub mod clip;
pub mod inception;
pub mod nudenet;
pub mod report;
pub mod safety;
pub mod shard;
