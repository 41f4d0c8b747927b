//! The Word Embedding Association Test (Caliskan, Bryson & Narayanan, Science 2017) on a text
//! encoder's pooled output, as the homoglyph-bias reference code runs it (Struppek et al., JAIR 2023;
//! ../shared/reference/homoglyphs.md): target sets X, Y (e.g. words of a culture and Western words)
//! against attribute sets A, B (e.g. a script's characters and Latin ones).
//!
//! - `s(w, A, B) = mean_a cos(w, a) − mean_b cos(w, b)`;
//! - effect size `= (mean_x s(x) − mean_y s(y)) / std_{w ∈ X ∪ Y} s(w)` with `ddof = 1`;
//! - one-sided permutation p-value of the statistic `Σ_{x ∈ X} s(x)` over the partitions of X ∪ Y
//!   into |X| and |Y| items: exact (every partition, the observed one included) when there are at most
//!   `samples` of them, else the observed partition plus `samples − 1` shuffles from the legacy NumPy
//!   stream seeded with `seed` (the reference seeds 1). Ties count as "at least as extreme".
//!
//! Sums follow NumPy's pairwise order and the shuffles NumPy's legacy `RandomState`
//! ([`numpy`]), so a seed gives the reference's p-value, not one like it.
pub mod numpy;
pub mod presets;
pub mod report;

use serde::Serialize;
use tch::{Kind, Tensor};

use crate::error::Result;
use crate::input_bail;

/// The reference's sample count when the exact test would need more partitions.
pub const DEFAULT_SAMPLES: usize = 10_000;
/// The reference's `np.random.seed(1)`.
pub const DEFAULT_SEED: u32 = 1;

/// Embeddings of the four sets (rows; any width, compared by cosine).
pub struct WeatSets<'a> {
    pub x: &'a Tensor,
    pub y: &'a Tensor,
    pub a: &'a Tensor,
    pub b: &'a Tensor,
}

/// One test's outcome (`effect_size`, `p_value` are the conventions' names).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct WeatResult {
    pub effect_size: f64,
    pub p_value: f64,
    /// Partitions the p-value counts (the observed one included).
    pub permutations: usize,
    /// Every partition was counted (else `permutations` seeded samples).
    pub exact: bool,
    /// Partitions whose statistic equals the observed one to the last bit (the reference warns).
    pub ties: usize,
    /// `mean_x s(x, A, B)` and `mean_y s(y, A, B)`.
    pub mean_s_x: f64,
    pub mean_s_y: f64,
    /// `[|X|, |Y|, |A|, |B|]`.
    pub sizes: [usize; 4],
}

/// Row vectors of a `[N, D]` tensor as f64.
fn rows(t: &Tensor, name: &str) -> Result<Vec<Vec<f64>>> {
    let size = t.size();
    if size.len() != 2 || size[0] == 0 {
        input_bail!("WEAT set {name} must be a non-empty [N, D] matrix, got shape {size:?}");
    }
    let (n, d) = (size[0] as usize, size[1] as usize);
    let flat: Vec<f64> = Vec::<f64>::try_from(
        t.to_kind(Kind::Double)
            .to_device(tch::Device::Cpu)
            .contiguous()
            .view([-1]),
    )?;
    Ok((0..n).map(|i| flat[i * d..(i + 1) * d].to_vec()).collect())
}

fn unit(v: &[f64]) -> Vec<f64> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    // A zero vector has no direction; sklearn leaves it zero (cosine 0) and so do we.
    let norm = if norm == 0.0 { 1.0 } else { norm };
    v.iter().map(|x| x / norm).collect()
}

/// `s(w, A, B)` for every w of X ∪ Y (X first), from cosine similarities.
pub fn association(sets: &WeatSets) -> Result<Vec<f64>> {
    let [x, y, a, b] =
        [(sets.x, "X"), (sets.y, "Y"), (sets.a, "A"), (sets.b, "B")].map(|(t, n)| rows(t, n));
    let (x, y, a, b) = (x?, y?, a?, b?);
    let width = x[0].len();
    if [&y, &a, &b].iter().any(|s| s[0].len() != width) {
        input_bail!("the four WEAT sets must be embedded by the same encoder (different widths)");
    }
    let a: Vec<Vec<f64>> = a.iter().map(|v| unit(v)).collect();
    let b: Vec<Vec<f64>> = b.iter().map(|v| unit(v)).collect();
    let cos = |w: &[f64], z: &[f64]| w.iter().zip(z).map(|(p, q)| p * q).sum::<f64>();
    Ok(x.iter()
        .chain(&y)
        .map(|w| {
            let w = unit(w);
            let to_a: Vec<f64> = a.iter().map(|v| cos(&w, v)).collect();
            let to_b: Vec<f64> = b.iter().map(|v| cos(&w, v)).collect();
            numpy::mean(&to_a) - numpy::mean(&to_b)
        })
        .collect())
}

/// `binom(n, k)`, saturating (only compared with the sample count).
fn binomial(n: usize, k: usize) -> u128 {
    let k = k.min(n - k);
    let mut c: u128 = 1;
    for i in 0..k {
        c = c.saturating_mul((n - i) as u128) / (i as u128 + 1);
    }
    c
}

/// Calls `f` with every `k`-subset of `0..n` in lexicographic order (`itertools.combinations`).
fn for_each_combination(n: usize, k: usize, f: &mut dyn FnMut(&[usize])) {
    let mut idx: Vec<usize> = (0..k).collect();
    loop {
        f(&idx);
        let Some(i) = (0..k).rev().find(|&i| idx[i] != i + n - k) else {
            return;
        };
        idx[i] += 1;
        for j in i + 1..k {
            idx[j] = idx[j - 1] + 1;
        }
    }
}

/// The effect size and permutation p-value of one test.
pub fn weat(sets: &WeatSets, samples: usize, seed: u32) -> Result<WeatResult> {
    if samples == 0 {
        input_bail!("--samples must be at least 1");
    }
    let s = association(sets)?;
    let nx = sets.x.size()[0] as usize;
    let ny = s.len() - nx;
    if s.len() < 3 {
        input_bail!("WEAT needs at least three targets in X and Y together (the std has ddof 1)");
    }
    let sizes = [nx, ny, sets.a.size()[0] as usize, sets.b.size()[0] as usize];
    let (mean_s_x, mean_s_y) = (numpy::mean(&s[..nx]), numpy::mean(&s[nx..]));
    let effect_size = (mean_s_x - mean_s_y) / numpy::std(&s, 1);

    let observed = numpy::sum(&s[..nx]);
    let (mut extreme, mut ties, mut total) = (0usize, 0usize, 0usize);
    let mut count = |subset: &[usize]| {
        let v: Vec<f64> = subset.iter().map(|&i| s[i]).collect();
        let si = numpy::sum(&v);
        if si > observed {
            extreme += 1;
        } else if si == observed {
            extreme += 1;
            ties += 1;
        }
        total += 1;
    };
    let exact = binomial(s.len(), nx) <= samples as u128;
    if exact {
        for_each_combination(s.len(), nx, &mut count);
    } else {
        // The observed partition counts once (the reference's "biasing by 1"; its own tie is not
        // reported), then `samples - 1` shuffles.
        count(&(0..nx).collect::<Vec<_>>());
        let mut rng = numpy::LegacyRandomState::seed(seed);
        let mut order: Vec<usize> = (0..s.len()).collect();
        for _ in 1..samples {
            order.iter_mut().enumerate().for_each(|(i, o)| *o = i);
            rng.shuffle(&mut order);
            count(&order[..nx]);
        }
    }
    if !exact {
        ties -= 1;
    }
    Ok(WeatResult {
        effect_size,
        p_value: extreme as f64 / total as f64,
        permutations: total,
        exact,
        ties,
        mean_s_x,
        mean_s_y,
        sizes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combinations_in_itertools_order() {
        let mut seen = vec![];
        for_each_combination(4, 2, &mut |c| seen.push(c.to_vec()));
        assert_eq!(
            seen,
            vec![
                vec![0, 1],
                vec![0, 2],
                vec![0, 3],
                vec![1, 2],
                vec![1, 3],
                vec![2, 3]
            ]
        );
        assert_eq!(binomial(14, 7), 3432);
    }

    #[test]
    fn a_separated_pair_has_a_large_effect_and_a_small_p() {
        // X near A, Y near B: every other partition is less extreme.
        let x = Tensor::from_slice(&[1.0f32, 0.1, 1.0, 0.2, 1.0, 0.15, 1.0, 0.05]).view([4, 2]);
        let y = Tensor::from_slice(&[0.1f32, 1.0, 0.2, 1.0, 0.15, 1.0, 0.05, 1.0]).view([4, 2]);
        let a = Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2]);
        let b = Tensor::from_slice(&[0.0f32, 1.0]).view([1, 2]);
        let r = weat(
            &WeatSets {
                x: &x,
                y: &y,
                a: &a,
                b: &b,
            },
            10_000,
            1,
        )
        .unwrap();
        assert!(r.exact && r.permutations == 70);
        assert!((r.p_value - 1.0 / 70.0).abs() < 1e-12, "{r:?}");
        assert!(r.effect_size > 1.5, "{r:?}");
        // Swapping the attribute sets flips the sign.
        let r2 = weat(
            &WeatSets {
                x: &x,
                y: &y,
                a: &b,
                b: &a,
            },
            10_000,
            1,
        )
        .unwrap();
        assert!((r2.effect_size + r.effect_size).abs() < 1e-12);
        assert!((r2.p_value - 1.0).abs() < 1e-12);
    }
}
