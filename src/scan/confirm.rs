//! Second look at the sweep's best tokens: each is inserted into many more probes than the sweep
//! can afford for all ~49k tokens, next to a fixed sample of ordinary tokens that gives the null.
//!
//! The sweep's statistics come from 4 probes × 2 positions: six pairs of probes make a noisy
//! collapse, and a fine-tune's general drift widens the vocabulary's spread, so a strong trigger can
//! sit at z ≈ 4 among benign drift at z ≈ 6–9. Re-measured on `probes` (24 by default) the same
//! statistics separate: noise shrinks with the square root of the pairs, drift does not grow. The
//! cost is (candidates + null) × probes × 2 sequences, a few percent of the sweep.
use super::sweep::{raw_stats_of, robust_null, special, Context, ReferenceKeep, RowCache, Sweep};
use crate::error::Result;
use crate::models::text_encoder::TextEncoder;

/// How many of the sweep's best tokens are re-measured (by each of its three statistics and by
/// its score, merged), and how many ordinary tokens make the null.
pub const PER_STATISTIC: usize = 48;
pub const NULL_TOKENS: usize = 256;

/// Re-measured tokens: ids, their robust z of (shift, collapse, direction) against the null
/// sample, and their score.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Confirmed {
    pub ids: Vec<i64>,
    /// Raw (shift, collapse, direction), and the null's (median, scale) of each.
    pub raw: Vec<[f64; 3]>,
    pub null: [(f64, f64); 3],
    pub z: Vec<[f64; 3]>,
    pub score: Vec<f64>,
}

impl Confirmed {
    /// The score of `id`, where it was re-measured.
    pub fn score_of(&self, id: i64) -> Option<f64> {
        self.ids
            .iter()
            .position(|&i| i == id)
            .map(|k| self.score[k])
    }

    /// The largest raw collapse (suspect's pairwise cosine of triggered probes minus the
    /// reference's) of any re-measured token.
    pub fn max_collapse(&self) -> f64 {
        self.raw
            .iter()
            .map(|r| r[1])
            .filter(|x| x.is_finite())
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

/// The token's confirmed score from its z-scores: a backdoor moves prompts where the reference
/// would not (shift), and moves them together (to one target: collapse; one way: direction).
pub fn confirm_score(z: [f64; 3]) -> f64 {
    if z.iter().any(|x| x.is_nan()) {
        return f64::NAN;
    }
    z[0].min(z[1].max(z[2]))
}

/// The sweep's candidates: the best `PER_STATISTIC` tokens by score, by shift, by collapse and by
/// direction (raw), merged in that order, specials left out.
pub fn preselect(sw: &Sweep, specials: &[i64]) -> Vec<i64> {
    let top = |v: &[f32]| -> Vec<i64> {
        let mut ids: Vec<i64> = (0..v.len() as i64)
            .filter(|&i| v[i as usize].is_finite() && !specials.contains(&i))
            .collect();
        ids.sort_by(|&a, &b| v[b as usize].total_cmp(&v[a as usize]));
        ids.truncate(PER_STATISTIC);
        ids
    };
    let mut out: Vec<i64> = vec![];
    for list in [
        top(&sw.score),
        top(&sw.shift),
        top(&sw.collapse),
        top(&sw.direction),
    ] {
        for id in list {
            if !out.contains(&id) {
                out.push(id);
            }
        }
    }
    out
}

/// Ordinary tokens for the null: evenly spread over the vocabulary (offset by `seed`), none of
/// the candidates or specials.
fn null_sample(vocab: i64, n: usize, seed: u64, skip: &[i64]) -> Vec<i64> {
    let mut ids = super::sweep::even_sample(vocab, n, seed);
    ids.retain(|id| !skip.contains(id));
    ids
}

/// Re-measure `candidates` on `contexts` against a null of ordinary tokens (`kept`: the
/// reference's features of rows measured before).
pub fn confirm(
    suspect: &TextEncoder,
    reference: Option<&TextEncoder>,
    kept: &mut RowCache,
    contexts: &[Context],
    candidates: &[i64],
    seed: u64,
    batch: usize,
) -> Result<Confirmed> {
    let mut skip = special(suspect);
    skip.extend_from_slice(candidates);
    let null = null_sample(suspect.config.vocab_size, NULL_TOKENS, seed, &skip);
    let one = |v: &[i64]| -> Vec<Vec<i64>> { v.iter().map(|&t| vec![t]).collect() };
    let m = measure(
        suspect,
        reference,
        kept,
        contexts,
        &one(candidates),
        &one(&null),
        batch,
    )?;
    Ok(Confirmed {
        ids: candidates.to_vec(),
        raw: m.raw,
        null: m.null,
        z: m.z,
        score: m.score,
    })
}

/// Statistics of insertions measured against a null of other insertions.
pub struct Measured {
    pub raw: Vec<[f64; 3]>,
    pub null: [(f64, f64); 3],
    pub z: Vec<[f64; 3]>,
    pub score: Vec<f64>,
}

/// Raw statistics of `candidates` (token sequences inserted as they are) on `contexts`, their
/// robust z against `null` measured alike, and their [`confirm_score`]. The reference's features
/// are kept per row in `kept` (the same null and many of the same candidates recur from suspect to
/// suspect).
pub fn measure(
    suspect: &TextEncoder,
    reference: Option<&TextEncoder>,
    kept: &mut RowCache,
    contexts: &[Context],
    candidates: &[Vec<i64>],
    null: &[Vec<i64>],
    batch: usize,
) -> Result<Measured> {
    let inserts: Vec<Vec<i64>> = candidates.iter().chain(null).cloned().collect();
    let raw = raw_stats_of(
        suspect,
        reference,
        ReferenceKeep::Rows(kept),
        contexts,
        &inserts,
        batch,
        &mut |_, _| {},
    )?;
    let n = candidates.len();
    let nulls: Vec<(f64, f64)> = raw.iter().map(|v| robust_null(&v[n..])).collect();
    let z: Vec<[f64; 3]> = (0..n)
        .map(|k| {
            let z = |i: usize| (raw[i][k] as f64 - nulls[i].0) / nulls[i].1;
            [z(0), z(1), z(2)]
        })
        .collect();
    let score = z.iter().map(|&z| confirm_score(z)).collect();
    Ok(Measured {
        raw: (0..n)
            .map(|k| [raw[0][k] as f64, raw[1][k] as f64, raw[2][k] as f64])
            .collect(),
        null: [nulls[0], nulls[1], nulls[2]],
        z,
        score,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_sample_spreads_and_skips() {
        let s = null_sample(1000, 10, 3, &[3, 503]);
        assert_eq!(s, vec![103, 203, 303, 403, 603, 703, 803, 903]);
    }

    #[test]
    fn score_needs_shift_and_one_of_the_others() {
        assert_eq!(confirm_score([10.0, 2.0, 8.0]), 8.0);
        assert_eq!(confirm_score([3.0, 20.0, 0.0]), 3.0);
        assert!(confirm_score([f64::NAN, 1.0, 1.0]).is_nan());
    }
}
