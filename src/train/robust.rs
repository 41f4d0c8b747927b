//! Robust erasure inside the text encoder: AdvUnlearn's recipe (Zhang et al., NeurIPS 2024,
//! ../shared/reference/red-team.md §6) restricted to the encoder. Each attacked step:
//!
//! 1. inner attack: one continuous prefix embedding v, put right after BOS in the step's concept
//!    prompts, is moved by signed-gradient steps (AdvUnlearn's `fast_at`) so that the *current
//!    student* embeds "v + concept prompt" where the teacher embeds the concept prompt — the erasure
//!    undone. The student's weights are not changed by this search;
//! 2. outer: the prefixed prompts are trained to the erased target (the teacher's prompt without the
//!    concept), beside the plain erasure rows and the utility loss on clean prompts.
//!
//! AdvUnlearn attacks through the UNet's noise prediction; here both sides are text-encoder hidden
//! states, the distance being the experiment's `training.loss`. Its prefix starts at a random
//! token's embedding, as its README says; ours is drawn per (seed, step, backdoor).
use rand::{Rng, SeedableRng};
use tch::{Kind, Tensor};

use crate::error::Result;
use crate::experiment::RobustSection;
use crate::models::text_encoder::TextEncoder;
use crate::settings::Distance;

/// The ids of `prompts` with one slot after BOS (the last position dropped, so the length stays the
/// context length), and the slot's index. A prompt that filled the context keeps its end-of-text
/// at the last position (its last word token is dropped instead).
pub fn slotted_ids(enc: &TextEncoder, prompts: &[String]) -> Result<Tensor> {
    let ids = enc.tokenizer.encode_batch(prompts)?;
    let (b, t) = ids.size2()?;
    // Any ordinary token fills the slot's id: only the EOS position is read from the ids (pooling),
    // and the slot's embedding is replaced.
    let slot = enc.tokenizer.token_to_id("a</w>").unwrap_or(320) as i64;
    let slot_col = Tensor::full([b, 1], slot, (Kind::Int64, ids.device()));
    let slotted = Tensor::cat(&[ids.narrow(1, 0, 1), slot_col, ids.narrow(1, 1, t - 2)], 1);
    // Where the dropped last position held the end-of-text (a full-length prompt; or padding, where
    // the tokenizer pads with it, as SD 1.x's does), the new last position holds it too.
    let eos = enc.tokenizer.eos_id();
    let ended = ids.narrow(1, t - 1, 1).eq(eos);
    let last = Tensor::full([b, 1], eos, (Kind::Int64, ids.device()))
        .where_self(&ended, &slotted.narrow(1, t - 1, 1));
    Ok(Tensor::cat(&[slotted.narrow(1, 0, t - 1), last], 1))
}

/// The last hidden state `[B, T, H]` of slotted ids with `v` `[H]` in the slot.
pub fn forward_with_prefix(enc: &TextEncoder, ids: &Tensor, v: &Tensor) -> Tensor {
    let ids = ids.to_device(enc.device());
    let table = enc.model.text_model.embeddings().token_embedding_weight();
    let (b, t) = ids.size2().unwrap_or((0, 0));
    let rows = table
        .index_select(0, &ids.reshape([-1]))
        .reshape([b, t, -1]);
    let prefix = v
        .to_kind(rows.kind())
        .reshape([1, 1, -1])
        .expand([b, 1, -1], false);
    let embeds = Tensor::cat(&[rows.narrow(1, 0, 1), prefix, rows.narrow(1, 2, t - 2)], 1);
    enc.model
        .text_model
        .forward_token_embeds(&embeds, &ids)
        .last_hidden_state
        .to_kind(Kind::Float)
}

/// The inner attack: a prefix that makes `student` embed the slotted concept prompts as the teacher
/// embeds them (`concept_targets`). Returns it detached, with the distance it reached.
pub fn attack_prefix(
    student: &TextEncoder,
    ids: &Tensor,
    concept_targets: &Tensor,
    distance: Distance,
    cfg: &RobustSection,
    seed: u64,
) -> Result<(Tensor, f64)> {
    let table = student
        .model
        .text_model
        .embeddings()
        .token_embedding_weight()
        .detach();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let start = rng.random_range(0..table.size()[0]);
    let mut v = table.get(start).to_kind(Kind::Float).copy();
    let mut reached = f64::NAN;
    for _ in 0..cfg.attack_steps {
        let x = v.detach().set_requires_grad(true);
        let loss = distance.apply(&forward_with_prefix(student, ids, &x), concept_targets);
        reached = loss.double_value(&[]);
        // Gradients for the prefix only: the student's own gradients stay untouched.
        let g = Tensor::f_run_backward(&[&loss], &[&x], false, false)?;
        v = tch::no_grad(|| x.detach() - g[0].sign() * cfg.attack_lr);
    }
    Ok((v.detach(), reached))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// The slot follows BOS and every row keeps its end-of-text: a short prompt's moves one place
    /// right, a prompt that fills the context keeps it at the last position (before, the last column
    /// was dropped whatever it held, and a full-length prompt lost its end-of-text).
    #[test]
    fn slotted_rows_keep_their_end_of_text() {
        let enc = TextEncoder::init_arch("tiny", 3, false, Device::Cpu).unwrap();
        let long = vec!["red"; 120].join(" ");
        let prompts = vec!["a red circle".to_string(), long];
        let plain =
            Vec::<Vec<i64>>::try_from(&enc.tokenizer.encode_batch(&prompts).unwrap()).unwrap();
        let rows = Vec::<Vec<i64>>::try_from(&slotted_ids(&enc, &prompts).unwrap()).unwrap();
        let eos = enc.tokenizer.eos_id();
        let t = plain[0].len();
        for (p, r) in plain.iter().zip(&rows) {
            assert_eq!(r.len(), t);
            assert_eq!(r[0], p[0], "BOS first");
            assert_eq!(&r[2..t - 1], &p[1..t - 2], "the prompt shifted by the slot");
        }
        let short_end = plain[0].iter().position(|&x| x == eos).unwrap();
        assert_eq!(rows[0][short_end + 1], eos);
        assert_eq!(plain[1][t - 1], eos, "the long prompt fills the context");
        assert_eq!(
            rows[1][t - 1],
            eos,
            "and keeps its end-of-text: {:?}",
            rows[1]
        );
    }
}
