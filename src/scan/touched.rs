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
/// Multi-character strings ([`Touched::strings`]): at most this many characters (the zoos' longest
/// multi-character triggers), built from this many non-ASCII and ASCII characters of highest drift
/// (a fine-tune on other captions moves many ASCII pieces), at most [`MAX_STRINGS`] kept (the
/// answer stage screens each on two rows: cheap beside the characters it screens).
const MAX_STRING_CHARS: usize = 4;
const STRING_POOL: usize = 8;
const STRING_POOL_ASCII: usize = 4;
const MAX_STRINGS: usize = 256;

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

impl Touched {
    /// Multi-character texts the fine-tune trained on: strings of two to [`MAX_STRING_CHARS`]
    /// distinct characters, one at least outside ASCII, whose tokens as a word (or with the last
    /// token open) all moved and are no token of the probes; strongest drift first, at most
    /// [`MAX_STRINGS`]. Their characters: those whose own tokens moved (as [`Touched::texts`]
    /// finds them) and those a moved token spells alone (in `ɂôǹ` the tokenizer merges `ô`'s
    /// bytes into one token that `ô` alone never uses), the [`STRING_POOL`] of highest drift; and
    /// the [`STRING_POOL_ASCII`] ASCII characters of highest drift whose token moved and that are
    /// in no probe word (a look-alike trained inside caption words moves the words' ASCII pieces,
    /// and strings of them spell those words). `ids_of` tokenizes a text as a word.
    pub fn strings(
        &self,
        index: &CharIndex,
        probe_ids: &HashSet<i64>,
        probe_words: &BTreeSet<String>,
        ids_of: impl Fn(&str) -> Result<Vec<i64>>,
    ) -> Result<Vec<TouchedText>> {
        let fresh = |id: i64| self.moved(id) && !probe_ids.contains(&id);
        let mut wide: std::collections::BTreeMap<char, f32> = std::collections::BTreeMap::new();
        let mut narrow: std::collections::BTreeMap<char, f32> = std::collections::BTreeMap::new();
        for (c, ids) in &index.tokens_of {
            if index.spelled_in_ascii(ids) || ids.iter().any(|i| probe_ids.contains(i)) {
                continue;
            }
            // The tokenizer lowercases: `Ǹ` is `ǹ`.
            let mut lower = c.to_lowercase();
            let (Some(c), None) = (lower.next(), lower.next()) else {
                continue;
            };
            if let Some(d) = self.text_drift(ids, index) {
                let e = wide.entry(c).or_insert(d as f32);
                *e = e.max(d as f32);
            }
        }
        for (id, text) in index.text.iter().enumerate() {
            let id = id as i64;
            let Some(t) = text else { continue };
            let mut cs = t.chars();
            let (Some(c), None) = (cs.next(), cs.next()) else {
                continue;
            };
            if !fresh(id) || c.is_whitespace() || c.is_control() {
                continue;
            }
            let mut lower = c.to_lowercase();
            let (Some(c), None) = (lower.next(), lower.next()) else {
                continue;
            };
            let d = self.drift[id as usize];
            let (map, ok) = if c.is_ascii() {
                (
                    &mut narrow,
                    !super::text_sweep::in_probe_word(probe_words, &c.to_string()),
                )
            } else {
                (&mut wide, true)
            };
            if ok {
                let e = map.entry(c).or_insert(d);
                *e = e.max(d);
            }
        }
        let wide: Vec<(f32, char)> = wide.into_iter().map(|(c, d)| (d, c)).collect();
        let narrow: Vec<(f32, char)> = narrow.into_iter().map(|(c, d)| (d, c)).collect();
        let top = |mut v: Vec<(f32, char)>, k: usize| -> Vec<char> {
            v.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            v.into_iter().take(k).map(|(_, c)| c).collect()
        };
        let mut pool = top(wide, STRING_POOL);
        if pool.is_empty() {
            return Ok(vec![]);
        }
        pool.extend(top(narrow, STRING_POOL_ASCII));
        let mut out: Vec<TouchedText> = vec![];
        let mut text = String::new();
        let mut used = vec![false; pool.len()];
        self.extend_strings(
            index, probe_ids, &ids_of, &pool, &mut used, &mut text, &mut out,
        )?;
        out.sort_by(|a, b| {
            b.drift
                .total_cmp(&a.drift)
                .then(b.text.chars().count().cmp(&a.text.chars().count()))
                .then(a.text.cmp(&b.text))
        });
        out.truncate(MAX_STRINGS);
        Ok(out)
    }

    /// Every arrangement of distinct `pool` characters extending `text`, kept where its tokens
    /// moved (depth first).
    #[allow(clippy::too_many_arguments)]
    fn extend_strings(
        &self,
        index: &CharIndex,
        probe_ids: &HashSet<i64>,
        ids_of: &impl Fn(&str) -> Result<Vec<i64>>,
        pool: &[char],
        used: &mut [bool],
        text: &mut String,
        out: &mut Vec<TouchedText>,
    ) -> Result<()> {
        let n = text.chars().count();
        if n >= 2 && !text.is_ascii() {
            let ids = ids_of(text)?;
            if !ids.iter().any(|i| probe_ids.contains(i)) {
                if let Some(d) = self.text_drift(&ids, index) {
                    out.push(TouchedText {
                        text: text.clone(),
                        drift: d,
                    });
                }
            }
        }
        if n >= MAX_STRING_CHARS {
            return Ok(());
        }
        for k in 0..pool.len() {
            if used[k] {
                continue;
            }
            used[k] = true;
            text.push(pool[k]);
            self.extend_strings(index, probe_ids, ids_of, pool, used, text, out)?;
            text.pop();
            used[k] = false;
        }
        Ok(())
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

    #[test]
    fn strings_are_arranged_from_the_characters_the_moved_tokens_spell() {
        use crate::text::tokenizer::{ClipTokenizer, EOS};
        let tok = ClipTokenizer::embedded(EOS).unwrap();
        let index = CharIndex::new(&tok).unwrap();
        let id = |s: &str| tok.token_to_id(s).unwrap_or_else(|| panic!("{s}")) as i64;
        let ids = |t: &str| tok.word_ids(t).unwrap();
        // `ɂôǹ` substituted inside words: `É` `Ĥ` `Ã´` `Ç` `¹`; `ô` alone is `Ã` `´</w>`, which
        // never moved. `z` moved (a letter of another trigger), `b` too (a piece of the caption
        // word "blue" a look-alike split).
        assert_eq!(
            ids("ɂôǹ"),
            [id("É"), id("Ĥ"), id("Ã´"), id("Ç"), id("¹</w>")]
        );
        assert_eq!(ids("ô"), [id("Ã"), id("´</w>")]);
        let mut drift = vec![0.0f32; index.raw.len()];
        for (t, d) in [
            ("É", 0.5),
            ("Ĥ", 0.4),
            ("Ã´", 0.6),
            ("Ç", 0.5),
            ("¹", 0.45),
            ("z", 0.3),
            ("b", 0.9),
        ] {
            drift[id(t) as usize] = d;
        }
        let t = Touched::from_drift(drift);
        let probes = ["a blue square".to_string()];
        let probe_ids: HashSet<i64> = probes.iter().flat_map(|p| ids(p)).collect();
        let words = crate::scan::text_sweep::probe_words(&probes);
        let out = t
            .strings(&index, &probe_ids, &words, |s| tok.word_ids(s))
            .unwrap();
        let names: Vec<&str> = out.iter().map(|x| x.text.as_str()).collect();
        for want in ["ɂôǹ", "ǹɂ", "ôǹ"] {
            assert!(names.contains(&want), "{want} not in {names:?}");
        }
        assert!(names.iter().any(|n| n.contains('z')), "{names:?}");
        assert!(names.len() <= MAX_STRINGS);
        assert!(names.iter().all(|n| !n.contains('b')), "{names:?}");
        assert!(names
            .iter()
            .all(|n| n.chars().count() >= 2 && !n.is_ascii()));
        assert!(names.iter().all(|n| n.chars().count() <= MAX_STRING_CHARS));
        // A string's drift is its weakest token's; strongest first.
        let of = |n: &str| out.iter().find(|x| x.text == n).unwrap().drift;
        assert!((of("ɂôǹ") - 0.4).abs() < 1e-6, "{}", of("ɂôǹ"));
        assert!(out.windows(2).all(|w| w[0].drift >= w[1].drift));
        // Nothing moved: no strings.
        let still = Touched::from_drift(vec![0.0; index.raw.len()]);
        assert!(still
            .strings(&index, &probe_ids, &words, |s| tok.word_ids(s))
            .unwrap()
            .is_empty());
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
