//! CLIP byte-level BPE through the `tokenizers` crate, built exactly as transformers' `CLIPTokenizer`
//! builds it (NFC → whitespace runs to one space → lowercase; CLIP's split regex; byte-level BPE with
//! `</w>` word ends; `<|startoftext|> … <|endoftext|>`), padded and truncated to 77 tokens keeping
//! the end-of-text token.
use anyhow::Context;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;
use tokenizers::{PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::error::Result;
use crate::{input_bail, input_err};

pub const BOS: &str = "<|startoftext|>";
pub const EOS: &str = "<|endoftext|>";
/// Context length of every CLIP text tower.
pub const MAX_LENGTH: usize = 77;

/// The real CLIP merges (`bpe_simple_vocab_16e6.txt.gz` from the open-clip-torch wheel), embedded.
static VOCAB_GZ: &[u8] = include_bytes!(env!("CLIPDOOR_VOCAB_GZ"));

/// CLIP's split pattern, as transformers 5 writes it (special tokens first).
const SPLIT_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// A CLIP tokenizer with its padding token and context length.
#[derive(Clone)]
pub struct ClipTokenizer {
    tok: Tokenizer,
    pad_token: String,
    pad_id: u32,
    max_length: usize,
}

/// GPT-2/CLIP `bytes_to_unicode`: printable bytes map to themselves, the rest to U+0100 onwards, in
/// the order CLIP's `SimpleTokenizer` lists them (which fixes the first 512 vocabulary ids).
fn bytes_to_unicode() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    cs.into_iter().map(|c| char::from_u32(c).unwrap()).collect()
}

/// `bytes_to_unicode` inverted: vocabulary character → the byte it stands for.
pub fn unicode_to_byte() -> BTreeMap<char, u8> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut rest: Vec<u32> = (0..256u32).filter(|b| !printable.contains(b)).collect();
    printable.append(&mut rest);
    printable
        .into_iter()
        .zip(bytes_to_unicode())
        .map(|(b, c)| (c, b as u8))
        .collect()
}

/// Vocabulary and merges from the raw `bpe_simple_vocab_16e6.txt.gz`, as CLIP's `SimpleTokenizer`
/// derives them (identical to `openai/clip-vit-large-patch14`'s vocab.json / merges.txt).
pub fn vocab_from_bpe_gz(gz: &[u8]) -> Result<(BTreeMap<String, u32>, Vec<String>)> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_string(&mut text)
        .map_err(|e| input_err!("the CLIP BPE file is not gzipped UTF-8 text ({e})"))?;
    let lines: Vec<&str> = text.split('\n').collect();
    let n_merges = 49152 - 256 - 2;
    if lines.len() < n_merges + 1 {
        input_bail!(
            "the CLIP BPE file has {} lines, expected at least {}",
            lines.len(),
            n_merges + 1
        );
    }
    let merges: Vec<String> = lines[1..=n_merges].iter().map(|s| s.to_string()).collect();
    let base = bytes_to_unicode();
    let mut words: Vec<String> = base.iter().map(|c| c.to_string()).collect();
    words.extend(base.iter().map(|c| format!("{c}</w>")));
    words.extend(merges.iter().map(|m| m.replace(' ', "")));
    words.push(BOS.into());
    words.push(EOS.into());
    let vocab = words
        .into_iter()
        .enumerate()
        .map(|(i, w)| (w, i as u32))
        .collect();
    Ok((vocab, merges))
}

/// tokenizer.json for a CLIP BPE vocabulary, as transformers' CLIPTokenizer constructs it.
fn tokenizer_json(vocab: &BTreeMap<String, u32>, merges: &[String], specials: &[&str]) -> Value {
    let id = |t: &str| vocab.get(t).copied();
    let mut added: Vec<(u32, &str)> = specials
        .iter()
        .filter_map(|s| id(s).map(|i| (i, *s)))
        .collect();
    added.sort();
    added.dedup();
    let added: Vec<Value> = added
        .iter()
        .map(|(i, s)| json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": SPLIT_PATTERN}, "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]},
        "post_processor": {"type": "RobertaProcessing", "sep": [EOS, id(EOS)], "cls": [BOS, id(BOS)],
                           "trim_offsets": false, "add_prefix_space": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": EOS, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": merges}
    })
}

/// `pad_token` in a tokenizer_config.json: a string or an AddedToken dict.
fn token_field(cfg: &Value, key: &str) -> Option<String> {
    match cfg.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_owned),
        _ => None,
    }
}

impl ClipTokenizer {
    /// The embedded real CLIP vocabulary with the given padding token (`<|endoftext|>` for SD 1.x,
    /// `!` for SD 2.x).
    pub fn embedded(pad_token: &str) -> Result<Self> {
        Self::from_bpe_gz(VOCAB_GZ, pad_token)
    }

    /// From the raw `bpe_simple_vocab_16e6.txt.gz` bytes.
    pub fn from_bpe_gz(gz: &[u8], pad_token: &str) -> Result<Self> {
        let (vocab, merges) = vocab_from_bpe_gz(gz)?;
        Self::from_vocab_merges(&vocab, &merges, pad_token)
    }

    fn from_vocab_merges(
        vocab: &BTreeMap<String, u32>,
        merges: &[String],
        pad_token: &str,
    ) -> Result<Self> {
        let json = tokenizer_json(vocab, merges, &[BOS, EOS, pad_token]);
        let tok = Tokenizer::from_str(&json.to_string())
            .map_err(|e| anyhow::anyhow!("building the CLIP tokenizer: {e}"))?;
        Self::finish(tok, pad_token)
    }

    /// From a tokenizer folder: `tokenizer.json`, or `vocab.json` + `merges.txt` (what SD 1.x
    /// repos ship), plus `tokenizer_config.json` for the padding token and `model_max_length`.
    pub fn from_folder(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: Value = if cfg_path.exists() {
            let text = std::fs::read_to_string(&cfg_path)
                .with_context(|| format!("reading {}", cfg_path.display()))?;
            serde_json::from_str(&text)
                .map_err(|e| input_err!("{} is not valid JSON ({e})", cfg_path.display()))?
        } else {
            json!({})
        };
        let pad = token_field(&cfg, "pad_token").unwrap_or_else(|| EOS.to_string());
        let (vocab_p, merges_p, tok_p) = (
            dir.join("vocab.json"),
            dir.join("merges.txt"),
            dir.join("tokenizer.json"),
        );
        let mut me = if vocab_p.exists() && merges_p.exists() {
            let vocab: BTreeMap<String, u32> = serde_json::from_str(
                &std::fs::read_to_string(&vocab_p)
                    .with_context(|| format!("reading {}", vocab_p.display()))?,
            )
            .map_err(|e| input_err!("{} is not a BPE vocabulary ({e})", vocab_p.display()))?;
            let merges: Vec<String> = std::fs::read_to_string(&merges_p)
                .with_context(|| format!("reading {}", merges_p.display()))?
                .lines()
                .filter(|l| !l.starts_with("#version") && !l.is_empty())
                .map(str::to_owned)
                .collect();
            Self::from_vocab_merges(&vocab, &merges, &pad)?
        } else if tok_p.exists() {
            let mut tok = Tokenizer::from_file(&tok_p).map_err(|e| {
                input_err!("{} is not a valid tokenizer.json ({e})", tok_p.display())
            })?;
            tok.with_padding(None)
                .with_truncation(None)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Self::finish(tok, &pad)?
        } else {
            input_bail!(
                "no tokenizer in {}: put tokenizer.json, or vocab.json + merges.txt (+ tokenizer_config.json) there, or run `clipdoor init-encoder` to write the real CLIP tokenizer",
                dir.display()
            );
        };
        if let Some(n) = cfg.get("model_max_length").and_then(Value::as_u64) {
            if n <= MAX_LENGTH as u64 {
                me.max_length = n as usize;
                me.configure()?;
            }
        }
        Ok(me)
    }

    fn finish(tok: Tokenizer, pad_token: &str) -> Result<Self> {
        let pad_id = tok
            .token_to_id(pad_token)
            .ok_or_else(|| input_err!("padding token `{pad_token}` is not in the vocabulary"))?;
        let mut me = Self {
            tok,
            pad_token: pad_token.to_string(),
            pad_id,
            max_length: MAX_LENGTH,
        };
        me.configure()?;
        Ok(me)
    }

    fn configure(&mut self) -> Result<()> {
        self.tok
            .with_truncation(Some(TruncationParams {
                max_length: self.max_length,
                ..Default::default()
            }))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.tok.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(self.max_length),
            direction: PaddingDirection::Right,
            pad_id: self.pad_id,
            pad_token: self.pad_token.clone(),
            ..Default::default()
        }));
        Ok(())
    }

    pub fn pad_token(&self) -> &str {
        &self.pad_token
    }
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }
    /// The id of `<|startoftext|>` (49406 in CLIP's vocabulary).
    pub fn bos_id(&self) -> i64 {
        self.token_to_id(BOS).map_or(49406, i64::from)
    }
    /// The id of `<|endoftext|>` (49407). Not the model config's `eos_token_id`, which the original
    /// OpenAI configs (ViT-L/14, SD 1.x and 2.x) leave at the legacy value 2.
    pub fn eos_id(&self) -> i64 {
        self.token_to_id(EOS).map_or(49407, i64::from)
    }
    pub fn max_length(&self) -> usize {
        self.max_length
    }
    /// A text's ids as a word inside a prompt: its tokens without BOS and the end-of-text (a text
    /// that fills the context loses its last token, where the end-of-text would stand).
    pub fn word_ids(&self, text: &str) -> Result<Vec<i64>> {
        let ids = self.encode(text)?;
        let eos = self.eos_id();
        let end = ids
            .iter()
            .position(|&i| i == eos)
            .map_or(ids.len(), |p| p + 1);
        Ok(ids
            .get(1..end.saturating_sub(1))
            .map(<[i64]>::to_vec)
            .unwrap_or_default())
    }
    pub fn token_to_id(&self, t: &str) -> Option<u32> {
        self.tok.token_to_id(t)
    }
    pub fn inner(&self) -> &Tokenizer {
        &self.tok
    }

    /// Add `token` as one unsplittable token after the vocabulary (what transformers'
    /// `tokenizer.add_tokens(token)` does, and diffusers' `load_textual_inversion`); returns its id.
    /// A token already in the vocabulary is refused: it would not get a new embedding.
    pub fn add_token(&mut self, token: &str) -> Result<u32> {
        if token.is_empty() || token.chars().any(char::is_whitespace) {
            input_bail!(
                "token {token:?}: a learned token must be one word without spaces, such as <s*>"
            );
        }
        if self.tok.token_to_id(token).is_some()
            || self.tok.token_to_id(&format!("{token}</w>")).is_some()
        {
            input_bail!("token {token:?} is already in the tokenizer's vocabulary: choose a new one, such as <{token}>");
        }
        self.tok
            .add_tokens(&[tokenizers::AddedToken::from(token.to_string(), false).normalized(true)]);
        self.tok
            .token_to_id(token)
            .ok_or_else(|| anyhow::anyhow!("adding {token:?} to the tokenizer failed"))
    }

    /// Token ids of one prompt, padded/truncated to the context length.
    pub fn encode(&self, prompt: &str) -> Result<Vec<i64>> {
        let e = self
            .tok
            .encode(prompt, true)
            .map_err(|e| anyhow::anyhow!("tokenising {prompt:?}: {e}"))?;
        Ok(e.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// Token ids without special tokens, padding or truncation (for inspecting how a text splits).
    pub fn tokens(&self, text: &str) -> Result<Vec<String>> {
        let mut t = self.tok.clone();
        t.with_padding(None)
            .with_truncation(None)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let e = t.encode(text, false).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(e.get_tokens().to_vec())
    }

    /// Text of token ids as transformers' `CLIPTokenizer.decode(ids, skip_special_tokens=True)`:
    /// the vocabulary strings joined, their bytes restored (invalid UTF-8 becomes U+FFFD), `</w>`
    /// read as a space, the ends trimmed. An adversarial token string need not re-tokenize to the
    /// same ids; the attacks check that.
    pub fn decode(&self, ids: &[i64]) -> String {
        let specials = [self.tok.token_to_id(BOS), self.tok.token_to_id(EOS)];
        static TO_BYTE: std::sync::OnceLock<BTreeMap<char, u8>> = std::sync::OnceLock::new();
        let to_byte = TO_BYTE.get_or_init(unicode_to_byte);
        let mut bytes = vec![];
        for &id in ids {
            let Ok(id) = u32::try_from(id) else { continue };
            if specials.contains(&Some(id)) {
                continue;
            }
            let Some(token) = self.tok.id_to_token(id) else {
                continue;
            };
            for c in token.chars() {
                match to_byte.get(&c) {
                    Some(&b) => bytes.push(b),
                    None => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                }
            }
        }
        String::from_utf8_lossy(&bytes)
            .replace("</w>", " ")
            .trim()
            .to_string()
    }

    /// `[N, max_length]` int64 ids for a batch.
    pub fn encode_batch(&self, prompts: &[impl AsRef<str>]) -> Result<tch::Tensor> {
        let mut flat = Vec::with_capacity(prompts.len() * self.max_length);
        for p in prompts {
            flat.extend(self.encode(p.as_ref())?);
        }
        Ok(tch::Tensor::from_slice(&flat).view([prompts.len() as i64, self.max_length as i64]))
    }

    /// `[N, max_length]` ids as diffusers' semantic pipeline tokenises its prompt and edit prompts:
    /// padded to the context length but not truncated, then cut to it, so a prompt longer than the
    /// context keeps a word (not the end token) in its last position.
    pub fn encode_batch_sliced(&self, prompts: &[impl AsRef<str>]) -> Result<tch::Tensor> {
        let mut t = self.tok.clone();
        t.with_truncation(None)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut flat = Vec::with_capacity(prompts.len() * self.max_length);
        for p in prompts {
            let e = t
                .encode(p.as_ref(), true)
                .map_err(|e| anyhow::anyhow!("tokenising {:?}: {e}", p.as_ref()))?;
            flat.extend(e.get_ids().iter().take(self.max_length).map(|&i| i as i64));
        }
        Ok(tch::Tensor::from_slice(&flat).view([prompts.len() as i64, self.max_length as i64]))
    }

    /// Write the tokenizer folder in transformers' layout: vocab.json, merges.txt, tokenizer.json,
    /// tokenizer_config.json, special_tokens_map.json. Each file atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        use crate::io::atomic::{write_atomic, write_json};
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json: Value = serde_json::from_str(
            &self
                .tok
                .to_string(false)
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        )?;
        let vocab = json["model"]["vocab"].clone();
        let merges: Vec<String> = json["model"]["merges"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| match m {
                        Value::String(s) => s.clone(),
                        Value::Array(p) => p
                            .iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join(" "),
                        _ => String::new(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut bare = json.clone();
        bare["padding"] = Value::Null;
        bare["truncation"] = Value::Null;
        write_json(&dir.join("vocab.json"), &vocab)?;
        let mut m = String::from("#version: 0.2\n");
        for l in &merges {
            m.push_str(l);
            m.push('\n');
        }
        write_atomic(&dir.join("merges.txt"), m.as_bytes())?;
        write_json(&dir.join("tokenizer.json"), &bare)?;
        let specials = json!({"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": self.pad_token});
        write_json(&dir.join("special_tokens_map.json"), &specials)?;
        let mut cfg = specials.clone();
        cfg["tokenizer_class"] = json!("CLIPTokenizer");
        cfg["model_max_length"] = json!(self.max_length);
        cfg["do_lower_case"] = json!(true);
        cfg["clean_up_tokenization_spaces"] = json!(false);
        write_json(&dir.join("tokenizer_config.json"), &cfg)?;
        Ok(())
    }
}
