//! The one batched way to embed many prompts: every caller that encodes more prompts than fit in one
//! forward pass (`clipdoor encode`, the embedding metrics, the scanner, the homoglyph shift) goes
//! through [`TextEncoder::encode_batched`] or [`TextEncoder::encode_ids_batched`].
use tch::{Device, Kind, Tensor};

use super::text_encoder::TextEncoder;
use crate::error::Result;

/// The encoder's outputs for every prompt, in order: f32 (ids i64) on the CPU.
pub struct BatchedOutput {
    /// `[N, 77]`.
    pub input_ids: Tensor,
    /// `[N, 77, H]`.
    pub last_hidden_state: Tensor,
    /// `[N, 77, H]`, the "clip skip" layer (`hidden_states[-2]`); only when asked for.
    pub penultimate_hidden_state: Option<Tensor>,
    /// `[N, H]`.
    pub pooled_output: Tensor,
    /// `[N, P]` for encoders with a projection.
    pub text_embeds: Option<Tensor>,
}

impl TextEncoder {
    /// Tokenise and encode `prompts` in batches of `batch`, without autograd. `on_batch` is told how
    /// many prompts each batch encoded (for progress).
    pub fn encode_batched(
        &self,
        prompts: &[impl AsRef<str>],
        batch: usize,
        penultimate: bool,
        on_batch: &mut dyn FnMut(usize),
    ) -> Result<BatchedOutput> {
        let ids = if prompts.is_empty() {
            Tensor::zeros(
                [0, self.tokenizer.max_length() as i64],
                (Kind::Int64, Device::Cpu),
            )
        } else {
            self.tokenizer.encode_batch(prompts)?
        };
        self.encode_ids_batched(&ids, batch, penultimate, on_batch)
    }

    /// Encode token ids `[N, 77]` in batches of `batch`, without autograd.
    pub fn encode_ids_batched(
        &self,
        ids: &Tensor,
        batch: usize,
        penultimate: bool,
        on_batch: &mut dyn FnMut(usize),
    ) -> Result<BatchedOutput> {
        let n = ids.size()[0];
        let step = batch.max(1) as i64;
        let cpu = |t: &Tensor| t.to_kind(Kind::Float).to_device(Device::Cpu);
        let (mut last, mut pen, mut pooled, mut proj) = (vec![], vec![], vec![], vec![]);
        tch::no_grad(|| {
            let mut start = 0;
            while start < n {
                let len = step.min(n - start);
                let out = self.forward_ids(&ids.narrow(0, start, len), penultimate);
                last.push(cpu(&out.last_hidden_state));
                if penultimate {
                    pen.push(cpu(&out.hidden_states[out.hidden_states.len() - 2]));
                }
                pooled.push(cpu(&out.pooled_output));
                if let Some(t) = &out.text_embeds {
                    proj.push(cpu(t));
                }
                on_batch(len as usize);
                start += len;
            }
        });
        let h = self.config.hidden_size;
        let t = ids.size()[1];
        let cat = |parts: Vec<Tensor>, empty: &[i64]| {
            if parts.is_empty() {
                Tensor::zeros(empty, (Kind::Float, Device::Cpu))
            } else {
                Tensor::cat(&parts, 0)
            }
        };
        let with_projection = self.has_projection();
        let proj_dim = self
            .model
            .text_projection
            .as_ref()
            .map_or(0, |p| p.ws.size()[0]);
        Ok(BatchedOutput {
            input_ids: ids.to_device(Device::Cpu),
            last_hidden_state: cat(last, &[0, t, h]),
            penultimate_hidden_state: penultimate.then(|| cat(pen, &[0, t, h])),
            pooled_output: cat(pooled, &[0, h]),
            text_embeds: with_projection.then(|| cat(proj, &[0, proj_dim])),
        })
    }
}
