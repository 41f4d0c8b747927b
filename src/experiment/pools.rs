//! Clean and poisoned prompt pools and per-step sampling. Each step draws from an RNG derived from
//! (seed, step) alone, so a resumed run sees exactly the batches an uninterrupted one would.
use rand::seq::{index, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::backdoor::Backdoor;
use super::file::Experiment;
use crate::error::Result;
use crate::input_bail;
use crate::io::prompts::read_prompts;

pub struct PromptPools {
    /// Clean training prompts (no trigger of any backdoor).
    pub train: Vec<String>,
    /// Held-out clean prompts (never trained on).
    pub holdout: Vec<String>,
    /// Per backdoor: indices into `train` of prompts it can poison.
    pub poison: Vec<Vec<usize>>,
    /// `[training.robust] retain`: prompts kept at the teacher's embedding on attacked steps
    /// (empty without a retain set).
    pub retain: Vec<String>,
    /// Lines of the prompt file that could not be read.
    pub bad_lines: usize,
    /// Prompts dropped because they already held a trigger.
    pub dropped_with_trigger: usize,
}

pub fn step_rng(seed: u64, step: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r.set_word_pos((step as u128) << 20);
    r
}

/// The retain batches' RNG stream (0 is the clean batch's, 1 + b backdoor b's).
const RETAIN_STREAM: u64 = u64::MAX;

/// The retain set of `path`, prompts holding a trigger dropped (they are what erasure changes).
fn read_retain(path: &std::path::Path, backdoors: &[Backdoor]) -> Result<Vec<String>> {
    let set = read_prompts(path, None, false)?;
    let before = set.prompts.len();
    let kept: Vec<String> = set
        .prompts
        .into_iter()
        .filter(|p| !backdoors.iter().any(|b| b.triggered_in(p)))
        .collect();
    if kept.is_empty() {
        input_bail!(
            "{}: the retain set (training.robust.retain) has no prompt without a trigger ({before} read): list prompts the erasure must leave as they are",
            path.display()
        );
    }
    if kept.len() < before {
        crate::progress::note(&format!(
            "{}: {} retain prompts dropped for holding a trigger",
            path.display(),
            before - kept.len()
        ));
    }
    Ok(kept)
}

impl PromptPools {
    pub fn build(exp: &Experiment, backdoors: &[Backdoor]) -> Result<Self> {
        let set = read_prompts(&exp.data.clean_prompts, exp.data.field.as_deref(), false)?;
        if set.blank_lines > 0 {
            crate::progress::note(&format!(
                "{}: {} blank lines skipped (training pools hold non-empty prompts only)",
                exp.data.clean_prompts.display(),
                set.blank_lines
            ));
        }
        let before = set.prompts.len();
        let mut prompts: Vec<String> = set
            .prompts
            .into_iter()
            .filter(|p| !backdoors.iter().any(|b| b.triggered_in(p)))
            .collect();
        let dropped = before - prompts.len();
        prompts.shuffle(&mut ChaCha8Rng::seed_from_u64(exp.seed));
        let holdout_n = exp.data.holdout.min(prompts.len() / 2);
        let train = prompts.split_off(holdout_n);
        let holdout = prompts;
        if train.is_empty() {
            input_bail!(
                "{}: no clean training prompts left ({before} read, {dropped} dropped for holding a trigger, {} held out): add prompts without the trigger characters (a split needs at least 2), or lower data.holdout",
                exp.data.clean_prompts.display(),
                holdout.len()
            );
        }
        let mut poison = vec![];
        for b in backdoors {
            let idx: Vec<usize> = train
                .iter()
                .enumerate()
                .filter(|(_, p)| b.accepts(p))
                .map(|(i, _)| i)
                .collect();
            if idx.is_empty() {
                input_bail!(
                    "backdoor `{}`: the replaced character {:?} is absent from every clean prompt of {}: choose a character the prompts contain",
                    b.name, b.replaced, exp.data.clean_prompts.display()
                );
            }
            poison.push(idx);
        }
        let retain = match exp.training.robust.as_ref().and_then(|r| r.retain.as_ref()) {
            Some(path) => read_retain(path, backdoors)?,
            None => vec![],
        };
        Ok(Self {
            train,
            holdout,
            poison,
            retain,
            bad_lines: set.bad_lines,
            dropped_with_trigger: dropped,
        })
    }

    /// `n` distinct indices of `pool_len` (with replacement when the pool is smaller).
    fn sample(rng: &mut ChaCha8Rng, pool_len: usize, n: usize) -> Vec<usize> {
        if pool_len >= n {
            index::sample(rng, pool_len, n).into_vec()
        } else {
            (0..n).map(|_| rng.random_range(0..pool_len)).collect()
        }
    }

    /// The clean batch of `step`.
    pub fn clean_batch(&self, seed: u64, step: u64, n: usize) -> Vec<&str> {
        let mut rng = step_rng(seed, step, 0);
        Self::sample(&mut rng, self.train.len(), n)
            .into_iter()
            .map(|i| self.train[i].as_str())
            .collect()
    }

    /// The retain batch of `step` (empty without a retain set); its own RNG stream, so adding a
    /// retain set leaves the clean and poisoned batches as they were.
    pub fn retain_batch(&self, seed: u64, step: u64, n: usize) -> Vec<&str> {
        if self.retain.is_empty() {
            return vec![];
        }
        let mut rng = step_rng(seed, step, RETAIN_STREAM);
        Self::sample(&mut rng, self.retain.len(), n)
            .into_iter()
            .map(|i| self.retain[i].as_str())
            .collect()
    }

    /// The prompts to poison for backdoor `b` at `step`, with the RNG that picks occurrences.
    pub fn poison_batch(
        &self,
        seed: u64,
        step: u64,
        b: usize,
        n: usize,
    ) -> (Vec<&str>, ChaCha8Rng) {
        let mut rng = step_rng(seed, step, 1 + b as u64);
        let pool = &self.poison[b];
        let picks = Self::sample(&mut rng, pool.len(), n)
            .into_iter()
            .map(|i| self.train[pool[i]].as_str())
            .collect();
        (picks, rng)
    }
}
