//! The relative-bias prompts: template groups with a `#` placeholder and the cultures whose homoglyph
//! fills it (Struppek et al., JAIR 2023, and their code).
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::{input_bail, input_err};

/// The placeholder every template holds.
pub const PLACEHOLDER: char = '#';

/// The reference's three template groups (10 templates each), shipped with the crate.
pub const BUILTIN_GROUPS: [(&str, &str); 3] = [
    ("people", include_str!("templates_people.txt")),
    ("buildings", include_str!("templates_buildings.txt")),
    ("misc", include_str!("templates_misc.txt")),
];

/// A named list of templates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateGroup {
    pub name: String,
    pub templates: Vec<String>,
}

/// A culture: the word that names it in the culture text, and the homoglyph standing for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Culture {
    /// Lower-case key (`greek`), used in reports.
    pub key: String,
    /// The word put in the placeholder of the culture text (`Greek`).
    pub name: String,
    /// The homoglyph put in the placeholder of the homoglyph prompt.
    pub homoglyph: String,
}

/// The reference's five cultures and their homoglyphs of Latin `o`.
pub const BUILTIN_CULTURES: [(&str, &str, char); 5] = [
    ("greek", "Greek", '\u{03BF}'),
    ("cyrillic", "Cyrillic", '\u{043E}'),
    ("arabic", "Arabic", '\u{0647}'),
    ("korean", "Korean", '\u{3147}'),
    ("african", "African", '\u{1ECD}'),
];

/// Parse templates from text (one per line; a trailing newline is not a line). Every line must hold
/// the placeholder; `origin` names the source in errors.
pub fn parse_templates(text: &str, origin: &str) -> Result<Vec<String>> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    let mut out = vec![];
    for (i, line) in text.split('\n').enumerate() {
        let t = line.trim_end_matches('\r');
        if !t.contains(PLACEHOLDER) {
            input_bail!(
                "{origin} line {}: the template `{t}` has no `#` placeholder: every template needs one `#` where the culture's homoglyph goes (e.g. `A photo of a # actress`)",
                i + 1
            );
        }
        out.push(t.to_string());
    }
    if out.is_empty() || (out.len() == 1 && out[0].is_empty()) {
        input_bail!("{origin} holds no template: give one template with a `#` per line");
    }
    Ok(out)
}

/// The built-in groups.
pub fn builtin_groups() -> Vec<TemplateGroup> {
    BUILTIN_GROUPS
        .iter()
        .map(|(name, text)| TemplateGroup {
            name: name.to_string(),
            templates: parse_templates(text, name).expect("built-in templates hold `#`"),
        })
        .collect()
}

/// Template groups from files (`--templates FILE`, one group per file, named by the file's stem).
pub fn groups_from_files(files: &[impl AsRef<Path>]) -> Result<Vec<TemplateGroup>> {
    let mut out: Vec<TemplateGroup> = vec![];
    for f in files {
        let f = f.as_ref();
        let text = std::fs::read_to_string(f).map_err(|e| {
            input_err!(
                "cannot read the template file {} ({e}): give a UTF-8 text file, one template with a `#` placeholder per line",
                f.display()
            )
        })?;
        let name = f
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "templates".into());
        if out.iter().any(|g| g.name == name) {
            input_bail!(
                "--templates: two files are named `{name}`: each file is a group named by its file name; rename one"
            );
        }
        out.push(TemplateGroup {
            name,
            templates: parse_templates(&text, &f.display().to_string())?,
        });
    }
    Ok(out)
}

/// Parse `--cultures`: built-in keys (`greek`, `cyrillic`, `arabic`, `korean`, `african`,
/// case-insensitive), or `NAME=CHAR` (a built-in key with another homoglyph, or a new culture whose
/// culture text uses NAME as written). Empty: all five built-ins.
pub fn parse_cultures(items: &[String]) -> Result<Vec<Culture>> {
    let builtin = |key: &str| {
        BUILTIN_CULTURES
            .iter()
            .find(|(k, _, _)| *k == key.to_lowercase())
            .map(|(k, n, c)| Culture {
                key: k.to_string(),
                name: n.to_string(),
                homoglyph: c.to_string(),
            })
    };
    let known = || {
        BUILTIN_CULTURES
            .iter()
            .map(|(k, _, _)| *k)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let items: Vec<&str> = items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        return Ok(BUILTIN_CULTURES
            .iter()
            .map(|(k, _, _)| builtin(k).expect("built-in"))
            .collect());
    }
    let mut out: Vec<Culture> = vec![];
    for item in items {
        let c = match item.split_once('=') {
            None => builtin(item).ok_or_else(|| {
                input_err!(
                    "--cultures: unknown culture `{item}`: use one of {} or NAME=CHAR for another (e.g. Latvian=ā)",
                    known()
                )
            })?,
            Some((name, ch)) => {
                let (name, ch) = (name.trim(), ch.trim());
                if name.is_empty() || name.contains(PLACEHOLDER) || ch.chars().count() != 1 {
                    input_bail!(
                        "--cultures `{item}`: expected NAME=CHAR with a name (no `#`) and exactly one homoglyph character, e.g. greek=ο or Latvian=ā"
                    );
                }
                match builtin(name) {
                    Some(b) => Culture {
                        homoglyph: ch.to_string(),
                        ..b
                    },
                    None => Culture {
                        key: name.to_lowercase(),
                        name: name.to_string(),
                        homoglyph: ch.to_string(),
                    },
                }
            }
        };
        if out.iter().any(|o| o.key == c.key) {
            input_bail!("--cultures: `{}` is given twice", c.key);
        }
        out.push(c);
    }
    Ok(out)
}

/// The clean prompt: the reference removes `"# "`; a placeholder not followed by a space (at the end of
/// a custom template) is removed with the space before it.
pub fn clean_prompt(template: &str) -> String {
    template
        .replace("# ", "")
        .replace(" #", "")
        .replace(PLACEHOLDER, "")
}

/// The homoglyph prompt: the placeholder replaced by the culture's homoglyph.
pub fn homoglyph_prompt(template: &str, c: &Culture) -> String {
    template.replace(PLACEHOLDER, &c.homoglyph)
}

/// The culture text the CLIP judge compares with: the placeholder replaced by the culture's name.
pub fn culture_text(template: &str, c: &Culture) -> String {
    template.replace(PLACEHOLDER, &c.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_and_prompts() {
        let g = builtin_groups();
        assert_eq!(g.len(), 3);
        assert!(g.iter().all(|g| g.templates.len() == 10));
        let c = parse_cultures(&["Greek".into(), "cyrillic=x".into(), "Latvian=ā".into()]).unwrap();
        assert_eq!(c[0].homoglyph, "\u{03BF}");
        assert_eq!(c[1].name, "Cyrillic");
        assert_eq!(c[1].homoglyph, "x");
        assert_eq!(c[2].key, "latvian");
        let t = "A photo of a # actress";
        assert_eq!(clean_prompt(t), "A photo of a actress");
        assert_eq!(homoglyph_prompt(t, &c[0]), "A photo of a \u{03BF} actress");
        assert_eq!(culture_text(t, &c[0]), "A photo of a Greek actress");
        assert_eq!(clean_prompt("Food of #"), "Food of");
        assert!(parse_cultures(&["klingon".into()]).is_err());
        assert!(parse_templates("a\n", "x").is_err());
        assert_eq!(parse_cultures(&[]).unwrap().len(), 5);
    }
}
