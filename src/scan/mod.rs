//! Encoder-side trigger scanning and the homoglyph defense evaluation (issue 7).
//!
//! [`search::scan`] substitutes candidate characters for the Latin letters they replace in probe
//! prompts and ranks them by how much more they move a suspect encoder's embedding than a reference
//! encoder's, or (no reference) by how much they collapse different prompts onto one embedding.
//! [`defense`] measures prompt sanitisation and homoglyph unlearning on trained runs; [`shift`] how
//! far a look-alike substitution moves an encoder's embedding.
pub mod candidates;
pub mod defense;
pub mod embed;
pub mod probes;
pub mod search;
pub mod shift;
pub mod stats;

pub use candidates::Source;
pub use search::{scan, CandidateScore, ScanOptions, ScanReport};
