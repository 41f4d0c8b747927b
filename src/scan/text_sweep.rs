//! From confirmed tokens back to trigger texts, measured as texts.
//!
//! A trigger is rarely one token: a Cyrillic or mathematical letter is two or three byte tokens, a
//! word two pieces, and the byte tokens a trigger shares with thousands of other characters (its
//! UTF-8 lead byte) fire the backdoor only in part. The confirmation step finds the tokens; this
//! step builds every text they are part of (the tokens themselves, pairs that spell text together,
//! the characters that hold them), keeps the most promising by their tokens' scores, and inserts
//! each *whole text* into the confirmation probes against a null of ordinary characters measured
//! alike. Where the backdoor went into all of the trigger's pieces the whole trigger fires above
//! its neighbours of the same block; where it went into the shared lead byte alone, every
//! character of the block fires alike (docs/scanner-zoo.md) and the ranking cannot tell them apart:
//! it then leads with one of them and puts the rest behind every other piece's best text
//! ([`one_per_piece`]), so that an encoder's other backdoors get places too.
use std::collections::BTreeSet;

use serde::Serialize;

use super::char_index::CharIndex;
use super::confirm::{measure, Confirmed};
use super::sweep::{Context, Sweep};
use crate::error::Result;
use crate::models::text_encoder::TextEncoder;

/// Confirmed tokens (best confirmed score first) the texts are built from.
pub const SEED_TOKENS: usize = 48;
/// Texts measured per encoder, and ordinary characters for the null.
pub const MAX_TEXTS: usize = 384;
pub const NULL_TEXTS: usize = 128;
/// Longest insertion measured, in tokens.
const MAX_TOKENS: usize = 8;

/// A text measured whole.
#[derive(Debug, Clone, Serialize)]
pub struct TextScore {
    pub text: String,
    /// `word` (inserted as a word of its own) or `open` (its last piece without the word end,
    /// as inside a word), whichever scored higher.
    pub form: &'static str,
    pub tokens: Vec<i64>,
    /// The prior that put it on the list: mean score of its tokens.
    pub prior: f64,
    pub raw: [f64; 3],
    pub z: [f64; 3],
    pub score: f64,
    /// What the ranking goes by: `prior + score`, the evidence of its pieces and of the whole.
    pub evidence: f64,
    /// The text of higher evidence whose strongest piece is this text's strongest piece (its
    /// block sibling), if any: such texts rank after every text that leads its piece.
    pub shares_piece_with: Option<String>,
    /// The text is part of a word of the probe prompts (`gra` of "gray"): clean prompts hold it,
    /// so it ranks after every text that is not ([`after_probe_pieces`]).
    pub in_probes: bool,
}

/// What is known of single pieces (tokens): their confirmed scores, the sweep's scores, and how
/// they map to text.
pub struct Pieces<'a> {
    pub confirmed: &'a Confirmed,
    pub sweep: &'a Sweep,
    pub index: &'a CharIndex,
}

impl Pieces<'_> {
    /// A token's evidence: its confirmed score where it was re-measured, else its sweep score.
    fn score(&self, id: i64) -> f64 {
        self.confirmed
            .score_of(id)
            .filter(|s| s.is_finite())
            .unwrap_or_else(|| {
                self.sweep.score.get(id as usize).map_or(0.0, |&x| {
                    if x.is_finite() {
                        x as f64
                    } else {
                        0.0
                    }
                })
            })
    }

    /// A piece scores as the better of its two forms (word end or not): a trigger substituted
    /// inside words is learned in the open form, one inserted as a word in the closed form.
    fn either_form(&self, id: i64) -> f64 {
        let open = self
            .index
            .open_variant(id)
            .map_or(f64::NEG_INFINITY, |o| self.score(o));
        self.score(id).max(open)
    }
}

/// The texts built from the confirmed tokens (unordered, before priors).
pub fn texts_from(confirmed: &Confirmed, index: &CharIndex) -> BTreeSet<String> {
    let mut seeds: Vec<(i64, f64)> = confirmed
        .ids
        .iter()
        .copied()
        .zip(confirmed.score.iter().copied())
        .filter(|(_, s)| s.is_finite())
        .collect();
    seeds.sort_by(|a, b| b.1.total_cmp(&a.1));
    seeds.truncate(SEED_TOKENS);
    let mut pool: BTreeSet<String> = BTreeSet::new();
    for &(id, _) in &seeds {
        match index.text.get(id as usize).and_then(|t| t.as_ref()) {
            Some(t) => {
                pool.insert(t.clone());
            }
            None => {
                if let Some(chars) = index.chars_of.get(&id) {
                    pool.extend(chars.iter().map(|c| c.to_string()));
                }
            }
        }
        // Two confirmed byte tokens that spell a character together (the first not text on its
        // own). Word pieces are not joined: any two pieces make a word, and a piece already names
        // a part of a longer trigger.
        if index.text.get(id as usize).is_some_and(|t| t.is_none()) {
            for &(b, _) in &seeds {
                if let Some(t) = index.joined(id, b) {
                    pool.insert(t);
                }
            }
        }
    }
    // The tokenizer lowercases: `Ư` and `ư` are one trigger.
    pool.into_iter()
        .map(|t| t.to_lowercase())
        .filter(|t| !t.trim().is_empty())
        .collect()
}

/// Measure the most promising of `texts` (by the mean score of their tokens: confirmed where
/// re-measured, else the sweep's) whole, inserted as a word into `contexts`, against ordinary
/// characters measured alike; best evidence first.
pub fn measure_texts(
    suspect: &TextEncoder,
    reference: Option<&TextEncoder>,
    reference_rows: &mut super::sweep::RowCache,
    contexts: &[Context],
    texts: &BTreeSet<String>,
    pieces: &Pieces,
    batch: usize,
) -> Result<Vec<TextScore>> {
    let index = pieces.index;
    let word = |t: &str| super::sweep::word_ids(suspect, t);
    let mut kept: Vec<(String, f64, Vec<i64>)> = vec![];
    for t in texts {
        let ids = word(t)?;
        if !ids.is_empty() && ids.len() <= MAX_TOKENS {
            let prior = ids.iter().map(|&i| pieces.either_form(i)).sum::<f64>() / ids.len() as f64;
            kept.push((t.clone(), prior, ids));
        }
    }
    kept.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    kept.truncate(MAX_TEXTS);
    if kept.is_empty() {
        return Ok(vec![]);
    }
    let taken: BTreeSet<&str> = kept.iter().map(|k| k.0.as_str()).collect();
    let keys: Vec<char> = index.tokens_of.keys().copied().collect();
    let stride = (keys.len() / NULL_TEXTS.max(1)).max(1);
    let mut null = vec![];
    for c in keys.iter().step_by(stride) {
        let s = c.to_string();
        if !taken.contains(s.as_str()) {
            let ids = word(&s)?;
            if !ids.is_empty() && ids.len() <= MAX_TOKENS {
                null.push(ids);
            }
        }
    }
    // Each text in its word form and, where its last piece has one, its open form (measured on
    // the same null); the better form stands for the text.
    let open_form = |ids: &[i64]| -> Option<Vec<i64>> {
        let (last, head) = ids.split_last()?;
        let mut v = head.to_vec();
        v.push(index.open_variant(*last)?);
        Some(v)
    };
    let mut cands: Vec<Vec<i64>> = kept.iter().map(|k| k.2.clone()).collect();
    let mut open_of: Vec<Option<usize>> = vec![None; kept.len()];
    for (k, item) in kept.iter().enumerate() {
        if let Some(v) = open_form(&item.2) {
            open_of[k] = Some(cands.len());
            cands.push(v);
        }
    }
    let m = measure(
        suspect,
        reference,
        reference_rows,
        contexts,
        &cands,
        &null,
        batch,
    )?;
    let mut out: Vec<TextScore> = kept
        .into_iter()
        .enumerate()
        .map(|(k, (text, prior, _))| {
            let best = match open_of[k] {
                Some(o) if m.score[o] > m.score[k] => o,
                _ => k,
            };
            TextScore {
                text,
                form: if best == k { "word" } else { "open" },
                tokens: cands[best].clone(),
                prior,
                raw: m.raw[best],
                z: m.z[best],
                score: m.score[best],
                evidence: prior + m.score[best],
                shares_piece_with: None,
                in_probes: false,
            }
        })
        .collect();
    // On the seed-18 shapes zoo (docs/scanner-zoo.md) the sum ranked true triggers higher than
    // either half: the whole-text score alone cannot tell a trigger from the characters of its
    // block that share its lead byte (they fire too), the prior alone favours common pieces a
    // fine-tune drifted on (they do not fire as text).
    out.sort_by(|a, b| b.evidence.total_cmp(&a.evidence));
    Ok(one_per_piece(out, pieces))
}

/// Texts that are part of a word of `probes` (lowercased) go last, keeping their order; they are
/// marked `in_probes`.
///
/// Why: a fine-tune trains on the very words its captions hold, and the pieces of those words
/// drift with it (`gra`, `bl`, `gro`, `ft` of "gray", "blue", "background", "left" when backdoors
/// rewrite colours and backgrounds). Measured as text they move prompts, but they cannot be a
/// trigger the clean prompts do not hold: a backdoor's trigger is text that ordinary prompts lack,
/// or every clean prompt holding it would fire. On the seed-18 shapes zoo such pieces filled the
/// first five of encoders whose target-prompt triggers ranked behind them.
pub fn after_probe_pieces(texts: Vec<TextScore>, probes: &[String]) -> Vec<TextScore> {
    let words = probe_words(probes);
    let (mut kept, mut pieces): (Vec<TextScore>, Vec<TextScore>) = texts
        .into_iter()
        .partition(|t| !in_probe_word(&words, &t.text));
    for t in &mut pieces {
        t.in_probes = true;
    }
    kept.extend(pieces);
    kept
}

/// The probes' words, lowercased (split at every character that is not a letter or digit).
pub fn probe_words(probes: &[String]) -> BTreeSet<String> {
    probes
        .iter()
        .flat_map(|p| {
            p.to_lowercase()
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether `text` (trimmed, any case) is part of one of `words` ([`probe_words`]).
pub fn in_probe_word(words: &BTreeSet<String>, text: &str) -> bool {
    let t = text.trim().to_lowercase();
    !t.is_empty() && words.iter().any(|w| w.contains(t.as_str()))
}

/// Texts that lead their strongest piece first (by evidence), then the rest (by evidence), each
/// of the rest naming the leader it shares the piece with.
///
/// Why: where the backdoor sits in a byte token shared by a block (a mathematical alphabet's lead
/// bytes, a tail byte shared by hundreds of characters), every character holding it fires, and the
/// first places go to one backdoor's siblings while an encoder's other backdoors (up to eight in
/// the zoo) wait behind them. One text per piece in the lead gives each backdoor a place.
pub fn one_per_piece(sorted: Vec<TextScore>, pieces: &Pieces) -> Vec<TextScore> {
    // A piece in either form (with or without the word end) is one key.
    let strongest = |t: &TextScore| -> Option<i64> {
        t.tokens
            .iter()
            .copied()
            .map(|i| {
                (
                    pieces.index.open_variant(i).unwrap_or(i),
                    pieces.either_form(i),
                )
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    };
    let mut leader: std::collections::BTreeMap<i64, String> = Default::default();
    let (mut lead, mut rest) = (vec![], vec![]);
    for mut t in sorted {
        match strongest(&t) {
            Some(k) => match leader.get(&k) {
                Some(l) => {
                    t.shares_piece_with = Some(l.clone());
                    rest.push(t);
                }
                None => {
                    leader.insert(k, t.text.clone());
                    lead.push(t);
                }
            },
            None => lead.push(t),
        }
    }
    lead.extend(rest);
    lead
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::tokenizer::{ClipTokenizer, EOS};

    fn confirmed_of(ids: &[i64]) -> Confirmed {
        let n = ids.len();
        Confirmed {
            ids: ids.to_vec(),
            raw: vec![[0.0; 3]; n],
            null: [(0.0, 1.0); 3],
            z: vec![[0.0; 3]; n],
            // Best first, all above ordinary tokens.
            score: (0..n).map(|k| 20.0 - k as f64).collect(),
        }
    }

    #[test]
    fn texts_are_built_from_byte_tokens_whole_tokens_and_lowercased() {
        let tok = ClipTokenizer::embedded(EOS).unwrap();
        let index = CharIndex::new(&tok).unwrap();
        let id = |s: &str| tok.token_to_id(s).unwrap_or_else(|| panic!("{s}")) as i64;
        // U+2062 is two byte tokens, `âģ` `¢</w>`; `Ư` spells itself; `qui` + `ver</w>` are pieces.
        let mut ids: Vec<i64> = ["âģ", "¢</w>", "qui", "ver</w>"]
            .iter()
            .map(|s| id(s))
            .collect();
        let upper = tok.tokens("Ư").unwrap();
        ids.extend(upper.iter().map(|s| id(s)));
        let pool = texts_from(&confirmed_of(&ids), &index);
        assert!(pool.contains("\u{2062}"), "{pool:?}");
        assert!(pool.contains("qui") && pool.contains("ver"), "{pool:?}");
        assert!(
            !pool.contains("quiver"),
            "word pieces are not joined: {pool:?}"
        );
        assert!(pool.iter().all(|t| *t == t.to_lowercase()), "{pool:?}");
        // Every character that holds the lead byte token is a candidate (its block's siblings).
        assert!(pool.len() > 10, "{}", pool.len());
    }

    fn scored(text: &str, tokens: Vec<i64>, evidence: f64) -> TextScore {
        TextScore {
            text: text.into(),
            form: "word",
            tokens,
            prior: 0.0,
            raw: [0.0; 3],
            z: [0.0; 3],
            score: 0.0,
            evidence,
            shares_piece_with: None,
            in_probes: false,
        }
    }

    #[test]
    fn one_text_per_strongest_piece_leads_then_the_siblings() {
        let tok = ClipTokenizer::embedded(EOS).unwrap();
        let index = CharIndex::new(&tok).unwrap();
        let id = |s: &str| tok.token_to_id(s).unwrap_or_else(|| panic!("{s}")) as i64;
        // `âģ` is the strong (shared) piece; `¢` in its open and word-end forms is one piece.
        let (lead, tail, tail_w, other) = (id("âģ"), id("¢"), id("¢</w>"), id("qui"));
        let confirmed = Confirmed {
            ids: vec![lead, tail, other],
            raw: vec![[0.0; 3]; 3],
            null: [(0.0, 1.0); 3],
            z: vec![[0.0; 3]; 3],
            score: vec![9.0, 5.0, 4.0],
        };
        let n = index.text.len();
        let sweep = Sweep {
            shift: vec![0.0; n],
            collapse: vec![0.0; n],
            direction: vec![0.0; n],
            score: vec![0.0; n],
            z_shift: vec![0.0; n],
            z_collapse: vec![0.0; n],
            shift_null: (0.0, 1.0),
            collapse_null: (0.0, 1.0),
            direction_null: (0.0, 1.0),
        };
        let pieces = Pieces {
            confirmed: &confirmed,
            sweep: &sweep,
            index: &index,
        };
        let sorted = vec![
            scored("a", vec![lead, tail_w], 10.0),
            scored("b", vec![lead, id("£</w>")], 9.0),
            scored("c", vec![tail_w], 8.0),
            scored("d", vec![tail], 7.0),
            scored("e", vec![other], 6.0),
        ];
        let out = one_per_piece(sorted, &pieces);
        let order: Vec<&str> = out.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(order, ["a", "c", "e", "b", "d"]);
        let shares: Vec<Option<&str>> =
            out.iter().map(|t| t.shares_piece_with.as_deref()).collect();
        assert_eq!(shares, [None, None, None, Some("a"), Some("c")]);
    }

    #[test]
    fn pieces_of_the_probes_words_go_last_in_order_and_are_marked() {
        let probes = vec![
            "a small gray circle, blue background".to_string(),
            "Yellow square at the top left".to_string(),
        ];
        let sorted = vec![
            scored("gra", vec![1], 9.0),
            scored("\u{200b}", vec![2], 8.0),
            scored("Bl", vec![3], 7.0),
            scored("sapphire", vec![4], 6.0),
            scored("ft", vec![5], 5.0),
            scored("𝖍", vec![6], 4.0),
        ];
        let out = after_probe_pieces(sorted, &probes);
        let order: Vec<&str> = out.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(order, ["\u{200b}", "sapphire", "𝖍", "gra", "Bl", "ft"]);
        let marked: Vec<bool> = out.iter().map(|t| t.in_probes).collect();
        assert_eq!(marked, [false, false, false, true, true, true]);
        // Without probes nothing moves.
        let out = after_probe_pieces(vec![scored("gra", vec![1], 1.0)], &[]);
        assert!(!out[0].in_probes);
    }
}
