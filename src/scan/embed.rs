//! Unit-length embeddings (flattened last hidden state, as the Rickrolling losses and metrics compare
//! them), each distinct token sequence encoded once, in batches.
use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

use crate::error::Result;
use crate::models::text_encoder::TextEncoder;

/// Token ids of each prompt (padded to the context length).
pub fn token_ids(enc: &TextEncoder, prompts: &[String]) -> Result<Vec<Vec<i64>>> {
    prompts.iter().map(|p| enc.tokenizer.encode(p)).collect()
}

/// `[N, 77·H]` unit rows (f32, CPU) for already tokenised prompts. Identical id sequences are
/// encoded once and copied.
pub fn embed_ids(enc: &TextEncoder, ids: &[Vec<i64>], batch: usize) -> Result<Tensor> {
    let mut slot: HashMap<&[i64], i64> = HashMap::new();
    let mut distinct: Vec<&[i64]> = vec![];
    let rows: Vec<i64> = ids
        .iter()
        .map(|seq| {
            *slot.entry(seq.as_slice()).or_insert_with(|| {
                distinct.push(seq.as_slice());
                distinct.len() as i64 - 1
            })
        })
        .collect();
    let width = enc.tokenizer.max_length() as i64;
    let flat: Vec<i64> = distinct.iter().flat_map(|s| s.iter().copied()).collect();
    let input = Tensor::from_slice(&flat).view([distinct.len() as i64, width]);
    let hidden = enc
        .encode_ids_batched(&input, batch, false, &mut |_| {})?
        .last_hidden_state
        .flatten(1, -1);
    if distinct.is_empty() {
        return Ok(Tensor::zeros([0, 0], (Kind::Float, Device::Cpu)));
    }
    let unique = unit_rows(&hidden);
    Ok(unique.index_select(0, &Tensor::from_slice(&rows)))
}

/// Tokenise and embed.
pub fn embed(enc: &TextEncoder, prompts: &[String], batch: usize) -> Result<Tensor> {
    embed_ids(enc, &token_ids(enc, prompts)?, batch)
}

pub fn unit_rows(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12)
}
