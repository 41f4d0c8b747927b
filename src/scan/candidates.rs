//! Which characters a scan tries as triggers.
//!
//! - `confusables` (default): every UTS #39 confusable of every ASCII letter, substituted for the
//!   letter it imitates.
//! - `vocab`: every non-ASCII character that is one token of the encoder's vocabulary (with or
//!   without the `</w>` word end); cheap to learn as a trigger since it needs one embedding row.
//! - `scripts`: every letter of the scripts homoglyph attacks draw from (Cyrillic, Greek, Armenian,
//!   Cherokee, Latin Extended, fullwidth), look-alike or not: a trigger need not look like anything
//!   (Armenian `ե` imitates no Latin letter, yet the multi smoke experiment uses it).
//!
//! A candidate with a Latin look-alike replaces that letter ("anchored"); one without replaces each
//! of [`crate::scan::probes::UNANCHORED_LETTERS`] in turn and keeps its best score ("unanchored").
use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::Result;
use crate::input_bail;
use crate::text::homoglyph::{confusables_of, family_of, latin_lookalike};
use crate::text::tokenizer::ClipTokenizer;

/// The families `scripts` enumerates (the attack families the homoglyph paper and issue 7 name).
pub const SCRIPT_FAMILIES: &[&str] = &[
    "cyrillic",
    "greek",
    "armenian",
    "cherokee",
    "latin-extended",
    "fullwidth",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Confusables,
    Vocab,
    Scripts,
    /// Given explicitly (`--chars`).
    Chars,
}

impl Source {
    /// Parse a comma-separated list (`confusables,vocab`); `all` means every source.
    pub fn parse_list(s: &str) -> Result<Vec<Source>> {
        let mut out = vec![];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "confusables" => out.push(Source::Confusables),
                "vocab" => out.push(Source::Vocab),
                "scripts" => out.push(Source::Scripts),
                "all" => out.extend([Source::Confusables, Source::Vocab, Source::Scripts]),
                other => input_bail!(
                    "unknown candidate set `{other}` in --candidates {s:?}: use confusables, vocab, scripts (comma-separated) or all"
                ),
            }
        }
        if out.is_empty() {
            input_bail!("--candidates is empty: use confusables, vocab, scripts or all");
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// One character to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub glyph: char,
    /// The ASCII letter it replaces; `None` = unanchored.
    pub latin: Option<char>,
    pub sources: Vec<Source>,
}

/// The candidates of `sources`, one per character, sorted by code point. Characters the tokenizer
/// cannot tell apart are merged later, by token ids (see `scan::run`).
pub fn collect(sources: &[Source], chars: &[char], tokenizer: &ClipTokenizer) -> Vec<Candidate> {
    let mut found: BTreeMap<char, Candidate> = BTreeMap::new();
    let mut add = |glyph: char, latin: Option<char>, source: Source| {
        let c = found.entry(glyph).or_insert(Candidate {
            glyph,
            latin,
            sources: vec![],
        });
        c.latin = c.latin.or(latin);
        if !c.sources.contains(&source) {
            c.sources.push(source);
        }
    };
    for &source in sources {
        match source {
            Source::Confusables => {
                for latin in ('a'..='z').chain('A'..='Z') {
                    for l in confusables_of(latin) {
                        add(l.glyph, Some(latin), source);
                    }
                }
            }
            Source::Vocab => {
                for glyph in single_token_chars(tokenizer) {
                    add(glyph, anchor_of(glyph), source);
                }
            }
            Source::Scripts => {
                for glyph in script_letters() {
                    add(glyph, anchor_of(glyph), source);
                }
            }
            Source::Chars => {
                for &glyph in chars.iter().filter(|c| !c.is_ascii()) {
                    add(glyph, anchor_of(glyph), source);
                }
            }
        }
    }
    found.into_values().collect()
}

/// The ASCII letter a character imitates, when it imitates exactly one.
pub fn anchor_of(glyph: char) -> Option<char> {
    let latin = latin_lookalike(glyph)?;
    let mut chars = latin.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_alphabetic() => Some(c),
        _ => None,
    }
}

/// Letters of [`SCRIPT_FAMILIES`] in planes 0–1. Upper case is left out: the CLIP tokenizer
/// lowercases, so `Б` reads as `б`.
fn script_letters() -> Vec<char> {
    (0x80u32..0x20000)
        .filter_map(char::from_u32)
        .filter(|c| c.is_alphabetic() && !c.is_uppercase())
        .filter(|&c| SCRIPT_FAMILIES.contains(&family_of(c).as_str()))
        .collect()
}

pub use crate::text::tokenizer::unicode_to_byte;

/// Non-ASCII characters that are a single vocabulary token.
pub fn single_token_chars(tokenizer: &ClipTokenizer) -> Vec<char> {
    let to_byte = unicode_to_byte();
    let mut out: Vec<char> = tokenizer
        .inner()
        .get_vocab(false)
        .into_keys()
        .filter_map(|token| {
            let body = token.strip_suffix("</w>").unwrap_or(&token);
            let bytes: Option<Vec<u8>> = body.chars().map(|c| to_byte.get(&c).copied()).collect();
            let text = String::from_utf8(bytes?).ok()?;
            let mut chars = text.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if !c.is_ascii() && !c.is_whitespace() => Some(c),
                _ => None,
            }
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}
