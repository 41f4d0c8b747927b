//! What a token search may use: the vocabulary without the special tokens and without every token
//! that spells a banned word (MMA-Diffusion bans any vocabulary entry containing a concept word),
//! and how a row of searched tokens becomes model input and text.
use rand::Rng;
use tch::{Device, Tensor};

use crate::error::Result;
use crate::input_bail;
use crate::models::text_encoder::TextEncoder;
use crate::text::tokenizer::{BOS, EOS};

pub struct TokenSpace {
    /// Ids a search may place, ascending.
    pub allowed: Vec<i64>,
    /// Ids refused because they spell a banned word.
    pub banned: Vec<i64>,
    pub bos: i64,
    pub eos: i64,
    pub pad: i64,
    pub context: usize,
}

impl TokenSpace {
    /// The space of `enc`'s vocabulary with `ban` words (case-insensitive substrings of a token's
    /// text) removed.
    pub fn new(enc: &TextEncoder, ban: &[String]) -> Result<Self> {
        let tok = &enc.tokenizer;
        let id = |t: &str| -> Result<i64> {
            match tok.token_to_id(t) {
                Some(i) => Ok(i as i64),
                None => input_bail!("the tokenizer has no `{t}` token: give a CLIP tokenizer"),
            }
        };
        let (bos, eos) = (id(BOS)?, id(EOS)?);
        let pad = tok.pad_id() as i64;
        let vocab = (enc.config.vocab_size as usize).min(tok.inner().get_vocab_size(true));
        let ban: Vec<String> = ban
            .iter()
            .map(|w| w.trim().to_lowercase())
            .filter(|w| !w.is_empty())
            .collect();
        let (mut allowed, mut banned) = (vec![], vec![]);
        for i in 0..vocab as i64 {
            if i == bos || i == eos {
                continue;
            }
            let text = tok.decode(&[i]).to_lowercase();
            if ban.iter().any(|w| text.contains(w.as_str())) {
                banned.push(i);
            } else {
                allowed.push(i);
            }
        }
        if allowed.is_empty() {
            input_bail!("the ban list leaves no token to search with");
        }
        Ok(Self {
            allowed,
            banned,
            bos,
            eos,
            pad,
            context: tok.max_length(),
        })
    }

    pub fn random_token(&self, rng: &mut impl Rng) -> i64 {
        self.allowed[rng.random_range(0..self.allowed.len())]
    }

    pub fn is_allowed(&self, id: i64) -> bool {
        self.allowed.binary_search(&id).is_ok()
    }

    /// `[BOS, tokens…, EOS, pad…]` at the context length.
    pub fn full_row(&self, tokens: &[i64]) -> Vec<i64> {
        let mut row = Vec::with_capacity(self.context);
        row.push(self.bos);
        row.extend(tokens.iter().take(self.context - 2));
        row.push(self.eos);
        row.resize(self.context, self.pad);
        row
    }

    /// `[N, context]` ids of token rows.
    pub fn batch(&self, rows: &[Vec<i64>], device: Device) -> Tensor {
        let flat: Vec<i64> = rows.iter().flat_map(|r| self.full_row(r)).collect();
        Tensor::from_slice(&flat)
            .view([rows.len() as i64, self.context as i64])
            .to_device(device)
    }

    /// The tokens `text` becomes (without BOS/EOS/padding).
    pub fn tokens_of(&self, enc: &TextEncoder, text: &str) -> Result<Vec<i64>> {
        let ids = enc.tokenizer.encode(text)?;
        Ok(ids
            .into_iter()
            .skip(1)
            .take_while(|&i| i != self.eos)
            .collect())
    }
}

/// Words of a concept name and of `extra`, lower-case, for bans and rewrites
/// (`"nudity, naked"` → `nudity`, `naked`).
pub fn concept_words(concept: &str, extra: &[String]) -> Vec<String> {
    let mut words: Vec<String> = std::iter::once(concept)
        .chain(extra.iter().map(String::as_str))
        .flat_map(|s| s.split(|c: char| c == ',' || c.is_whitespace()))
        .map(|w| w.trim().to_lowercase())
        .filter(|w| !w.is_empty())
        .collect();
    words.sort();
    words.dedup();
    words
}
