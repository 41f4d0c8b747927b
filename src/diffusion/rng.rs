//! Gaussian noise drawn exactly as diffusers draws it from CPU generators, so a seed gives the same
//! initial latents (and ancestral noise) as `StableDiffusionPipeline(generator=...)` in Python.
//!
//! # The recipe
//! diffusers' `randn_tensor(shape, generator, device, dtype)` draws on the generator's device (CPU here)
//! and then moves the tensor to `device`:
//! - one generator `torch.Generator("cpu").manual_seed(s)`: a single `torch.randn(shape, generator=g)`
//!   for the whole batch; later draws (ancestral step noise) continue the same stream;
//! - a list of generators (one per image, `len == batch`): image `i` is
//!   `torch.randn((1, *shape[1:]), generator=gens[i])`, concatenated along dim 0; each generator's
//!   stream continues independently across later draws. A list of one behaves as a single generator.
//!
//! A fresh `torch.Generator().manual_seed(s)` is the default CPU generator after `torch.manual_seed(s)`
//! (mt19937 seeded with `s`, no cached normal), and libtorch's CPU `randn` consumes the stream the same
//! way whichever generator it is given. tch exposes only the default generator (`tch::manual_seed`) and no
//! way to save or restore its state, so each [`DiffusersGenerator`] records the draws it has made and,
//! for every new draw, re-seeds the default generator, replays the earlier draws with the same shapes and
//! kinds, then draws. This is exact because the draws are deterministic in (seed, sequence of calls);
//! it costs O(k²) numbers over k draws (about 21M normals for 50 ancestral steps of one 512×512 image, a
//! fraction of a second). Since tch links the same libtorch as the venv's torch, the numbers are the
//! ones Python draws on this machine (CPU `randn` may differ between CPU capabilities, e.g. AVX2 vs
//! AVX-512, in Python too).
//!
//! Side effects: the process-wide CPU generator (and, through `torch::manual_seed`, CUDA's) is left
//! re-seeded. Each seed-and-replay runs under [`crate::models::init::seeded`], the process-wide lock
//! every seeded draw in clipdoor takes (model inits included); code outside clipdoor that draws from
//! the default generator on another thread could still interleave with a replay.
use tch::{Device, Kind, Tensor};

use crate::error::Result;
use crate::input_bail;
use crate::models::init::seeded;

/// One emulated `torch.Generator("cpu").manual_seed(seed)`: its seed and the draws made so far.
#[derive(Debug, Clone)]
struct SeededStream {
    seed: u64,
    history: Vec<(Vec<i64>, Kind)>,
}

impl SeededStream {
    fn randn(&mut self, shape: &[i64], kind: Kind) -> Tensor {
        // `torch.manual_seed` takes the seed's 64 bits; tch passes them as i64.
        let drawn = seeded(self.seed as i64, || {
            for (past_shape, past_kind) in &self.history {
                let _ = Tensor::randn(past_shape.as_slice(), (*past_kind, Device::Cpu));
            }
            Tensor::randn(shape, (kind, Device::Cpu))
        });
        self.history.push((shape.to_vec(), kind));
        drawn
    }
}

/// The `generator` argument of a diffusers pipeline: one CPU generator, or one per image.
#[derive(Debug, Clone)]
pub struct DiffusersGenerator {
    streams: Vec<SeededStream>,
    per_image: bool,
}

impl DiffusersGenerator {
    /// `torch.Generator("cpu").manual_seed(seed)`.
    pub fn single(seed: u64) -> Self {
        Self {
            streams: vec![SeededStream {
                seed,
                history: vec![],
            }],
            per_image: false,
        }
    }

    /// `[torch.Generator("cpu").manual_seed(s) for s in seeds]`: one generator per image of the batch.
    pub fn per_image(seeds: &[u64]) -> Result<Self> {
        if seeds.is_empty() {
            input_bail!("a list of generators needs at least one seed");
        }
        let streams = seeds
            .iter()
            .map(|&seed| SeededStream {
                seed,
                history: vec![],
            })
            .collect();
        // diffusers treats a list of one generator as that generator.
        Ok(Self {
            streams,
            per_image: seeds.len() > 1,
        })
    }

    /// `randn_tensor(shape, generator, device, dtype)`: drawn on the CPU, then moved to `device`.
    pub fn randn(&mut self, shape: &[i64], kind: Kind, device: Device) -> Result<Tensor> {
        if shape.iter().any(|&d| d < 0) {
            input_bail!("cannot draw noise of shape {shape:?}");
        }
        let drawn = if self.per_image {
            let batch = shape.first().copied().unwrap_or(0);
            if batch as usize != self.streams.len() {
                input_bail!(
                    "{} generators were given for a batch of {batch}: pass one seed per image",
                    self.streams.len()
                );
            }
            let mut one = shape.to_vec();
            one[0] = 1;
            let parts: Vec<Tensor> = self
                .streams
                .iter_mut()
                .map(|s| s.randn(&one, kind))
                .collect();
            Tensor::cat(&parts, 0)
        } else {
            self.streams[0].randn(shape, kind)
        };
        Ok(drawn.to_device(device))
    }

    /// Draw a tensor shaped like `like` (the step noise of ancestral schedulers) in `kind`.
    pub fn randn_like(&mut self, like: &Tensor, kind: Kind) -> Result<Tensor> {
        self.randn(&like.size(), kind, like.device())
    }

    /// The seeds, one per stream.
    pub fn seeds(&self) -> Vec<u64> {
        self.streams.iter().map(|s| s.seed).collect()
    }
}
