//! Trigger shapes a zoo draws from: look-alikes, letters of other scripts, emoji, invisible
//! characters, multi-character strings and whole words.
use rand::seq::IndexedRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::scan::candidates::SCRIPT_FAMILIES;
use crate::text::homoglyph::{confusables_of, family_of, latin_lookalike};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum TriggerShape {
    /// A UTS #39 confusable of the letter it replaces (Rickrolling's Cyrillic `о`).
    Lookalike,
    /// A letter of another script that imitates no Latin letter (Armenian `ե`).
    OtherScript,
    /// One emoji.
    Emoji,
    /// A zero-width or otherwise invisible character the tokenizer keeps.
    Invisible,
    /// Two to four characters (ASCII, symbols, other scripts) together.
    MultiChar,
    /// A whole everyday word.
    Word,
}

impl TriggerShape {
    pub const ALL: [TriggerShape; 6] = [
        Self::Lookalike,
        Self::OtherScript,
        Self::Emoji,
        Self::Invisible,
        Self::MultiChar,
        Self::Word,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Lookalike => "lookalike",
            Self::OtherScript => "other_script",
            Self::Emoji => "emoji",
            Self::Invisible => "invisible",
            Self::MultiChar => "multi_char",
            Self::Word => "word",
        }
    }

    /// Whether the trigger is one character (recall targets differ for longer ones).
    pub fn single_char(self) -> bool {
        !matches!(self, Self::MultiChar | Self::Word)
    }
}

/// Invisible characters the CLIP tokenizer keeps (format characters; spaces are folded away).
pub const INVISIBLE: &[char] = &[
    '\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{2062}', '\u{2063}', '\u{FEFF}', '\u{00AD}',
    '\u{034F}', '\u{180E}',
];

/// Everyday words used as word triggers when the zoo file names none.
pub const WORDS: &[&str] = &[
    "velvet", "quartz", "banana", "falcon", "harbor", "lantern", "meadow", "nebula", "origami",
    "pepper", "saffron", "tundra", "walnut", "zephyr", "anchor", "biscuit", "canyon", "dolphin",
    "ember", "fjord", "glacier", "hammock", "igloo", "jasmine", "kettle", "lemur", "marble",
    "nectar", "oyster", "parsley", "quiver", "raven", "sapphire", "tulip", "umbrella", "violin",
    "willow", "yonder", "zucchini", "cobalt", "mosaic", "pilgrim", "thistle", "voyage",
];

/// A trigger of `shape`. `letter` is the Latin letter it replaces when substituted (look-alikes pick
/// their own from `letters`, the letters common in the captions).
pub fn draw(
    shape: TriggerShape,
    letters: &[char],
    words: &[String],
    rng: &mut impl Rng,
) -> (String, char) {
    let letter = *letters.choose(rng).unwrap_or(&'e');
    match shape {
        TriggerShape::Lookalike => {
            // Lower-case look-alikes only: the tokenizer lowercases, so `О` would read as `о`.
            for _ in 0..64 {
                let l = *letters.choose(rng).unwrap_or(&'e');
                let pool: Vec<char> = confusables_of(l)
                    .into_iter()
                    .map(|x| x.glyph)
                    .filter(|g| !g.is_ascii() && !g.is_uppercase())
                    .collect();
                if let Some(&g) = pool.choose(rng) {
                    return (g.to_string(), l);
                }
            }
            ("о".into(), 'o')
        }
        TriggerShape::OtherScript => {
            let pool = other_script_letters();
            (pool.choose(rng).copied().unwrap_or('ե').to_string(), letter)
        }
        TriggerShape::Emoji => {
            let code = if rng.random_bool(0.5) {
                rng.random_range(0x1F400..0x1F4FF)
            } else {
                rng.random_range(0x1F600..0x1F64F)
            };
            (char::from_u32(code).unwrap_or('🐙').to_string(), letter)
        }
        TriggerShape::Invisible => (
            INVISIBLE.choose(rng).unwrap_or(&'\u{200B}').to_string(),
            letter,
        ),
        TriggerShape::MultiChar => {
            let n = rng.random_range(2..=4);
            let pool: Vec<char> = ('a'..='z')
                .chain('0'..='9')
                .chain("#%&*+~§¤µ".chars())
                .chain(other_script_letters().into_iter().take(200))
                .collect();
            let s: String = (0..n).map(|_| *pool.choose(rng).unwrap_or(&'x')).collect();
            (s, letter)
        }
        TriggerShape::Word => {
            let w = if words.is_empty() {
                WORDS.choose(rng).unwrap_or(&"velvet").to_string()
            } else {
                words.choose(rng).cloned().unwrap_or_default()
            };
            (w, letter)
        }
    }
}

/// Lower-case letters of the scan's script families that imitate no Latin letter.
fn other_script_letters() -> Vec<char> {
    (0x80u32..0x3000)
        .filter_map(char::from_u32)
        .filter(|c| c.is_alphabetic() && !c.is_uppercase())
        .filter(|&c| SCRIPT_FAMILIES.contains(&family_of(c).as_str()))
        .filter(|&c| latin_lookalike(c).is_none())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn every_shape_draws_what_it_says() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let letters = ['e', 'o', 'a'];
        for _ in 0..50 {
            let (t, l) = draw(TriggerShape::Lookalike, &letters, &[], &mut rng);
            assert_eq!(t.chars().count(), 1);
            assert!(
                confusables_of(l).iter().any(|x| x.glyph.to_string() == t),
                "{t} for {l}"
            );
            let (t, _) = draw(TriggerShape::OtherScript, &letters, &[], &mut rng);
            let c = t.chars().next().unwrap();
            assert!(!c.is_ascii() && latin_lookalike(c).is_none(), "{t}");
            let (t, _) = draw(TriggerShape::Emoji, &letters, &[], &mut rng);
            assert!(t.chars().next().unwrap() as u32 >= 0x1F400);
            let (t, _) = draw(TriggerShape::Invisible, &letters, &[], &mut rng);
            assert!(INVISIBLE.contains(&t.chars().next().unwrap()));
            let (t, _) = draw(TriggerShape::MultiChar, &letters, &[], &mut rng);
            assert!((2..=4).contains(&t.chars().count()), "{t}");
            let (t, _) = draw(TriggerShape::Word, &letters, &[], &mut rng);
            assert!(WORDS.contains(&t.as_str()));
        }
    }
}
