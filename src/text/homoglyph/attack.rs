//! Homoglyph attack prompts (Struppek et al., "Exploiting Cultural Biases via Homoglyphs in
//! Text-to-Image Synthesis", JAIR 2023): Latin characters replaced by look-alikes of chosen scripts.
use serde::Serialize;

use super::confusables::{code_point, confusables_of, family_of, known_families, script_name};
use crate::error::Result;
use crate::input_bail;

/// The families the paper and the issue name; `--scripts` defaults to them.
pub const DEFAULT_FAMILIES: &[&str] = &[
    "cyrillic",
    "greek",
    "armenian",
    "cherokee",
    "latin-extended",
    "fullwidth",
];

/// How many occurrences of the Latin character to replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// The first N occurrences (the reference replaces the first one only).
    First(usize),
    All,
}

impl std::str::FromStr for Count {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "all" => Ok(Count::All),
            n => match n.parse::<usize>() {
                Ok(k) if k > 0 => Ok(Count::First(k)),
                _ => input_bail!("count `{s}` is neither a positive number nor `all`"),
            },
        }
    }
}

/// What to substitute.
#[derive(Debug, Clone)]
pub struct AttackSpec {
    /// Families to draw look-alikes from (see `family_of`); empty means every family.
    pub families: Vec<String>,
    /// Latin characters to replace; empty means every ASCII letter.
    pub targets: Vec<char>,
    /// Explicit replacement characters, used for every target instead of the UTS #39 confusables
    /// (the paper's set for `o` includes `ọ` U+1ECD, which UTS #39 does not list).
    pub glyphs: Vec<char>,
    pub count: Count,
}

impl Default for AttackSpec {
    fn default() -> Self {
        Self {
            families: DEFAULT_FAMILIES.iter().map(|s| s.to_string()).collect(),
            targets: vec![],
            glyphs: vec![],
            count: Count::First(1),
        }
    }
}

/// One replacement character for one Latin character.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Substitution {
    pub latin: char,
    pub glyph: char,
}

/// One attacked prompt.
#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    pub latin: char,
    pub glyph: char,
    pub code_point: String,
    pub script: &'static str,
    pub family: String,
    /// Occurrences replaced.
    pub replaced: usize,
    pub text: String,
}

/// Check family names against the families that hold a look-alike of some ASCII letter.
pub fn validate_families(families: &[String]) -> Result<()> {
    let known = known_families();
    for f in families {
        if !known.contains(f) {
            input_bail!(
                "unknown script family `{f}`: use `all` or some of {}",
                known.join(", ")
            );
        }
    }
    Ok(())
}

/// The substitutions `spec` allows for `latin`.
pub fn substitutions_for(latin: char, spec: &AttackSpec) -> Vec<Substitution> {
    if !spec.glyphs.is_empty() {
        return spec
            .glyphs
            .iter()
            .filter(|&&g| g != latin)
            .map(|&glyph| Substitution { latin, glyph })
            .collect();
    }
    confusables_of(latin)
        .into_iter()
        .filter(|l| spec.families.is_empty() || spec.families.contains(&l.family))
        .map(|l| Substitution {
            latin,
            glyph: l.glyph,
        })
        .collect()
}

/// Replace the first `count` occurrences of `latin` with `glyph`; the number replaced.
pub fn replace_occurrences(text: &str, latin: char, glyph: char, count: Count) -> (String, usize) {
    let limit = match count {
        Count::First(n) => n,
        Count::All => usize::MAX,
    };
    let mut replaced = 0;
    let out = text
        .chars()
        .map(|c| {
            if c == latin && replaced < limit {
                replaced += 1;
                glyph
            } else {
                c
            }
        })
        .collect();
    (out, replaced)
}

/// Every attacked version of `prompt` that `spec` allows: one per (Latin character present in the
/// prompt, look-alike) pair.
pub fn attack_variants(prompt: &str, spec: &AttackSpec) -> Vec<Variant> {
    let mut targets: Vec<char> = if spec.targets.is_empty() {
        prompt.chars().filter(char::is_ascii_alphabetic).collect()
    } else {
        spec.targets
            .iter()
            .copied()
            .filter(|&t| prompt.contains(t))
            .collect()
    };
    targets.sort_unstable();
    targets.dedup();
    let mut out = vec![];
    for latin in targets {
        for sub in substitutions_for(latin, spec) {
            let (text, replaced) = replace_occurrences(prompt, latin, sub.glyph, spec.count);
            out.push(Variant {
                latin,
                glyph: sub.glyph,
                code_point: code_point(sub.glyph),
                script: script_name(sub.glyph),
                family: family_of(sub.glyph),
                replaced,
                text,
            });
        }
    }
    out
}
