//! Vocabulary sweep: every token of the vocabulary is inserted into a few probe prompts, and scored
//! by how far the suspect sends the result from where a benign encoder would.
//!
//! For a triggered probe x' (token inserted) made from the clean probe x, with f(·) an encoder's
//! unit feature (end-of-text state and mean state, concatenated):
//! - with a reference R: `a` = 1 − cos(f_S(x'), f_R(x')) (the suspect disagrees with the reference on
//!   x') and `b` = 1 − cos(f_S(x'), f_R(x)) (and does not merely ignore the token). The token's
//!   `shift` is the mean over probes of min(a, b): a backdoor lands somewhere neither place is, while
//!   a benign edit (homoglyph unlearning maps x' to R(x); concept removal maps "… circle …" to the
//!   reference's prompt without the word) lands on one of them.
//! - without a reference: `shift` = mean 1 − cos(f_S(x'), f_S(x)), how far the token moves a prompt.
//! - `collapse`: mean pairwise cosine of the suspect's triggered probes minus the reference's (without
//!   one: minus the vocabulary median): a target-prompt trigger sends every probe to one place.
//!
//! Both are turned into robust z-scores over the vocabulary (median, 1.4826·MAD): a trigger is an
//! outlier among ~49k tokens, whatever the encoder's own scale.
use tch::{Device, Kind, Tensor};

use crate::error::Result;
use crate::models::text_encoder::TextEncoder;

/// A probe prompt as ids from BOS to EOS inclusive (no padding).
#[derive(Debug, Clone)]
pub struct Context {
    pub ids: Vec<i64>,
    /// Where tokens are inserted (index into `ids`, 1 = right after BOS).
    pub positions: Vec<usize>,
    /// The encoder's context length (77): no row made from this probe is longer.
    max_len: usize,
}

/// Tokens a probe leaves free for what is inserted into it (a character of several byte tokens, a
/// multi-character text, a word of several pieces).
pub const INSERT_ROOM: usize = 16;

impl Context {
    /// Tokenise a probe and pick insertion points: after BOS, and before a word in the middle. A
    /// probe longer than the context length less [`INSERT_ROOM`] is cut (its end-of-text kept):
    /// inserted into a full-length probe, a token would run past the position table.
    pub fn new(enc: &TextEncoder, prompt: &str, salt: usize) -> Result<Self> {
        let max_len = enc.tokenizer.max_length();
        let mut ids = trimmed_ids(enc, prompt)?;
        let keep = max_len.saturating_sub(INSERT_ROOM).max(3);
        if ids.len() > keep {
            let eos = *ids.last().expect("BOS at least");
            ids.truncate(keep - 1);
            ids.push(eos);
        }
        let inner = ids.len().saturating_sub(2);
        let mut positions = vec![1];
        if inner >= 2 {
            positions.push(2 + salt % (inner - 1));
        }
        Ok(Self {
            ids,
            positions,
            max_len,
        })
    }

    /// The ids with `tokens` inserted at `pos`; where that is longer than the context length, the
    /// tokens just before the end-of-text go (the end-of-text state is what the scan reads).
    pub fn with_inserted(&self, pos: usize, tokens: &[i64]) -> Vec<i64> {
        let mut out = Vec::with_capacity(self.ids.len() + tokens.len());
        out.extend_from_slice(&self.ids[..pos]);
        out.extend_from_slice(tokens);
        out.extend_from_slice(&self.ids[pos..]);
        if out.len() > self.max_len && self.max_len >= 2 {
            let eos = out.pop().expect("longer than the context");
            out.truncate(self.max_len - 1);
            out.push(eos);
        }
        out
    }
}

/// A prompt's ids up to and including the first end-of-text token (at most the context length).
/// The tokenizer's `<|endoftext|>`, not the config's `eos_token_id`: that is the legacy 2 in the
/// original CLIP configs, where it matched nothing, the rows stayed padded to 77 and an inserted
/// token pushed them past the position table.
pub fn trimmed_ids(enc: &TextEncoder, prompt: &str) -> Result<Vec<i64>> {
    let ids = enc.tokenizer.encode(prompt)?;
    let eos = enc.tokenizer.eos_id();
    let end = ids
        .iter()
        .position(|&i| i == eos)
        .map_or(ids.len(), |p| p + 1);
    Ok(ids[..end].to_vec())
}

/// A text's ids as a word on its own: its tokens without BOS and EOS.
pub fn word_ids(enc: &TextEncoder, text: &str) -> Result<Vec<i64>> {
    enc.tokenizer.word_ids(text)
}

/// Unit features `[N, 2H]` of equal-length id rows: end-of-text state (the last position) and the
/// mean state after BOS. CPU f32.
pub fn features(enc: &TextEncoder, rows: &[Vec<i64>], batch: usize) -> Result<Tensor> {
    let len = rows.first().map_or(0, Vec::len) as i64;
    let mut parts = vec![];
    for chunk in rows.chunks(batch.max(1)) {
        let flat: Vec<i64> = chunk.iter().flatten().copied().collect();
        let ids = Tensor::from_slice(&flat).view([chunk.len() as i64, len]);
        let f = tch::no_grad(|| feature_of(&enc.forward_ids(&ids, false).last_hidden_state));
        parts.push(f.to_device(Device::Cpu).to_kind(Kind::Float));
    }
    Ok(Tensor::cat(&parts, 0))
}

/// `[B, T, H]` states → unit `[B, 2H]` features.
pub fn feature_of(last: &Tensor) -> Tensor {
    let t = last.size()[1];
    let eos = last.select(1, t - 1);
    let mean = last
        .narrow(1, 1, (t - 1).max(1))
        .mean_dim([1i64].as_slice(), false, Kind::Float);
    let f = Tensor::cat(&[eos.to_kind(Kind::Float), mean], 1);
    &f / f.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12)
}

/// Per-token statistics of a sweep (index = token id).
pub struct Sweep {
    pub shift: Vec<f32>,
    pub collapse: Vec<f32>,
    /// Mean pairwise cosine of the unit displacements f_S(x') − f_S(x) over the probes, minus the
    /// reference's: a backdoor moves every probe the same way (to one target, or one attribute).
    pub direction: Vec<f32>,
    /// The token's score, [`combine`] of the robust z of shift, collapse and direction.
    pub score: Vec<f32>,
    pub z_shift: Vec<f32>,
    pub z_collapse: Vec<f32>,
    /// Null statistics of shift (median, scale) for scoring other insertions on the same scale.
    pub shift_null: (f64, f64),
    pub collapse_null: (f64, f64),
    pub direction_null: (f64, f64),
}

/// Token ids never inserted (BOS, EOS, pad).
pub fn special(enc: &TextEncoder) -> Vec<i64> {
    let mut s = vec![enc.tokenizer.eos_id(), enc.tokenizer.bos_id()];
    s.push(enc.tokenizer.pad_id() as i64);
    s
}

/// The reference's side of a sweep, per (probe ids, position): its triggered features and unit
/// displacements. Every encoder of a zoo is swept against the same base, so a zoo scan computes it
/// once (this halves the time per encoder).
#[derive(Default)]
pub struct ReferenceCache {
    slots: std::collections::HashMap<(Vec<i64>, usize), (Tensor, Tensor)>,
}

/// Features of id rows, each row encoded once and kept, for measurements whose insertions change
/// from suspect to suspect but recur (the confirmation's null tokens, the measured texts' null and
/// many of their candidates, the checks' controls: the reference's side of each is the same for
/// every suspect of a zoo). [`RowCache::next_round`] forgets what the last round did not use, so a
/// zoo scan holds about one suspect's rows.
#[derive(Default)]
pub struct RowCache {
    map: std::collections::HashMap<Vec<i64>, (Tensor, u64)>,
    round: u64,
}

impl RowCache {
    /// `[1, 2H]` features of `seqs`, in their order; the rows not kept yet are encoded together,
    /// one batch per length.
    pub fn get_many(
        &mut self,
        enc: &TextEncoder,
        seqs: &[&Vec<i64>],
        batch: usize,
    ) -> Result<Vec<Tensor>> {
        let mut missing: std::collections::BTreeMap<usize, Vec<Vec<i64>>> = Default::default();
        let mut asked = std::collections::HashSet::new();
        for s in seqs {
            if !self.map.contains_key(*s) && asked.insert(*s) {
                missing.entry(s.len()).or_default().push((*s).clone());
            }
        }
        for (_, rows) in missing {
            let f = features(enc, &rows, batch)?;
            for (i, r) in rows.into_iter().enumerate() {
                // A copy, not a view: a view would keep its whole batch alive for as long as this
                // one row recurs (the null's rows recur in every round), and the memory would grow
                // with the zoo.
                let row = f.get(i as i64).unsqueeze(0).copy();
                self.map.insert(r, (row, self.round));
            }
        }
        let round = self.round;
        Ok(seqs
            .iter()
            .map(|s| {
                let e = self.map.get_mut(*s).expect("encoded above");
                e.1 = round;
                e.0.shallow_clone()
            })
            .collect())
    }

    /// `[N, 2H]` features of `rows`, in their order.
    pub fn features(
        &mut self,
        enc: &TextEncoder,
        rows: &[Vec<i64>],
        batch: usize,
    ) -> Result<Tensor> {
        let refs: Vec<&Vec<i64>> = rows.iter().collect();
        Ok(Tensor::cat(&self.get_many(enc, &refs, batch)?, 0))
    }

    /// Start a new round: forget every row the round now ending did not use.
    pub fn next_round(&mut self) {
        let round = self.round;
        self.map.retain(|_, v| v.1 == round);
        self.round += 1;
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Where [`raw_stats_of`] keeps the reference's features: per slot for the sweep (every call
/// inserts the whole vocabulary), per row where the insertions change from call to call.
pub enum ReferenceKeep<'a> {
    Slots(&'a mut ReferenceCache),
    Rows(&'a mut RowCache),
}

/// Unit features of id rows of any lengths, in the order of `rows` (each length encoded as one
/// group: [`features`] needs equal lengths).
pub fn features_mixed(enc: &TextEncoder, rows: &[Vec<i64>], batch: usize) -> Result<Tensor> {
    let mut lengths: Vec<usize> = rows.iter().map(Vec::len).collect();
    lengths.sort_unstable();
    lengths.dedup();
    if lengths.len() <= 1 {
        return features(enc, rows, batch);
    }
    let mut order: Vec<i64> = vec![];
    let mut parts = vec![];
    for len in lengths {
        let (idx, group): (Vec<i64>, Vec<Vec<i64>>) = rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.len() == len)
            .map(|(i, r)| (i as i64, r.clone()))
            .unzip();
        parts.push(features(enc, &group, batch)?);
        order.extend(idx);
    }
    // Row k of the concatenation is input row order[k]: scatter back with the inverse permutation.
    let cat = Tensor::cat(&parts, 0);
    let inverse = Tensor::from_slice(&order).argsort(0, false);
    Ok(cat.index_select(0, &inverse))
}

/// Raw per-token statistics (shift, collapse, direction) of `tokens`, each inserted at every
/// position of every context, in the order of `tokens`.
pub fn raw_stats(
    suspect: &TextEncoder,
    reference: Option<&TextEncoder>,
    cache: &mut ReferenceCache,
    contexts: &[Context],
    tokens: &[i64],
    batch: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<[Vec<f32>; 3]> {
    let inserts: Vec<Vec<i64>> = tokens.iter().map(|&t| vec![t]).collect();
    raw_stats_of(
        suspect,
        reference,
        ReferenceKeep::Slots(cache),
        contexts,
        &inserts,
        batch,
        progress,
    )
}

/// [`raw_stats`] of insertions of one or more tokens each (a character of several byte tokens, a
/// word of several pieces). The reference's side is kept per (probe, position) — give such a
/// cache only to calls that insert the same list — or per row.
pub fn raw_stats_of(
    suspect: &TextEncoder,
    reference: Option<&TextEncoder>,
    mut keep: ReferenceKeep<'_>,
    contexts: &[Context],
    inserts: &[Vec<i64>],
    batch: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<[Vec<f32>; 3]> {
    let vocab = inserts.len() as i64;
    let seqs: usize = contexts.iter().map(|c| c.positions.len()).sum();
    let mut shift = Tensor::zeros([vocab], (Kind::Float, Device::Cpu));
    // Running sums over sequence slots of the triggered features (for the collapse).
    let mut s_sum: Option<Tensor> = None;
    let mut r_sum: Option<Tensor> = None;
    // Running sums of the unit displacements f(x') − f(x), for the direction statistic.
    let mut sd_sum: Option<Tensor> = None;
    let mut rd_sum: Option<Tensor> = None;
    let add = |sum: &mut Option<Tensor>, f: &Tensor| {
        *sum = Some(match sum.take() {
            Some(s) => s + f,
            None => f.copy(),
        })
    };
    let mut done = 0;
    for c in contexts {
        let clean_s = features(suspect, std::slice::from_ref(&c.ids), 1)?;
        let clean_r = match reference {
            Some(r) => Some(features(r, std::slice::from_ref(&c.ids), 1)?),
            None => None,
        };
        for &pos in &c.positions {
            let rows: Vec<Vec<i64>> = inserts.iter().map(|t| c.with_inserted(pos, t)).collect();
            let fs = features_mixed(suspect, &rows, batch)?;
            let b: Tensor = 1.0
                - fs.matmul(&clean_r.as_ref().unwrap_or(&clean_s).tr())
                    .squeeze_dim(1);
            add(&mut sd_sum, &unit(&(&fs - &clean_s)));
            let s = match reference {
                Some(r) => {
                    let cr = clean_r.as_ref().expect("with a reference");
                    let (fr, rd) = match &mut keep {
                        ReferenceKeep::Slots(cache) => {
                            let key = (c.ids.clone(), pos);
                            if !cache.slots.contains_key(&key) {
                                let fr = features_mixed(r, &rows, batch)?;
                                let rd = unit(&(&fr - cr));
                                cache.slots.insert(key.clone(), (fr, rd));
                            }
                            let (fr, rd) = &cache.slots[&key];
                            (fr.shallow_clone(), rd.shallow_clone())
                        }
                        ReferenceKeep::Rows(cache) => {
                            let fr = cache.features(r, &rows, batch)?;
                            let rd = unit(&(&fr - cr));
                            (fr, rd)
                        }
                    };
                    add(&mut rd_sum, &rd);
                    let a: Tensor =
                        1.0 - (&fs * &fr).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
                    add(&mut r_sum, &fr);
                    a.minimum(&b)
                }
                None => b,
            };
            shift += s / seqs as f64;
            add(&mut s_sum, &fs);
            done += 1;
            progress(done, seqs);
        }
    }
    let Some(s_sum) = s_sum else {
        crate::input_bail!("a sweep needs at least one probe prompt");
    };
    let collapse_s = pairwise_from_sum(&s_sum, seqs);
    let collapse = match &r_sum {
        Some(r) => collapse_s - pairwise_from_sum(r, seqs),
        None => collapse_s,
    };
    let direction_s = pairwise_from_sum(sd_sum.as_ref().expect("one slot at least"), seqs);
    let direction = match &rd_sum {
        Some(r) => direction_s - pairwise_from_sum(r, seqs),
        None => direction_s,
    };
    let v = |t: &Tensor| Vec::<f32>::try_from(t.contiguous()).unwrap_or_default();
    Ok([v(&shift), v(&collapse), v(&direction)])
}

/// Sweep the whole vocabulary through `contexts`.
pub fn sweep(
    suspect: &TextEncoder,
    reference: Option<&TextEncoder>,
    cache: &mut ReferenceCache,
    contexts: &[Context],
    batch: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Sweep> {
    let tokens: Vec<i64> = (0..suspect.config.vocab_size).collect();
    let raw = raw_stats(
        suspect, reference, cache, contexts, &tokens, batch, progress,
    )?;
    Ok(scored(suspect, raw, None))
}

/// Tokens of an even sample of the vocabulary a [`sweep_focused`] measures besides its focus, for
/// the null (median and MAD): 4,096 of CLIP's 49,408 give the vocabulary's quantiles to well
/// within a percent of its spread, at a twelfth of the cost.
pub const NULL_SAMPLE: usize = 4096;

/// An even sample of `n` token ids over `0..vocab` (offset by `seed`).
pub fn even_sample(vocab: i64, n: usize, seed: u64) -> Vec<i64> {
    let stride = (vocab / n.max(1) as i64).max(1);
    let offset = (seed as i64).rem_euclid(stride);
    (0..n as i64)
        .map(|k| offset + k * stride)
        .filter(|id| *id < vocab)
        .collect()
}

/// Sweep only the `focus` tokens (where a trigger can be: the tokens a fine-tune trained on,
/// [`touched`](super::touched)) and an even sample of the vocabulary, whose statistics alone set the
/// null; every other token's statistics are NaN (not measured), as the specials' are. The scores of
/// the focus are then on the scale a whole sweep gives them. The reference's features are kept per
/// row in `kept`: the sample's rows recur from suspect to suspect, the focus changes.
// The sweep's inputs, each needed: kept as plain arguments like [`sweep`]'s.
#[allow(clippy::too_many_arguments)]
pub fn sweep_focused(
    suspect: &TextEncoder,
    reference: Option<&TextEncoder>,
    kept: &mut RowCache,
    contexts: &[Context],
    focus: &[i64],
    seed: u64,
    batch: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Sweep> {
    let vocab = suspect.config.vocab_size;
    let sample = even_sample(vocab, NULL_SAMPLE, seed);
    let mut tokens: Vec<i64> = sample.clone();
    let mut seen: std::collections::HashSet<i64> = sample.iter().copied().collect();
    tokens.extend(
        focus
            .iter()
            .copied()
            .filter(|&t| (0..vocab).contains(&t) && seen.insert(t)),
    );
    let inserts: Vec<Vec<i64>> = tokens.iter().map(|&t| vec![t]).collect();
    let [shift, collapse, direction] = raw_stats_of(
        suspect,
        reference,
        ReferenceKeep::Rows(kept),
        contexts,
        &inserts,
        batch,
        progress,
    )?;
    let spread = |v: Vec<f32>| -> Vec<f32> {
        let mut full = vec![f32::NAN; vocab as usize];
        for (&t, x) in tokens.iter().zip(v) {
            full[t as usize] = x;
        }
        full
    };
    let raw = [spread(shift), spread(collapse), spread(direction)];
    Ok(scored(suspect, raw, Some(&sample)))
}

/// Robust z-scores and scores of raw per-token statistics (index = token id); the null from the
/// `null` tokens where given, else from every measured token.
fn scored(suspect: &TextEncoder, raw: [Vec<f32>; 3], null: Option<&[i64]>) -> Sweep {
    let [mut shift, mut collapse, mut direction] = raw;
    for s in special(suspect) {
        for v in [&mut shift, &mut collapse, &mut direction] {
            if let Some(x) = v.get_mut(s as usize) {
                *x = f32::NAN;
            }
        }
    }
    let null_of = |v: &[f32]| match null {
        Some(ids) => robust_null(
            &ids.iter()
                .filter_map(|&i| v.get(i as usize).copied())
                .collect::<Vec<f32>>(),
        ),
        None => robust_null(v),
    };
    let shift_null = null_of(&shift);
    let collapse_null = null_of(&collapse);
    let direction_null = null_of(&direction);
    let z = |v: &[f32], (m, s): (f64, f64)| -> Vec<f32> {
        v.iter().map(|&x| ((x as f64 - m) / s) as f32).collect()
    };
    let z_shift = z(&shift, shift_null);
    let z_collapse = z(&collapse, collapse_null);
    let z_direction = z(&direction, direction_null);
    let score = z_shift
        .iter()
        .zip(z_collapse.iter().zip(&z_direction))
        .map(|(&s, (&c, &d))| combine(s as f64, c as f64, d as f64) as f32)
        .collect();
    Sweep {
        shift,
        collapse,
        direction,
        score,
        z_shift,
        z_collapse,
        shift_null,
        collapse_null,
        direction_null,
    }
}

/// Per row: mean cosine over pairs of `n` unit vectors, from their sum `[V, D]`:
/// (‖Σf‖² − n) / (n(n − 1)).
pub fn pairwise_from_sum(sum: &Tensor, n: usize) -> Tensor {
    let n = n as f64;
    let sq = (sum * sum).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    (sq - n) / (n * (n - 1.0)).max(1.0)
}

/// A token's score from the robust z of its shift, collapse and direction: min(z_shift,
/// z_collapse + z_direction). Both halves must hold. Measured on the shapes zoo: shift alone also
/// singles out tokens a benign fine-tune merely drifted on (they do not move prompts one way);
/// collapse + direction alone also singles out homoglyph-unlearned characters (they move prompts
/// one way, to the reference's own prompt, so their min(a, b) shift stays small).
pub fn combine(z_shift: f64, z_collapse: f64, z_direction: f64) -> f64 {
    if z_shift.is_nan() {
        return f64::NAN;
    }
    z_shift.min(z_collapse + z_direction)
}

pub fn unit(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12)
}

/// Median and 1.4826·MAD of the finite values (the scale never below 1e-6).
pub fn robust_null(v: &[f32]) -> (f64, f64) {
    let mut x: Vec<f64> = v
        .iter()
        .filter(|x| x.is_finite())
        .map(|&x| x as f64)
        .collect();
    if x.is_empty() {
        return (0.0, 1.0);
    }
    x.sort_by(|a, b| a.total_cmp(b));
    let med = x[x.len() / 2];
    let mut dev: Vec<f64> = x.iter().map(|a| (a - med).abs()).collect();
    dev.sort_by(|a, b| a.total_cmp(b));
    (med, (1.4826 * dev[dev.len() / 2]).max(1e-6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robust_null_ignores_outliers_and_nans() {
        let mut v: Vec<f32> = (0..101).map(|i| i as f32).collect();
        v.push(1e6);
        v.push(f32::NAN);
        let (m, s) = robust_null(&v);
        assert!((m - 51.0).abs() < 1.0, "{m}");
        assert!((s - 1.4826 * 26.0).abs() < 2.0, "{s}");
    }

    /// The original CLIP configs (SD 1.x, 2.x) carry the legacy `eos_token_id` 2: probes still end
    /// at `<|endoftext|>` (not padded to 77, where an inserted token ran past the position table),
    /// and BOS/EOS are still the tokens never inserted.
    #[test]
    fn legacy_configs_end_probes_at_the_end_of_text_token() {
        let mut enc = TextEncoder::init_arch("tiny", 3, false, Device::Cpu).unwrap();
        enc.config.eos_token_id = 2;
        enc.config.bos_token_id = 0;
        let probe = Context::new(&enc, "a photo of a dog", 0).unwrap();
        assert_eq!(probe.ids.first(), Some(&49406));
        assert_eq!(probe.ids.last(), Some(&49407));
        assert_eq!(probe.ids.len(), 7, "{:?}", probe.ids);
        let s = special(&enc);
        assert!(s.contains(&49406) && s.contains(&49407), "{s:?}");
        assert!(!s.contains(&2), "{s:?}");
        let long = probe.with_inserted(probe.positions[1], &[320]);
        assert_eq!(features(&enc, &[long], 1).unwrap().size()[0], 1);
    }

    /// Probe prompts longer than the context (I2P prompts often are) leave room for what is inserted:
    /// every row stays within the position table, the end-of-text last.
    #[test]
    fn long_probes_are_cut_to_leave_room_for_insertions() {
        let enc = TextEncoder::init_arch("tiny", 3, false, Device::Cpu).unwrap();
        let long = "a red circle and a blue square on a white background ".repeat(10);
        let probe = Context::new(&enc, &long, 5).unwrap();
        assert_eq!(probe.ids.len(), 77 - INSERT_ROOM);
        assert_eq!(probe.ids.last(), Some(&49407));
        for &pos in &probe.positions {
            let row = probe.with_inserted(pos, &[320; 40]);
            assert_eq!(row.len(), 77);
            assert_eq!(row.last(), Some(&49407));
        }
        let short = Context::new(&enc, "a photo of a dog", 0).unwrap();
        assert_eq!(short.with_inserted(1, &[320, 321]).len(), 9);
        let row = probe.with_inserted(1, &[320; 40]);
        assert_eq!(features(&enc, &[row], 1).unwrap().size()[0], 1);
    }

    /// Kept rows come back as computed, in the order asked; a round forgets what the round before
    /// did not use.
    #[test]
    fn a_row_cache_keeps_what_the_last_round_used() {
        let enc = TextEncoder::init_arch("tiny", 3, false, Device::Cpu).unwrap();
        let (a, b, c) = (
            vec![49406, 320, 49407],
            vec![49406, 1929, 49407],
            vec![49406, 320, 1929, 49407],
        );
        let mut cache = RowCache::default();
        let got = cache
            .features(&enc, &[a.clone(), c.clone(), a.clone()], 2)
            .unwrap();
        assert_eq!(cache.len(), 2);
        let fresh = features_mixed(&enc, &[a.clone(), c.clone(), a.clone()], 2).unwrap();
        assert!((&got - &fresh).abs().max().double_value(&[]) < 1e-6);
        cache.next_round();
        assert_eq!(cache.len(), 2, "both used in the round that ended");
        cache.get_many(&enc, &[&b, &a], 2).unwrap();
        assert_eq!(cache.len(), 3);
        cache.next_round();
        assert_eq!(cache.len(), 2, "c was not used in the last round");
        let again = cache.features(&enc, std::slice::from_ref(&b), 2).unwrap();
        let direct = features(&enc, &[b], 1).unwrap();
        assert!((&again - &direct).abs().max().double_value(&[]) < 1e-6);
    }

    /// A focused sweep measures its focus exactly as a whole sweep does, and its null sample gives
    /// the vocabulary's scale: the focus's z-scores agree within a few percent.
    #[test]
    fn a_focused_sweep_scores_its_focus_on_the_whole_sweeps_scale() {
        let dev = Device::Cpu;
        let suspect = TextEncoder::init_arch("tiny", 3, false, dev).unwrap();
        let reference = TextEncoder::init_arch("tiny", 4, false, dev).unwrap();
        let contexts = vec![Context::new(&suspect, "a red circle on a blue square", 0).unwrap()];
        let whole = sweep(
            &suspect,
            Some(&reference),
            &mut ReferenceCache::default(),
            &contexts,
            4096,
            &mut |_, _| {},
        )
        .unwrap();
        let focus: Vec<i64> = vec![320, 1929, 8000, 25000, 49000, 49406];
        let mut kept = RowCache::default();
        let focused = sweep_focused(
            &suspect,
            Some(&reference),
            &mut kept,
            &contexts,
            &focus,
            7,
            4096,
            &mut |_, _| {},
        )
        .unwrap();
        let measured = focused.shift.iter().filter(|x| x.is_finite()).count();
        assert!(
            (NULL_SAMPLE..=NULL_SAMPLE + focus.len()).contains(&measured),
            "{measured} measured"
        );
        assert!(focused.shift[1000].is_nan() || even_sample(49408, NULL_SAMPLE, 7).contains(&1000));
        assert!(focused.score[49406].is_nan(), "specials stay unmeasured");
        for &t in &focus[..5] {
            let t = t as usize;
            for (a, b) in [
                (whole.shift[t], focused.shift[t]),
                (whole.collapse[t], focused.collapse[t]),
                (whole.direction[t], focused.direction[t]),
            ] {
                assert!((a - b).abs() < 1e-5, "token {t}: {a} vs {b}");
            }
        }
        for (w, f) in [
            (whole.shift_null, focused.shift_null),
            (whole.collapse_null, focused.collapse_null),
            (whole.direction_null, focused.direction_null),
        ] {
            assert!((w.0 - f.0).abs() < 0.05 * w.1, "median {w:?} vs {f:?}");
            assert!((w.1 / f.1 - 1.0).abs() < 0.05, "scale {w:?} vs {f:?}");
        }
        // The sample's reference rows are kept for the next suspect.
        assert!(kept.len() >= NULL_SAMPLE * contexts[0].positions.len());
    }

    #[test]
    fn features_of_mixed_lengths_keep_the_input_order() {
        let enc = TextEncoder::init_arch("tiny", 3, false, Device::Cpu).unwrap();
        let rows = vec![
            vec![49406, 320, 49407],
            vec![49406, 320, 1929, 49407],
            vec![49406, 1929, 49407],
            vec![49406, 320, 1929, 320, 49407],
        ];
        let mixed = features_mixed(&enc, &rows, 2).unwrap();
        for (k, r) in rows.iter().enumerate() {
            let one = features(&enc, std::slice::from_ref(r), 1).unwrap();
            let d = (mixed.get(k as i64) - one.get(0))
                .abs()
                .max()
                .double_value(&[]);
            assert!(d < 1e-5, "row {k}: {d}");
        }
    }
}
