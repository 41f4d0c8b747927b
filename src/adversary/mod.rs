//! Discrete searches over an encoder's tokens, below `train` so that robust erasure can run them
//! against the student it trains (`[training.robust] slot = "tokens"`) as `attack` runs them against
//! a finished encoder: the token space a search may use ([`space`]), the greedy coordinate gradient
//! search ([`token_search`]), and the seeding and state every search of `attack` shares.
pub mod space;
pub mod token_search;

use rand::SeedableRng;
use serde::{Deserialize, Serialize};

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
