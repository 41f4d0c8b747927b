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
        });
    }
    Ok(sets)
}
