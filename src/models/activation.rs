//! Activations by their transformers `ACT2FN` names.
use tch::Tensor;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    QuickGelu,
    Gelu,
    GeluTanh,
    Silu,
}

impl Activation {
    pub fn parse(name: &str) -> std::result::Result<Self, String> {
        Ok(match name {
            "quick_gelu" => Self::QuickGelu,
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => Self::GeluTanh,
            "silu" | "swish" => Self::Silu,
            other => {
                return Err(format!(
                    "unsupported activation `{other}` (known: quick_gelu, gelu, gelu_new, silu)"
                ))
            }
        })
    }

    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            // transformers QuickGELUActivation: x * sigmoid(1.702 x)
            Self::QuickGelu => x * (x * 1.702).sigmoid(),
            Self::Gelu => x.gelu("none"),
            Self::GeluTanh => x.gelu("tanh"),
            Self::Silu => x.silu(),
        }
    }
}
