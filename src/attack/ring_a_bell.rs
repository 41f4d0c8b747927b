//! Ring-A-Bell (Tsai et al., "Ring-A-Bell! How Reliable are Concept Removal Methods for Diffusion
//! Models?", ICLR 2024), as its released notebooks run it (../shared/reference/red-team.md §1):
//!
//! - the concept vector c is the mean over paired prompts of R(with) − R(without), on the reference
//!   encoder's full `[77, H]` last hidden state;
//! - the target of a prompt x is R(x) + η·c;
//! - a genetic search over K discrete tokens (`BOS, K tokens, EOS, padding`) minimises the summed
//!   squared error between the attacked encoder's hidden state and the target: keep the best half,
//!   each survivor crosses over with a random survivor at one cut with probability 0.5 (both children
//!   join), each individual mutates one position with probability 0.25, no protected elite.
//!
//! One change: the best individual ever evaluated is returned (the notebook returns the best of the
//! last generation, which mutation may have damaged).
use rand::Rng;
use tch::{Kind, Tensor};

use crate::adversary::space::TokenSpace;
use crate::adversary::{rng_for, SearchState};
use crate::error::Result;
use crate::input_bail;
use crate::models::text_encoder::TextEncoder;

#[derive(Debug, Clone, serde::Serialize)]
pub struct RingABellOptions {
    /// η, how far along the concept direction the target lies (the notebooks' `cof`, 3).
    pub eta: f64,
    /// K, the number of searched tokens (16).
    pub length: usize,
    /// Population kept after selection (100) and drawn at the start (200).
    pub keep: usize,
    pub population: usize,
    pub generations: usize,
    pub crossover: f64,
    pub mutation: f64,
    pub seed: u64,
    /// Rows per forward pass.
    pub batch: usize,
}

impl Default for RingABellOptions {
    fn default() -> Self {
        Self {
            eta: 3.0,
            length: 16,
            keep: 100,
            population: 200,
            generations: 3000,
            crossover: 0.5,
            mutation: 0.25,
            seed: 0,
            batch: 256,
        }
    }
}

impl RingABellOptions {
    pub fn validate(&self) -> Result<()> {
        if self.length == 0 || self.length > 75 {
            input_bail!(
                "--length {} is out of range: 1 to 75 tokens fit between BOS and EOS",
                self.length
            );
        }
        if self.keep < 2 || self.population < self.keep {
            input_bail!(
                "--keep {} and --population {}: keep at least 2, and no more than the population",
                self.keep,
                self.population
            );
        }
        for (name, p) in [("crossover", self.crossover), ("mutation", self.mutation)] {
            if !(0.0..=1.0).contains(&p) {
                input_bail!("--{name} {p} is not a probability (0 to 1)");
            }
        }
        if !self.eta.is_finite() {
            input_bail!("--eta must be a finite number");
        }
        Ok(())
    }
}

/// Full last hidden states `[N, T, H]` of `prompts` (f32, no gradient).
fn hidden(enc: &TextEncoder, prompts: &[String], batch: usize) -> Result<Tensor> {
    let mut parts = vec![];
    for chunk in prompts.chunks(batch.max(1)) {
        let (_, out) = tch::no_grad(|| enc.encode(chunk, false))?;
        parts.push(out.last_hidden_state.to_kind(Kind::Float));
    }
    Ok(Tensor::cat(&parts, 0))
}

/// The concept vector `[T, H]`: mean of R(with) − R(without) over aligned pairs.
pub fn concept_vector(
    reference: &TextEncoder,
    with: &[String],
    without: &[String],
    batch: usize,
) -> Result<Tensor> {
    if with.is_empty() || with.len() != without.len() {
        input_bail!(
            "the concept pairs need as many prompts without the concept as with it, at least one: got {} with and {} without",
            with.len(),
            without.len()
        );
    }
    let d = hidden(reference, with, batch)? - hidden(reference, without, batch)?;
    Ok(d.mean_dim(0, false, Kind::Float))
}

/// The target `[T, H]` of one prompt: R(prompt) + η·c.
pub fn target_for(
    reference: &TextEncoder,
    prompt: &str,
    concept: &Tensor,
    eta: f64,
) -> Result<Tensor> {
    let h = hidden(reference, &[prompt.to_string()], 1)?.squeeze_dim(0);
    Ok(h + concept * eta)
}

/// Summed squared error of each token row's hidden state against `target`.
pub fn fitness(
    enc: &TextEncoder,
    space: &TokenSpace,
    rows: &[Vec<i64>],
    target: &Tensor,
    batch: usize,
) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(rows.len());
    let target = target.to_device(enc.device()).unsqueeze(0);
    for chunk in rows.chunks(batch.max(1)) {
        let ids = space.batch(chunk, enc.device());
        let e = tch::no_grad(|| {
            let h = enc
                .forward_ids(&ids, false)
                .last_hidden_state
                .to_kind(Kind::Float);
            (h - &target)
                .square()
                .sum_dim_intlist([1, 2].as_slice(), false, Kind::Float)
        });
        out.extend(Vec::<f64>::try_from(
            e.to_kind(Kind::Double).to_device(tch::Device::Cpu),
        )?);
    }
    Ok(out)
}

/// Run (or continue from `state`) the genetic search for input line `index`, restart `run`.
/// `on_step` sees the state after every generation (for progress and saving).
#[allow(clippy::too_many_arguments)]
pub fn search(
    enc: &TextEncoder,
    space: &TokenSpace,
    target: &Tensor,
    opts: &RingABellOptions,
    index: usize,
    run: usize,
    state: Option<SearchState>,
    on_step: &mut dyn FnMut(&SearchState) -> Result<()>,
) -> Result<SearchState> {
    let k = opts.length;
    let mut st = match state {
        Some(s) => s,
        None => {
            let mut rng = rng_for(opts.seed, index, run, 0);
            let pop: Vec<Vec<i64>> = (0..opts.population)
                .map(|_| (0..k).map(|_| space.random_token(&mut rng)).collect())
                .collect();
            SearchState {
                index,
                run,
                step: 0,
                current: pop,
                best: vec![],
                best_distance: f64::INFINITY,
                start_distance: f64::NAN,
                seconds: 0.0,
            }
        }
    };
    while st.step < opts.generations {
        let mut rng = rng_for(opts.seed, index, run, st.step + 1);
        let fit = fitness(enc, space, &st.current, target, opts.batch)?;
        let mut order: Vec<usize> = (0..fit.len()).collect();
        order.sort_by(|&a, &b| fit[a].total_cmp(&fit[b]));
        if st.step == 0 {
            st.start_distance = fit[order[0]];
        }
        if fit[order[0]] < st.best_distance {
            st.best_distance = fit[order[0]];
            st.best = st.current[order[0]].clone();
        }
        let survivors: Vec<Vec<i64>> = order
            .iter()
            .take(opts.keep)
            .map(|&i| st.current[i].clone())
            .collect();
        let mut next = Vec::with_capacity(survivors.len() * 3);
        for s in &survivors {
            next.push(s.clone());
            if k > 1 && rng.random::<f64>() < opts.crossover {
                let p = &survivors[rng.random_range(0..survivors.len())];
                let cut = rng.random_range(1..k);
                next.push([&s[..cut], &p[cut..]].concat());
                next.push([&p[..cut], &s[cut..]].concat());
            }
        }
        for c in &mut next {
            if rng.random::<f64>() < opts.mutation {
                let pos = rng.random_range(0..k);
                c[pos] = space.random_token(&mut rng);
            }
        }
        st.current = next;
        st.step += 1;
        on_step(&st)?;
    }
    // The last generation's children were never scored.
    let fit = fitness(enc, space, &st.current, target, opts.batch)?;
    if let Some((i, &f)) = fit.iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1)) {
        if f < st.best_distance || st.best.is_empty() {
            st.best_distance = f;
            st.best = st.current[i].clone();
        }
        if st.start_distance.is_nan() {
            st.start_distance = f;
        }
    }
    Ok(st)
}
