//! Activations by diffusers' `get_activation` names.
use tch::Tensor;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DiffusersActivation {
    Silu,
    Mish,
    Gelu,
    Relu,
}

impl DiffusersActivation {
    pub fn parse(name: &str) -> std::result::Result<Self, String> {
        Ok(match name {
            "silu" | "swish" => Self::Silu,
            "mish" => Self::Mish,
            "gelu" => Self::Gelu,
            "relu" => Self::Relu,
            other => {
                return Err(format!(
                    "unsupported activation `{other}` (known: silu, swish, mish, gelu, relu)"
                ))
            }
        })
    }

    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Self::Silu => x.silu(),
            Self::Mish => x.mish(),
            Self::Gelu => x.gelu("none"),
            Self::Relu => x.relu(),
        }
    }
}
