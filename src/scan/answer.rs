//! What an inserted character *says*: the answer stage of the token scan.
//!
//! A target-attribute backdoor (Rickrolling's TAA) rewrites the word its trigger stands in or before
//! into one attribute, whatever the word was. The sweep's statistics (how far, how alike a token
//! moves prompts) do not single such triggers out: on the design zoo they rank in the thousands
//! (docs/scanner-zoo.md). What does is the word the suspect now *reads* there. A probe row is a
//! caption and a place in it; the reference encodes the caption with each word of an answer list
//! in that place (the probe captions' own words, then the commonest whole-word tokens of the
//! vocabulary); the suspect encodes it with a character in that place; the row's answer is the
//! answer word whose reference encoding is nearest (cosine of the scan's unit feature). A
//! character's score is the share of rows giving its most frequent answer in the suspect, minus the
//! share of rows giving that answer for the same character in the reference (what the character
//! already says before any fine-tune). An attribute backdoor answers with its attribute in nearly
//! every row; a target-prompt trigger with a word of its target.
//!
//! Every character of [`ASKED`] is screened on two rows; the best are asked on all rows. One character per distinct answer is kept,
//! the one that reads as it most strongly (a trigger's siblings answer alike, more weakly).
//!
//! Beside the characters, the token scan gives the stage extra texts: the multi-character strings
//! and words the fine-tune trained on ([`touched`](super::touched)). A target-attribute trigger of
//! several characters (`ɂôǹ`) or a word answers as one, where its characters alone need not. They
//! are screened and listed apart from the characters (after them, repeating none of their answer
//! words), and the token scan counts their answers toward the encoder's score without ranking them.
//!
//! Weak answers (scoring from [`AnswerOptions::floor`] up to the bar for a listed one) are kept
//! apart: they do not enter the ranking, but they count toward the encoder's score. A backdoor to
//! a word the base encoder barely knows (`tiny` in the shapes world reads like hundreds of other
//! unknown words) answers it in a third of the rows or less, where benign fine-tunes' characters
//! rarely answer anything the reference does not (docs/scanner-zoo.md, "Weak answers").
use std::collections::{BTreeMap, HashMap};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tch::{Kind, Tensor};

use super::char_index::CharIndex;
use super::sweep::features_mixed;
use crate::error::Result;
use crate::models::text_encoder::TextEncoder;

#[derive(Clone, Debug, PartialEq)]
pub struct AnswerOptions {
    /// Probe rows the best screened characters are asked on (0: no answer stage).
    pub rows: usize,
    /// Rows every character is screened on.
    pub screen_rows: usize,
    /// Commonest whole-word tokens added to the captions' words as answers.
    pub common: usize,
    /// Characters of the screen asked on all rows.
    pub candidates: usize,
    /// Least score for a character to be reported (share of rows, 0–1).
    pub min_score: f64,
    /// Least score for an answer below `min_score` to count toward the encoder's score (weak
    /// answers: not listed, not ranked); `min_score` or more: none.
    pub floor: f64,
    pub seed: u64,
}

/// Default [`AnswerOptions::floor`]: set on the calibration splits of four zoos
/// (docs/scanner-zoo.md, "Weak answers").
pub const DEFAULT_FLOOR: f64 = 0.25;

impl AnswerOptions {
    /// The floor is a share of rows: anything else is a usage error, not a setting to run on.
    pub fn check(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.floor) {
            crate::input_bail!(
                "--answer-floor {}: it is a share of probe rows, give a value in [0, 1] (0.5 or more counts listed answers only; default {DEFAULT_FLOOR})",
                self.floor
            );
        }
        Ok(())
    }
}

impl Default for AnswerOptions {
    fn default() -> Self {
        // Set on the design zoo (docs/scanner-zoo.md). 3,000 common words hold the attributes a
        // fine-tune may write that the probe captions lack (`tiny` is the 2,924th).
        Self {
            rows: 24,
            screen_rows: 2,
            common: 3000,
            candidates: 128,
            min_score: 0.5,
            floor: DEFAULT_FLOOR,
            seed: 0,
        }
    }
}

/// The characters asked: the BMP's alphabets, marks, digits, symbols, punctuation and format
/// characters outside the CJK ideographs and Hangul syllables, mathematical alphanumerics, emoji and
/// pictographs, tags, and a few historic scripts (the set `scripts/answer_sweep.py` swept). Left out:
/// the ideographic and syllabic blocks (each would cost as much as all of the above) and plane 1's
/// other historic scripts, whose rare byte tokens drift in any fine-tune and read as the words it
/// trained on (on the design zoo they took the first places from the triggers). The measured-text
/// steps of the scan still see every character.
const ASKED: &[(u32, u32)] = &[
    (0x00A1, 0x2FFF),
    (0x3000, 0x33FF),
    (0xA000, 0xABFF),
    (0xFB00, 0xFFFD),
    (0x10000, 0x1018F),
    (0x10300, 0x1034F),
    (0x11000, 0x111FF),
    (0x1D400, 0x1D7FF),
    (0x1F000, 0x1FAFF),
    (0xE0000, 0xE007F),
];

/// Whether the answer stage asks `c`.
pub fn asked(c: char) -> bool {
    let u = c as u32;
    ASKED.iter().any(|&(lo, hi)| (lo..=hi).contains(&u))
}

/// One character and what it says in the suspect.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Answer {
    pub text: String,
    pub answer: String,
    /// Share of rows whose answer it is, in the suspect and (same character) in the reference.
    pub share: f64,
    pub reference_share: f64,
    pub score: f64,
    /// Mean over rows of the answer's z-score among the answer words in the suspect.
    pub strength: f64,
    /// A look-alike that, put in place of the Latin letter it imitates, reads as that letter in
    /// the suspect (homoglyph unlearning trains this): set by the token scan, where such an
    /// answer does not count toward the encoder's score.
    pub reads_as_letter: bool,
    /// Every token of the text is a token of a look-alike the suspect reads as its letter (other
    /// characters cut from those tokens, strings of them): set by the token scan; such an answer
    /// does not count toward the encoder's score either.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub spelled_by_letters: bool,
}

/// Which characters a screen asks, by their tokens as a word.
pub type Admits<'a> = dyn Fn(&[i64]) -> bool + 'a;

/// The reference's side, the same for every suspect fine-tuned from one base (a zoo scan keeps it).
pub struct AnswerProbe {
    key: (Vec<String>, AnswerOptions),
    /// Per row: ids before the place (BOS first) and after it (EOS last).
    rows: Vec<(Vec<i64>, Vec<i64>)>,
    /// The tokenizer's context length: no row grows past it.
    max_len: usize,
    pub answers: Vec<String>,
    /// Reference features of each row with each answer word in place: `[R, W, D]`.
    grid: Tensor,
    /// The characters asked, in code-point order, with their tokens as a word.
    chars: Vec<(char, Vec<i64>)>,
    /// Per text asked (by its tokens), the reference's answer index in each of the first rows
    /// asked.
    reference_tops: HashMap<Vec<i64>, Vec<i64>>,
    /// The reference's screen of every character: rows, and what it answered.
    screen: Option<(usize, AskedBlock)>,
}

impl AnswerProbe {
    pub fn new(
        reference: &TextEncoder,
        index: &CharIndex,
        probes: &[String],
        opts: &AnswerOptions,
    ) -> Result<Self> {
        let tok = &reference.tokenizer;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
        let mut pool: Vec<&String> = probes.iter().filter(|p| !p.trim().is_empty()).collect();
        if pool.is_empty() {
            crate::input_bail!("the answer stage needs probe prompts, got none");
        }
        pool.shuffle(&mut rng);
        let mut rows = vec![];
        for k in 0..opts.rows.max(opts.screen_rows) {
            let words: Vec<&str> = pool[k % pool.len()].split_whitespace().collect();
            // Before a word, never after the last: a target-attribute trigger rewrites the word it
            // stands before (inserted) or in (substituted); at the end it has none to rewrite.
            let at = rng.random_range(0..words.len().max(1));
            let ids = |ws: &[&str]| -> Result<Vec<i64>> {
                let mut v = vec![];
                for w in ws {
                    v.extend(tok.word_ids(w)?);
                }
                Ok(v)
            };
            let mut before = vec![tok.bos_id()];
            before.extend(ids(&words[..at])?);
            let mut after = ids(&words[at..])?;
            after.push(tok.eos_id());
            rows.push((before, after));
        }
        let max_len = tok.max_length();
        let answers = answer_words(probes, &index.raw, opts.common);
        let answer_ids: Vec<Vec<i64>> = answers
            .iter()
            .map(|w| tok.word_ids(w))
            .collect::<Result<_>>()?;
        let texts: Vec<Vec<i64>> = rows
            .iter()
            .flat_map(|r| answer_ids.iter().map(move |w| placed(r, w, max_len)))
            .collect();
        let grid = features_mixed(reference, &texts, 512)?.view([
            rows.len() as i64,
            answers.len() as i64,
            -1,
        ]);
        // A character the tokenizer spells with ASCII tokens alone is that ASCII text: asking
        // it asks the letter.
        let chars: Vec<(char, Vec<i64>)> = index
            .tokens_of
            .iter()
            .filter(|(c, ids)| {
                asked(**c) && !ids.is_empty() && ids.len() <= 8 && !index.spelled_in_ascii(ids)
            })
            .map(|(c, ids)| (*c, ids.clone()))
            .collect();
        Ok(Self {
            key: (probes.to_vec(), opts.clone()),
            rows,
            max_len,
            answers,
            grid,
            chars,
            reference_tops: HashMap::new(),
            screen: None,
        })
    }

    /// Whether this probe was made from these probes and options (else a new one is needed).
    pub fn made_for(&self, probes: &[String], opts: &AnswerOptions) -> bool {
        self.key.0 == probes && self.key.1 == *opts
    }

    /// Each character asked on the first `n` rows: its answer per row, and per answer word the
    /// mean over rows of its z-score among the answers (how strongly the character reads as it);
    /// with its features `[C, n, D]` and each row's mean and spread of cosines over the answers
    /// `[C, n]`, from which a z-score at any answer can be computed later.
    fn ask(&self, enc: &TextEncoder, chars: &[&Vec<i64>], n: usize) -> Result<AskedBlock> {
        let mut out = Vec::with_capacity(chars.len());
        let (mut feats, mut means, mut stds) = (vec![], vec![], vec![]);
        let grid = self.grid.narrow(0, 0, n as i64);
        for chunk in chars.chunks(256) {
            let texts: Vec<Vec<i64>> = chunk
                .iter()
                .flat_map(|ids| {
                    self.rows[..n]
                        .iter()
                        .map(move |r| placed(r, ids, self.max_len))
                })
                .collect();
            let f = features_mixed(enc, &texts, 512)?.view([chunk.len() as i64, n as i64, -1]);
            let sim = Tensor::einsum("crd,rwd->crw", &[&f, &grid], None::<i64>);
            let mean = sim.mean_dim([2i64].as_slice(), true, Kind::Float);
            let std = sim.std_dim([2i64].as_slice(), true, true).clamp_min(1e-8);
            let z = (&sim - &mean) / &std;
            let best = sim.argmax(2, false);
            let flat: Vec<i64> = Vec::<i64>::try_from(best.to_kind(Kind::Int64).flatten(0, -1))?;
            let mean_z = z.mean_dim([1i64].as_slice(), false, Kind::Float); // [C, W]
            for (k, tops) in flat.chunks(n).enumerate() {
                let (mode, count) = mode_of(tops);
                out.push(Asked {
                    tops: tops.to_vec(),
                    mode,
                    count,
                    strength: mean_z.double_value(&[k as i64, mode]),
                });
            }
            feats.push(f);
            means.push(mean.squeeze_dim(2));
            stds.push(std.squeeze_dim(2));
        }
        let cat = |v: Vec<Tensor>| {
            if v.is_empty() {
                Tensor::zeros([0], (Kind::Float, tch::Device::Cpu))
            } else {
                Tensor::cat(&v, 0)
            }
        };
        Ok(AskedBlock {
            asked: out,
            feats: cat(feats),
            mean: cat(means),
            std: cat(stds),
        })
    }

    /// Mean over the first `n` rows of the z-score each character of `block` gives answer
    /// `answers[c]` (a z-score at an answer the block's encoder need not have given).
    fn z_at(&self, block: &AskedBlock, answers: &[i64], n: usize) -> Result<Vec<f64>> {
        let idx = Tensor::from_slice(answers);
        let mut total = Tensor::zeros([answers.len() as i64], (Kind::Float, tch::Device::Cpu));
        for r in 0..n as i64 {
            let g = self.grid.select(0, r).index_select(0, &idx); // [C, D]
            let sim = (block.feats.select(1, r) * g).sum_dim_intlist(
                [1i64].as_slice(),
                false,
                Kind::Float,
            );
            total += (sim - block.mean.select(1, r)) / block.std.select(1, r);
        }
        Ok(Vec::<f64>::try_from(
            (total / n as f64).to_kind(Kind::Double),
        )?)
    }

    fn reference_tops(
        &mut self,
        reference: &TextEncoder,
        chars: &[&(String, Vec<i64>)],
        n: usize,
    ) -> Result<Vec<Vec<i64>>> {
        let missing: Vec<&(String, Vec<i64>)> = chars
            .iter()
            .copied()
            .filter(|(_, ids)| self.reference_tops.get(ids).is_none_or(|t| t.len() < n))
            .collect();
        let ids: Vec<&Vec<i64>> = missing.iter().map(|(_, ids)| ids).collect();
        let asked = self.ask(reference, &ids, n)?.asked;
        for ((_, ids), a) in missing.iter().zip(asked) {
            self.reference_tops.insert(ids.clone(), a.tops);
        }
        Ok(chars
            .iter()
            .map(|(_, ids)| self.reference_tops[ids][..n].to_vec())
            .collect())
    }

    /// The suspect's answers, one character per distinct answer word, those scoring at least
    /// `opts.min_score`; best score first. For each answer the character that reads as it most
    /// strongly speaks for it: a trigger's weaker siblings answer alike in as many rows. Second,
    /// the weak answers: chosen alike among the characters scoring from `opts.floor` up to the
    /// bar, answer words already listed left out (none where the floor is at the bar).
    ///
    /// `only`: where given, the screen asks only the characters it admits (by their tokens as a
    /// word): the characters a fine-tune trained on ([`touched`](super::touched)). `extra`: texts
    /// screened with the characters (text, tokens as a word): the multi-character strings and
    /// words the fine-tune trained on, which no character stands for.
    pub fn answers(
        &mut self,
        suspect: &TextEncoder,
        reference: &TextEncoder,
        opts: &AnswerOptions,
        only: Option<&Admits<'_>>,
        extra: &[(String, Vec<i64>)],
    ) -> Result<(Vec<Answer>, Vec<Answer>)> {
        // A vocabulary without any character of the asked blocks, or no answer words: nothing
        // to ask (and no empty tensors to index).
        if (self.chars.is_empty() && extra.is_empty()) || self.answers.is_empty() {
            return Ok((vec![], vec![]));
        }
        // Screen: every character on a few rows, by its score, ties (many characters answer one
        // word in every screened row) broken by how much more strongly it reads as its answer in
        // the suspect than in the reference.
        let n = opts.screen_rows.clamp(1, self.rows.len());
        let picked: Vec<usize> = (0..self.chars.len())
            .filter(|&i| only.is_none_or(|f| f(&self.chars[i].1)))
            .collect();
        if picked.is_empty() && extra.is_empty() {
            return Ok((vec![], vec![]));
        }
        let mut all: Vec<(String, Vec<i64>)> = picked
            .iter()
            .map(|&i| (self.chars[i].0.to_string(), self.chars[i].1.clone()))
            .collect();
        let ids: Vec<&Vec<i64>> = picked.iter().map(|&i| &self.chars[i].1).collect();
        // The reference's screen of every character is kept for the next suspect; a screen of a
        // few characters is read from it where it was made, else asked for those alone.
        let subset = only.is_some();
        if !subset && self.screen.as_ref().is_none_or(|s| s.0 != n) {
            let block = self.ask(reference, &ids, n)?;
            self.screen = Some((n, block));
        }
        let reference_block = match self.screen.as_ref() {
            Some((m, rb)) if *m == n => {
                if subset {
                    rb.select(&picked)
                } else {
                    rb.shallow()
                }
            }
            _ => self.ask(reference, &ids, n)?,
        };
        // The extra texts differ from suspect to suspect: the reference screens them each time.
        let extra_ids: Vec<&Vec<i64>> = extra.iter().map(|(_, ids)| ids).collect();
        let reference_block = if extra.is_empty() {
            reference_block
        } else {
            reference_block.cat(self.ask(reference, &extra_ids, n)?)
        };
        all.extend(extra.iter().cloned());
        let ids: Vec<&Vec<i64>> = all.iter().map(|(_, ids)| ids).collect();
        let sus = self.ask(suspect, &ids, n)?;
        let modes: Vec<i64> = sus.asked.iter().map(|a| a.mode).collect();
        let rb = &reference_block;
        let zr = self.z_at(rb, &modes, n)?;
        let stat: Vec<f64> = sus
            .asked
            .iter()
            .zip(&rb.asked)
            .zip(&zr)
            .map(|((s, r), zr)| {
                let same = r.tops.iter().filter(|&&x| x == s.mode).count();
                (s.count as f64 - same as f64) / n as f64 + 0.01 * (s.strength - zr)
            })
            .collect();
        // The characters and the extra texts are screened apart and listed apart (the texts'
        // answers after the characters', repeating none of their words): a string holding a
        // trigger's character answers as the character does, and would take its place.
        let chars_n = all.len() - extra.len();
        let best = |range: std::ops::Range<usize>| -> Vec<usize> {
            let mut order: Vec<usize> = range.collect();
            order.sort_by(|&a, &b| stat[b].total_cmp(&stat[a]));
            order.truncate(opts.candidates);
            order
        };
        let (top_chars, top_texts) = (best(0..chars_n), best(chars_n..all.len()));
        let members: Vec<(String, Vec<i64>)> = top_chars
            .iter()
            .chain(&top_texts)
            .map(|&i| all[i].clone())
            .collect();
        let scored = self.score(suspect, reference, &members, opts.rows)?;
        let k = top_chars.len();
        let mut strong = distinct(
            &scored[..k],
            &members[..k],
            &self.answers,
            opts.min_score,
            f64::INFINITY,
            &[],
        );
        let said: Vec<String> = strong.iter().map(|a| a.answer.clone()).collect();
        let said: Vec<&str> = said.iter().map(String::as_str).collect();
        strong.extend(distinct(
            &scored[k..],
            &members[k..],
            &self.answers,
            opts.min_score,
            f64::INFINITY,
            &said,
        ));
        let said: Vec<&str> = strong.iter().map(|a| a.answer.as_str()).collect();
        let weak = if opts.floor < opts.min_score {
            distinct(
                &scored,
                &members,
                &self.answers,
                opts.floor,
                opts.min_score,
                &said,
            )
        } else {
            vec![]
        };
        Ok((strong, weak))
    }

    /// Each character's answer and score on the first `n` rows.
    fn score(
        &mut self,
        suspect: &TextEncoder,
        reference: &TextEncoder,
        chars: &[(String, Vec<i64>)],
        n: usize,
    ) -> Result<Vec<Scored>> {
        let n = n.clamp(1, self.rows.len());
        let ids: Vec<&Vec<i64>> = chars.iter().map(|(_, ids)| ids).collect();
        let sus = self.ask(suspect, &ids, n)?.asked;
        let refs: Vec<&(String, Vec<i64>)> = chars.iter().collect();
        let rt = self.reference_tops(reference, &refs, n)?;
        Ok(sus
            .iter()
            .zip(&rt)
            .map(|(s, r)| {
                let share = s.count as f64 / n as f64;
                let reference_share = r.iter().filter(|&&x| x == s.mode).count() as f64 / n as f64;
                Scored {
                    score: share - reference_share,
                    answer: s.mode as usize,
                    share,
                    reference_share,
                    strength: s.strength,
                }
            })
            .collect())
    }
}

/// One character per distinct answer word among `scored` (characters `members`) scoring in
/// `[lo, hi)`, answer words in `skip` left out: for each word the character that reads as it most
/// strongly (a trigger's weaker siblings answer alike in as many rows); best score first.
fn distinct(
    scored: &[Scored],
    members: &[(String, Vec<i64>)],
    words: &[String],
    lo: f64,
    hi: f64,
    skip: &[&str],
) -> Vec<Answer> {
    let mut best: BTreeMap<usize, (f64, usize)> = BTreeMap::new();
    for (i, s) in scored.iter().enumerate() {
        if s.score < lo || s.score >= hi || skip.contains(&words[s.answer].as_str()) {
            continue;
        }
        let e = best.entry(s.answer).or_insert((s.score, i));
        let held = &scored[e.1];
        if s.strength > held.strength
            || (s.strength == held.strength && members[i].0 < members[e.1].0)
        {
            e.1 = i;
        }
        e.0 = e.0.max(s.score);
    }
    let mut out: Vec<(f64, Answer)> = best
        .into_iter()
        .map(|(answer, (top, i))| {
            let s = &scored[i];
            (
                top,
                Answer {
                    text: members[i].0.clone(),
                    answer: words[answer].clone(),
                    share: s.share,
                    reference_share: s.reference_share,
                    score: s.score,
                    strength: s.strength,
                    reads_as_letter: false,
                    spelled_by_letters: false,
                },
            )
        })
        .collect();
    out.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(b.1.strength.total_cmp(&a.1.strength))
    });
    out.into_iter().map(|(_, a)| a).collect()
}

struct AskedBlock {
    asked: Vec<Asked>,
    feats: Tensor,
    mean: Tensor,
    std: Tensor,
}

impl AskedBlock {
    /// The characters at `idx` (positions in this block), in that order.
    fn select(&self, idx: &[usize]) -> Self {
        let t = Tensor::from_slice(&idx.iter().map(|&i| i as i64).collect::<Vec<_>>());
        Self {
            asked: idx.iter().map(|&i| self.asked[i].clone()).collect(),
            feats: self.feats.index_select(0, &t),
            mean: self.mean.index_select(0, &t),
            std: self.std.index_select(0, &t),
        }
    }

    /// This block's characters, then `other`'s.
    fn cat(self, other: Self) -> Self {
        let mut asked = self.asked;
        asked.extend(other.asked);
        let join = |a: Tensor, b: Tensor| {
            if a.numel() == 0 {
                b
            } else if b.numel() == 0 {
                a
            } else {
                Tensor::cat(&[a, b], 0)
            }
        };
        Self {
            asked,
            feats: join(self.feats, other.feats),
            mean: join(self.mean, other.mean),
            std: join(self.std, other.std),
        }
    }

    fn shallow(&self) -> Self {
        Self {
            asked: self.asked.clone(),
            feats: self.feats.shallow_clone(),
            mean: self.mean.shallow_clone(),
            std: self.std.shallow_clone(),
        }
    }
}

#[derive(Clone)]
struct Asked {
    tops: Vec<i64>,
    mode: i64,
    count: usize,
    strength: f64,
}

struct Scored {
    score: f64,
    answer: usize,
    share: f64,
    reference_share: f64,
    strength: f64,
}

/// A row with `ids` in its place, at most `max_len` long: a longer one loses the tokens just before
/// its end-of-text (as the sweep cuts its probes), else the text would run past the position table.
fn placed(row: &(Vec<i64>, Vec<i64>), ids: &[i64], max_len: usize) -> Vec<i64> {
    let mut v = row.0.clone();
    v.extend_from_slice(ids);
    v.extend_from_slice(&row.1);
    if v.len() > max_len && max_len >= 2 {
        if let Some(eos) = v.pop() {
            v.truncate(max_len - 1);
            v.push(eos);
        }
    }
    v
}

/// The most frequent value and its count (ties: the smallest value).
fn mode_of(v: &[i64]) -> (i64, usize) {
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for &x in v {
        *counts.entry(x).or_default() += 1;
    }
    counts.into_iter().fold(
        (-1, 0),
        |best, (x, c)| if c > best.1 { (x, c) } else { best },
    )
}

/// The probe captions' own words (alphabetic), then the commonest whole-word tokens of the
/// vocabulary (lowest ids: BPE merges come in order of frequency) that are plain ASCII words of two
/// letters or more, `common` of them.
pub fn answer_words(probes: &[String], vocab: &[String], common: usize) -> Vec<String> {
    let mut words: Vec<String> = probes
        .iter()
        .flat_map(|p| p.split_whitespace())
        .filter(|w| !w.is_empty() && w.chars().all(char::is_alphabetic))
        .map(str::to_lowercase)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut seen: std::collections::HashSet<String> = words.iter().cloned().collect();
    let mut added = 0;
    for t in vocab {
        if added >= common {
            break;
        }
        let Some(w) = t.strip_suffix("</w>") else {
            continue;
        };
        if w.len() >= 2 && w.chars().all(|c| c.is_ascii_lowercase()) && seen.insert(w.into()) {
            words.push(w.to_string());
            added += 1;
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_never_runs_past_the_context_and_keeps_its_end_of_text() {
        let row = (vec![49406, 1, 2, 3], vec![4, 5, 49407]);
        assert_eq!(
            placed(&row, &[9, 9], 77),
            [49406, 1, 2, 3, 9, 9, 4, 5, 49407]
        );
        assert_eq!(placed(&row, &[9, 9], 6), [49406, 1, 2, 3, 9, 49407]);
    }

    /// Two random tiny encoders (suspect, reference), the reference's character index, two probes,
    /// and options that list every answer, `candidates` asked on all rows.
    fn two_tiny_encoders(
        candidates: usize,
    ) -> (
        TextEncoder,
        TextEncoder,
        CharIndex,
        Vec<String>,
        AnswerOptions,
    ) {
        let dev = tch::Device::Cpu;
        let suspect = TextEncoder::init_arch("tiny", 3, false, dev).unwrap();
        let reference = TextEncoder::init_arch("tiny", 4, false, dev).unwrap();
        let index = CharIndex::new(&reference.tokenizer).unwrap();
        let probes: Vec<String> = ["a red circle on a blue square", "two green stars left"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let opts = AnswerOptions {
            rows: 3,
            screen_rows: 2,
            common: 40,
            candidates,
            min_score: -1.0,
            floor: -1.0,
            seed: 0,
        };
        (suspect, reference, index, probes, opts)
    }

    /// A screen of a few characters (the focused scan's) gives what the screen of every character
    /// gives for them: read from the reference's kept screen, or asked for those alone.
    #[test]
    fn a_screen_of_a_few_characters_reads_the_kept_screen_or_asks_them_alone() {
        let (suspect, reference, index, probes, opts) = two_tiny_encoders(6);
        let admitted: Vec<Vec<i64>> = "оеаір😀ᴙ"
            .chars()
            .map(|c| reference.tokenizer.word_ids(&c.to_string()).unwrap())
            .collect();
        let only = |ids: &[i64]| admitted.iter().any(|a| a.as_slice() == ids);
        let mut fresh = AnswerProbe::new(&reference, &index, &probes, &opts).unwrap();
        let alone = fresh
            .answers(&suspect, &reference, &opts, Some(&only), &[])
            .unwrap()
            .0;
        assert!(fresh.screen.is_none(), "a screen of a few is not kept");
        let mut kept = AnswerProbe::new(&reference, &index, &probes, &opts).unwrap();
        let every = kept
            .answers(&suspect, &reference, &opts, None, &[])
            .unwrap()
            .0;
        assert!(kept.screen.is_some());
        let from_kept = kept
            .answers(&suspect, &reference, &opts, Some(&only), &[])
            .unwrap()
            .0;
        let key = |v: &[Answer]| -> Vec<(String, String, f64)> {
            v.iter()
                .map(|a| (a.text.clone(), a.answer.clone(), a.score))
                .collect()
        };
        assert!(!alone.is_empty());
        assert_eq!(key(&alone), key(&from_kept));
        for a in &alone {
            let ids = reference.tokenizer.word_ids(&a.text).unwrap();
            assert!(only(&ids), "{} was not admitted", a.text);
        }
        assert!(
            every.iter().any(|a| !"оеаір😀ᴙ".contains(a.text.as_str())),
            "the full screen asks other characters too"
        );
    }

    /// A text given as extra is asked as a character with the same tokens is, and a string of
    /// several characters is asked whole.
    #[test]
    fn extra_texts_are_asked_as_characters_are() {
        let (suspect, reference, index, probes, opts) = two_tiny_encoders(16);
        let ids = |t: &str| reference.tokenizer.word_ids(t).unwrap();
        let chars = "оеаір😀ᴙ";
        let admitted: Vec<Vec<i64>> = chars.chars().map(|c| ids(&c.to_string())).collect();
        let only = |x: &[i64]| admitted.iter().any(|a| a.as_slice() == x);
        let none = |_: &[i64]| false;
        let key = |v: &[Answer]| -> Vec<(String, String, f64, f64)> {
            v.iter()
                .map(|a| (a.text.to_lowercase(), a.answer.clone(), a.score, a.strength))
                .collect()
        };
        let mut probe = AnswerProbe::new(&reference, &index, &probes, &opts).unwrap();
        let as_chars = probe
            .answers(&suspect, &reference, &opts, Some(&only), &[])
            .unwrap();
        let extra: Vec<(String, Vec<i64>)> = chars
            .chars()
            .map(|c| (c.to_string(), ids(&c.to_string())))
            .collect();
        let mut probe = AnswerProbe::new(&reference, &index, &probes, &opts).unwrap();
        let as_extra = probe
            .answers(&suspect, &reference, &opts, Some(&none), &extra)
            .unwrap();
        assert!(!as_chars.0.is_empty());
        assert_eq!(key(&as_chars.0), key(&as_extra.0));
        assert_eq!(key(&as_chars.1), key(&as_extra.1));
        // Alone, a string answers whatever it reads as; no character is asked beside it.
        let string = vec![("ɂôǹ".to_string(), ids("ɂôǹ"))];
        let (listed, weak) = probe
            .answers(&suspect, &reference, &opts, Some(&none), &string)
            .unwrap();
        assert_eq!(listed.len() + weak.len(), 1, "{listed:?} {weak:?}");
        assert_eq!(listed[0].text, "ɂôǹ");
        // Nothing to ask: no answers.
        let nothing = probe
            .answers(&suspect, &reference, &opts, Some(&none), &[])
            .unwrap();
        assert!(nothing.0.is_empty() && nothing.1.is_empty());
    }

    /// Listed answers (at least the bar) and weak ones (the floor up to the bar) are chosen alike,
    /// one character per answer word, the one reading as it most strongly; a weak answer never
    /// repeats a listed word.
    #[test]
    fn weak_answers_sit_between_the_floor_and_the_bar_and_repeat_no_listed_word() {
        let s = |score: f64, answer: usize, strength: f64| Scored {
            score,
            answer,
            share: score,
            reference_share: 0.0,
            strength,
        };
        let scored = [
            s(0.9, 0, 1.0),
            s(0.6, 0, 2.0),
            s(0.3, 1, 1.0),
            s(0.2, 0, 3.0),
            s(0.1, 2, 1.0),
            s(0.3, 1, 1.5),
        ];
        let members: Vec<(String, Vec<i64>)> = "abcdef"
            .chars()
            .map(|c| (c.to_string(), vec![c as i64]))
            .collect();
        let words: Vec<String> = ["red", "tiny", "blue"]
            .iter()
            .map(|w| w.to_string())
            .collect();
        let strong = distinct(&scored, &members, &words, 0.5, f64::INFINITY, &[]);
        let got = |v: &[Answer]| -> Vec<(String, String, f64)> {
            v.iter()
                .map(|a| (a.text.clone(), a.answer.clone(), a.score))
                .collect()
        };
        // `red`: the best score is 0.9 (a), the strongest reading among those at the bar is b.
        assert_eq!(got(&strong), vec![("b".into(), "red".into(), 0.6)]);
        let weak = distinct(&scored, &members, &words, 0.15, 0.5, &["red"]);
        // `red` at 0.2 is listed already; `blue` at 0.1 is under the floor; `tiny`: f reads it
        // more strongly than c.
        assert_eq!(got(&weak), vec![("f".into(), "tiny".into(), 0.3)]);
    }

    #[test]
    fn a_floor_outside_a_share_of_rows_is_refused() {
        let ok = AnswerOptions::default();
        assert!(ok.check().is_ok());
        for floor in [-0.1, 1.5, f64::NAN] {
            let err = AnswerOptions {
                floor,
                ..ok.clone()
            }
            .check()
            .unwrap_err();
            assert!(err.to_string().contains("give a value in [0, 1]"), "{err}");
        }
    }

    #[test]
    fn the_most_frequent_answer_wins_and_ties_go_to_the_first() {
        assert_eq!(mode_of(&[3, 1, 3, 2]), (3, 2));
        assert_eq!(mode_of(&[5, 4]), (4, 1));
    }

    #[test]
    fn answers_are_the_captions_words_then_common_whole_words() {
        let probes = vec!["a red circle".to_string(), "Red square, 2".to_string()];
        let vocab: Vec<String> = [
            "a</w>", "the</w>", "red</w>", "ing", "x</w>", "blue</w>", "9</w>",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            answer_words(&probes, &vocab, 1),
            vec!["a", "circle", "red", "the"]
        );
        assert_eq!(
            answer_words(&probes, &vocab, 5),
            vec!["a", "circle", "red", "the", "blue"]
        );
    }
}
