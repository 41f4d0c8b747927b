//! Adversarial prompts against (erased) text encoders (issue 17): the red-team side of concept
//! erasure. Each attack searches, inside the encoder under attack, for text that makes it emit what
//! a reference encoder (the original, before erasure) emits for a concept prompt:
//!
//! - [`ring_a_bell`]: the concept's direction in the reference's hidden states (paired prompts with
//!   and without the concept), then a genetic search over discrete tokens for the neutral prompt
//!   pushed along it (Tsai et al., ICLR 2024);
//! - [`token_search`]: greedy coordinate gradient over tokens matching a target prompt's pooled
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
pub mod space;
pub mod token_search;

use rand::SeedableRng;
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

/// The RNG of one (seed, input line, run, step): a resumed search draws what the first one would.
pub fn rng_for(seed: u64, index: usize, run: usize, step: usize) -> rand_chacha::ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(index as u64).to_le_bytes());
    key[16..24].copy_from_slice(&(run as u64).to_le_bytes());
    key[24..].copy_from_slice(&(step as u64).to_le_bytes());
    rand_chacha::ChaCha8Rng::from_seed(key)
}

/// A search's state between steps, saved so that a stopped search continues where it was.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SearchState {
    pub index: usize,
    pub run: usize,
    /// Steps done.
    pub step: usize,
    /// The current token rows (one for a gradient search, the population for a genetic one).
    pub current: Vec<Vec<i64>>,
    pub best: Vec<i64>,
    pub best_distance: f64,
    pub start_distance: f64,
    /// Seconds spent before this process.
    pub seconds: f64,
}
