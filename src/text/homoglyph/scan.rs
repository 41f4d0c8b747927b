//! Per-prompt homoglyph report: every character's code point, script and Latin look-alike, the
//! mixed-script words, the UTS #39 restriction level, invisible characters and NFKC differences.
use serde::Serialize;
use unicode_normalization::UnicodeNormalization;
use unicode_script::{Script, UnicodeScript};
use unicode_security::{MixedScript, RestrictionLevel, RestrictionLevelDetection};

use super::confusables::{code_point, latin_lookalike, script_name};
use super::invisible::invisible_kind;
use super::sanitize::{analyze, to_latin, Reason};

#[derive(Debug, Clone, Serialize)]
pub struct CharReport {
    /// Character index (0-based).
    pub index: usize,
    pub char: char,
    pub code_point: String,
    pub script: &'static str,
    /// UTS #39 says it imitates Latin text (`latin_lookalike`).
    pub confusable: bool,
    pub latin_lookalike: Option<String>,
    /// `zero-width`, `bidi-control`, `tag`, `variation-selector`, `other-ignorable`.
    pub invisible: Option<&'static str>,
    /// Its NFKC form, when that differs.
    pub nfkc: Option<String>,
    /// Sanitising (map mode) would change it, and why.
    pub flagged: Option<Reason>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MixedWord {
    pub word: String,
    /// Character index of its first character.
    pub index: usize,
    /// The scripts it mixes, in order of appearance (Common and Inherited left out).
    pub scripts: Vec<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScanReport {
    pub text: String,
    /// UTS #39 restriction level of the prompt's letters, digits and marks (spaces and punctuation
    /// would make every prompt `unrestricted`, the level being defined for identifiers).
    pub restriction_level: &'static str,
    pub mixed_script_words: Vec<MixedWord>,
    pub confusables: usize,
    pub invisible: usize,
    /// The NFKC form of the prompt, when it differs.
    pub nfkc: Option<String>,
    /// What `sanitize --mode map` makes of it, when that differs.
    pub sanitized: Option<String>,
    /// Anything flagged by sanitising or a mixed-script word.
    pub suspicious: bool,
    pub chars: Vec<CharReport>,
}

/// Scan one prompt.
pub fn scan(text: &str) -> ScanReport {
    let flags = analyze(text, false);
    let chars: Vec<CharReport> = text
        .chars()
        .enumerate()
        .map(|(index, c)| {
            let latin = latin_lookalike(c);
            let nfkc: String = std::iter::once(c).nfkc().collect();
            CharReport {
                index,
                char: c,
                code_point: code_point(c),
                script: script_name(c),
                confusable: latin.is_some(),
                latin_lookalike: latin,
                invisible: invisible_kind(c),
                nfkc: (!nfkc.chars().eq(std::iter::once(c))).then_some(nfkc),
                flagged: flags
                    .iter()
                    .find(|f| f.index == index)
                    .map(|f| f.reason.clone()),
            }
        })
        .collect();
    let mixed_script_words = mixed_script_words(text);
    let nfkc: String = text.nfkc().collect();
    let sanitized = to_latin(text);
    ScanReport {
        text: text.to_string(),
        restriction_level: level_name(restriction_level(text)),
        confusables: chars.iter().filter(|c| c.confusable).count(),
        invisible: chars.iter().filter(|c| c.invisible.is_some()).count(),
        suspicious: !flags.is_empty() || !mixed_script_words.is_empty(),
        mixed_script_words,
        nfkc: (nfkc != text).then_some(nfkc),
        sanitized: (sanitized != text).then_some(sanitized),
        chars,
    }
}

/// Restriction level of the prompt's letters, digits and combining marks.
pub fn restriction_level(text: &str) -> RestrictionLevel {
    let letters: String = text
        .chars()
        .filter(|&c| c.is_alphanumeric() || unicode_normalization::char::is_combining_mark(c))
        .collect();
    letters.as_str().detect_restriction_level()
}

pub fn level_name(level: RestrictionLevel) -> &'static str {
    match level {
        RestrictionLevel::ASCIIOnly => "ascii-only",
        RestrictionLevel::SingleScript => "single-script",
        RestrictionLevel::HighlyRestrictive => "highly-restrictive",
        RestrictionLevel::ModeratelyRestrictive => "moderately-restrictive",
        RestrictionLevel::MinimallyRestrictive => "minimally-restrictive",
        RestrictionLevel::Unrestricted => "unrestricted",
    }
}

/// Whitespace-separated words that are not single-script (UTS #39), invisible characters ignored.
pub fn mixed_script_words(text: &str) -> Vec<MixedWord> {
    let mut out = vec![];
    let mut index = 0;
    for piece in text.split(char::is_whitespace) {
        let visible: String = piece
            .chars()
            .filter(|&c| invisible_kind(c).is_none())
            .collect();
        if !visible.as_str().is_single_script() {
            let mut scripts: Vec<&'static str> = vec![];
            for c in visible
                .chars()
                .filter(|c| !matches!(c.script(), Script::Common | Script::Inherited))
            {
                let name = script_name(c);
                if !scripts.contains(&name) {
                    scripts.push(name);
                }
            }
            out.push(MixedWord {
                word: piece.to_string(),
                index,
                scripts,
            });
        }
        index += piece.chars().count() + 1;
    }
    out
}
