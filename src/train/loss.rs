//! The Rickrolling distances, each on embeddings flattened to [B, 77·H] (reference `losses.py`).
use tch::{Kind, Tensor};

pub use crate::settings::Distance;

impl Distance {
    /// Distance between `x` [B, ...] and `y` [B, ...] (or [1, ...], broadcast).
    pub fn apply(self, x: &Tensor, y: &Tensor) -> Tensor {
        let b = x.size()[0];
        let x = x.reshape([b, -1]).to_kind(Kind::Float);
        let y = y
            .reshape([y.size()[0], -1])
            .to_kind(Kind::Float)
            .expand_as(&x);
        match self {
            Self::Cosine => -Tensor::cosine_similarity(&x, &y, 1, 1e-8).mean(Kind::Float),
            Self::Mse => x.mse_loss(&y, tch::Reduction::Mean),
            Self::Mae => x.l1_loss(&y, tch::Reduction::Mean),
            Self::Poincare => {
                let l1 = |t: &Tensor| t / t.norm_scalaropt_dim(1, [1], true);
                let (u, v) = (l1(&x), l1(&y));
                let sq = |t: &Tensor| {
                    t.pow_tensor_scalar(2).sum_dim_intlist(
                        Some([1i64].as_slice()),
                        false,
                        Kind::Float,
                    )
                };
                let delta: Tensor =
                    sq(&(&u - &v)) * 2.0 / ((1.0 - sq(&u)) * (1.0 - sq(&v)) + 1e-10);
                (delta + 1.0).arccosh().mean(Kind::Float)
            }
        }
    }
}
