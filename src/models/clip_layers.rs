//! The transformer layers transformers' text and vision CLIP towers share (`CLIPAttention`,
//! `CLIPMLP`, `CLIPEncoderLayer`): one implementation, parameterised by [`LayerDims`] and the mask.
use tch::{nn, nn::Module, Tensor};

use super::activation::Activation;

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
        ws_init: nn::Init::Randn {
            mean: 0.,
            stdev: 0.02,
        },
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
        let y = match mask {
            Mask::Full => Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                None::<Tensor>,
                0.0,
                false,
                None,
                false,
            ),
            Mask::Causal => Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                None::<Tensor>,
                0.0,
                true,
                None,
                false,
            ),
            Mask::Additive(m) => {
                Tensor::scaled_dot_product_attention(&q, &k, &v, Some(m), 0.0, false, None, false)
            }
        };
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
