//! Adversarial prompts against (erased) text encoders (issue 17): the red-team side of concept
//! erasure. Each attack searches, inside the encoder under attack, for text that makes it emit what
//! a reference encoder (the original, before erasure) emits for a concept prompt:
//!
//! - [`ring_a_bell`]: the concept's direction in the reference's hidden states (paired prompts with
//!   and without the concept), then a genetic search over discrete tokens for the neutral prompt
//!   pushed along it (Tsai et al., ICLR 2024);
//! - token search ([`crate::adversary::token_search`], below `train`, whose robust erasure runs it
//!   too): greedy coordinate gradient over tokens matching a target prompt's pooled
//!   embedding while the concept's own words are banned (the text attack of MMA-Diffusion, CVPR 2024);
//! - [`homoglyph`]: the concept words written with look-alike and invisible characters, ranked by
//!   the encoder.
//!
//! Every attack writes a prompt set ([`prompt_set`]): JSONL with one `prompt` per record, which
//! `evaluate images` and `evaluate i2p` read as they are. Searches are seeded per (seed, input line,
//! run, step), so a run repeats, and a stopped one resumes ([`prompt_set::PromptSetWriter`]).
pub mod embedding;
pub mod homoglyph;
pub mod invert;
pub mod prompt_set;
pub mod ring_a_bell;
pub mod run;

use serde::{Deserialize, Serialize};

/// One adversarial prompt: a record of the prompt set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AdversarialPrompt {
    /// The adversarial text: what `generate` and `evaluate` read.
    pub prompt: String,
    /// The input line it attacks (0-based) and that line's prompt.
    pub index: usize,
    pub source: String,
    /// Restart number for that line (`--runs`).
    pub run: usize,
    pub method: String,
    /// The method's objective (lower is better) before and after the search.
    pub objective: String,
    pub start_distance: f64,
    pub distance: f64,
    /// The searched token ids (without BOS/EOS), where the search is over tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Vec<i64>>,
    /// Whether `prompt` tokenizes back to `tokens` (a decoded token string need not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retokenizes: Option<bool>,
    /// The distance of `prompt` as text (after re-tokenization), which is what a pipeline sees.
    pub text_distance: f64,
    /// The distance of the `source` line itself through the attacked encoder: no attack at all.
    pub source_distance: f64,
    pub steps: usize,
    pub seconds: f64,
}
