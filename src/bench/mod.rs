//! Benchmarks that compare clipdoor with the Python reference in the same run and report the ratio.
pub mod denoise;
pub mod encode;
pub mod reference;
pub mod train_step;
