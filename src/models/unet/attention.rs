//! diffusers' `Attention` (with `AttnProcessor2_0`), `FeedForward`/`GEGLU`, `BasicTransformerBlock` and
//! the continuous-input `Transformer2DModel`.
use tch::{nn, nn::Module, Kind, Tensor};

use super::layers::{conv2d, group_norm, layer_norm, linear};

/// Tensor names of the projections. diffusers' current names, or the ones VAEs saved before
/// diffusers 0.14 (`query`/`key`/`value`/`proj_attn`, same shapes) so such files load unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionNames {
    #[default]
    Current,
    Legacy,
}

impl AttentionNames {
    fn q_k_v_out(self) -> [&'static str; 4] {
        match self {
            Self::Current => ["to_q", "to_k", "to_v", "to_out.0"],
            Self::Legacy => ["query", "key", "value", "proj_attn"],
        }
    }
}

/// Constructor arguments of `Attention` (diffusers' names).
#[derive(Debug, Clone)]
pub struct AttentionConfig {
    pub query_dim: i64,
    /// `None`: self-attention (keys/values from `query_dim`).
    pub cross_attention_dim: Option<i64>,
    pub heads: i64,
    pub dim_head: i64,
    /// Bias of `to_q`/`to_k`/`to_v` (`out_bias` of `to_out.0` is always on here).
    pub bias: bool,
    /// diffusers' `upcast_attention || upcast_softmax`: in f16/bf16, attention runs in float32.
    pub upcast: bool,
    /// `norm_num_groups` and `eps` of the optional input GroupNorm (`group_norm`, the VAE's).
    pub group_norm: Option<(i64, f64)>,
    pub residual_connection: bool,
    pub rescale_output_factor: f64,
    pub names: AttentionNames,
}

impl AttentionConfig {
    pub fn new(query_dim: i64, heads: i64, dim_head: i64) -> Self {
        Self {
            query_dim,
            cross_attention_dim: None,
            heads,
            dim_head,
            bias: false,
            upcast: false,
            group_norm: None,
            residual_connection: false,
            rescale_output_factor: 1.0,
            names: AttentionNames::Current,
        }
    }
}

/// `Attention`: multi-head (cross-)attention through `scaled_dot_product_attention`.
#[derive(Debug)]
pub struct Attention {
    group_norm: Option<nn::GroupNorm>,
    to_q: nn::Linear,
    to_k: nn::Linear,
    to_v: nn::Linear,
    to_out: nn::Linear,
    heads: i64,
    upcast: bool,
    residual_connection: bool,
    rescale_output_factor: f64,
}

impl Attention {
    pub fn new(p: nn::Path, c: &AttentionConfig) -> Self {
        let inner = c.heads * c.dim_head;
        let kv_dim = c.cross_attention_dim.unwrap_or(c.query_dim);
        let [q, k, v, out] = c.names.q_k_v_out();
        Self {
            group_norm: c
                .group_norm
                .map(|(g, eps)| group_norm(&p / "group_norm", g, c.query_dim, eps)),
            to_q: linear(&p / q, c.query_dim, inner, c.bias),
            to_k: linear(&p / k, kv_dim, inner, c.bias),
            to_v: linear(&p / v, kv_dim, inner, c.bias),
            // `to_out` is a ModuleList (Linear, Dropout): the Linear is `to_out.0`.
            to_out: linear(
                out.split('.').fold(p.clone(), |p, s| &p / s),
                inner,
                c.query_dim,
                true,
            ),
            heads: c.heads,
            upcast: c.upcast,
            residual_connection: c.residual_connection,
            rescale_output_factor: c.rescale_output_factor,
        }
    }

    /// `x`: [B, T, C] or [B, C, H, W] (the VAE's spatial attention); `context`: [B, S, D] encoder
    /// states for cross-attention, `None` for self-attention. Returns the shape of `x`.
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Tensor {
        let spatial = x.dim() == 4;
        let size = x.size();
        let h = if spatial {
            x.flatten(2, 3).transpose(1, 2)
        } else {
            x.shallow_clone()
        };
        let h = match &self.group_norm {
            Some(gn) => gn.forward(&h.transpose(1, 2)).transpose(1, 2),
            None => h,
        };
        let ctx = context.unwrap_or(&h);
        let b = h.size()[0];
        let split = |y: Tensor| {
            y.view([b, -1, self.heads, y.size()[2] / self.heads])
                .transpose(1, 2)
        };
        let (q, k, v) = (
            split(self.to_q.forward(&h)),
            split(self.to_k.forward(ctx)),
            split(self.to_v.forward(ctx)),
        );
        let kind = q.kind();
        // diffusers' upcast_attention/upcast_softmax: its SDPA processor relies on the fused kernels'
        // float32 softmax; computing in float32 here gives that precision on every backend.
        let reduced = matches!(kind, Kind::Half | Kind::BFloat16);
        let y = if self.upcast && reduced {
            let f = |t: &Tensor| t.to_kind(Kind::Float);
            Tensor::scaled_dot_product_attention(
                &f(&q),
                &f(&k),
                &f(&v),
                None::<Tensor>,
                0.0,
                false,
                None,
                false,
            )
            .to_kind(kind)
        } else {
            Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                None::<Tensor>,
                0.0,
                false,
                None,
                false,
            )
        };
        let y = self.to_out.forward(&y.transpose(1, 2).flatten(2, 3));
        let y = if spatial {
            y.transpose(1, 2).reshape(size.as_slice())
        } else {
            y
        };
        let y = if self.residual_connection { y + x } else { y };
        if self.rescale_output_factor == 1.0 {
            y
        } else {
            y / self.rescale_output_factor
        }
    }
}

/// `GEGLU`: `proj` to twice the width, then `value * gelu(gate)`.
#[derive(Debug)]
pub struct GEGLU {
    proj: nn::Linear,
}

impl GEGLU {
    pub fn new(p: nn::Path, dim_in: i64, dim_out: i64) -> Self {
        Self {
            proj: linear(&p / "proj", dim_in, dim_out * 2, true),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let parts = self.proj.forward(x).chunk(2, -1);
        &parts[0] * parts[1].gelu("none")
    }
}

/// `FeedForward` with the `geglu` activation (the only one `Transformer2DModel` gives SD's blocks):
/// `net.0` = GEGLU, `net.1` = Dropout, `net.2` = Linear.
#[derive(Debug)]
pub struct FeedForward {
    geglu: GEGLU,
    out: nn::Linear,
}

impl FeedForward {
    pub fn new(p: nn::Path, dim: i64) -> Self {
        let inner = dim * 4;
        let net = &p / "net";
        Self {
            geglu: GEGLU::new(&net / 0, dim, inner),
            out: linear(&net / 2, inner, dim, true),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.out.forward(&self.geglu.forward(x))
    }
}

/// Arguments `Transformer2DModel` hands its blocks.
#[derive(Debug, Clone)]
pub struct TransformerConfig {
    pub heads: i64,
    pub dim_head: i64,
    pub cross_attention_dim: i64,
    pub only_cross_attention: bool,
    pub upcast_attention: bool,
}

/// `BasicTransformerBlock` (layer_norm variant): self-attention, cross-attention, GEGLU feed-forward,
/// each pre-normed with a residual.
#[derive(Debug)]
pub struct BasicTransformerBlock {
    norm1: nn::LayerNorm,
    attn1: Attention,
    norm2: nn::LayerNorm,
    attn2: Attention,
    norm3: nn::LayerNorm,
    ff: FeedForward,
    only_cross_attention: bool,
}

impl BasicTransformerBlock {
    pub fn new(p: nn::Path, dim: i64, c: &TransformerConfig) -> Self {
        let attn = |cross: Option<i64>| AttentionConfig {
            cross_attention_dim: cross,
            upcast: c.upcast_attention,
            ..AttentionConfig::new(dim, c.heads, c.dim_head)
        };
        let attn1_cross = c.only_cross_attention.then_some(c.cross_attention_dim);
        Self {
            norm1: layer_norm(&p / "norm1", dim, 1e-5),
            attn1: Attention::new(&p / "attn1", &attn(attn1_cross)),
            norm2: layer_norm(&p / "norm2", dim, 1e-5),
            attn2: Attention::new(&p / "attn2", &attn(Some(c.cross_attention_dim))),
            norm3: layer_norm(&p / "norm3", dim, 1e-5),
            ff: FeedForward::new(&p / "ff", dim),
            only_cross_attention: c.only_cross_attention,
        }
    }

    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Tensor {
        let ctx1 = self.only_cross_attention.then_some(context);
        let x = self.attn1.forward(&self.norm1.forward(x), ctx1) + x;
        let x = self.attn2.forward(&self.norm2.forward(&x), Some(context)) + x;
        self.ff.forward(&self.norm3.forward(&x)) + x
    }
}

/// 1x1 conv (SD 1.x) or Linear (SD 2.x, `use_linear_projection`) for `proj_in`/`proj_out`.
#[derive(Debug)]
enum Projection {
    Conv(nn::Conv2D),
    Linear(nn::Linear),
}

impl Projection {
    fn new(p: nn::Path, i: i64, o: i64, linear_projection: bool) -> Self {
        if linear_projection {
            Self::Linear(linear(p, i, o, true))
        } else {
            Self::Conv(conv2d(p, i, o, 1, 1, 0))
        }
    }
}

/// `Transformer2DModel` on continuous inputs: GroupNorm, `proj_in`, transformer blocks over the
/// H*W tokens, `proj_out`, residual.
#[derive(Debug)]
pub struct Transformer2DModel {
    norm: nn::GroupNorm,
    proj_in: Projection,
    transformer_blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

impl Transformer2DModel {
    pub fn new(
        p: nn::Path,
        in_channels: i64,
        num_layers: i64,
        groups: i64,
        use_linear_projection: bool,
        c: &TransformerConfig,
    ) -> Self {
        let inner = c.heads * c.dim_head;
        let blocks = &p / "transformer_blocks";
        Self {
            // Fixed eps 1e-6 in diffusers, independent of the UNet's norm_eps.
            norm: group_norm(&p / "norm", groups, in_channels, 1e-6),
            proj_in: Projection::new(&p / "proj_in", in_channels, inner, use_linear_projection),
            transformer_blocks: (0..num_layers)
                .map(|i| BasicTransformerBlock::new(&blocks / i, inner, c))
                .collect(),
            proj_out: Projection::new(&p / "proj_out", inner, in_channels, use_linear_projection),
        }
    }

    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Tensor {
        let (b, _, h, w) = x.size4().expect("[B, C, H, W] input");
        let n = self.norm.forward(x);
        let tokens = |t: &Tensor| t.permute([0, 2, 3, 1]).reshape([b, h * w, -1]);
        let mut t = match &self.proj_in {
            Projection::Conv(c) => tokens(&c.forward(&n)),
            Projection::Linear(l) => l.forward(&tokens(&n)),
        };
        for block in &self.transformer_blocks {
            t = block.forward(&t, context);
        }
        let image = |t: &Tensor| t.reshape([b, h, w, -1]).permute([0, 3, 1, 2]).contiguous();
        let out = match &self.proj_out {
            Projection::Conv(c) => c.forward(&image(&t)),
            Projection::Linear(l) => image(&l.forward(&t)),
        };
        out + x
    }
}
