//! Timestep embeddings: diffusers' `Timesteps` (sinusoidal, no weights) and `TimestepEmbedding` (MLP).
use tch::{nn, nn::Module, Kind, Tensor};

use super::activation::DiffusersActivation;
use super::layers::linear;

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
