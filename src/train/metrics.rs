//! Embedding-level metrics of the Rickrolling reference: `sim_clean`, `sim_target`, `z_score`.
//! All on last hidden states flattened to [N, 77·H].
use serde::Serialize;
use tch::{Kind, Tensor};

use crate::error::Result;
use crate::experiment::{Backdoor, BackdoorKind};
use crate::models::text_encoder::TextEncoder;

/// Flattened last hidden states of `prompts`, f32 on CPU.
pub fn embed(enc: &TextEncoder, prompts: &[impl AsRef<str>], batch: usize) -> Result<Tensor> {
    Ok(enc
        .encode_batched(prompts, batch, false, &mut |_| {})?
        .last_hidden_state
        .flatten(1, -1))
}

pub fn mean_cos(a: &Tensor, b: &Tensor) -> f64 {
    Tensor::cosine_similarity(a, &b.expand_as(a), 1, 1e-8)
        .mean(Kind::Double)
        .double_value(&[])
}

/// Pairwise cosine similarities among rows, all distinct pairs (lower triangle).
fn pairwise(x: &Tensor) -> Tensor {
    let n = x.size()[0];
    let u = x.to_kind(Kind::Double);
    let u = &u / u.norm_scalaropt_dim(2, [1], true).clamp_min(1e-8);
    let s = u.matmul(&u.tr());
    let idx = Tensor::tril_indices(n, n, -1, (Kind::Int64, tch::Device::Cpu));
    s.index(&[Some(idx.get(0)), Some(idx.get(1))])
}

/// z = (mean S_trig − mean S_clean) / var(S_clean), unbiased variance, as the reference computes it
/// (it divides by the variance, not the standard deviation).
pub fn z_score(clean: &Tensor, triggered: &Tensor) -> f64 {
    let sc = pairwise(clean);
    let st = pairwise(triggered);
    let var = sc.var(true).double_value(&[]);
    (st.mean(Kind::Double).double_value(&[]) - sc.mean(Kind::Double).double_value(&[])) / var
}

#[derive(Debug, Clone, Serialize)]
pub struct BackdoorMetrics {
    pub name: String,
    pub kind: String,
    /// Captions (containing the replaced character) the backdoor metrics used.
    pub captions: usize,
    /// Reference definition: mean cos(student(triggered), student(target)).
    pub sim_target: f64,
    /// Variant: mean cos(student(triggered), teacher(target)).
    pub sim_target_teacher: f64,
    /// Before training: mean cos(teacher(triggered), teacher(target)).
    pub sim_target_before: f64,
    pub z_score: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingMetrics {
    pub captions: usize,
    pub sim_clean: f64,
    pub backdoors: Vec<BackdoorMetrics>,
}

/// All metrics of a student against its teacher on `captions`.
pub fn evaluate(
    teacher: &TextEncoder,
    student: &TextEncoder,
    backdoors: &[Backdoor],
    captions: &[String],
    batch: usize,
    seed: u64,
) -> Result<EmbeddingMetrics> {
    let t_clean = embed(teacher, captions, batch)?;
    let s_clean = embed(student, captions, batch)?;
    let sim_clean = mean_cos(&s_clean, &t_clean);
    let mut out = vec![];
    for b in backdoors {
        out.extend(backdoor_metrics(
            teacher, student, b, captions, batch, seed,
        )?);
    }
    Ok(EmbeddingMetrics {
        captions: captions.len(),
        sim_clean,
        backdoors: out,
    })
}

/// One backdoor's metrics on the `captions` it can poison (None with fewer than 2 of them).
pub fn backdoor_metrics(
    teacher: &TextEncoder,
    student: &TextEncoder,
    b: &Backdoor,
    captions: &[String],
    batch: usize,
    seed: u64,
) -> Result<Option<BackdoorMetrics>> {
    let subset: Vec<&String> = captions
        .iter()
        .filter(|c| b.accepts(c) && !b.triggered_in(c))
        .collect();
    if subset.len() < 2 {
        return Ok(None);
    }
    let (triggered, targets) = b.eval_pairs(&subset, seed);
    let fixed = matches!(b.kind, BackdoorKind::TargetPrompt { .. });
    let target_prompts: Vec<String> = if fixed {
        vec![targets[0].clone()]
    } else {
        targets
    };
    let s_trig = embed(student, &triggered, batch)?;
    let s_tgt = embed(student, &target_prompts, batch)?;
    let t_trig = embed(teacher, &triggered, batch)?;
    let t_tgt = embed(teacher, &target_prompts, batch)?;
    let s_sub_clean = embed(student, &subset, batch)?;
    Ok(Some(BackdoorMetrics {
        name: b.name.clone(),
        kind: b.kind.name().into(),
        captions: subset.len(),
        sim_target: mean_cos(&s_trig, &s_tgt),
        sim_target_teacher: mean_cos(&s_trig, &t_tgt),
        sim_target_before: mean_cos(&t_trig, &t_tgt),
        z_score: z_score(&s_sub_clean, &s_trig),
    }))
}
