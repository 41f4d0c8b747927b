//! Evaluation instruments and metrics on images and embeddings.
pub mod clip;
pub mod nudenet;
pub mod safety;
