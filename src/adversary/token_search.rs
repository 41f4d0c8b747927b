//! Greedy coordinate gradient token search, the text attack of MMA-Diffusion (Yang et al., CVPR 2024),
//! as `src/textual_attack.py` runs it (../shared/reference/red-team.md §2):
//!
//! - objective: 1 − cos(pooled(adversarial), pooled(target)), the end-of-text state after the final
//!   LayerNorm; here the adversarial prompt goes through the attacked encoder and the target through
//!   the reference, so an erased encoder is pushed to say what the original said;
//! - L searched tokens (20) start as random single letters;
//! - each step: the gradient of the objective with respect to a one-hot encoding of the tokens,
//!   L2-normalised per position; banned tokens (any vocabulary entry containing a banned word) get
//!   +∞; the top-k (256) tokens per position; B (512) candidates, each one swap, spread evenly over
//!   positions with the token drawn from that position's top-k; candidates equal to the current row
//!   or that do not re-tokenize to L tokens are dropped; the best candidate always replaces the
//!   current row, and the best ever is kept.
//!
//! Not copied: the reference's one-hot covers BOS and 19 tokens while its swaps index the 20
//! tokens, so its gradients are one position off; here they line up.
use rand::Rng;
use tch::{Kind, Tensor};

use super::space::TokenSpace;
use super::{rng_for, SearchState};
use crate::error::Result;
use crate::input_bail;
use crate::models::text_encoder::TextEncoder;

#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenSearchOptions {
    pub length: usize,
    pub steps: usize,
    pub topk: usize,
    pub candidates: usize,
    pub seed: u64,
    pub batch: usize,
}

impl Default for TokenSearchOptions {
    fn default() -> Self {
        Self {
            length: 20,
            steps: 1000,
            topk: 256,
            candidates: 512,
            seed: 0,
            batch: 256,
        }
    }
}

impl TokenSearchOptions {
    pub fn validate(&self) -> Result<()> {
        if self.length == 0 || self.length > 75 {
            input_bail!(
                "--length {} is out of range: 1 to 75 tokens fit between BOS and EOS",
                self.length
            );
        }
        if self.topk == 0 || self.candidates == 0 {
            input_bail!("--topk and --candidates must be at least 1");
        }
        Ok(())
    }
}

/// The reference's pooled embedding of `prompt`, unit length `[H]` (f32).
pub fn target_pooled(reference: &TextEncoder, prompt: &str) -> Result<Tensor> {
    let (_, out) = tch::no_grad(|| reference.encode(&[prompt], false))?;
    Ok(unit(&out.pooled_output.to_kind(Kind::Float).squeeze_dim(0)))
}

fn unit(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12)
}

/// 1 − cos(pooled(row), target) for each token row.
pub fn distances(
    enc: &TextEncoder,
    space: &TokenSpace,
    rows: &[Vec<i64>],
    target: &Tensor,
    batch: usize,
) -> Result<Vec<f64>> {
    let target = target.to_device(enc.device());
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(batch.max(1)) {
        let ids = space.batch(chunk, enc.device());
        let d: Tensor = tch::no_grad(|| {
            let p = unit(
                &enc.forward_ids(&ids, false)
                    .pooled_output
                    .to_kind(Kind::Float),
            );
            1.0 - p.matmul(&target)
        });
        out.extend(Vec::<f64>::try_from(
            d.to_kind(Kind::Double).to_device(tch::Device::Cpu),
        )?);
    }
    Ok(out)
}

/// Gradient `[L, V]` of the objective with respect to the one-hot encoding of `tokens`.
fn one_hot_gradient(
    enc: &TextEncoder,
    space: &TokenSpace,
    tokens: &[i64],
    target: &Tensor,
) -> Result<Tensor> {
    let device = enc.device();
    let table = enc
        .model
        .text_model
        .embeddings()
        .token_embedding_weight()
        .detach();
    let vocab = table.size()[0];
    let l = tokens.len() as i64;
    let idx = Tensor::from_slice(tokens).to_device(device);
    let one_hot = Tensor::zeros([l, vocab], (table.kind(), device))
        .scatter_value(1, &idx.unsqueeze(1), 1.0)
        .set_requires_grad(true);
    let row = space.full_row(tokens);
    let ids = Tensor::from_slice(&row).to_device(device);
    let rows = table.index_select(0, &ids);
    let embeds = Tensor::cat(
        &[
            rows.narrow(0, 0, 1),
            one_hot.matmul(&table),
            rows.narrow(0, l + 1, row.len() as i64 - l - 1),
        ],
        0,
    );
    let out = enc
        .model
        .text_model
        .forward_token_embeds(&embeds.unsqueeze(0), &ids.unsqueeze(0));
    let p = unit(&out.pooled_output.to_kind(Kind::Float).squeeze_dim(0));
    let loss: Tensor = 1.0 - (p * target.to_device(device)).sum(Kind::Float);
    // The one-hot's gradient only: the encoder's own gradients stay untouched (robust erasure
    // searches against the student it is training).
    let g = Tensor::f_run_backward(&[&loss], &[&one_hot], false, false)?;
    Ok(g[0].to_kind(Kind::Float).detach())
}

/// Random single letters (`a</w>` … `z</w>`) that the space allows, as the reference starts.
pub fn letter_start(
    enc: &TextEncoder,
    space: &TokenSpace,
    length: usize,
    rng: &mut impl Rng,
) -> Vec<i64> {
    let letters: Vec<i64> = ('a'..='z')
        .filter_map(|c| enc.tokenizer.token_to_id(&format!("{c}</w>")))
        .map(|i| i as i64)
        .filter(|&i| space.is_allowed(i))
        .collect();
    (0..length)
        .map(|_| {
            if letters.is_empty() {
                space.random_token(rng)
            } else {
                letters[rng.random_range(0..letters.len())]
            }
        })
        .collect()
}

/// Run (or continue from `state`) the search for input line `index`, restart `run`.
#[allow(clippy::too_many_arguments)]
pub fn search(
    enc: &TextEncoder,
    space: &TokenSpace,
    target: &Tensor,
    opts: &TokenSearchOptions,
    index: usize,
    run: usize,
    state: Option<SearchState>,
    on_step: &mut dyn FnMut(&SearchState) -> Result<()>,
) -> Result<SearchState> {
    let l = opts.length;
    let mut st = match state {
        Some(s) => s,
        None => {
            let mut rng = rng_for(opts.seed, index, run, 0);
            let start = letter_start(enc, space, l, &mut rng);
            let d = distances(enc, space, std::slice::from_ref(&start), target, 1)?[0];
            SearchState {
                index,
                run,
                step: 0,
                current: vec![start.clone()],
                best: start,
                best_distance: d,
                start_distance: d,
                seconds: 0.0,
            }
        }
    };
    // Disallowed ids (special, banned, outside the tokenizer) never enter the top-k.
    let vocab = enc.config.vocab_size;
    let mut blocked = vec![true; vocab as usize];
    for &i in &space.allowed {
        blocked[i as usize] = false;
    }
    let blocked = Tensor::from_slice(&blocked).to_device(enc.device());
    while st.step < opts.steps {
        let mut rng = rng_for(opts.seed, index, run, st.step + 1);
        let current = st.current[0].clone();
        let g = one_hot_gradient(enc, space, &current, target)?;
        let g = g.shallow_clone() / g.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12);
        let g = g.masked_fill(&blocked.unsqueeze(0), f64::INFINITY);
        let k = (opts.topk as i64).min(space.allowed.len() as i64);
        let (_, top) = (-g).topk(k, 1, true, true);
        let top: Vec<Vec<i64>> = Vec::<Vec<i64>>::try_from(top.to_device(tch::Device::Cpu))?;
        let mut cands = Vec::with_capacity(opts.candidates);
        for i in 0..opts.candidates {
            let pos = i * l / opts.candidates;
            let mut c = current.clone();
            c[pos] = top[pos][rng.random_range(0..top[pos].len())];
            if c == current {
                continue;
            }
            let text = enc.tokenizer.decode(&c);
            if space.tokens_of(enc, &text)?.len() != l {
                continue;
            }
            cands.push(c);
        }
        if !cands.is_empty() {
            let d = distances(enc, space, &cands, target, opts.batch)?;
            if let Some((i, &best)) = d.iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1)) {
                st.current = vec![cands[i].clone()];
                if best < st.best_distance {
                    st.best_distance = best;
                    st.best = cands[i].clone();
                }
            }
        }
        st.step += 1;
        on_step(&st)?;
    }
    Ok(st)
}
