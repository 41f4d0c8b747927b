//! Evaluation instruments and metrics on images and embeddings.
pub mod bias;
pub mod clip;
pub mod i2p;
pub mod inception;
pub mod nudenet;
pub mod rates;
pub mod report;
pub mod safety;
pub mod stage;
pub mod weat;
