//! Encoder-side trigger scanning and the homoglyph defense evaluation (issue 7).
//!
//! [`search::scan`] substitutes candidate characters for the Latin letters they replace in probe
//! prompts and ranks them by how much more they move a suspect encoder's embedding than a reference
//! encoder's, or (no reference) by how much they collapse different prompts onto one embedding.
//! [`defense`] measures prompt sanitisation and homoglyph unlearning on trained runs; [`shift`] how
//! far a look-alike substitution moves an encoder's embedding. [`token_scan`] is the token-level
//! scan: a vocabulary [`sweep`], characters rebuilt from byte tokens ([`char_index`]), gradient
//! [`invert`]ion, checks of each candidate inserted and substituted, [`answer`]s: what each
//! inserted character makes the suspect read, which tokens the fine-tune [`touched`], and the
//! [`learned_rank`] over everything the stages proposed.
pub mod answer;
pub mod candidates;
pub mod char_index;
pub mod confirm;
pub mod defense;
pub mod embed;
pub mod invert;
pub mod learned_rank;
pub mod probes;
pub mod search;
pub mod shift;
pub mod stats;
pub mod sweep;
pub mod text_sweep;
pub mod token_scan;
pub mod touched;

pub use candidates::Source;
pub use search::{scan, CandidateScore, ScanOptions, ScanReport};
