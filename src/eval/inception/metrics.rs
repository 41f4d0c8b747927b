//! FID (Heusel et al., 2017) and KID (Bińkowski et al., 2018) on feature matrices [N, D].
//!
//! FID is the Fréchet distance of `eval::clip::frechet_distance` (f64, symmetric eigen-decompositions).
//! KID follows torchmetrics' `KernelInceptionDistance`: per subset, the unbiased MMD² with the
//! polynomial kernel k(x, y) = (γ x·y + c)^d (d = 3, γ = 1/D, c = 1 by default), then the mean and the
//! population standard deviation (`std(unbiased=False)`) over subsets. Subsets are drawn without
//! replacement from a ChaCha8 stream seeded with [`KidOptions::seed`]; computed in f64.
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

use crate::error::Result;
use crate::{input_bail, input_err};

/// Fréchet Inception Distance between two feature sets (at least 2 rows each, same width).
pub fn fid(a: &Tensor, b: &Tensor) -> Result<f64> {
    crate::eval::clip::frechet_distance(a, b)
}

/// KID settings; the defaults are torchmetrics' (100 subsets of 1000, degree 3, γ = 1/D, coef 1).
#[derive(Debug, Clone, PartialEq)]
pub struct KidOptions {
    pub subsets: usize,
    pub subset_size: usize,
    pub seed: u64,
    pub degree: i32,
    /// `None`: 1 / feature width.
    pub gamma: Option<f64>,
    pub coef: f64,
}

impl Default for KidOptions {
    fn default() -> Self {
        Self {
            subsets: 100,
            subset_size: 1000,
            seed: 0,
            degree: 3,
            gamma: None,
            coef: 1.0,
        }
    }
}

/// One KID subset: row indices into the first and into the second feature set.
pub type KidSubset = (Vec<i64>, Vec<i64>);

fn check_features(x: &Tensor, what: &str) -> Result<(i64, i64)> {
    match x.size2() {
        Ok((n, d)) if n > 0 && d > 0 => Ok((n, d)),
        _ => Err(input_err!(
            "{what} must be a non-empty [N, D] feature matrix, got shape {:?}",
            x.size()
        )),
    }
}

/// The seeded draws [`kid`] uses: `opts.subsets` pairs of `opts.subset_size` distinct rows each.
pub fn kid_subsets(n_a: usize, n_b: usize, opts: &KidOptions) -> Result<Vec<KidSubset>> {
    let m = opts.subset_size;
    if opts.subsets == 0 {
        input_bail!("KID needs at least one subset (got 0)");
    }
    if m < 2 {
        input_bail!("KID subset size must be at least 2 (got {m})");
    }
    if m > n_a || m > n_b {
        input_bail!(
            "KID subset size {m} exceeds the number of images ({n_a} and {n_b}): use a subset size \
             of at most {} or more images",
            n_a.min(n_b)
        );
    }
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut draw = |n: usize| -> Vec<i64> {
        rand::seq::index::sample(&mut rng, n, m)
            .into_iter()
            .map(|i| i as i64)
            .collect()
    };
    Ok((0..opts.subsets).map(|_| (draw(n_a), draw(n_b))).collect())
}

fn kernel(x: &Tensor, y: &Tensor, gamma: f64, coef: f64, degree: i32) -> Tensor {
    (x.matmul(&y.tr()) * gamma + coef).pow_tensor_scalar(degree as i64)
}

fn mmd(x: &Tensor, y: &Tensor, gamma: f64, coef: f64, degree: i32) -> f64 {
    let m = x.size()[0] as f64;
    let sum = |k: Tensor| k.sum(Kind::Double).double_value(&[]);
    let trace = |k: &Tensor| k.trace().double_value(&[]);
    let kxx = kernel(x, x, gamma, coef, degree);
    let kyy = kernel(y, y, gamma, coef, degree);
    let off_x = sum(kxx.shallow_clone()) - trace(&kxx);
    let off_y = sum(kyy.shallow_clone()) - trace(&kyy);
    let kxy = sum(kernel(x, y, gamma, coef, degree));
    (off_x + off_y) / (m * (m - 1.0)) - 2.0 * kxy / (m * m)
}

fn gamma_coef(d: i64, opts: &KidOptions) -> Result<(f64, f64)> {
    let gamma = opts.gamma.unwrap_or(1.0 / d as f64);
    if !(gamma > 0.0 && opts.coef > 0.0 && opts.degree > 0) {
        input_bail!(
            "KID kernel needs gamma > 0, coef > 0, degree > 0 (got {gamma}, {}, {})",
            opts.coef,
            opts.degree
        );
    }
    Ok((gamma, opts.coef))
}

/// Unbiased polynomial-kernel MMD² between two sets of the same size (torchmetrics' `poly_mmd`).
pub fn poly_mmd(a: &Tensor, b: &Tensor, opts: &KidOptions) -> Result<f64> {
    let (n, d) = check_features(a, "first feature set")?;
    let (m, e) = check_features(b, "second feature set")?;
    if n != m || d != e || n < 2 {
        input_bail!(
            "poly_mmd needs two [M, D] sets of the same shape with M ≥ 2, got {:?} and {:?}",
            a.size(),
            b.size()
        );
    }
    let (gamma, coef) = gamma_coef(d, opts)?;
    let f = |t: &Tensor| t.to_device(Device::Cpu).to_kind(Kind::Double);
    Ok(mmd(&f(a), &f(b), gamma, coef, opts.degree))
}

/// KID (mean, std over subsets) on the given subsets; `opts.subsets`/`subset_size`/`seed` unused.
pub fn kid_on_subsets(
    a: &Tensor,
    b: &Tensor,
    subsets: &[KidSubset],
    opts: &KidOptions,
) -> Result<(f64, f64)> {
    let (n, d) = check_features(a, "first feature set")?;
    let (m, e) = check_features(b, "second feature set")?;
    if d != e {
        input_bail!(
            "feature sets differ in width ({d} vs {e}): use the same feature extractor for both"
        );
    }
    if subsets.is_empty() {
        input_bail!("KID needs at least one subset");
    }
    let (gamma, coef) = gamma_coef(d, opts)?;
    let a = a.to_device(Device::Cpu).to_kind(Kind::Double);
    let b = b.to_device(Device::Cpu).to_kind(Kind::Double);
    let mut scores = Vec::with_capacity(subsets.len());
    for (ia, ib) in subsets {
        if ia.len() != ib.len() || ia.len() < 2 {
            input_bail!("each KID subset needs the same number (≥ 2) of rows from both sets");
        }
        if ia.iter().any(|&i| i < 0 || i >= n) || ib.iter().any(|&i| i < 0 || i >= m) {
            input_bail!("KID subset index out of range ({n} and {m} rows)");
        }
        let x = a.index_select(0, &Tensor::from_slice(ia));
        let y = b.index_select(0, &Tensor::from_slice(ib));
        scores.push(tch::no_grad(|| mmd(&x, &y, gamma, coef, opts.degree)));
    }
    let k = scores.len() as f64;
    let mean = scores.iter().sum::<f64>() / k;
    let var = scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / k;
    Ok((mean, var.sqrt()))
}

/// Kernel Inception Distance: (mean, std) of the unbiased MMD² over seeded random subsets.
pub fn kid(a: &Tensor, b: &Tensor, opts: &KidOptions) -> Result<(f64, f64)> {
    let (n, _) = check_features(a, "first feature set")?;
    let (m, _) = check_features(b, "second feature set")?;
    let subsets = kid_subsets(n as usize, m as usize, opts)?;
    kid_on_subsets(a, b, &subsets, opts)
}
