//! From vocabulary tokens back to text: what a token spells (when it is whole UTF-8), and which
//! single characters a token is part of (a Cyrillic or emoji character is often two or three byte
//! tokens, none of them a character on its own). Built once per tokenizer and shared by the scans
//! of a zoo.
use std::collections::{BTreeMap, HashMap};

use crate::error::Result;
use crate::scan::candidates::unicode_to_byte;
use crate::text::tokenizer::ClipTokenizer;

pub struct CharIndex {
    /// Token id → the text it spells (`</w>` dropped), when that is valid UTF-8.
    pub text: Vec<Option<String>>,
    /// Token id → its vocabulary string (for reports).
    pub raw: Vec<String>,
    /// Token id → the bytes it stands for (`</w>` dropped).
    pub bytes: Vec<Vec<u8>>,
    /// Token id → characters whose own tokenization holds the token (only for tokens that do not
    /// spell whole characters themselves).
    pub chars_of: HashMap<i64, Vec<char>>,
    /// Character → its token ids (as a standalone word).
    pub tokens_of: BTreeMap<char, Vec<i64>>,
    /// Vocabulary string → token id.
    pub id_of: HashMap<String, i64>,
}

/// Characters considered: every non-ASCII code point of planes 0–1 that is not a control,
/// whitespace, surrogate or BMP private-use character, zero-width format characters included;
/// unassigned code points too (leaving them out was tried on three zoos on 2026-12-07 and changed
/// recall by one trigger either way: docs/scanner-zoo.md).
fn pool() -> impl Iterator<Item = char> {
    (0xA0u32..0x20000)
        .filter(|c| !(0xE000..0xF900).contains(c))
        .filter_map(char::from_u32)
        .filter(|c| !c.is_control() && !c.is_whitespace())
}

impl CharIndex {
    /// The same piece without the word end: `x</w>` → `x` (how a character sits inside a word,
    /// where a substituted trigger is learned).
    pub fn open_variant(&self, id: i64) -> Option<i64> {
        let raw = self.raw.get(id as usize)?;
        self.id_of.get(raw.strip_suffix("</w>")?).copied()
    }

    /// Whether every token of `ids` stands for ASCII bytes: the text is ASCII to the tokenizer
    /// (a compatibility letter such as the Kelvin sign is folded to `k`).
    pub fn spelled_in_ascii(&self, ids: &[i64]) -> bool {
        ids.iter().all(|&id| {
            self.bytes
                .get(id as usize)
                .is_some_and(|b| b.iter().all(u8::is_ascii))
        })
    }

    /// The text two tokens spell together, when it is whole UTF-8 (a character split into two byte
    /// tokens, e.g. Cyrillic, Latin Extended, IPA).
    pub fn joined(&self, a: i64, b: i64) -> Option<String> {
        let mut v = self.bytes.get(a as usize)?.clone();
        v.extend_from_slice(self.bytes.get(b as usize)?);
        String::from_utf8(v).ok().filter(|s| !s.is_empty())
    }

    pub fn new(tok: &ClipTokenizer) -> Result<Self> {
        let to_byte = unicode_to_byte();
        let vocab = tok.inner().get_vocab(false);
        let n = vocab.values().copied().max().map_or(0, |m| m as usize + 1);
        let mut text = vec![None; n];
        let mut raw = vec![String::new(); n];
        let mut token_bytes = vec![vec![]; n];
        for (token, &id) in &vocab {
            raw[id as usize] = token.clone();
            let body = token.strip_suffix("</w>").unwrap_or(token);
            let bytes: Option<Vec<u8>> = body.chars().map(|c| to_byte.get(&c).copied()).collect();
            token_bytes[id as usize] = bytes.clone().unwrap_or_default();
            text[id as usize] = bytes
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|s| !s.is_empty());
        }
        let mut chars_of: HashMap<i64, Vec<char>> = HashMap::new();
        let mut tokens_of = BTreeMap::new();
        let mut plain = tok.inner().clone();
        plain
            .with_padding(None)
            .with_truncation(None)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let chars: Vec<char> = pool().collect();
        let strings: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
        let encoded = plain
            .encode_batch(strings, false)
            .map_err(|e| anyhow::anyhow!("tokenising the character pool: {e}"))?;
        for (c, e) in chars.into_iter().zip(encoded) {
            let ids: Vec<i64> = e.get_ids().iter().map(|&i| i as i64).collect();
            if ids.is_empty() {
                continue;
            }
            for &id in &ids {
                let whole = text
                    .get(id as usize)
                    .and_then(|t| t.as_ref())
                    .is_some_and(|t| t.chars().count() >= 1);
                if !whole {
                    chars_of.entry(id).or_default().push(c);
                }
            }
            tokens_of.insert(c, ids);
        }
        let id_of = raw
            .iter()
            .enumerate()
            .map(|(i, r)| (r.clone(), i as i64))
            .collect();
        Ok(Self {
            id_of,
            text,
            raw,
            bytes: token_bytes,
            chars_of,
            tokens_of,
        })
    }
}
