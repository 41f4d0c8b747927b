//! Layer constructors shared by the UNet and the VAE. `new` gives PyTorch's default random weights
//! (`nn.Linear` / `nn.Conv2d` `reset_parameters`: weight and bias uniform in ±1/√fan_in); while
//! loading a checkpoint ([`without_random_init`]) weights start at zero instead, because drawing ~860M
//! random numbers for an SD UNet that the file then overwrites costs seconds on a CPU.
use tch::nn;

use crate::models::init::random;
pub use crate::models::init::without_random_init;

/// A free parameter (`nn.Parameter`) drawn from `init`, zero while loading a checkpoint.
pub(crate) fn param(p: &nn::Path, name: &str, dims: &[i64], init: nn::Init) -> tch::Tensor {
    p.var(name, dims, random(init))
}

/// PyTorch's default init for a layer with `fan_in` inputs per output: `kaiming_uniform_(a=√5)` for
/// the weight and the same bound for the bias, i.e. uniform in ±1/√fan_in. (tch's own default,
/// Kaiming-uniform with the ReLU gain and a zero bias, draws weights √6 ≈ 2.45 times larger; a shapes
/// UNet started from it trained markedly slower, docs/shapes-world.md.)
fn torch_uniform(fan_in: i64) -> nn::Init {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    random(nn::Init::Uniform {
        lo: -bound,
        up: bound,
    })
}

pub(crate) fn linear(p: nn::Path, i: i64, o: i64, bias: bool) -> nn::Linear {
    nn::linear(
        p,
        i,
        o,
        nn::LinearConfig {
            ws_init: torch_uniform(i),
            bs_init: Some(torch_uniform(i)),
            bias,
        },
    )
}

pub(crate) fn conv2d(p: nn::Path, i: i64, o: i64, k: i64, stride: i64, padding: i64) -> nn::Conv2D {
    let d = nn::ConvConfig::default();
    nn::conv2d(
        p,
        i,
        o,
        k,
        nn::ConvConfig {
            stride,
            padding,
            ws_init: torch_uniform(i * k * k),
            bs_init: torch_uniform(i * k * k),
            ..d
        },
    )
}

pub(crate) fn group_norm(p: nn::Path, groups: i64, channels: i64, eps: f64) -> nn::GroupNorm {
    nn::group_norm(
        p,
        groups,
        channels,
        nn::GroupNormConfig {
            eps,
            ..Default::default()
        },
    )
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
