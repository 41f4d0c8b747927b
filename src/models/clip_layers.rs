//! The transformer layers transformers' text and vision CLIP towers share (`CLIPAttention`,
//! `CLIPMLP`, `CLIPEncoderLayer`): one implementation, parameterised by [`LayerDims`] and the mask.
use tch::{nn, nn::Module, Kind, Tensor};

use super::activation::Activation;
use super::init::random;

/// The sizes a CLIP encoder layer needs, taken from a text or vision config.
#[derive(Debug, Clone, Copy)]
pub struct LayerDims {
    pub hidden: i64,
    pub heads: i64,
    pub intermediate: i64,
    pub act: Activation,
    pub eps: f64,
}

/// Which positions attend to which.
#[derive(Debug, Clone, Copy)]
pub enum Mask<'a> {
    /// Every position attends to every position (vision).
    Full,
    /// Causal (text, no padding mask).
    Causal,
    /// An additive float mask broadcastable to [B, heads, T, T].
    Additive(&'a Tensor),
}

/// The size checks every CLIP config makes: each named size positive, heads dividing the width.
pub fn check_sizes(
    sizes: &[(&str, i64)],
    hidden: i64,
    heads: i64,
) -> std::result::Result<(), String> {
    if let Some((k, v)) = sizes.iter().find(|(_, v)| *v <= 0) {
        return Err(format!("`{k}` must be positive, got {v}"));
    }
    if heads <= 0 || hidden % heads != 0 {
        return Err(format!(
            "`hidden_size` {hidden} is not divisible by `num_attention_heads` {heads}"
        ));
    }
    Ok(())
}

pub(crate) fn linear(p: nn::Path, i: i64, o: i64, bias: bool) -> nn::Linear {
    // transformers' CLIP init: normal(0, 0.02) weights and zero biases (scaled by initializer_factor=1).
    let cfg = nn::LinearConfig {
        ws_init: random(nn::Init::Randn {
            mean: 0.,
            stdev: 0.02,
        }),
        bs_init: Some(nn::Init::Const(0.)),
        bias,
    };
    nn::linear(p, i, o, cfg)
}

pub(crate) fn layer_norm(p: nn::Path, dim: i64, eps: f64) -> nn::LayerNorm {
    nn::layer_norm(
        p,
        vec![dim],
        nn::LayerNormConfig {
            eps,
            ..Default::default()
        },
    )
}

/// `scaled_dot_product_attention` of `[B, heads, T, head_dim]` queries, keys and values. On an H200
/// with libtorch 2.11, under CUDA autocast (bf16 or f16) *and* no_grad, the fused op handed back an
/// undefined tensor (seen 2026-12-04: the bf16 teacher forward of every training run failed at step
/// 0 with "Expected a proper Tensor but got None"); the same call with gradients on, or outside
/// autocast, was fine. Where that happens the attention is computed step by step instead.
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, mask: Mask<'_>) -> Tensor {
    let (attn_mask, causal) = match mask {
        Mask::Full => (None, false),
        Mask::Causal => (None, true),
        Mask::Additive(m) => (Some(m), false),
    };
    let y = Tensor::scaled_dot_product_attention(q, k, v, attn_mask, 0.0, causal, None, false);
    if y.defined() {
        y
    } else {
        attend_step_by_step(q, k, v, mask)
    }
}

/// softmax(q kᵀ / √d + mask) v, as the math backend of `scaled_dot_product_attention` computes it
/// (softmax in f32, then back to the values' kind).
pub fn attend_step_by_step(q: &Tensor, k: &Tensor, v: &Tensor, mask: Mask<'_>) -> Tensor {
    let head_dim = *q.size().last().expect("[.., T, head_dim] queries");
    let scores = q.matmul(&k.transpose(-2, -1)) * (1.0 / (head_dim as f64).sqrt());
    let scores = match mask {
        Mask::Full => scores,
        Mask::Causal => {
            let (tq, tk) = (q.size()[q.dim() - 2], k.size()[k.dim() - 2]);
            let above = Tensor::ones([tq, tk], (Kind::Bool, q.device())).triu(1);
            scores.masked_fill(&above, f64::NEG_INFINITY)
        }
        Mask::Additive(m) => scores + m,
    };
    scores.softmax(-1, Kind::Float).to_kind(v.kind()).matmul(v)
}

/// `CLIPAttention`: multi-head self-attention through `scaled_dot_product_attention`.
#[derive(Debug)]
pub struct CLIPAttention {
    q_proj: nn::Linear,
    k_proj: nn::Linear,
    v_proj: nn::Linear,
    out_proj: nn::Linear,
    heads: i64,
    head_dim: i64,
}

impl CLIPAttention {
    pub fn new(p: nn::Path, d: &LayerDims) -> Self {
        let h = d.hidden;
        Self {
            q_proj: linear(&p / "q_proj", h, h, true),
            k_proj: linear(&p / "k_proj", h, h, true),
            v_proj: linear(&p / "v_proj", h, h, true),
            out_proj: linear(&p / "out_proj", h, h, true),
            heads: d.heads,
            head_dim: h / d.heads,
        }
    }

    pub fn forward(&self, x: &Tensor, mask: Mask<'_>) -> Tensor {
        let (b, t, _) = x.size3().expect("[B, T, C] input");
        let split = |y: Tensor| y.view([b, t, self.heads, self.head_dim]).transpose(1, 2);
        let q = split(self.q_proj.forward(x));
        let k = split(self.k_proj.forward(x));
        let v = split(self.v_proj.forward(x));
        let y = attend(&q, &k, &v, mask);
        self.out_proj.forward(
            &y.transpose(1, 2)
                .reshape([b, t, self.heads * self.head_dim]),
        )
    }
}

/// `CLIPMLP`: fc1 → activation → fc2.
#[derive(Debug)]
pub struct CLIPMLP {
    fc1: nn::Linear,
    fc2: nn::Linear,
    act: Activation,
}

impl CLIPMLP {
    pub fn new(p: nn::Path, d: &LayerDims) -> Self {
        Self {
            fc1: linear(&p / "fc1", d.hidden, d.intermediate, true),
            fc2: linear(&p / "fc2", d.intermediate, d.hidden, true),
            act: d.act,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.fc2.forward(&self.act.apply(&self.fc1.forward(x)))
    }
}

/// `CLIPEncoderLayer`: pre-norm attention and MLP blocks with residuals.
#[derive(Debug)]
pub struct CLIPEncoderLayer {
    self_attn: CLIPAttention,
    layer_norm1: nn::LayerNorm,
    mlp: CLIPMLP,
    layer_norm2: nn::LayerNorm,
}

impl CLIPEncoderLayer {
    pub fn new(p: nn::Path, d: &LayerDims) -> Self {
        Self {
            self_attn: CLIPAttention::new(&p / "self_attn", d),
            layer_norm1: layer_norm(&p / "layer_norm1", d.hidden, d.eps),
            mlp: CLIPMLP::new(&p / "mlp", d),
            layer_norm2: layer_norm(&p / "layer_norm2", d.hidden, d.eps),
        }
    }

    pub fn forward(&self, x: &Tensor, mask: Mask<'_>) -> Tensor {
        let x = x + self.self_attn.forward(&self.layer_norm1.forward(x), mask);
        &x + self.mlp.forward(&self.layer_norm2.forward(&x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// The step-by-step fallback is the fused op's function, for each mask (f32, and under bf16
    /// autocast on the CPU, where the fused op still answers).
    #[test]
    fn step_by_step_attention_matches_the_fused_op() {
        crate::models::init::seeded(3, || {
            let q = Tensor::randn([2, 3, 7, 8], (Kind::Float, Device::Cpu));
            let k = Tensor::randn([2, 3, 7, 8], (Kind::Float, Device::Cpu));
            let v = Tensor::randn([2, 3, 7, 8], (Kind::Float, Device::Cpu));
            let additive = Tensor::randn([2, 1, 7, 7], (Kind::Float, Device::Cpu));
            for mask in [Mask::Full, Mask::Causal, Mask::Additive(&additive)] {
                let fused = attend(&q, &k, &v, mask);
                let steps = attend_step_by_step(&q, &k, &v, mask);
                let d = (&fused - &steps).abs().max().double_value(&[]);
                assert!(d < 1e-5, "{mask:?}: {d}");
            }
            let in_bf16 = crate::torch_ext::autocast(Device::Cpu, Kind::BFloat16, || {
                attend_step_by_step(&q, &k, &v, Mask::Causal)
            })
            .unwrap();
            let f32 = attend(&q, &k, &v, Mask::Causal);
            let d = (&in_bf16.to_kind(Kind::Float) - &f32)
                .abs()
                .max()
                .double_value(&[]);
            assert!(d < 5e-2, "bf16 autocast: {d}");
        });
    }
}
