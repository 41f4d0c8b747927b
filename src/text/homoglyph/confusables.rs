//! Latin look-alikes from UTS #39 confusable skeletons: the forward direction (a character → the
//! Latin text it imitates) and the reverse one (a Latin letter → every character that imitates it,
//! grouped by script family).
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde::Serialize;
use unicode_normalization::UnicodeNormalization;
use unicode_script::{Script, UnicodeScript};

/// UTS #39 skeleton of a string (NFD, default-ignorables removed, confusables mapped to prototypes).
pub fn skeleton(text: &str) -> String {
    unicode_security::skeleton(text).collect()
}

/// The skeleton form of a prompt, recomposed (NFC) so it reads as text: what the training engine
/// compares prompts by. Unlike [`crate::text::homoglyph::sanitize`], it maps everything, Latin letters
/// included (`m` → `rn`, `I` → `l`): use it as a key, not as a prompt.
pub fn skeleton_nfc(text: &str) -> String {
    unicode_security::skeleton(text).nfc().collect()
}

fn char_skeleton(c: char) -> String {
    skeleton_nfc(c.encode_utf8(&mut [0; 4]))
}

/// Where a look-alike comes from, finer than the Unicode script where attacks need it: fullwidth
/// forms and mathematical alphanumerics are Latin/Common by script yet are their own attack families.
pub fn family_of(c: char) -> String {
    let cp = c as u32;
    let script = c.script();
    // The Halfwidth and Fullwidth Forms block; its halfwidth Katakana and Hangul keep their script.
    if (0xFF00..=0xFFEF).contains(&cp) && matches!(script, Script::Latin | Script::Common) {
        return "fullwidth".into();
    }
    if (0x1D400..=0x1D7FF).contains(&cp) {
        return "math".into();
    }
    match script {
        Script::Latin => "latin-extended".into(),
        s => s.full_name().to_lowercase().replace('_', "-"),
    }
}

/// The script's full name as Unicode writes it (`Cyrillic`, `Common`, ...).
pub fn script_name(c: char) -> &'static str {
    c.script().full_name()
}

/// `U+0430` notation.
pub fn code_point(c: char) -> String {
    format!("U+{:04X}", c as u32)
}

/// One character that imitates a Latin letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lookalike {
    pub glyph: char,
    pub code_point: String,
    /// Unicode script name (`Cyrillic`, `Greek`, `Latin`, `Common`, ...).
    pub script: &'static str,
    /// Attack family (see [`family_of`]): `cyrillic`, `greek`, `latin-extended`, `fullwidth`, ...
    pub family: String,
}

impl Lookalike {
    fn of(glyph: char) -> Self {
        Self {
            glyph,
            code_point: code_point(glyph),
            script: script_name(glyph),
            family: family_of(glyph),
        }
    }
}

/// Non-ASCII characters grouped by their skeleton, for every character whose skeleton differs from
/// itself. The confusables table is private to unicode-security, so it is rebuilt once by scanning
/// planes 0–3: above them lie only unassigned planes, tags and variation selectors (all
/// default-ignorable: empty skeleton) and private use (no confusables).
fn reverse_index() -> &'static HashMap<String, Vec<char>> {
    static INDEX: OnceLock<HashMap<String, Vec<char>>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut index: HashMap<String, Vec<char>> = HashMap::new();
        for c in (0x80u32..=0x3FFFF).filter_map(char::from_u32) {
            let skel = char_skeleton(c);
            if skel.is_empty() || skel.chars().eq(std::iter::once(c).nfc()) {
                continue;
            }
            index.entry(skel).or_default().push(c);
        }
        index
    })
}

/// ASCII characters by skeleton (`l` ← `l`, `I`, `1`, `|`), to pick a readable representative.
fn ascii_by_skeleton() -> &'static HashMap<String, Vec<char>> {
    static INDEX: OnceLock<HashMap<String, Vec<char>>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut index: HashMap<String, Vec<char>> = HashMap::new();
        for c in (0x20u8..0x7F).map(char::from) {
            index.entry(char_skeleton(c)).or_default().push(c);
        }
        index
    })
}

/// Every character UTS #39 considers confusable with `c` (same skeleton), `c` itself and ASCII
/// excluded, sorted by code point. For `'o'`: Greek `ο`, Cyrillic `о`, Armenian `օ`, fullwidth `ｏ`, ...
pub fn confusables_of(c: char) -> Vec<Lookalike> {
    let mut glyphs: Vec<char> = reverse_index()
        .get(&char_skeleton(c))
        .cloned()
        .unwrap_or_default();
    glyphs.retain(|&g| g != c);
    glyphs.sort_unstable();
    glyphs.into_iter().map(Lookalike::of).collect()
}

/// [`confusables_of`] grouped by family: what an attack or an unlearning run picks from.
pub fn confusables_by_family(c: char) -> BTreeMap<String, Vec<char>> {
    let mut out: BTreeMap<String, Vec<char>> = BTreeMap::new();
    for l in confusables_of(c) {
        out.entry(l.family).or_default().push(l.glyph);
    }
    out
}

/// Every family that holds a look-alike of some ASCII letter: the valid `--scripts` names.
pub fn known_families() -> Vec<String> {
    let mut names: Vec<String> = ('a'..='z')
        .chain('A'..='Z')
        .flat_map(confusables_of)
        .map(|l| l.family)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The Latin text a non-ASCII character imitates, when UTS #39 says it imitates one: `а` (Cyrillic)
/// → `a`, `ｍ` → `m`, `І` (Cyrillic) → `I`. `None` for ASCII, for characters that are their own
/// skeleton (`é`, `ọ`), for invisible ones (empty skeleton) and for look-alikes of non-Latin text.
pub fn latin_lookalike(c: char) -> Option<String> {
    if c.is_ascii() {
        return None;
    }
    let skel = char_skeleton(c);
    if skel.is_empty() || skel.chars().eq(std::iter::once(c).nfc()) {
        return None;
    }
    if let Some(ascii) = ascii_representative(c, &skel) {
        return Some(ascii.to_string());
    }
    let latin = |s: char| {
        s.is_ascii()
            || matches!(
                s.script(),
                Script::Latin | Script::Common | Script::Inherited
            )
    };
    let has_letter = skel
        .chars()
        .any(|s| s.is_alphanumeric() && (s.is_ascii() || s.script() == Script::Latin));
    (has_letter && skel.chars().all(latin)).then_some(skel)
}

/// Skeletons are comparison keys, not display text (`І` and `1` both become `l`): among the ASCII
/// characters sharing the skeleton, prefer the NFKC form, then the same letter case, then letters.
fn ascii_representative(c: char, skel: &str) -> Option<char> {
    let candidates = ascii_by_skeleton().get(skel)?;
    let nfkc: String = std::iter::once(c).nfkc().collect();
    if let Some(&hit) = candidates
        .iter()
        .find(|&&a| nfkc.chars().eq(std::iter::once(a)))
    {
        return Some(hit);
    }
    let rank = |a: &char| -> u8 {
        match (a.is_alphabetic(), c.is_uppercase() == a.is_uppercase()) {
            (true, true) => 0,
            (true, false) => 1,
            (false, _) if a.is_ascii_digit() => 2,
            _ => 3,
        }
    };
    candidates.iter().copied().min_by_key(rank)
}
