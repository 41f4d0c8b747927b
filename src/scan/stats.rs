//! The numbers a scan compares, all on unit-length rows (so dot products are cosines).
use tch::{Kind, Tensor};

/// Mean cosine over all distinct pairs of rows: (‖Σx‖² − n) / (n(n − 1)) for unit rows, without
/// the n×n matrix.
pub fn mean_pairwise(x: &Tensor) -> f64 {
    let n = x.size()[0] as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let sum = x.sum_dim_intlist([0i64].as_slice(), false, Kind::Double);
    let sq = sum.dot(&sum).double_value(&[]);
    (sq - n) / (n * (n - 1.0))
}

/// Mean of 1 − cos(clean_i, triggered_i): how far the substitution moves each prompt.
pub fn mean_shift(clean: &Tensor, triggered: &Tensor) -> f64 {
    let cos = (clean * triggered).sum_dim_intlist([1i64].as_slice(), false, Kind::Double);
    1.0 - cos.mean(Kind::Double).double_value(&[])
}

/// Mean of 1 − cos(a_i, b_i): how differently two encoders embed the same prompts.
pub fn mean_disagreement(a: &Tensor, b: &Tensor) -> f64 {
    mean_shift(a, b)
}

/// How an encoder reacts to one substitution over one probe set.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Reaction {
    /// Mean shift divided by the clean spread (mean 1 − cos between different clean probes): 1 means
    /// the character moves a prompt as far as swapping it for another prompt.
    pub shift: f64,
    /// Share of the clean spread the substitution removes: (mean pairwise cos triggered − clean) /
    /// (1 − clean). 1 = every triggered prompt lands on one embedding; ≤ 0 = no collapse.
    pub collapse: f64,
}

/// Per probe set: what the clean prompts look like to one encoder.
pub struct CleanSet {
    pub rows: Tensor,
    pub pairwise: f64,
}

impl CleanSet {
    pub fn new(rows: Tensor) -> Self {
        let pairwise = mean_pairwise(&rows);
        Self { rows, pairwise }
    }

    pub fn spread(&self) -> f64 {
        (1.0 - self.pairwise).max(1e-12)
    }

    pub fn react(&self, triggered: &Tensor) -> Reaction {
        Reaction {
            shift: mean_shift(&self.rows, triggered) / self.spread(),
            collapse: (mean_pairwise(triggered) - self.pairwise) / self.spread(),
        }
    }
}

/// Cosine of the mean triggered embedding with each target row, and the share of triggered prompts
/// whose own nearest target is the mean's nearest.
pub fn target_affinity(triggered: &Tensor, targets: &Tensor) -> (Vec<f64>, f64) {
    let n = triggered.size()[0];
    if n == 0 || targets.size()[0] == 0 {
        return (vec![], 0.0);
    }
    let mean = triggered.mean_dim([0i64].as_slice(), false, Kind::Float);
    let mean = &mean / mean.norm().clamp_min(1e-12);
    let cos: Vec<f64> =
        Vec::<f64>::try_from(targets.mv(&mean).to_kind(Kind::Double)).unwrap_or_default();
    let best = argmax(&cos);
    let per_probe: Vec<i64> =
        Vec::<i64>::try_from(triggered.matmul(&targets.tr()).argmax(1, false)).unwrap_or_default();
    let agree = per_probe
        .iter()
        .filter(|&&k| Some(k as usize) == best)
        .count();
    (cos, agree as f64 / n as f64)
}

pub fn argmax(v: &[f64]) -> Option<usize> {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn pairwise_mean_matches_the_matrix() {
        crate::models::init::seeded(0, || {
            let x =
                crate::scan::embed::unit_rows(&Tensor::randn([5, 7], (Kind::Float, Device::Cpu)));
            let g = x.matmul(&x.tr());
            let n = 5.0;
            let off = (g.sum(Kind::Double).double_value(&[]) - n) / (n * (n - 1.0));
            assert!((mean_pairwise(&x) - off).abs() < 1e-6);
        });
    }

    #[test]
    fn identical_rows_collapse_fully() {
        crate::models::init::seeded(1, || {
            let clean = CleanSet::new(crate::scan::embed::unit_rows(&Tensor::randn(
                [4, 6],
                (Kind::Float, Device::Cpu),
            )));
            let one = clean.rows.get(0).unsqueeze(0).repeat([4, 1]);
            let r = clean.react(&one);
            assert!((r.collapse - 1.0).abs() < 1e-5, "{r:?}");
            assert!(clean.react(&clean.rows).shift.abs() < 1e-5);
        });
    }
}
