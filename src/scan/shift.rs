//! How far a substitution moves a text encoder's embedding: cosine similarity between the clean and
//! the attacked prompt, on the flattened last hidden state (what Stable Diffusion's UNet attends to,
//! and what the homoglyph-unlearning loss compares) and on the pooled output.
use std::collections::HashMap;

use serde::Serialize;
use tch::{Kind, Tensor};

use crate::error::Result;
use crate::models::text_encoder::TextEncoder;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Shift {
    /// Cosine similarity of the flattened last hidden states [77 · hidden].
    pub sim_hidden: f64,
    /// Cosine similarity of the pooled outputs.
    pub sim_pooled: f64,
}

/// Encoder outputs of distinct prompts, on the CPU in f64.
struct Embedded {
    ids: Vec<Vec<i64>>,
    hidden: Tensor,
    pooled: Tensor,
}

fn embed(
    enc: &TextEncoder,
    texts: &[&str],
    batch_size: usize,
    progress: &dyn Fn(u64),
) -> Result<Embedded> {
    let out = enc.encode_batched(texts, batch_size, false, &mut |n| progress(n as u64))?;
    Ok(Embedded {
        ids: Vec::<Vec<i64>>::try_from(&out.input_ids)?,
        hidden: out.last_hidden_state.to_kind(Kind::Double).flatten(1, -1),
        pooled: out.pooled_output.to_kind(Kind::Double),
    })
}

fn cosine(a: &Tensor, b: &Tensor) -> f64 {
    let sim = (a * b).sum(Kind::Double) / (a.norm() * b.norm()).clamp_min(1e-300);
    sim.double_value(&[]).clamp(-1.0, 1.0)
}

/// Similarity of each (clean, attacked) pair; each distinct prompt is encoded once. Pairs whose token
/// ids are identical (the tokenizer normalised the difference away) are exactly 1: the encoder sees
/// the same input. `progress` is told how many prompts each batch encoded.
pub fn embedding_shift(
    enc: &TextEncoder,
    pairs: &[(String, String)],
    batch_size: usize,
    progress: &dyn Fn(u64),
) -> Result<Vec<Shift>> {
    let mut slot: HashMap<&str, usize> = HashMap::new();
    let mut distinct: Vec<&str> = vec![];
    for (a, b) in pairs {
        for t in [a.as_str(), b.as_str()] {
            slot.entry(t).or_insert_with(|| {
                distinct.push(t);
                distinct.len() - 1
            });
        }
    }
    let e = embed(enc, &distinct, batch_size, progress)?;
    Ok(pairs
        .iter()
        .map(|(a, b)| {
            let (i, j) = (slot[a.as_str()], slot[b.as_str()]);
            if e.ids[i] == e.ids[j] {
                return Shift {
                    sim_hidden: 1.0,
                    sim_pooled: 1.0,
                };
            }
            let (i, j) = (i as i64, j as i64);
            Shift {
                sim_hidden: cosine(&e.hidden.get(i), &e.hidden.get(j)),
                sim_pooled: cosine(&e.pooled.get(i), &e.pooled.get(j)),
            }
        })
        .collect())
}

/// The number of distinct prompts [`embedding_shift`] will encode (for a progress bar's length).
pub fn distinct_prompts(pairs: &[(String, String)]) -> usize {
    let mut seen = std::collections::HashSet::new();
    pairs
        .iter()
        .flat_map(|(a, b)| [a.as_str(), b.as_str()])
        .filter(|t| seen.insert(*t))
        .count()
}

/// Mean similarities of one homoglyph over the prompts it was applied to.
#[derive(Debug, Clone, Serialize)]
pub struct HomoglyphScore {
    pub latin: char,
    pub glyph: char,
    pub code_point: String,
    pub script: &'static str,
    pub family: String,
    /// Attacked prompts averaged over.
    pub prompts: usize,
    pub sim_hidden: f64,
    pub sim_pooled: f64,
    pub min_sim_hidden: f64,
}

/// Average the shifts per (Latin character, homoglyph), most disruptive (lowest `sim_hidden`) first.
pub fn rank_homoglyphs(
    variants: &[crate::text::homoglyph::attack::Variant],
    shifts: &[Shift],
) -> Vec<HomoglyphScore> {
    let mut groups: HashMap<(char, char), HomoglyphScore> = HashMap::new();
    for (v, s) in variants.iter().zip(shifts) {
        let g = groups
            .entry((v.latin, v.glyph))
            .or_insert_with(|| HomoglyphScore {
                latin: v.latin,
                glyph: v.glyph,
                code_point: v.code_point.clone(),
                script: v.script,
                family: v.family.clone(),
                prompts: 0,
                sim_hidden: 0.0,
                sim_pooled: 0.0,
                min_sim_hidden: f64::INFINITY,
            });
        g.prompts += 1;
        g.sim_hidden += s.sim_hidden;
        g.sim_pooled += s.sim_pooled;
        g.min_sim_hidden = g.min_sim_hidden.min(s.sim_hidden);
    }
    let mut scores: Vec<HomoglyphScore> = groups
        .into_values()
        .map(|mut g| {
            g.sim_hidden /= g.prompts as f64;
            g.sim_pooled /= g.prompts as f64;
            g
        })
        .collect();
    scores.sort_by(|a, b| {
        a.sim_hidden
            .total_cmp(&b.sim_hidden)
            .then((a.latin, a.glyph).cmp(&(b.latin, b.glyph)))
    });
    scores
}
