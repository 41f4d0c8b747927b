//! diffusers' `DiagonalGaussianDistribution`: the encoder's posterior over latents.
use tch::Tensor;

#[derive(Debug)]
pub struct DiagonalGaussianDistribution {
    /// [B, 2 * latent_channels, h, w]: mean and log-variance concatenated on channels.
    pub parameters: Tensor,
    pub mean: Tensor,
    /// Clamped to [-30, 20] as diffusers does.
    pub logvar: Tensor,
    pub std: Tensor,
    pub var: Tensor,
}

impl DiagonalGaussianDistribution {
    pub fn new(parameters: Tensor) -> Self {
        let parts = parameters.chunk(2, 1);
        let mean = parts[0].shallow_clone();
        let logvar = parts[1].clamp(-30.0, 20.0);
        let std = (&logvar * 0.5).exp();
        let var = logvar.exp();
        Self {
            parameters,
            mean,
            logvar,
            std,
            var,
        }
    }

    /// `mean + std * noise` with noise from tch's global generator (`tch::manual_seed`).
    pub fn sample(&self) -> Tensor {
        self.sample_with_noise(&self.mean.randn_like())
    }

    /// `mean + std * noise` with noise the caller drew (e.g. as diffusers' CPU generator draws it).
    pub fn sample_with_noise(&self, noise: &Tensor) -> Tensor {
        &self.mean
            + &self.std
                * noise
                    .to_kind(self.mean.kind())
                    .to_device(self.mean.device())
    }

    /// The most likely latent (the mean).
    pub fn mode(&self) -> Tensor {
        self.mean.shallow_clone()
    }
}
