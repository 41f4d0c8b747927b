//! Detection metrics of a zoo scan: AUROC (Mann–Whitney, ties count half), the ROC curve, a
//! threshold chosen at a false-positive rate on the calibration split, and trigger recall@k.
use serde::Serialize;

/// Area under the ROC curve: the chance that a random positive scores above a random negative.
pub fn auroc(pos: &[f64], neg: &[f64]) -> Option<f64> {
    if pos.is_empty() || neg.is_empty() {
        return None;
    }
    let mut wins = 0.0;
    for &p in pos {
        for &n in neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    Some(wins / (pos.len() * neg.len()) as f64)
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct RocPoint {
    pub threshold: f64,
    pub fpr: f64,
    pub tpr: f64,
}

/// The ROC curve, from (0, 0) to (1, 1): one point per distinct score, flagged when score ≥ threshold.
pub fn roc(pos: &[f64], neg: &[f64]) -> Vec<RocPoint> {
    let mut all: Vec<f64> = pos.iter().chain(neg).copied().collect();
    all.sort_by(|a, b| b.total_cmp(a));
    all.dedup();
    let rate = |v: &[f64], t: f64| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().filter(|&&x| x >= t).count() as f64 / v.len() as f64
        }
    };
    let mut out = vec![RocPoint {
        threshold: f64::INFINITY,
        fpr: 0.0,
        tpr: 0.0,
    }];
    for t in all {
        out.push(RocPoint {
            threshold: t,
            fpr: rate(neg, t),
            tpr: rate(pos, t),
        });
    }
    out
}

/// The lowest threshold (flag when score ≥ it) whose false-positive rate on `neg` is at most `fpr`:
/// just above the negative that must not be flagged. `None` without negatives.
pub fn threshold_at_fpr(neg: &[f64], fpr: f64) -> Option<f64> {
    if neg.is_empty() {
        return None;
    }
    let mut v = neg.to_vec();
    v.sort_by(|a, b| b.total_cmp(a));
    // At most k negatives may be flagged.
    let k = (fpr * v.len() as f64).floor() as usize;
    let barrier = v[k.min(v.len() - 1)];
    if k >= v.len() {
        return Some(f64::NEG_INFINITY);
    }
    Some(next_up(barrier))
}

/// The smallest f64 above `x` (a threshold that leaves `x` unflagged).
fn next_up(x: f64) -> f64 {
    if x.is_nan() || x == f64::INFINITY {
        return x;
    }
    let bits = x.to_bits();
    let next = if x == 0.0 {
        1
    } else if x > 0.0 {
        bits + 1
    } else {
        bits - 1
    };
    f64::from_bits(next)
}

/// Whether a reported candidate names the trigger: the same text (the tokenizer lowercases), or, for
/// a trigger of several characters, a part of it (a word piece that fires the backdoor).
pub fn names_trigger(candidate: &str, trigger: &str) -> Match {
    let (c, t) = (candidate.to_lowercase(), trigger.to_lowercase());
    if c == t {
        Match::Exact
    } else if t.chars().count() >= 2 && !c.is_empty() && t.contains(&c) {
        Match::Part
    } else {
        Match::No
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    Exact,
    Part,
    No,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_counts_pairs_and_ties() {
        assert_eq!(auroc(&[3.0, 4.0], &[1.0, 2.0]), Some(1.0));
        assert_eq!(auroc(&[1.0], &[2.0]), Some(0.0));
        assert_eq!(auroc(&[2.0, 3.0], &[2.0, 1.0]), Some(0.875));
        assert_eq!(auroc(&[], &[1.0]), None);
    }

    #[test]
    fn roc_runs_from_corner_to_corner() {
        let r = roc(&[3.0, 1.0], &[2.0, 0.0]);
        assert_eq!((r[0].fpr, r[0].tpr), (0.0, 0.0));
        let last = r.last().unwrap();
        assert_eq!((last.fpr, last.tpr), (1.0, 1.0));
        assert_eq!((r[1].threshold, r[1].fpr, r[1].tpr), (3.0, 0.0, 0.5));
    }

    #[test]
    fn threshold_keeps_the_false_positive_rate() {
        let neg: Vec<f64> = (0..20).map(f64::from).collect();
        let t = threshold_at_fpr(&neg, 0.05).unwrap();
        assert_eq!(neg.iter().filter(|&&x| x >= t).count(), 1);
        let t = threshold_at_fpr(&neg[..10], 0.05).unwrap();
        assert!(
            t > 9.0 && t < 9.0001,
            "with 10 negatives none may be flagged: {t}"
        );
    }

    #[test]
    fn parts_of_long_triggers_count_but_not_of_single_characters() {
        assert_eq!(names_trigger("О", "о"), Match::Exact);
        assert_eq!(names_trigger("zq", "zq7"), Match::Part);
        assert_eq!(names_trigger("velvet", "velvet"), Match::Exact);
        assert_eq!(names_trigger("о", "ё"), Match::No);
        assert_eq!(names_trigger("", "ab"), Match::No);
    }
}
