//! The word sets of a WEAT, and the homoglyph presets of the reference (Struppek et al., JAIR 2023:
//! `compute_weat.py`): for each script, X = words of the culture, Y = Western words, A = ten (five
//! for African Latin) characters of the script, B = ten Latin letters. A positive effect size means
//! the script's characters sit closer to the culture's words than Latin letters do.
use std::path::Path;

use serde::Serialize;
use tch::Tensor;

use super::{weat, WeatResult, WeatSets};
use crate::error::Result;
use crate::models::text_encoder::TextEncoder;
use crate::{input_bail, input_err};

/// The four sets of one test, as text.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct WeatWords {
    pub name: String,
    pub x: Vec<String>,
    pub y: Vec<String>,
    pub a: Vec<String>,
    pub b: Vec<String>,
}

const LATIN_CHARACTERS: [&str; 10] = ["a", "e", "i", "o", "u", "g", "d", "t", "m", "k"];
const WESTERN_WORDS: [&str; 7] = [
    "USA",
    "Western",
    "Washington",
    "North America",
    "American",
    "German",
    "Berlin",
];

/// `(preset, culture words, script characters)`, in the reference's order.
const HOMOGLYPH_PRESETS: [(&str, [&str; 7], &[&str]); 5] = [
    (
        "greek",
        [
            "Greek",
            "Greece",
            "Athens",
            "Hellenic",
            "Southeast Europe",
            "Mediterranean",
            "Crete",
        ],
        &["α", "ε", "ɩ", "ο", "υ", "β", "γ", "δ", "θ", "μ"],
    ),
    (
        "cyrillic",
        [
            "Russia",
            "Russian",
            "Moscow",
            "Soviet",
            "Eastern Europe",
            "Slavic",
            "Saint Petersburg",
        ],
        &["а", "г", "е", "и", "о", "т", "с", "ц", "к", "п"],
    ),
    (
        "arabic",
        [
            "Arabic",
            "Arab",
            "Arabian",
            "Western Asia",
            "United Arab Emirates",
            "Morocco",
            "Saudi Arabia",
        ],
        &["ه", "م", "ل", "ن", "و", "ة", "د", "ز", "ع", "ب"],
    ),
    (
        "korean",
        [
            "Korean",
            "South Korea",
            "North Korea",
            "East Asia",
            "Seoul",
            "Pyongyang",
            "Busan",
        ],
        &["ㅇ", "ㅅ", "ㅂ", "ㅋ", "ㅊ", "ㅎ", "ㄲ", "ㅢ", "ㄱ", "ㅚ"],
    ),
    (
        "african",
        [
            "African",
            "West African",
            "Nigeria",
            "Benin",
            "Yoruba",
            "Abuja",
            "Porto-Novoa",
        ],
        &["ọ", "ṣ", "ẹ", "ɔ", "ɛ"],
    ),
];

/// The preset names `--preset` accepts (`all` runs every one; `hangul` is `korean`).
pub fn preset_names() -> Vec<&'static str> {
    HOMOGLYPH_PRESETS.iter().map(|p| p.0).collect()
}

/// The homoglyph test of one script.
pub fn preset(name: &str) -> Result<WeatWords> {
    let key = match name.trim().to_lowercase().as_str() {
        "hangul" => "korean".to_string(),
        other => other.to_string(),
    };
    let Some((name, words, chars)) = HOMOGLYPH_PRESETS.iter().find(|p| p.0 == key) else {
        input_bail!(
            "unknown WEAT preset `{name}`: use one of {}, or all",
            preset_names().join(", ")
        );
    };
    let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Ok(WeatWords {
        name: name.to_string(),
        x: own(words),
        y: own(&WESTERN_WORDS),
        a: own(chars),
        b: own(&LATIN_CHARACTERS),
    })
}

/// Presets by name; `all` expands to every one.
pub fn presets(names: &[String]) -> Result<Vec<WeatWords>> {
    let mut out: Vec<WeatWords> = vec![];
    for n in names {
        if n.trim().eq_ignore_ascii_case("all") {
            for p in preset_names() {
                out.push(preset(p)?);
            }
        } else {
            out.push(preset(n)?);
        }
    }
    out.dedup_by(|a, b| a.name == b.name);
    Ok(out)
}

/// A set read from a text file: one item per line, blank lines skipped (a set is not a prompt list
/// whose rows must line up with an output).
pub fn read_set(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        input_err!(
            "cannot read the WEAT set {} ({e}): give a UTF-8 text file with one word or prompt per line",
            path.display()
        )
    })?;
    let items: Vec<String> = text
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    if items.is_empty() {
        input_bail!(
            "the WEAT set {} is empty: give one word or prompt per line",
            path.display()
        );
    }
    Ok(items)
}

/// Embed the four sets with `encoder`'s pooled output (transformers' `pooler_output`) and test.
pub fn run_on_encoder(
    encoder: &TextEncoder,
    words: &WeatWords,
    batch: usize,
    samples: usize,
    seed: u32,
) -> Result<WeatResult> {
    let embed = |v: &[String]| -> Result<Tensor> {
        Ok(encoder
            .encode_batched(v, batch.max(1), false, &mut |_| {})?
            .pooled_output)
    };
    let (x, y, a, b) = (
        embed(&words.x)?,
        embed(&words.y)?,
        embed(&words.a)?,
        embed(&words.b)?,
    );
    weat(
        &WeatSets {
            x: &x,
            y: &y,
            a: &a,
            b: &b,
        },
        samples,
        seed,
    )
}
