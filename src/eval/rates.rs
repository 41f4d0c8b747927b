//! Rates with their counts and 95% intervals: every rate in a report carries its image count `n`
//! and a Wilson score interval (Wilson 1927), and a change measured on the same prompts and seeds
//! under two conditions is a paired difference with Newcombe's (1998, method 10) interval.
use serde::{Deserialize, Serialize};

/// z of a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// The Wilson score interval of `k` successes in `n` trials (`[0, 1]` when `n` is 0).
pub fn wilson(k: usize, n: usize) -> [f64; 2] {
    if n == 0 {
        return [0.0, 1.0];
    }
    let (k, n, z2) = (k as f64, n as f64, Z95 * Z95);
    let p = k / n;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    [(centre - half).max(0.0), (centre + half).min(1.0)]
}

/// One rate: `value` = `successes` / `n`, with its 95% Wilson interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub value: f64,
    pub successes: usize,
    pub n: usize,
    pub ci95: [f64; 2],
}

impl Rate {
    /// The rate of the judged items (`None`: not judged, left out); `None` when none was judged.
    pub fn of(judged: &[Option<bool>]) -> Option<Self> {
        let n = judged.iter().flatten().count();
        let k = judged.iter().flatten().filter(|&&b| b).count();
        (n > 0).then(|| Self::new(k, n))
    }

    pub fn new(successes: usize, n: usize) -> Self {
        Self {
            value: if n == 0 {
                0.0
            } else {
                successes as f64 / n as f64
            },
            successes,
            n,
            ci95: wilson(successes, n),
        }
    }
}

/// `after − before` on the same items (same prompts and seeds), with Newcombe's hybrid score interval
/// for paired proportions, which accounts for the correlation of the two conditions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairedDifference {
    pub value: f64,
    pub ci95: [f64; 2],
    /// Items judged under both conditions.
    pub n: usize,
    /// Items right only after / only before.
    pub gained: usize,
    pub lost: usize,
}

impl PairedDifference {
    /// From per-item verdicts of both conditions (items judged under only one are left out).
    pub fn of(before: &[Option<bool>], after: &[Option<bool>]) -> Option<Self> {
        let pairs: Vec<(bool, bool)> = before
            .iter()
            .zip(after)
            .filter_map(|(b, a)| Some(((*b)?, (*a)?)))
            .collect();
        let n = pairs.len();
        if n == 0 {
            return None;
        }
        let count = |f: &dyn Fn(&(bool, bool)) -> bool| pairs.iter().filter(|p| f(p)).count();
        let both = count(&|p| p.0 && p.1);
        let gained = count(&|p| !p.0 && p.1);
        let lost = count(&|p| p.0 && !p.1);
        let neither = n - both - gained - lost;
        // Newcombe's θ = p1 − p2 with p1 = after, p2 = before.
        let (k1, k2) = (both + gained, both + lost);
        let (p1, p2) = (k1 as f64 / n as f64, k2 as f64 / n as f64);
        let ([l1, u1], [l2, u2]) = (wilson(k1, n), wilson(k2, n));
        // φ, the correlation of the two conditions, with Newcombe's continuity correction.
        let denom = ((k1 * (n - k1)) as f64 * (k2 * (n - k2)) as f64).sqrt();
        let cross = (both * neither) as f64 - (gained * lost) as f64;
        let corrected = if cross > n as f64 / 2.0 {
            cross - n as f64 / 2.0
        } else {
            cross.min(0.0)
        };
        let phi = if denom > 0.0 { corrected / denom } else { 0.0 };
        let theta = p1 - p2;
        let delta = ((p1 - l1).powi(2) - 2.0 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2).powi(2))
            .max(0.0)
            .sqrt();
        let eps = ((u1 - p1).powi(2) - 2.0 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2).powi(2))
            .max(0.0)
            .sqrt();
        Some(Self {
            value: theta,
            ci95: [(theta - delta).max(-1.0), (theta + eps).min(1.0)],
            n,
            gained,
            lost,
        })
    }
}

/// "91.7% [84.4, 95.7] (n=96)".
pub fn format_rate(r: Option<&Rate>) -> String {
    match r {
        Some(r) => format!(
            "{:.1}% [{:.1}, {:.1}] (n={})",
            100.0 * r.value,
            100.0 * r.ci95[0],
            100.0 * r.ci95[1],
            r.n
        ),
        None => "–".into(),
    }
}

/// "−1.0 points [−4.2, 2.1] (n=96)".
pub fn format_difference(d: Option<&PairedDifference>) -> String {
    match d {
        Some(d) => format!(
            "{:+.1} points [{:+.1}, {:+.1}] (n={})",
            100.0 * d.value,
            100.0 * d.ci95[0],
            100.0 * d.ci95[1],
            d.n
        ),
        None => "–".into(),
    }
}

/// The rate of one condition of a stage report entry (`{"original": v, "n": {...}, ...}`).
pub fn condition_rate(entry: &serde_json::Value, condition: &str) -> Option<Rate> {
    let value = entry[condition].as_f64()?;
    let n = entry["n"][condition].as_u64()? as usize;
    let successes = entry["successes"][condition].as_u64()? as usize;
    let ci = &entry["ci95"][condition];
    Some(Rate {
        value,
        successes,
        n,
        ci95: [ci[0].as_f64()?, ci[1].as_f64()?],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: [f64; 2], b: [f64; 2]) -> bool {
        (a[0] - b[0]).abs() < 5e-4 && (a[1] - b[1]).abs() < 5e-4
    }

    /// Wilson score intervals, the expected values evaluated from Wilson's formula in an independent
    /// Python script (statsmodels is not in the venv, so not checked against it).
    #[test]
    fn wilson_matches_the_literature() {
        assert!(
            close(wilson(81, 263), [0.2553, 0.3662]),
            "{:?}",
            wilson(81, 263)
        );
        assert!(close(wilson(0, 10), [0.0, 0.2775]), "{:?}", wilson(0, 10));
        assert!(close(wilson(10, 10), [0.7225, 1.0]));
        assert_eq!(wilson(0, 0), [0.0, 1.0]);
    }

    /// The worked example of Altman et al. (2000, "Statistics with confidence", Table 6.2), as
    /// biostatUZH's `confIntPairedProportion` reproduces it: 14 right under both, 5 only under the
    /// first, none only under the second, 22 under neither: 0.122 [0.0115, 0.2265].
    #[test]
    fn paired_difference_matches_the_worked_example() {
        let seq = |v: &[(bool, usize)]| -> Vec<Option<bool>> {
            v.iter()
                .flat_map(|&(b, k)| std::iter::repeat_n(Some(b), k))
                .collect()
        };
        let first = seq(&[(true, 14), (true, 5), (false, 0), (false, 22)]);
        let second = seq(&[(true, 14), (false, 5), (true, 0), (false, 22)]);
        // after = first, before = second.
        let d = PairedDifference::of(&second, &first).unwrap();
        assert!((d.value - 5.0 / 41.0).abs() < 1e-12);
        assert!(close(d.ci95, [0.0115, 0.2265]), "{:?}", d.ci95);
        assert_eq!((d.n, d.gained, d.lost), (41, 5, 0));
        // Swapping the conditions mirrors the interval.
        let r = PairedDifference::of(&first, &second).unwrap();
        assert!(close(r.ci95, [-0.2265, -0.0115]), "{:?}", r.ci95);
        assert!(PairedDifference::of(&[None], &[Some(true)]).is_none());
    }
}
