//! Gradient inversion of a trigger embedding, in the spirit of AMDET (arXiv 2512.00343): one free
//! vector takes a token's place in the probes and is optimised (Adam) to make the suspect behave as
//! the sweep's score measures — disagree with the reference (or move the prompt, without one) and
//! send different probes to one place. AMDET keeps the vector continuous; here the vocabulary tokens
//! nearest to it (cosine, in the suspect's token-embedding space) become candidates, so a trigger
//! no candidate list holds can still be named.
use rand::{Rng, SeedableRng};
use tch::{Kind, Tensor};

use super::sweep::{feature_of, Context};
use crate::error::Result;
use crate::models::text_encoder::TextEncoder;

/// Tokens nearest to each restart's optimum (5 per restart).
pub const NEAREST: i64 = 5;

pub fn invert(
    suspect: &TextEncoder,
    reference: Option<&TextEncoder>,
    contexts: &[Context],
    restarts: usize,
    steps: usize,
    seed: u64,
) -> Result<Vec<i64>> {
    let device = suspect.device();
    let table = suspect
        .model
        .text_model
        .embeddings()
        .token_embedding_weight()
        .detach();
    let vocab = table.size()[0];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut found = vec![];
    // One insertion slot per context (its first position), as in the sweep.
    let slots: Vec<(Vec<i64>, usize)> = contexts
        .iter()
        .map(|c| (c.with_inserted(c.positions[0], &[0]), c.positions[0]))
        .collect();
    for _ in 0..restarts {
        let start = rng.random_range(0..vocab);
        let mut v = table.get(start).copy().set_requires_grad(true);
        let (mut m, mut s) = (v.zeros_like(), v.zeros_like());
        let (lr, b1, b2) = (0.05, 0.9, 0.999);
        for t in 1..=steps {
            let loss = objective(suspect, reference, &slots, &v, &table, device);
            let g = tch::no_grad(|| {
                v.zero_grad();
                loss.backward();
                v.grad().copy()
            });
            tch::no_grad(|| {
                m = &m * b1 + &g * (1.0 - b1);
                s = &s * b2 + &g * &g * (1.0 - b2);
                let mh = &m / (1.0 - b1.powi(t as i32));
                let sh = &s / (1.0 - b2.powi(t as i32));
                let step = mh / (sh.sqrt() + 1e-8) * lr;
                let _ = v.f_sub_(&step);
            });
        }
        let unit = |x: &Tensor| x / x.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12);
        let cos = tch::no_grad(|| {
            unit(&table)
                .matmul(&unit(&v.detach()).unsqueeze(1))
                .squeeze_dim(1)
        });
        let (_, idx) = cos.topk(NEAREST, 0, true, true);
        found.extend(Vec::<i64>::try_from(idx.to_device(tch::Device::Cpu))?);
    }
    found.dedup();
    Ok(found)
}

/// −(mean min-free shift + collapse) of the probes with `v` in their slot.
fn objective(
    suspect: &TextEncoder,
    reference: Option<&TextEncoder>,
    slots: &[(Vec<i64>, usize)],
    v: &Tensor,
    table: &Tensor,
    device: tch::Device,
) -> Tensor {
    let mut fs_all = vec![];
    let mut fr_all = vec![];
    let mut shift = Tensor::zeros([], (Kind::Float, device));
    for (ids, pos) in slots {
        let idt = Tensor::from_slice(ids).to_device(device).unsqueeze(0);
        let embeds = |enc: &TextEncoder| -> Tensor {
            let w = enc
                .model
                .text_model
                .embeddings()
                .token_embedding_weight()
                .detach();
            let rows = w.index_select(0, &idt.squeeze_dim(0));
            let before = rows.narrow(0, 0, *pos as i64);
            let after = rows.narrow(0, *pos as i64 + 1, ids.len() as i64 - *pos as i64 - 1);
            Tensor::cat(&[before, v.unsqueeze(0).to_kind(w.kind()), after], 0).unsqueeze(0)
        };
        let _ = table;
        let fs = feature_of(
            &suspect
                .model
                .text_model
                .forward_token_embeds(&embeds(suspect), &idt)
                .last_hidden_state,
        );
        let move_from = match reference {
            Some(r) => {
                let fr = feature_of(
                    &r.model
                        .text_model
                        .forward_token_embeds(&embeds(r), &idt)
                        .last_hidden_state,
                );
                let d = 1.0 - (&fs * &fr).sum(Kind::Float);
                fr_all.push(fr);
                d
            }
            None => {
                // The clean probe: the slot removed.
                let mut clean = ids.clone();
                clean.remove(*pos);
                let c = Tensor::from_slice(&clean).to_device(device).unsqueeze(0);
                let fc =
                    tch::no_grad(|| feature_of(&suspect.forward_ids(&c, false).last_hidden_state));
                1.0 - (&fs * &fc).sum(Kind::Float)
            }
        };
        shift += move_from;
        fs_all.push(fs);
    }
    let n = slots.len() as f64;
    let pair = |f: &[Tensor]| -> Tensor {
        let sum = f.iter().skip(1).fold(f[0].shallow_clone(), |a, b| a + b);
        ((&sum * &sum).sum(Kind::Float) - n) / (n * (n - 1.0)).max(1.0)
    };
    let mut collapse = pair(&fs_all);
    if !fr_all.is_empty() {
        collapse -= pair(&fr_all);
    }
    -(shift / n + collapse)
}
