//! Undo homoglyph tricks in a prompt without mangling legitimate non-Latin text.
//!
//! Which characters are suspect ([`analyze`]): every invisible character, and every character with a
//! Latin look-alike (UTS #39 skeleton) that sits in
//! - a mixed-script word (`pаypаl` with Cyrillic `а`),
//! - a Latin word (`ɑpple` with Latin alpha, fullwidth `ｏ` among ASCII),
//! - a non-Latin word disguised as Latin inside a Latin prompt: every letter of it has an ASCII
//!   look-alike (Cyrillic `а` standing for the article "a").
//!
//! A prompt written in Greek or Cyrillic keeps its words, and so does a genuine foreign word in a
//! Latin prompt (`νησί`: η and ί have no ASCII look-alike), unless `all_scripts` is set.
use serde::Serialize;
use unicode_script::{Script, UnicodeScript};
use unicode_security::MixedScript;

use super::confusables::{code_point, latin_lookalike, script_name};
use super::invisible::invisible_kind;
use crate::error::Result;

/// What sanitising does with a suspect character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Replace confusables by their Latin look-alike; drop invisible characters.
    Map,
    /// Drop confusables and invisible characters.
    Strip,
    /// Fail (an input error, exit code 2) naming the first suspect character.
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SanitizeOptions {
    pub mode: Mode,
    /// Map confusables in words of every script, whole Greek or Cyrillic words included.
    pub all_scripts: bool,
}

/// Why a character is suspect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    Invisible,
    MixedScriptWord,
    LatinWord,
    DisguisedWord,
    AllScripts,
}

impl Reason {
    pub fn describe(&self) -> &'static str {
        match self {
            Reason::Invisible => "invisible character",
            Reason::MixedScriptWord => "in a mixed-script word",
            Reason::LatinWord => "in a Latin word",
            Reason::DisguisedWord => {
                "in a non-Latin word made only of Latin look-alikes inside a Latin prompt"
            }
            Reason::AllScripts => "confusable (all scripts)",
        }
    }
}

/// One suspect character.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flag {
    /// Character index in the prompt (0-based).
    pub index: usize,
    pub char: char,
    pub code_point: String,
    pub script: &'static str,
    pub reason: Reason,
    /// What map mode puts in its place (empty for invisible characters).
    pub replacement: String,
    /// The whitespace-separated word it sits in.
    pub word: String,
}

/// The suspect characters of `text`, in order.
pub fn analyze(text: &str, all_scripts: bool) -> Vec<Flag> {
    if text.is_ascii() {
        return vec![];
    }
    let chars: Vec<char> = text.chars().collect();
    let lookalikes: Vec<Option<String>> = chars.iter().map(|&c| latin_lookalike(c)).collect();
    let latin_context = is_latin_context(&chars, &lookalikes);
    let mut flags = vec![];
    for (start, end) in words(&chars) {
        let word = &chars[start..end];
        let word_text: String = word.iter().collect();
        let visible: String = word
            .iter()
            .filter(|&&c| invisible_kind(c).is_none())
            .collect();
        let class = if all_scripts {
            Some(Reason::AllScripts)
        } else if !visible.as_str().is_single_script() {
            Some(Reason::MixedScriptWord)
        } else if visible
            .as_str()
            .resolve_script_set()
            .base
            .contains_script(Script::Latin)
        {
            Some(Reason::LatinWord)
        } else if latin_context && is_disguised(word, &lookalikes[start..end]) {
            Some(Reason::DisguisedWord)
        } else {
            None
        };
        for (offset, &c) in word.iter().enumerate() {
            let (reason, replacement) = if invisible_kind(c).is_some() {
                (Reason::Invisible, String::new())
            } else {
                match (&class, &lookalikes[start + offset]) {
                    (Some(reason), Some(latin)) => (reason.clone(), latin.clone()),
                    _ => continue,
                }
            };
            flags.push(Flag {
                index: start + offset,
                char: c,
                code_point: code_point(c),
                script: script_name(c),
                reason,
                replacement,
                word: word_text.clone(),
            });
        }
    }
    flags
}

/// Sanitise with the default options (legitimate non-Latin words kept).
pub fn sanitize(text: &str, mode: Mode) -> Result<String> {
    sanitize_with(
        text,
        &SanitizeOptions {
            mode,
            all_scripts: false,
        },
    )
}

/// Sanitise `text`. Map and strip are idempotent: they repeat until nothing is left to change
/// (mapping a word can turn the prompt Latin, which changes what counts as a disguise).
pub fn sanitize_with(text: &str, opts: &SanitizeOptions) -> Result<String> {
    if opts.mode == Mode::Reject {
        if let Some(flag) = analyze(text, opts.all_scripts).first() {
            crate::input_bail!("{}", reject_message(flag));
        }
        return Ok(text.to_string());
    }
    Ok(rewrite(text, opts.all_scripts, opts.mode == Mode::Map))
}

/// The prompt in Latin letters as far as UTS #39 says it imitates them (map mode), for code that
/// compares prompts with their Latin originals.
pub fn to_latin(text: &str) -> String {
    rewrite(text, false, true)
}

/// Map (`map` true) or strip until nothing is left to change.
fn rewrite(text: &str, all_scripts: bool, map: bool) -> String {
    let mut current = text.to_string();
    // Each pass replaces or removes at least one character that cannot come back (skeletons are
    // idempotent), so the loop ends; the bound is a guard.
    for _ in 0..=current.chars().count() {
        let flags = analyze(&current, all_scripts);
        if flags.is_empty() {
            break;
        }
        current = apply(&current, &flags, map);
    }
    current
}

/// Error text for reject mode: the character, its code point and script, its 1-based position.
pub fn reject_message(flag: &Flag) -> String {
    let position = flag.index + 1;
    if flag.reason == Reason::Invisible {
        let kind = invisible_kind(flag.char).unwrap_or("invisible");
        return format!(
            "invisible character {} ({kind}) at position {position} (word {:?}): remove it, or run `clipdoor homoglyph sanitize --mode map`",
            flag.code_point, flag.word
        );
    }
    format!(
        "character {:?} {} ({}) at position {position} imitates Latin {:?} {} (word {:?}): replace it with the Latin letter, or run `clipdoor homoglyph sanitize --mode map`",
        flag.char,
        flag.code_point,
        flag.script,
        flag.replacement,
        flag.reason.describe(),
        flag.word
    )
}

fn apply(text: &str, flags: &[Flag], map: bool) -> String {
    let mut flags = flags.iter().peekable();
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.chars().enumerate() {
        match flags.next_if(|f| f.index == i) {
            Some(flag) if map => out.push_str(&flag.replacement),
            Some(_) => {}
            None => out.push(c),
        }
    }
    out
}

/// Character ranges of whitespace-separated words.
fn words(chars: &[char]) -> Vec<(usize, usize)> {
    let mut spans = vec![];
    let mut start = None;
    for (i, c) in chars.iter().enumerate() {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push((s, chars.len()));
    }
    spans
}

/// A prompt reads as Latin when it has Latin letters and no more letters that look foreign (letters
/// of other scripts without a Latin look-alike) than Latin ones.
fn is_latin_context(chars: &[char], lookalikes: &[Option<String>]) -> bool {
    let (mut latin, mut foreign) = (0usize, 0usize);
    for (&c, lookalike) in chars
        .iter()
        .zip(lookalikes)
        .filter(|(c, _)| c.is_alphabetic())
    {
        match c.script() {
            Script::Latin => latin += 1,
            Script::Common | Script::Inherited => {}
            _ if lookalike.is_none() => foreign += 1,
            _ => {}
        }
    }
    latin > 0 && latin >= foreign
}

/// Every visible non-Common character has an ASCII look-alike: a whole-script confusable of a Latin
/// word.
fn is_disguised(word: &[char], lookalikes: &[Option<String>]) -> bool {
    let mut letters = word
        .iter()
        .zip(lookalikes)
        .filter(|(c, _)| {
            invisible_kind(**c).is_none()
                && !matches!(c.script(), Script::Common | Script::Inherited)
        })
        .peekable();
    letters.peek().is_some() && letters.all(|(_, l)| l.as_ref().is_some_and(|l| l.is_ascii()))
}
