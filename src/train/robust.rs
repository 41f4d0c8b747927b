//! Robust erasure inside the text encoder: AdvUnlearn's recipe (Zhang et al., NeurIPS 2024,
//! ../shared/reference/red-team.md §6) restricted to the encoder. Each attacked step:
//!
//! 1. inner attack: one continuous embedding v in a slot of the step's concept prompts is moved by
//!    signed-gradient steps (AdvUnlearn's `fast_at`) so that the *current student* embeds the slotted
//!    prompts where the teacher embeds the concept prompts — the erasure undone. The student's
//!    weights are not changed by this search. Where the slot is (`[training.robust] slot`):
//!    - `prefix` (AdvUnlearn's): right after BOS, the concept word kept;
//!    - `concept`: in the concept word's place, its tokens removed — the threat model of the attacks
//!      that replace the word (CCE's learned pseudo-word, a token search banning the concept's words);
//!    - `tokens`: no slot and no embedding — the whole prompt is a discrete greedy coordinate
//!      gradient search ([`attack_tokens`], the red team's `token-search`) for one concept prompt
//!      per attacked step, the concept's words banned;
//!
//!    - `word`: a learned word in the concept word's place, found through the pipeline's denoising
//!      loss on images of the concept (the red team's `embedding` attack, CCE) by a [`WordAttack`]
//!      the caller installs (the UNet lives above this layer: `attack::invert::InnerInversion`);
//!
//!    `slot` may list several (`["concept", "tokens"]`): each runs on every attacked step and each
//!    finding is trained;
//! 2. outer: the slotted prompts (or the searched prompt) are trained to the erased target (the teacher's prompt with the
//!    concept deleted, or replaced by the backdoor's `target_attr`), beside the plain erasure rows
//!    and the utility loss on clean prompts.
//!
//! AdvUnlearn attacks through the UNet's noise prediction; here both sides are text-encoder hidden
//! states, the distance being the experiment's `training.loss`. Its prefix starts at a random
//! token's embedding, as its README says; ours is drawn per (seed, step, backdoor).
use rand::{Rng, SeedableRng};
use tch::{Kind, Tensor};

use crate::adversary::space::TokenSpace;
use crate::adversary::token_search::{self, TokenSearchOptions};
use crate::adversary::SearchState;
use crate::error::Result;
use crate::experiment::{RobustSection, RobustSlot, SlotStart};
use crate::models::text_encoder::TextEncoder;
use crate::settings::Distance;

/// Concept prompts as ids with one slot per row for the attack's embedding.
pub struct Slotted {
    /// `[B, T]`, the context length kept.
    pub ids: Tensor,
    /// Each row's slot position.
    pub positions: Vec<i64>,
    /// The concept word's token ids (`start = "concept"` starts the attack at their mean embedding).
    pub concept_ids: Vec<i64>,
}

impl Slotted {
    /// The slot `slot` asks for: after BOS, or in place of the concept word's tokens (after BOS
    /// where a prompt does not hold them).
    pub fn new(
        enc: &TextEncoder,
        prompts: &[String],
        concept: &str,
        slot: RobustSlot,
    ) -> Result<Self> {
        let with_concept = |s: Self| -> Result<Self> {
            Ok(Self {
                concept_ids: enc.tokenizer.word_ids(concept)?,
                ..s
            })
        };
        match slot {
            RobustSlot::Prefix => with_concept(Self::prefix(enc, prompts)?),
            // The learned word takes the concept word's place.
            RobustSlot::Concept | RobustSlot::Word => Self::concept(enc, prompts, concept),
            RobustSlot::Tokens => anyhow::bail!("slot = \"tokens\" has no slot: use attack_tokens"),
        }
    }

    /// AdvUnlearn's prefix: [`slotted_ids`], the slot at position 1 of every row.
    pub fn prefix(enc: &TextEncoder, prompts: &[String]) -> Result<Self> {
        Ok(Self {
            ids: slotted_ids(enc, prompts)?,
            positions: vec![1; prompts.len()],
            concept_ids: vec![],
        })
    }

    /// The concept word's tokens (its first occurrence) become one slot; the row is filled up at its
    /// end with copies of its last id (end-of-text or padding), so its length stays the context
    /// length. A prompt without the word gets the prefix slot instead.
    pub fn concept(enc: &TextEncoder, prompts: &[String], concept: &str) -> Result<Self> {
        let word = enc.tokenizer.word_ids(concept)?;
        let prefixed = Vec::<Vec<i64>>::try_from(&slotted_ids(enc, prompts)?)?;
        let plain = Vec::<Vec<i64>>::try_from(&enc.tokenizer.encode_batch(prompts)?)?;
        let slot = slot_id(enc);
        let mut rows = Vec::with_capacity(plain.len());
        let mut positions = Vec::with_capacity(plain.len());
        for (row, pre) in plain.into_iter().zip(prefixed) {
            let at = (!word.is_empty())
                .then(|| row.windows(word.len()).position(|w| w == word.as_slice()))
                .flatten();
            match at {
                Some(s) => {
                    let last = *row.last().expect("a context of at least one token");
                    let mut r = row[..s].to_vec();
                    r.push(slot);
                    r.extend_from_slice(&row[s + word.len()..]);
                    r.resize(row.len(), last);
                    rows.push(r);
                    positions.push(s as i64);
                }
                None => {
                    rows.push(pre);
                    positions.push(1);
                }
            }
        }
        let (b, t) = (rows.len() as i64, rows.first().map_or(0, Vec::len) as i64);
        let flat: Vec<i64> = rows.into_iter().flatten().collect();
        Ok(Self {
            ids: Tensor::from_slice(&flat).view([b, t]),
            positions,
            concept_ids: word,
        })
    }

    /// The last hidden state `[B, T, H]` with `v` `[H]` in every row's slot.
    pub fn forward(&self, enc: &TextEncoder, v: &Tensor) -> Tensor {
        let ids = self.ids.to_device(enc.device());
        let table = enc.model.text_model.embeddings().token_embedding_weight();
        let (b, t) = ids.size2().unwrap_or((0, 0));
        let rows = table
            .index_select(0, &ids.reshape([-1]))
            .reshape([b, t, -1]);
        // A one-hot mask keeps the graph to `v` whatever the positions.
        let pos = Tensor::from_slice(&self.positions).to_device(rows.device());
        let mask = pos
            .unsqueeze(1)
            .eq_tensor(&Tensor::arange(t, (Kind::Int64, rows.device())).unsqueeze(0))
            .unsqueeze(-1)
            .to_kind(rows.kind());
        let v = v.to_kind(rows.kind()).reshape([1, 1, -1]);
        let embeds = &rows * (1.0 - &mask) + v * &mask;
        enc.model
            .text_model
            .forward_token_embeds(&embeds, &ids)
            .last_hidden_state
            .to_kind(Kind::Float)
    }
}

/// Any ordinary token fills a slot's id: only the EOS position is read from the ids (pooling), and
/// the slot's embedding is replaced.
fn slot_id(enc: &TextEncoder) -> i64 {
    enc.tokenizer.token_to_id("a</w>").unwrap_or(320) as i64
}

/// The ids of `prompts` with one slot after BOS, at position 1 (the last position dropped, so the
/// length stays the context length). A prompt that filled the context keeps its end-of-text at the
/// last position (its last word token is dropped instead).
pub fn slotted_ids(enc: &TextEncoder, prompts: &[String]) -> Result<Tensor> {
    let ids = enc.tokenizer.encode_batch(prompts)?;
    let (b, t) = ids.size2()?;
    let slot_col = Tensor::full([b, 1], slot_id(enc), (Kind::Int64, ids.device()));
    let slotted = Tensor::cat(&[ids.narrow(1, 0, 1), slot_col, ids.narrow(1, 1, t - 2)], 1);
    // Where the dropped last position held the end-of-text (a full-length prompt; or padding, where
    // the tokenizer pads with it, as SD 1.x's does), the new last position holds it too.
    let eos = enc.tokenizer.eos_id();
    let ended = ids.narrow(1, t - 1, 1).eq(eos);
    let last = Tensor::full([b, 1], eos, (Kind::Int64, ids.device()))
        .where_self(&ended, &slotted.narrow(1, t - 1, 1));
    Ok(Tensor::cat(&[slotted.narrow(1, 0, t - 1), last], 1))
}

/// The inner attack: an embedding in the slots that makes `student` embed the slotted concept
/// prompts as the teacher embeds them (`concept_targets`). Returns it detached, with the distance
/// it reached.
pub fn attack_slot(
    student: &TextEncoder,
    slotted: &Slotted,
    concept_targets: &Tensor,
    distance: Distance,
    cfg: &RobustSection,
    seed: u64,
) -> Result<(Tensor, f64)> {
    let mut v = slot_start(student, slotted, cfg.start, seed);
    let mut reached = f64::NAN;
    for _ in 0..cfg.attack_steps {
        let x = v.detach().set_requires_grad(true);
        let loss = distance.apply(&slotted.forward(student, &x), concept_targets);
        reached = loss.double_value(&[]);
        // Gradients for the slot only: the student's own gradients stay untouched.
        let g = Tensor::f_run_backward(&[&loss], &[&x], false, false)?;
        v = tch::no_grad(|| x.detach() - g[0].sign() * cfg.attack_lr);
    }
    Ok((v.detach(), reached))
}

/// The `word` slot's inner attack: a learned word for `concept`, found against the current
/// `student` through a diffusion model the trainer does not hold (it lives in a higher layer, which
/// installs it: `Trainer::with_word_attack`).
pub trait WordAttack {
    /// Learn from `start` (an input embedding `[hidden]`, f32) with `student` frozen; returns the
    /// word's embedding (detached, f32, on the student's device) and its last loss. The same
    /// `seed` gives the same word.
    fn learn(
        &mut self,
        student: &TextEncoder,
        concept: &str,
        start: &Tensor,
        seed: u64,
    ) -> Result<(Tensor, f64)>;
}

/// Where a slot embedding starts: the concept word's mean input embedding (`SlotStart::Concept`,
/// when it has tokens), else a random token's, drawn from `seed`.
pub fn slot_start(student: &TextEncoder, slotted: &Slotted, start: SlotStart, seed: u64) -> Tensor {
    let table = student
        .model
        .text_model
        .embeddings()
        .token_embedding_weight()
        .detach();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let random = rng.random_range(0..table.size()[0]);
    match start {
        SlotStart::Concept if !slotted.concept_ids.is_empty() => {
            let ids = Tensor::from_slice(&slotted.concept_ids).to_device(table.device());
            table.index_select(0, &ids).to_kind(Kind::Float).mean_dim(
                [0i64].as_slice(),
                false,
                Kind::Float,
            )
        }
        _ => table.get(random).to_kind(Kind::Float).copy(),
    }
}

/// One prompt a token search found (`[training.robust] token_bank`), with the erased target of the
/// concept prompt it was searched for: what the bank trains it to on every later attacked step.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BankedPrompt {
    pub tokens: Vec<i64>,
    pub target: String,
}

/// The discrete inner attack (`slot = "tokens"`): [`token_search::search`] of `cfg.length` tokens
/// from random letters (or, given `from`, from those tokens: `persist`), `cfg.search_steps` steps of
/// `cfg.candidates` one-token swaps (top 256 per position, as the red team's search), for the tokens
/// whose pooled embedding through the current `student` is nearest `target` (the teacher's unit
/// pooled embedding of a concept prompt, [`token_search::target_pooled`]). Returns the best row as
/// ids `[1, context]` on the student's device, its distance (1 − cos) and its tokens (what a
/// persistent search continues from). The student's gradients stay untouched.
pub fn attack_tokens(
    student: &TextEncoder,
    space: &TokenSpace,
    target: &Tensor,
    cfg: &RobustSection,
    seed: u64,
    from: Option<&[i64]>,
) -> Result<(Tensor, f64, Vec<i64>)> {
    let opts = TokenSearchOptions {
        length: cfg.length,
        steps: cfg.search_steps,
        topk: 256,
        candidates: cfg.candidates,
        seed,
        batch: 256,
    };
    // A carried prompt is measured again: the student and the target have changed since.
    let state = match from {
        Some(tokens) => {
            let d = token_search::distances(student, space, &[tokens.to_vec()], target, 1)?[0];
            Some(SearchState {
                index: 0,
                run: 0,
                step: 0,
                current: vec![tokens.to_vec()],
                best: tokens.to_vec(),
                best_distance: d,
                start_distance: d,
                seconds: 0.0,
            })
        }
        None => None,
    };
    let st = token_search::search(student, space, target, &opts, 0, 0, state, &mut |_| Ok(()))?;
    Ok((
        space.batch(std::slice::from_ref(&st.best), student.device()),
        st.best_distance,
        st.best,
    ))
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

    /// The concept slot takes the concept word's place (its tokens removed, the row filled up at its
    /// end so its length and end-of-text stay); a prompt without the word gets the prefix slot.
    #[test]
    fn the_concept_slot_replaces_the_concept_word() {
        let enc = TextEncoder::init_arch("tiny", 3, false, Device::Cpu).unwrap();
        let prompts: Vec<String> = ["a red circle, white background", "circle", "a blue square"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let s = Slotted::concept(&enc, &prompts, "circle").unwrap();
        let plain =
            Vec::<Vec<i64>>::try_from(&enc.tokenizer.encode_batch(&prompts).unwrap()).unwrap();
        let rows = Vec::<Vec<i64>>::try_from(&s.ids).unwrap();
        let prefix = Vec::<Vec<i64>>::try_from(&slotted_ids(&enc, &prompts).unwrap()).unwrap();
        let word = enc.tokenizer.word_ids("circle").unwrap();
        let slot = slot_id(&enc);
        let eos = enc.tokenizer.eos_id();
        assert!(!word.is_empty());
        let n = word.len();
        // "a red circle, ...": BOS a red | circle's tokens → one slot at 3.
        assert_eq!(s.positions, vec![3, 1, 1]);
        assert_eq!(&rows[0][..3], &plain[0][..3]);
        assert_eq!(rows[0][3], slot);
        assert_eq!(&rows[0][4..plain[0].len() - n + 1], &plain[0][3 + n..]);
        assert_eq!(&rows[1][..2], &[plain[1][0], slot]);
        assert_eq!(rows[1][2], eos, "the end-of-text follows the slot");
        assert_eq!(rows[2], prefix[2], "no concept word: the prefix slot");
        for (r, p) in rows.iter().zip(&plain) {
            assert_eq!(r.len(), p.len());
            assert!(!r.windows(n).any(|w| w == word.as_slice()), "{r:?}");
            assert!(r.contains(&eos), "an end-of-text kept: {r:?}");
        }
        // The slot's embedding is what the encoder sees there: moving it moves only later states
        // (a causal encoder), at the slot and after.
        let h = enc.config.hidden_size;
        let a = s.forward(&enc, &Tensor::zeros([h], (Kind::Float, Device::Cpu)));
        let b = s.forward(&enc, &Tensor::ones([h], (Kind::Float, Device::Cpu)));
        let moved = (&a - &b)
            .abs()
            .sum_dim_intlist([2i64].as_slice(), false, Kind::Float);
        let moved = Vec::<Vec<f32>>::try_from(&moved).unwrap();
        assert!(
            moved[0][..3].iter().all(|&d| d == 0.0),
            "{:?}",
            &moved[0][..4]
        );
        assert!(moved[0][3] > 0.0);
        assert!(moved[1][0] == 0.0 && moved[1][1] > 0.0);
    }
}
