//! The concept's words written so that a filter or an erasure trained on their usual spelling may
//! not see them: letters replaced by look-alikes of other scripts (Struppek et al., JAIR 2023; the
//! toolkit's UTS #39 confusables) and invisible characters inside the word. Every rewrite of a
//! prompt is scored like the token search — 1 − cos between the attacked encoder's pooled embedding
//! of the rewrite and the reference's of the original prompt — and the best ones are kept.
use tch::Kind;

use crate::error::Result;
use crate::models::text_encoder::TextEncoder;
use crate::text::homoglyph::attack::substitutions_for;
use crate::text::homoglyph::{AttackSpec, Count};

/// Invisible characters tried inside a word: zero-width space, soft hyphen, word joiner, zero-width
/// non-joiner.
pub const INVISIBLE: &[char] = &['\u{200B}', '\u{00AD}', '\u{2060}', '\u{200C}'];

#[derive(Debug, Clone, serde::Serialize)]
pub struct HomoglyphOptions {
    /// Script families for look-alikes (the toolkit's names); empty: every family.
    pub families: Vec<String>,
    /// Rewrites kept per prompt.
    pub per_prompt: usize,
    /// Also try invisible characters inside the words.
    pub invisible: bool,
    pub batch: usize,
}

/// Rewrites of one word: each letter replaced by each of its look-alikes, every letter that has
/// one replaced at once (per look-alike rank), and each invisible character after each letter but
/// the last.
pub fn rewrites(word: &str, opts: &HomoglyphOptions) -> Vec<String> {
    let spec = AttackSpec {
        families: opts.families.clone(),
        targets: vec![],
        glyphs: vec![],
        count: Count::First(1),
    };
    let chars: Vec<char> = word.chars().collect();
    let subs: Vec<Vec<char>> = chars
        .iter()
        .map(|&c| {
            substitutions_for(c, &spec)
                .into_iter()
                .map(|s| s.glyph)
                .collect()
        })
        .collect();
    let mut out = vec![];
    for (i, glyphs) in subs.iter().enumerate() {
        for &g in glyphs {
            let mut w = chars.clone();
            w[i] = g;
            out.push(w.into_iter().collect::<String>());
        }
    }
    let most = subs.iter().map(Vec::len).max().unwrap_or(0);
    for rank in 0..most {
        let w: String = chars
            .iter()
            .zip(&subs)
            .map(|(&c, g)| g.get(rank).copied().unwrap_or(c))
            .collect();
        out.push(w);
    }
    if opts.invisible {
        for i in 1..chars.len() {
            for &z in INVISIBLE {
                let mut w = chars.clone();
                w.insert(i, z);
                out.push(w.into_iter().collect());
            }
        }
    }
    out.sort();
    out.dedup();
    out.retain(|w| w != word);
    out
}

/// Every rewrite of `prompt`: for each concept word it holds (case-insensitive), each rewrite of
/// the lower-case word put in place of all its occurrences.
pub fn prompt_rewrites(prompt: &str, words: &[String], opts: &HomoglyphOptions) -> Vec<String> {
    let lower = prompt.to_lowercase();
    let mut out = vec![];
    for w in words {
        // Occurrences by byte offset in the lower-cased prompt; only where lower-casing kept lengths.
        if lower.len() != prompt.len() {
            break;
        }
        let hits: Vec<usize> = lower.match_indices(w.as_str()).map(|(i, _)| i).collect();
        if hits.is_empty() {
            continue;
        }
        for r in rewrites(w, opts) {
            let mut s = String::new();
            let mut last = 0;
            for &h in &hits {
                s.push_str(&prompt[last..h]);
                s.push_str(&r);
                last = h + w.len();
            }
            s.push_str(&prompt[last..]);
            out.push(s);
        }
    }
    out
}

/// 1 − cos(pooled(enc, text), target) for each text; `target` unit `[H]`.
pub fn text_distances(
    enc: &TextEncoder,
    texts: &[String],
    target: &tch::Tensor,
    batch: usize,
) -> Result<Vec<f64>> {
    let target = target.to_device(enc.device());
    let mut out = vec![];
    for chunk in texts.chunks(batch.max(1)) {
        let (_, o) = tch::no_grad(|| enc.encode(chunk, false))?;
        let p = o.pooled_output.to_kind(Kind::Float);
        let p = &p / p.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12);
        let d: tch::Tensor = tch::no_grad(|| 1.0 - p.matmul(&target));
        out.extend(Vec::<f64>::try_from(
            d.to_kind(Kind::Double).to_device(tch::Device::Cpu),
        )?);
    }
    Ok(out)
}
