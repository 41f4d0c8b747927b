//! Metrics on CLIP embeddings: CLIP score (torchmetrics' definition), paired image–image similarity,
//! zero-shot classification (`acc@1`, `acc@5`), the zero-shot attack-success judge, Fréchet distance on
//! CLIP features (`fd_clip`) and CMMD (`cmmd`).
//!
//! Every function takes embeddings (`[N, D]`, any device, any float kind) and computes in f32 (scores)
//! or f64 (distribution distances); shape disagreements are input errors.
use std::path::Path;
use tch::{Device, Kind, Tensor};

use crate::error::Result;
use crate::io::weights::SafetensorsFile;
use crate::models::text_encoder::{weight_file, TextEncoder};
use crate::{input_bail, input_err};

fn check_2d(x: &Tensor, what: &str) -> Result<(i64, i64)> {
    match x.size2() {
        Ok((n, d)) if n > 0 && d > 0 => Ok((n, d)),
        _ => Err(input_err!(
            "{what} must be a non-empty [N, D] matrix, got shape {:?}",
            x.size()
        )),
    }
}

fn check_pair(a: &Tensor, b: &Tensor, an: &str, bn: &str) -> Result<()> {
    let (n, d) = check_2d(a, an)?;
    let (m, e) = check_2d(b, bn)?;
    if n != m || d != e {
        input_bail!("{an} {:?} and {bn} {:?} must have the same shape (one row per pair, same embedding width)", [n, d], [m, e]);
    }
    Ok(())
}

/// L2-normalise rows as torch's `x / x.norm(dim=-1, keepdim=True)` (f32, CPU).
pub fn l2_normalize(x: &Tensor) -> Tensor {
    let x = x.to_device(Device::Cpu).to_kind(Kind::Float);
    &x / x.norm_scalaropt_dim(2, [-1], true)
}

/// Row-wise cosine similarity of paired embeddings: [N] f32.
pub fn paired_cosine(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    check_pair(a, b, "first embeddings", "second embeddings")?;
    Ok((l2_normalize(a) * l2_normalize(b)).sum_dim_intlist(&[-1i64][..], false, Kind::Float))
}

/// CLIP score as torchmetrics computes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipScore {
    /// 100 · cos(image, text) per pair, not floored (torchmetrics' `_clip_score_update`).
    pub per_sample: Vec<f32>,
    /// `max(mean(per_sample), 0)`: torchmetrics' `clip_score` / `CLIPScore.compute()`.
    pub score: f32,
}

/// CLIP score of images against their prompts: per pair 100 · cos of the L2-normalised `image_embeds`
/// and `text_embeds` (same row = same pair); the aggregate is the mean, floored at 0 (torchmetrics).
pub fn clip_score(image_embeds: &Tensor, text_embeds: &Tensor) -> Result<ClipScore> {
    check_pair(
        image_embeds,
        text_embeds,
        "image embeddings",
        "text embeddings",
    )?;
    let s = paired_cosine(image_embeds, text_embeds)? * 100.0;
    let mean = s.mean(Kind::Float).double_value(&[]) as f32;
    Ok(ClipScore {
        per_sample: Vec::<f32>::try_from(&s)?,
        score: mean.max(0.0),
    })
}

/// Paired fidelity: cosine similarity between the image made with the original encoder and the image made
/// with the trained encoder for the same clean prompt and seed (row i of each). Returns (per pair, mean).
pub fn paired_image_similarity(original: &Tensor, trained: &Tensor) -> Result<(Vec<f32>, f32)> {
    let s = paired_cosine(original, trained)?;
    let mean = s.mean(Kind::Float).double_value(&[]) as f32;
    Ok((Vec::<f32>::try_from(&s)?, mean))
}

/// `text_projection.weight` [projection_dim, hidden] of a full CLIP checkpoint folder (e.g.
/// `openai/clip-vit-large-patch14`): what puts an SD text encoder "inside `CLIPTextModelWithProjection`".
pub fn load_text_projection(clip_dir: &Path) -> Result<Tensor> {
    let file = SafetensorsFile::open(&weight_file(clip_dir, "model")?)?;
    if !file.names().iter().any(|n| n == "text_projection.weight") {
        input_bail!(
            "{} has no `text_projection.weight`: give a full CLIPModel or CLIPTextModelWithProjection checkpoint for the text projection",
            file.path().display()
        );
    }
    Ok(file.tensor("text_projection.weight")?.to_kind(Kind::Float))
}

/// Projected text embeddings [N, projection_dim] (f32) of `prompts` with the encoder under test. With
/// `projection` (a `text_projection.weight`), the encoder's pooled output goes through it (replacing the
/// encoder's own projection, as Rickrolling's evaluation puts the poisoned encoder inside the CLIP
/// model's `CLIPTextModelWithProjection`); without, the encoder must carry its own `text_projection`.
pub fn text_embeds(
    encoder: &TextEncoder,
    projection: Option<&Tensor>,
    prompts: &[impl AsRef<str>],
    batch_size: usize,
) -> Result<Tensor> {
    if prompts.is_empty() {
        input_bail!("no prompts to encode");
    }
    if projection.is_none() && !encoder.has_projection() {
        input_bail!(
            "the text encoder has no `text_projection`: give the CLIP model whose projection to use (the encoder under test is evaluated inside CLIPTextModelWithProjection)"
        );
    }
    if let Some(p) = projection {
        let s = p.size();
        if s.len() != 2 || s[1] != encoder.config.hidden_size {
            input_bail!(
                "the text projection has shape {s:?} but the text encoder's hidden size is {}: the projection belongs to another CLIP model",
                encoder.config.hidden_size
            );
        }
    }
    let mut out = vec![];
    for chunk in prompts.chunks(batch_size.max(1)) {
        let (_, o) = tch::no_grad(|| encoder.encode(chunk, false))?;
        let e = match projection {
            Some(p) => o
                .pooled_output
                .to_kind(Kind::Float)
                .matmul(&p.to_device(encoder.device()).to_kind(Kind::Float).tr()),
            None => o.text_embeds.expect("checked above").to_kind(Kind::Float),
        };
        out.push(e.to_device(Device::Cpu));
    }
    Ok(Tensor::cat(&out, 0))
}

/// Top-k accuracies of zero-shot classification.
#[derive(Debug, Clone, PartialEq)]
pub struct ZeroShotAccuracy {
    /// `acc@1`: share of images whose true class ranks first.
    pub acc1: f64,
    /// `acc@5`: share whose true class is among the 5 highest logits (all classes when fewer than 5).
    pub acc5: f64,
    /// Images counted.
    pub n: usize,
}

/// CLIP's zero-shot classifier: per class, the mean of the L2-normalised text embeddings of every
/// template filled with the class name, renormalised; logits = 100 · cos.
#[derive(Debug)]
pub struct ZeroShotClassifier {
    /// [K, D] f32, rows L2-normalised.
    pub class_embeds: Tensor,
    pub class_names: Vec<String>,
}

/// Fill a prompt template: `{}` is replaced by the class name (CLIP's templates, `"a photo of a {}."`);
/// a template without `{}` gets the name appended after a space.
pub fn fill_template(template: &str, class_name: &str) -> String {
    if template.contains("{}") {
        template.replace("{}", class_name)
    } else {
        format!("{template} {class_name}")
    }
}

impl ZeroShotClassifier {
    /// Build from the encoder under test (see [`text_embeds`] for `projection`).
    pub fn build(
        encoder: &TextEncoder,
        projection: Option<&Tensor>,
        class_names: &[String],
        templates: &[String],
        batch_size: usize,
    ) -> Result<Self> {
        if class_names.is_empty() {
            input_bail!("zero-shot classification needs at least one class name");
        }
        let templates: Vec<String> = if templates.is_empty() {
            vec!["{}".into()]
        } else {
            templates.to_vec()
        };
        let mut rows = vec![];
        for name in class_names {
            let prompts: Vec<String> = templates.iter().map(|t| fill_template(t, name)).collect();
            let e = l2_normalize(&text_embeds(encoder, projection, &prompts, batch_size)?);
            rows.push(l2_normalize(&e.mean_dim(&[0i64][..], true, Kind::Float)));
        }
        Ok(Self {
            class_embeds: Tensor::cat(&rows, 0),
            class_names: class_names.to_vec(),
        })
    }

    /// From precomputed class embeddings [K, D] (normalised here).
    pub fn from_embeds(class_embeds: &Tensor, class_names: Vec<String>) -> Result<Self> {
        let (k, _) = check_2d(class_embeds, "class embeddings")?;
        if k as usize != class_names.len() {
            input_bail!("{k} class embeddings for {} class names", class_names.len());
        }
        Ok(Self {
            class_embeds: l2_normalize(class_embeds),
            class_names,
        })
    }

    /// 100 · cos(image, class) logits [N, K].
    pub fn logits(&self, image_embeds: &Tensor) -> Result<Tensor> {
        let (_, d) = check_2d(image_embeds, "image embeddings")?;
        let dk = self.class_embeds.size()[1];
        if d != dk {
            input_bail!("image embeddings are {d} wide but the class embeddings {dk}: the vision and text sides come from different CLIP models");
        }
        Ok(l2_normalize(image_embeds).matmul(&self.class_embeds.tr()) * 100.0)
    }

    /// `acc@1` and `acc@5` on images with true class indices `labels`.
    pub fn accuracy(&self, image_embeds: &Tensor, labels: &[i64]) -> Result<ZeroShotAccuracy> {
        let logits = self.logits(image_embeds)?;
        let (n, k) = logits.size2()?;
        if labels.len() as i64 != n {
            input_bail!("{} labels for {n} images", labels.len());
        }
        if let Some(l) = labels.iter().find(|&&l| l < 0 || l >= k) {
            input_bail!("label {l} is outside the {k} classes");
        }
        let top = logits.topk(k.min(5), -1, true, true).1;
        let top: Vec<Vec<i64>> = Vec::<Vec<i64>>::try_from(&top)?;
        let (mut c1, mut c5) = (0usize, 0usize);
        for (row, &l) in top.iter().zip(labels) {
            c1 += (row[0] == l) as usize;
            c5 += row.contains(&l) as usize;
        }
        Ok(ZeroShotAccuracy {
            acc1: c1 as f64 / n as f64,
            acc5: c5 as f64 / n as f64,
            n: n as usize,
        })
    }
}

/// The zero-shot attack-success judge (`asr` with judge `clip`).
#[derive(Debug, Clone, PartialEq)]
pub struct AttackJudgement {
    /// cos(triggered image, backdoor target text) per image.
    pub target_sim: Vec<f32>,
    /// cos(triggered image, clean prompt) per image.
    pub clean_sim: Vec<f32>,
    /// Success: the target outranks the clean prompt (`target_sim > clean_sim`).
    pub success: Vec<bool>,
    /// With candidates: the target is CLIP's top-1 among target, clean prompt and the candidates.
    pub top1: Option<Vec<bool>>,
    /// Share of successes (using `top1` when candidates were given, else `success`).
    pub asr: f64,
}

/// Judge triggered images: row i of `image_embeds` was generated from a triggered prompt whose backdoor
/// target is row i of `target_embeds` and whose clean version is row i of `clean_embeds`. `candidates`
/// [K, D] (e.g. other class or target texts) adds the stricter top-1 criterion.
pub fn attack_success(
    image_embeds: &Tensor,
    target_embeds: &Tensor,
    clean_embeds: &Tensor,
    candidates: Option<&Tensor>,
) -> Result<AttackJudgement> {
    check_pair(
        image_embeds,
        target_embeds,
        "image embeddings",
        "target text embeddings",
    )?;
    check_pair(
        image_embeds,
        clean_embeds,
        "image embeddings",
        "clean text embeddings",
    )?;
    let t = paired_cosine(image_embeds, target_embeds)?;
    let c = paired_cosine(image_embeds, clean_embeds)?;
    let target_sim = Vec::<f32>::try_from(&t)?;
    let clean_sim = Vec::<f32>::try_from(&c)?;
    let success: Vec<bool> = target_sim
        .iter()
        .zip(&clean_sim)
        .map(|(t, c)| t > c)
        .collect();
    let top1 = match candidates {
        None => None,
        Some(cands) => {
            let (_, d) = check_2d(cands, "candidate text embeddings")?;
            if d != image_embeds.size()[1] {
                input_bail!(
                    "candidate text embeddings are {d} wide, image embeddings {}",
                    image_embeds.size()[1]
                );
            }
            let other = l2_normalize(image_embeds)
                .matmul(&l2_normalize(cands).tr())
                .amax([-1], false);
            let best_other = Vec::<f32>::try_from(&other.maximum(&c))?;
            Some(
                target_sim
                    .iter()
                    .zip(&best_other)
                    .map(|(t, o)| t > o)
                    .collect::<Vec<bool>>(),
            )
        }
    };
    let hits = top1.as_ref().unwrap_or(&success);
    let asr = hits.iter().filter(|&&s| s).count() as f64 / hits.len() as f64;
    Ok(AttackJudgement {
        target_sim,
        clean_sim,
        success,
        top1,
        asr,
    })
}

fn mean_cov(x: &Tensor) -> (Tensor, Tensor) {
    let n = x.size()[0];
    let mu = x.mean_dim(&[0i64][..], true, Kind::Double);
    let xc = x - &mu;
    // numpy.cov(rowvar=False): unbiased (N − 1).
    let cov = xc.tr().matmul(&xc) / ((n - 1) as f64);
    (mu.squeeze_dim(0), cov)
}

/// Fréchet distance between Gaussians fitted to two feature sets [N, D] and [M, D] (f64):
/// |μ₁ − μ₂|² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂), with tr √(Σ₁Σ₂) = Σ √λ(√Σ₁ Σ₂ √Σ₁) from symmetric
/// eigen-decompositions (negative round-off eigenvalues clamped to 0). Needs at least 2 rows each.
pub fn frechet_distance(x: &Tensor, y: &Tensor) -> Result<f64> {
    let (n, d) = check_2d(x, "first feature set")?;
    let (m, e) = check_2d(y, "second feature set")?;
    if d != e {
        input_bail!(
            "feature sets differ in width ({d} vs {e}): use the same feature extractor for both"
        );
    }
    if n < 2 || m < 2 {
        input_bail!("Fréchet distance needs at least 2 images per set (got {n} and {m})");
    }
    let x = x.to_device(Device::Cpu).to_kind(Kind::Double);
    let y = y.to_device(Device::Cpu).to_kind(Kind::Double);
    let (mu1, s1) = mean_cov(&x);
    let (mu2, s2) = mean_cov(&y);
    let (l1, v1) = s1.linalg_eigh("L");
    let sqrt_s1 = v1
        .matmul(&(l1.clamp_min(0.0).sqrt().diag_embed(0, -2, -1)))
        .matmul(&v1.tr());
    let mid = sqrt_s1.matmul(&s2).matmul(&sqrt_s1);
    let mid = (&mid + mid.tr()) / 2.0;
    let tr_covmean = mid
        .linalg_eigvalsh("L")
        .clamp_min(0.0)
        .sqrt()
        .sum(Kind::Double);
    let diff = (&mu1 - &mu2).square().sum(Kind::Double);
    let fd = diff + s1.trace() + s2.trace() - tr_covmean * 2.0;
    Ok(fd.double_value(&[]))
}

/// CMMD's kernel bandwidth σ and scale (google-research/cmmd `distance.py`).
pub const CMMD_SIGMA: f64 = 10.0;
pub const CMMD_SCALE: f64 = 1000.0;

/// CMMD (Jayasumana et al., 2024): squared MMD with a Gaussian RBF kernel exp(−‖a − b‖² / 2σ²), σ = 10,
/// on L2-normalised embeddings, biased estimator (diagonals included) as the reference code computes
/// it, times 1000. Computed in f64.
pub fn cmmd(x: &Tensor, y: &Tensor) -> Result<f64> {
    let (_, d) = check_2d(x, "first embedding set")?;
    let (_, e) = check_2d(y, "second embedding set")?;
    if d != e {
        input_bail!(
            "embedding sets differ in width ({d} vs {e}): use the same CLIP model for both"
        );
    }
    let norm = |t: &Tensor| {
        let t = t.to_device(Device::Cpu).to_kind(Kind::Double);
        &t / t.norm_scalaropt_dim(2, [-1], true)
    };
    let (x, y) = (norm(x), norm(y));
    let gamma = 1.0 / (2.0 * CMMD_SIGMA * CMMD_SIGMA);
    let xs = (&x * &x).sum_dim_intlist(&[1i64][..], false, Kind::Double);
    let ys = (&y * &y).sum_dim_intlist(&[1i64][..], false, Kind::Double);
    let k = |a: &Tensor, b: &Tensor, an: &Tensor, bn: &Tensor| -> Tensor {
        let d2 = a.matmul(&b.tr()) * -2.0 + an.unsqueeze(1) + bn.unsqueeze(0);
        (d2 * -gamma).exp().mean(Kind::Double)
    };
    let v = (k(&x, &x, &xs, &xs) + k(&y, &y, &ys, &ys) - k(&x, &y, &xs, &ys) * 2.0) * CMMD_SCALE;
    Ok(v.double_value(&[]))
}
