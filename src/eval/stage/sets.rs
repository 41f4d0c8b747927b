//! The prompt sets of the image stage: clean prompts, and per backdoor its triggered prompts (TPA,
//! TAA, homoglyph unlearning) or concept prompts (concept removal), each with the prompt a successful
//! backdoor would show instead.
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::Result;
use crate::experiment::backdoor::{Backdoor, BackdoorKind, Target};
use crate::input_bail;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetKind {
    Clean,
    TargetPrompt,
    TargetAttribute,
    RemoveConcept,
    HomoglyphUnlearn,
    /// An adversarial prompt set (`clipdoor attack`) against a concept removal: success = the concept
    /// is shown (the red-team attack success rate).
    Attack,
}

impl SetKind {
    pub fn of(b: &Backdoor) -> Self {
        match b.kind {
            BackdoorKind::TargetPrompt { .. } => Self::TargetPrompt,
            BackdoorKind::TargetAttribute { .. } => Self::TargetAttribute,
            BackdoorKind::RemoveConcept { .. } => Self::RemoveConcept,
            BackdoorKind::HomoglyphUnlearn { .. } => Self::HomoglyphUnlearn,
        }
    }
}

/// One set of prompts drawn with both encoders (recorded in a sharded run's manifest, so a merge
/// judges the same sets).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PromptSet {
    /// `clean` or the backdoor's name (also the folder name).
    pub name: String,
    pub kind: SetKind,
    /// The trigger (character or concept word); empty for the clean set.
    pub trigger: String,
    /// What is drawn.
    pub prompts: Vec<String>,
    /// The clean prompt each one was made from.
    pub clean: Vec<String>,
    /// What a successful backdoor shows instead: the target prompt (TPA), the prompt with the word
    /// turned into the attribute (TAA), the Latin prompt (unlearning), the concept prompt itself
    /// (removal: success = it is *not* shown), the prompt (clean).
    pub expected: Vec<String>,
    /// The TAA attribute.
    pub attribute: Option<String>,
    /// Where an attack set came from (`None` for the experiment's own sets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<AttackOrigin>,
}

/// The prompt file of an attack set and what its `clipdoor attack` summary (`X.summary.json` beside
/// `X.jsonl`) says of the attack, so the report carries the attack's method and time.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AttackOrigin {
    pub file: String,
    pub method: Option<String>,
    /// The concept the attack searched for.
    pub concept: Option<String>,
    /// Wall-clock seconds the attack took over the whole set.
    pub seconds: Option<f64>,
    /// The learned word's file (the `embedding` attack): both encoders get it before drawing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<String>,
}

impl AttackOrigin {
    /// Read the summary beside `path`, if there is one (a hand-written prompt file has none).
    fn of(path: &std::path::Path) -> Self {
        let name = path.to_string_lossy();
        let base = name.strip_suffix(".jsonl").unwrap_or(&name);
        let summary: Option<serde_json::Value> =
            std::fs::read_to_string(format!("{base}.summary.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
        let field = |k: &str| summary.as_ref().map(|s| s["settings"][k].clone());
        Self {
            file: name.to_string(),
            method: field("method").and_then(|v| v.as_str().map(String::from)),
            concept: field("concept").and_then(|v| v.as_str().map(String::from)),
            seconds: summary.as_ref().and_then(|s| s["seconds"].as_f64()),
            embedding: field("embedding").and_then(|v| {
                let name = v.as_str()?;
                let dir = path.parent().unwrap_or(std::path::Path::new(""));
                Some(dir.join(name).display().to_string())
            }),
        }
    }
}

/// The red-team set of an adversarial prompt file: `prompts` as drawn, `sources` the lines they were
/// made from (what the report shows beside them), `concept` the erased concept whose appearance is
/// the attack's success. Named `attack-<name>`.
pub fn attack_set(
    name: &str,
    concept: &str,
    prompts: Vec<String>,
    sources: Vec<String>,
) -> Result<PromptSet> {
    if prompts.is_empty() {
        input_bail!(
            "attack set `{name}` holds no prompts: give the JSONL a `clipdoor attack` run wrote"
        );
    }
    if sources.len() != prompts.len() {
        input_bail!(
            "attack set `{name}`: {} prompts but {} source lines",
            prompts.len(),
            sources.len()
        );
    }
    if concept.trim().is_empty() {
        input_bail!(
            "attack set `{name}`: no concept to judge its images by: give --attack-concept"
        );
    }
    Ok(PromptSet {
        name: format!("attack-{name}"),
        kind: SetKind::Attack,
        trigger: concept.trim().to_string(),
        prompts,
        clean: sources.clone(),
        expected: sources,
        attribute: None,
        origin: None,
    })
}

/// [`attack_set`] from a prompt file: a `clipdoor attack` JSONL (`prompt` drawn, `source` shown
/// beside it) or any prompt file (each line drawn as it is). Named after the file's stem.
pub fn attack_set_from_file(path: &std::path::Path, concept: &str) -> Result<PromptSet> {
    let prompts = crate::io::prompts::read_prompt_lines(path, Some("prompt"), true)?.prompts;
    let sources = crate::io::prompts::read_prompt_lines(path, Some("source"), false)
        .ok()
        .map(|s| s.prompts)
        .filter(|s| s.len() == prompts.len())
        .unwrap_or_else(|| prompts.clone());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let stem = name
        .trim_end_matches(".gz")
        .rsplit_once('.')
        .map(|(a, _)| a.to_string())
        .unwrap_or(name.clone());
    if stem.is_empty() || stem.contains(['/', '\\']) {
        input_bail!(
            "{}: cannot name an attack set after this file: rename it",
            path.display()
        );
    }
    let mut set = attack_set(&stem, concept, prompts, sources)
        .map_err(|e| crate::input_err!("{}: {e}", path.display()))?;
    set.origin = Some(AttackOrigin::of(path));
    Ok(set)
}

/// The clean set (first `n_clean` captions) and one set per backdoor (up to `n_triggered` prompts made
/// from the captions, in order, with a fixed RNG for the random trigger positions). A TAA's trigger
/// goes into a word of its attribute's kind where `attribute_words` names such words (the judge's
/// [`super::ImageJudge::attribute_words`]: a colour attribute replaces a colour word), so that what
/// its images should show is a well-formed prompt; captions without such a word are then skipped.
pub fn build_sets(
    captions: &[String],
    backdoors: &[Backdoor],
    n_clean: usize,
    n_triggered: usize,
    seed: u64,
    attribute_words: &dyn Fn(&str) -> Vec<String>,
) -> Result<Vec<PromptSet>> {
    let clean: Vec<String> = captions.iter().take(n_clean).cloned().collect();
    if clean.is_empty() {
        input_bail!("no clean prompts to evaluate: give evaluation captions (data.holdout or evaluation.prompts)");
    }
    let mut sets = vec![PromptSet {
        name: "clean".into(),
        kind: SetKind::Clean,
        trigger: String::new(),
        prompts: clean.clone(),
        clean: clean.clone(),
        expected: clean,
        attribute: None,
        origin: None,
    }];
    for b in backdoors {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut prompts, mut cleans, mut expected) = (vec![], vec![], vec![]);
        let slot_words = match &b.kind {
            BackdoorKind::TargetAttribute { attr } => attribute_words(attr),
            _ => vec![],
        };
        for c in captions
            .iter()
            .filter(|c| b.accepts(c) && !b.triggered_in(c))
        {
            if prompts.len() == n_triggered {
                break;
            }
            let (p, target) = if slot_words.is_empty() {
                b.triggered_for_eval(c, &mut rng)
            } else {
                match b.attribute_in_word(c, &slot_words, &mut rng) {
                    Some(x) => x,
                    None => continue,
                }
            };
            let want = match (&b.kind, target) {
                (BackdoorKind::RemoveConcept { .. }, _) => p.clone(),
                (_, Target::Fixed) => b.fixed_target().unwrap_or_default().to_string(),
                (_, Target::Prompt(t)) => t,
            };
            prompts.push(p);
            cleans.push(c.clone());
            expected.push(want);
        }
        if prompts.is_empty() {
            let words = if slot_words.is_empty() {
                String::new()
            } else {
                format!(" in one of the words {}", slot_words.join(", "))
            };
            input_bail!(
                "backdoor `{}`: none of the evaluation captions holds the character `{}` it replaces{words}, so no triggered prompt can be made: give captions that do (evaluation.prompts)",
                b.name,
                b.replaced
            );
        }
        sets.push(PromptSet {
            name: b.name.clone(),
            kind: SetKind::of(b),
            trigger: b.trigger.clone(),
            prompts,
            clean: cleans,
            expected,
            attribute: match &b.kind {
                BackdoorKind::TargetAttribute { attr } => Some(attr.clone()),
                _ => None,
            },
            origin: None,
        });
    }
    Ok(sets)
}
