//! Timestep embeddings: diffusers' `Timesteps` (sinusoidal, no weights) and `TimestepEmbedding` (MLP).
use tch::{nn, nn::Module, Kind, Tensor};

use super::activation::DiffusersActivation;
use super::layers::{layer_norm, linear, param};

/// `Timesteps`: `get_timestep_embedding` with diffusers' float32 arithmetic.
#[derive(Debug)]
pub struct Timesteps {
    num_channels: i64,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f64,
}

impl Timesteps {
    pub fn new(num_channels: i64, flip_sin_to_cos: bool, downscale_freq_shift: f64) -> Self {
        Self {
            num_channels,
            flip_sin_to_cos,
            downscale_freq_shift,
        }
    }

    /// `timesteps`: [N] (any numeric kind, fractional allowed) -> [N, num_channels] float32.
    pub fn forward(&self, timesteps: &Tensor) -> Tensor {
        let half = self.num_channels / 2;
        let dev = timesteps.device();
        // Same operation order and dtype as diffusers so the embedding matches bit for bit.
        let exponent = Tensor::arange(half, (Kind::Float, dev)) * (-(10000f64.ln()));
        let exponent = exponent / (half as f64 - self.downscale_freq_shift);
        let freqs = exponent.exp();
        let emb = timesteps.to_kind(Kind::Float).unsqueeze(1) * freqs.unsqueeze(0);
        let (sin, cos) = (emb.sin(), emb.cos());
        let emb = if self.flip_sin_to_cos {
            Tensor::cat(&[cos, sin], -1)
        } else {
            Tensor::cat(&[sin, cos], -1)
        };
        if self.num_channels % 2 == 1 {
            emb.constant_pad_nd([0, 1, 0, 0])
        } else {
            emb
        }
    }
}

/// `TimestepEmbedding`: `linear_1` -> act -> `linear_2` (-> optional `post_act`).
#[derive(Debug)]
pub struct TimestepEmbedding {
    linear_1: nn::Linear,
    linear_2: nn::Linear,
    act: DiffusersActivation,
    post_act: Option<DiffusersActivation>,
}

impl TimestepEmbedding {
    pub fn new(
        p: nn::Path,
        in_channels: i64,
        time_embed_dim: i64,
        act: DiffusersActivation,
        post_act: Option<DiffusersActivation>,
    ) -> Self {
        Self {
            linear_1: linear(&p / "linear_1", in_channels, time_embed_dim, true),
            linear_2: linear(&p / "linear_2", time_embed_dim, time_embed_dim, true),
            act,
            post_act,
        }
    }

    pub fn forward(&self, sample: &Tensor) -> Tensor {
        let x = self
            .linear_2
            .forward(&self.act.apply(&self.linear_1.forward(sample)));
        match self.post_act {
            Some(a) => a.apply(&x),
            None => x,
        }
    }
}

/// `AttentionPooling` (DeepFloyd IF, as diffusers copies it): one query, the mean token plus a learned
/// `positional_embedding`, attends over itself and every token; no output projection.
#[derive(Debug)]
pub struct AttentionPooling {
    positional_embedding: Tensor,
    k_proj: nn::Linear,
    q_proj: nn::Linear,
    v_proj: nn::Linear,
    num_heads: i64,
}

impl AttentionPooling {
    pub fn new(p: nn::Path, num_heads: i64, embed_dim: i64) -> Self {
        let std = 1.0 / (embed_dim as f64).sqrt();
        Self {
            positional_embedding: param(
                &p,
                "positional_embedding",
                &[1, embed_dim],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: std,
                },
            ),
            k_proj: linear(&p / "k_proj", embed_dim, embed_dim, true),
            q_proj: linear(&p / "q_proj", embed_dim, embed_dim, true),
            v_proj: linear(&p / "v_proj", embed_dim, embed_dim, true),
            num_heads,
        }
    }

    /// `x` [B, L, W] -> [B, W].
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (b, w) = (x.size()[0], x.size()[2]);
        let (h, dph) = (self.num_heads, w / self.num_heads);
        // [B, len, W] -> [B*heads, dph, len], diffusers' `shape`.
        let split = |t: Tensor| {
            t.view([b, -1, h, dph])
                .transpose(1, 2)
                .reshape([b * h, -1, dph])
                .transpose(1, 2)
        };
        let class_token =
            x.mean_dim(1, true, x.kind()) + self.positional_embedding.to_kind(x.kind());
        let all = Tensor::cat(&[&class_token, x], 1);
        let q = split(self.q_proj.forward(&class_token));
        let k = split(self.k_proj.forward(&all));
        let v = split(self.v_proj.forward(&all));
        // Scale both sides by dph^-1/4 as diffusers does (steadier in f16), softmax in f32.
        let scale = 1.0 / (dph as f64).sqrt().sqrt();
        let weight = (q * scale).transpose(1, 2).bmm(&(k * scale)); // [B*h, 1, len]
        let weight = weight
            .to_kind(Kind::Float)
            .softmax(-1, Kind::Float)
            .to_kind(x.kind());
        let a = v.bmm(&weight.transpose(1, 2)); // [B*h, dph, 1]
        a.reshape([b, -1, 1]).transpose(1, 2).select(1, 0)
    }
}

/// `TextTimeEmbedding` (`addition_embed_type: "text"`): LayerNorm -> [`AttentionPooling`] -> Linear
/// -> LayerNorm; the UNet adds it to the time embedding, so the text reaches every resnet block.
#[derive(Debug)]
pub struct TextTimeEmbedding {
    norm1: nn::LayerNorm,
    pool: AttentionPooling,
    proj: nn::Linear,
    norm2: nn::LayerNorm,
}

impl TextTimeEmbedding {
    pub fn new(p: nn::Path, encoder_dim: i64, time_embed_dim: i64, num_heads: i64) -> Self {
        Self {
            norm1: layer_norm(&p / "norm1", encoder_dim, 1e-5),
            pool: AttentionPooling::new(&p / "pool", num_heads, encoder_dim),
            proj: linear(&p / "proj", encoder_dim, time_embed_dim, true),
            norm2: layer_norm(&p / "norm2", time_embed_dim, 1e-5),
        }
    }

    /// Encoder states [B, L, D] -> [B, time_embed_dim].
    pub fn forward(&self, hidden_states: &Tensor) -> Tensor {
        let x = self.pool.forward(&self.norm1.forward(hidden_states));
        self.norm2.forward(&self.proj.forward(&x))
    }
}
