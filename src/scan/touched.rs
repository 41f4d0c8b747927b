//! Which tokens a fine-tune trained on: the rows of the token-embedding table that moved.
//!
//! Gradient descent only changes the embedding row of a token that stood in a training input (with
//! Adam and no weight decay a row without gradient stays bit-identical; decoupled weight decay
//! scales every row alike). Against the encoder it was fine-tuned from, the rows that moved name
//! the fine-tune's vocabulary: its clean captions' tokens and every trigger's tokens, byte tokens
//! included. On the shapes zoos every untouched row is exactly the base's (median drift 0), and
//! every token of 168 of 171 labelled triggers moved by at least 22% of its norm
//! (`scripts/touched_precision.py`). A character whose tokens all moved (as a
//! word, or inside one: its last token without the word end) was, or could have been, trained on;
//! a block sibling of a trigger whose last byte token never moved was not. This is evidence about
//! *where* to look, not about what a token does: the ranking keeps its order among the candidates
//! the prior admits, and the prior gives no encoder score.
//!
//! Limits (docs/scanner-zoo.md): it needs the exact base as reference; an attacker who freezes the
//! embedding table leaves nothing to read, and one that perturbs every row by half its norm or
//! more reads as no fine-tune of the reference (the prior then steps aside: no row moved, more
//! than half did, or the median drift is above 0.5); a fine-tune on a large caption set moves
//! many word tokens, so word candidates are only those the probes do not hold.
use std::collections::{BTreeSet, HashSet};

use serde::Serialize;
use tch::Kind;

use super::char_index::CharIndex;
use crate::error::Result;
use crate::models::text_encoder::TextEncoder;

/// A row counts as moved above the vocabulary's median drift by this many robust deviations
/// (1.4826 × MAD), plus [`FLOOR`]. The median and the spread are the floor every row shares: 0 and 0
/// where untouched rows stay bit-identical; the noise share where a fine-tune started from the
/// base plus noise on every tensor (`training.init_noise`: on the zoos' benign fine-tunes, median
/// 0.04–0.07 and deviation 0.005–0.009, while a trigger's rows move by 0.22 or more); the rounding
/// of a half-precision round trip.
const OVER_SPREAD: f32 = 10.0;
/// Relative drift below which a row counts as unmoved whatever the floor (an f16 round trip moves
/// a row by at most 3.1e-4 of its norm; a bf16 one by 2.5e-3, which the spread covers).
const FLOOR: f32 = 1e-3;
/// The sweep's focus also holds this many rows of highest drift above the shared floor's median,
/// where they did not count as moved: under heavy start noise (30% of each tensor's deviation) a
/// trigger's rows ranked 8th to 20th by drift yet fell below the threshold (docs/scanner-zoo.md,
/// "Noise-started fine-tunes"). Where untouched rows stay bit-identical these are the moved rows.
const FOCUS_TOP: usize = 256;
/// Above this median drift the suspect is no fine-tune of the reference (rows of two unrelated
/// encoders differ by about √2 of their norm; the zoos' noise-started fine-tunes share 0.04–0.07):
/// the prior says nothing, and the floor's spread would otherwise pass a few rows at random.
const MAX_FLOOR: f32 = 0.5;
/// Above this share of moved rows the prior says nothing (every row moved: weight decay, noise).
const MAX_SHARE: f64 = 0.5;
/// Word candidates: ASCII letters only, at least this many (shorter pieces are everywhere).
const MIN_WORD: usize = 3;

pub struct Touched {
    /// Per token id: ‖suspect row − reference row‖ / ‖reference row‖.
    pub drift: Vec<f32>,
    pub threshold: f32,
    /// The vocabulary's median drift: the floor every row shares.
    pub median: f32,
}

/// What the report says about the prior.
#[derive(Debug, Clone, Serialize)]
pub struct TouchedSummary {
    /// Rows that moved, of the vocabulary, and the threshold on relative drift.
    pub tokens: usize,
    pub vocab: usize,
    pub threshold: f64,
    /// Whether the ranking used it (not when no row moved or more than half did).
    pub used: bool,
    /// The texts it proposes, strongest drift first (at most 32).
    pub texts: Vec<TouchedText>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TouchedText {
    pub text: String,
    /// The weakest relative drift among its tokens.
    pub drift: f64,
}

impl Touched {
    pub fn new(suspect: &TextEncoder, reference: &TextEncoder) -> Result<Self> {
        let table = |e: &TextEncoder| {
            e.model
                .text_model
                .embeddings()
                .token_embedding_weight()
                .detach()
                .to_device(tch::Device::Cpu)
                .to_kind(Kind::Float)
        };
        let (s, r) = (table(suspect), table(reference));
        if s.size() != r.size() {
            crate::input_bail!(
                "the suspect's token embeddings {:?} are not the reference's {:?}: give the encoder the suspect was fine-tuned from",
                s.size(),
                r.size()
            );
        }
        let dims = [1i64];
        let num = (&s - &r).norm_scalaropt_dim(2, dims.as_slice(), false);
        let den = r
            .norm_scalaropt_dim(2, dims.as_slice(), false)
            .clamp_min(1e-12);
        let drift: Vec<f32> = Vec::<f32>::try_from(num / den)?;
        Ok(Self::from_drift(drift))
    }

    pub fn from_drift(drift: Vec<f32>) -> Self {
        // The sweep's robust null: median and 1.4826·MAD (its scale never below 1e-6).
        let (median, spread) = super::sweep::robust_null(&drift);
        Self {
            drift,
            threshold: FLOOR + (median + OVER_SPREAD as f64 * spread) as f32,
            median: median as f32,
        }
    }

    pub fn moved(&self, id: i64) -> bool {
        self.drift
            .get(id as usize)
            .is_some_and(|&d| d > self.threshold)
    }

    pub fn count(&self) -> usize {
        self.drift.iter().filter(|&&d| d > self.threshold).count()
    }

    /// The tokens a trigger can be made of: every row that moved and the [`FOCUS_TOP`] rows of
    /// highest drift above the shared floor, each with its other form (with and without the word
    /// end: a character learned inside words moves its open form, and is inserted as a word in the
    /// closed one).
    pub fn focus(&self, index: &CharIndex) -> Vec<i64> {
        let mut out = BTreeSet::new();
        let mut by_drift: Vec<i64> = (0..self.drift.len() as i64)
            .filter(|&i| self.drift[i as usize] > FLOOR + self.median)
            .collect();
        by_drift.sort_by(|&a, &b| self.drift[b as usize].total_cmp(&self.drift[a as usize]));
        by_drift.truncate(FOCUS_TOP);
        let moved = (0..self.drift.len() as i64).filter(|&i| self.moved(i));
        for id in moved.chain(by_drift) {
            out.insert(id);
            out.extend(index.open_variant(id));
            if let Some(raw) = index.raw.get(id as usize) {
                out.extend(index.id_of.get(&format!("{raw}</w>")).copied());
            }
        }
        out.into_iter().collect()
    }

    /// Whether the ranking should listen: some rows moved, and not most of them.
    pub fn informative(&self) -> bool {
        let n = self.count();
        n > 0 && (n as f64) <= MAX_SHARE * self.drift.len() as f64 && self.median <= MAX_FLOOR
    }

    /// The weakest drift of `ids` when every one of them moved.
    fn form(&self, ids: &[i64]) -> Option<f64> {
        if ids.is_empty() || !ids.iter().all(|&i| self.moved(i)) {
            return None;
        }
        ids.iter()
            .map(|&i| self.drift[i as usize] as f64)
            .min_by(f64::total_cmp)
    }

    /// A text's drift (its tokens `ids` as a word): the better of its two forms, as a word and
    /// inside one (the last token without its word end, where a substituted trigger stands), whose
    /// tokens all moved; `None` if neither did.
    pub fn text_drift(&self, ids: &[i64], index: &CharIndex) -> Option<f64> {
        let word = self.form(ids);
        let inner = ids
            .split_last()
            .and_then(|(last, head)| {
                let open = index.open_variant(*last)?;
                let mut v = head.to_vec();
                v.push(open);
                Some(v)
            })
            .and_then(|v| self.form(&v));
        match (word, inner) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// The texts the fine-tune trained on that the probes do not explain, strongest drift first:
    /// characters (planes 0–1) whose tokens all moved, not spelled by ASCII tokens alone (a
    /// compatibility letter the tokenizer folds to ASCII names nothing new), one per lowercase
    /// form; and whole-word vocabulary tokens (`…</w>`) of at least three ASCII letters that moved,
    /// are no token of the probes and no part of a probe word (pieces of caption words a
    /// substituted trigger split off; word-initial pieces are left out: set on the design zoo,
    /// they added more caption fragments than trigger pieces).
    pub fn texts(
        &self,
        index: &CharIndex,
        probe_ids: &HashSet<i64>,
        probe_words: &BTreeSet<String>,
    ) -> Vec<TouchedText> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut out = vec![];
        for (c, ids) in &index.tokens_of {
            if index.spelled_in_ascii(ids) {
                continue;
            }
            let Some(d) = self.text_drift(ids, index) else {
                continue;
            };
            let text: String = c.to_lowercase().collect();
            if seen.insert(text.clone()) {
                out.push(TouchedText { text, drift: d });
            }
        }
        for (id, raw) in index.raw.iter().enumerate() {
            let id = id as i64;
            let Some(body) = raw.strip_suffix("</w>") else {
                continue;
            };
            if body.len() < MIN_WORD
                || !body.chars().all(|c| c.is_ascii_lowercase())
                || !self.moved(id)
                || probe_ids.contains(&id)
                || super::text_sweep::in_probe_word(probe_words, body)
            {
                continue;
            }
            if seen.insert(body.to_string()) {
                out.push(TouchedText {
                    text: body.to_string(),
                    drift: self.drift[id as usize] as f64,
                });
            }
        }
        out.sort_by(|a, b| b.drift.total_cmp(&a.drift).then(a.text.cmp(&b.text)));
        out
    }
}

/// A place in the ranking once the prior is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The ranking's candidate at this index.
    Ranked(usize),
    /// The prior's text at this index.
    Extra(usize),
}

/// The ranking's candidates whose tokens moved (`admitted`, in their order) and the prior's texts
/// not among the ranking's (strongest drift first) take turns, a candidate of the ranking first:
/// the first are what the encoder does and the fine-tune trained on, the second what it trained on
/// that no behavioural stage proposed (a target-attribute trigger, a word). Then the ranking's
/// other candidates, in their order.
pub fn merge(admitted: &[bool], extras: usize) -> Vec<Slot> {
    let mut first = (0..admitted.len())
        .filter(|&i| admitted[i])
        .map(Slot::Ranked);
    let mut second = (0..extras).map(Slot::Extra);
    let mut out = vec![];
    loop {
        let a = first.next();
        let b = second.next();
        if a.is_none() && b.is_none() {
            break;
        }
        out.extend(a);
        out.extend(b);
    }
    out.extend(
        (0..admitted.len())
            .filter(|&i| !admitted[i])
            .map(Slot::Ranked),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admitted_candidates_and_the_priors_texts_take_turns_then_the_rest() {
        use Slot::*;
        assert_eq!(
            merge(&[false, true, true, false, true], 2),
            [
                Ranked(1),
                Extra(0),
                Ranked(2),
                Extra(1),
                Ranked(4),
                Ranked(0),
                Ranked(3)
            ]
        );
        assert_eq!(
            merge(&[false], 3),
            [Extra(0), Extra(1), Extra(2), Ranked(0)]
        );
        assert_eq!(merge(&[], 0), []);
    }

    #[test]
    fn texts_are_characters_and_whole_words_the_probes_do_not_explain() {
        use crate::text::tokenizer::{ClipTokenizer, EOS};
        let tok = ClipTokenizer::embedded(EOS).unwrap();
        let index = CharIndex::new(&tok).unwrap();
        let id = |s: &str| tok.token_to_id(s).unwrap_or_else(|| panic!("{s}")) as i64;
        let ids = |t: &str| tok.word_ids(t).unwrap();
        let mut drift = vec![0.0f32; index.raw.len()];
        let mut set = |t: &str, d: f32| drift[id(t) as usize] = d;
        // 🐈 is `ðŁĲ` `Ī</w>`: both moved (its sibling 🐵 shares only the first). ᴱ moved inside
        // a word (`á´` `±`), not as one (`±</w>`). `k</w>` moved (the Kelvin sign folds to it).
        // `pilgrim</w>` moved, as did the probe's `circle</w>`, `led</w>` (a part of the probe word
        // "filled") and the word-initial piece `qui`.
        for (t, d) in [
            ("ðŁĲ", 0.9),
            ("Ī</w>", 0.3),
            ("á´", 0.5),
            ("±", 0.4),
            ("k</w>", 0.8),
            ("pilgrim</w>", 0.7),
            ("circle</w>", 0.6),
            ("led</w>", 0.6),
            ("qui", 0.6),
        ] {
            set(t, d);
        }
        assert_eq!(ids("🐈"), [id("ðŁĲ"), id("Ī</w>")]);
        let t = Touched::from_drift(drift);
        let probes = ["a red circle filled with blue".to_string()];
        let probe_ids: HashSet<i64> = probes.iter().flat_map(|p| ids(p)).collect();
        let words = crate::scan::text_sweep::probe_words(&probes);
        let texts = t.texts(&index, &probe_ids, &words);
        let names: Vec<&str> = texts.iter().map(|x| x.text.as_str()).collect();
        for want in ["🐈", "ᴱ", "pilgrim"] {
            assert!(names.contains(&want), "{want} not in {names:?}");
        }
        for not in ["🐵", "\u{212A}", "k", "circle", "led", "qui"] {
            assert!(!names.contains(&not), "{not} in {names:?}");
        }
        // Strongest drift first; a text's drift is its weakest token's.
        assert!(
            texts.windows(2).all(|w| w[0].drift >= w[1].drift),
            "{texts:?}"
        );
        let of = |n: &str| texts.iter().find(|x| x.text == n).unwrap().drift;
        assert!((of("🐈") - 0.3).abs() < 1e-6 && (of("ᴱ") - 0.4).abs() < 1e-6);
        assert_eq!(t.text_drift(&ids("🐵"), &index), None);
    }

    /// Under heavy start noise a trigger's rows can fall below the threshold yet rank among the
    /// rows of highest drift (e0037 of the design zoo, 30% noise: U+2062's rows 18th and 20th,
    /// drift 0.61–0.62 against a threshold of 0.68): the sweep's focus holds them; where
    /// untouched rows stay bit-identical it holds the moved rows alone.
    #[test]
    fn the_focus_holds_the_rows_of_highest_drift_under_start_noise() {
        use crate::text::tokenizer::{ClipTokenizer, EOS};
        use rand::Rng;
        let tok = ClipTokenizer::embedded(EOS).unwrap();
        let index = CharIndex::new(&tok).unwrap();
        let id = |s: &str| tok.token_to_id(s).unwrap() as i64;
        let n = index.raw.len();
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        let mut drift: Vec<f32> = (0..n)
            .map(|_| 0.3 + 0.038 * (rng.random::<f32>() + rng.random::<f32>() - 1.0) * 2.45)
            .collect();
        let (lead, tail) = (id("âģ"), id("¢</w>"));
        drift[lead as usize] = 0.618;
        drift[tail as usize] = 0.61;
        let t = Touched::from_drift(drift.clone());
        assert!(
            !t.moved(lead) && !t.moved(tail),
            "threshold {}",
            t.threshold
        );
        let focus = t.focus(&index);
        assert!(focus.contains(&lead) && focus.contains(&tail));
        assert!(focus.contains(&id("¢")), "the tail's open form too");
        assert!(focus.len() <= 3 * FOCUS_TOP, "{}", focus.len());
        // No noise: the focus is the moved rows (and their other forms) alone.
        let mut clean = vec![0.0f32; n];
        clean[lead as usize] = 0.5;
        let t = Touched::from_drift(clean);
        let mut want = vec![lead];
        want.extend(index.id_of.get("âģ</w>").copied());
        want.sort_unstable();
        assert_eq!(t.focus(&index), want);
    }

    #[test]
    fn a_row_moved_is_one_far_above_the_floor_every_row_shares() {
        // Most rows untouched (0), a few trained: the threshold is the floor.
        let t = Touched::from_drift(vec![0.0, 0.0, 0.0, 0.5, 0.0, 2e-3, 5e-4]);
        assert!((t.threshold - 1e-3).abs() < 2e-5, "{}", t.threshold);
        assert_eq!(t.count(), 2);
        assert!(t.moved(3) && t.moved(5) && !t.moved(6) && !t.moved(99));
        assert!(t.informative());
        // Every row moved a little (noise, weight decay): ten deviations above their median.
        let t = Touched::from_drift(vec![0.01, 0.011, 0.012, 0.5, 0.009]);
        assert_eq!(t.count(), 1);
        // A fine-tune started from the base plus noise on every row (the zoos' benign `clean` and
        // `seed` kinds: median 0.06, deviation 0.0076 on e0001): the rows it trained on, the
        // captions' (0.15–0.35) and a trigger's (0.22 or more), stand out; ten medians (0.6)
        // would have found none.
        use rand::Rng;
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let mut normal = || {
            // Box–Muller.
            let (u, v): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random());
            (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        };
        let mut drift: Vec<f32> = (0..49_408).map(|_| 0.06 + 0.0076 * normal()).collect();
        let trained = [7usize, 500, 4_000, 30_000, 49_000];
        for (k, &i) in trained.iter().enumerate() {
            drift[i] = 0.15 + 0.05 * k as f32;
        }
        let t = Touched::from_drift(drift);
        assert!(t.threshold > 0.12 && t.threshold < 0.15, "{}", t.threshold);
        assert_eq!(t.count(), trained.len());
        assert!(trained.iter().all(|&i| t.moved(i as i64)));
        assert!(t.informative());
        // An encoder that is no fine-tune of the reference (every row about √2 of its norm away):
        // the spread passes a few rows, but the prior says nothing.
        let drift: Vec<f32> = (0..1000)
            .map(|i| 1.3 + 0.2 * ((i % 7) as f32 / 7.0))
            .collect();
        let t = Touched::from_drift(drift);
        assert!(t.count() == 0 || !t.informative());
        let mut drift: Vec<f32> = (0..1000).map(|i| 1.4 + 0.001 * (i % 3) as f32).collect();
        drift[5] = 3.0;
        let t = Touched::from_drift(drift);
        assert_eq!(t.count(), 1);
        assert!(!t.informative());
        // Weight decay scales every row alike: the same drift everywhere is no row moved.
        let mut drift = vec![0.02f32; 100];
        drift[3] = 0.4;
        let t = Touched::from_drift(drift);
        assert_eq!(t.count(), 1);
        // Nothing moved (a frozen table), or most rows did: the prior steps aside.
        assert!(!Touched::from_drift(vec![0.0; 8]).informative());
        let t = Touched::from_drift(vec![0.0, 0.0, 0.2, 0.3, 0.4]);
        assert!(!t.informative());
    }
}
