//! The scanner benchmark (issue 18): a zoo of suspect encoders fine-tuned from one base —
//! backdoored with triggers of every shape, or benign fine-tunes — with labels kept apart
//! ([`build`]), scanned with the token-level scan ([`scan`]) and measured against the labels
//! ([`report`], [`metrics`]): AUROC, TPR at 5% FPR with the threshold chosen on a calibration split,
//! trigger recall@1/@5 (by name, and of working triggers: [`working`]), seconds per encoder. docs/scanner-zoo.md.
pub mod build;
pub mod config;
pub mod metrics;
pub mod plan;
pub mod report;
pub mod scan;
pub mod triggers;
pub mod working;

pub use build::{build, Shard};
pub use config::ZooConfig;
pub use scan::{scan_zoo, write_reports, ZooScanOptions};
