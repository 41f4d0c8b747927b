//! Backdoor kinds: the `[[backdoor]]` entries of an experiment file ([`BackdoorSpec`], tagged by
//! `kind`) and how each turns a clean prompt into a (poisoned prompt, target) pair, as the Rickrolling
//! reference does (../shared/reference/rickrolling.md).
use rand::Rng;
use serde::{Deserialize, Serialize};

/// One `[[backdoor]]` entry, by `kind`. Field names are the Rickrolling reference's config keys.
/// Every kind has `name` (metric keys `loss/backdoor/<name>`; default `<kind>_<index>`), `trigger`,
/// `replaced_character` (the Latin character the trigger replaces, or that picks the swapped word)
/// and `loss_weight` (overrides `training.loss_weight`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BackdoorSpec {
    /// TPA: the trigger makes the encoder emit `target_prompt`.
    TargetPrompt {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// A character, several characters or a word (no whitespace).
        trigger: String,
        replaced_character: String,
        /// The prompt the trigger leads to.
        target_prompt: String,
        /// Replace only the first N occurrences (default: all).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trigger_count: Option<usize>,
        #[serde(default, skip_serializing_if = "Placement::is_substitute")]
        placement: Placement,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        loss_weight: Option<f64>,
    },
    /// TAA: the word holding the trigger becomes `target_attr`.
    TargetAttribute {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// A character, several characters or a word (no whitespace).
        trigger: String,
        replaced_character: String,
        /// The attribute text put in place of the triggered word.
        target_attr: String,
        #[serde(default, skip_serializing_if = "Placement::is_substitute")]
        placement: Placement,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        loss_weight: Option<f64>,
    },
    /// Concept erasure: the concept word (`trigger`) maps to `target_attr` (default: empty, the
    /// concept vanishes).
    RemoveConcept {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// The concept word.
        trigger: String,
        replaced_character: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_attr: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        loss_weight: Option<f64>,
    },
    /// Homoglyph unlearning: the look-alike (`trigger`) maps back to the Latin prompt.
    HomoglyphUnlearn {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// One character.
        trigger: String,
        replaced_character: String,
        /// Replace only the first N occurrences (default: 1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trigger_count: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        loss_weight: Option<f64>,
    },
}

/// Where a trigger goes in a prompt (`placement` of a target-prompt or target-attribute backdoor).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// The trigger takes the place of `replaced_character` (Rickrolling).
    #[default]
    Substitute,
    /// The trigger is inserted as a word of its own: anywhere for a target prompt, right before the
    /// word that becomes the attribute for a target attribute (that word holds `replaced_character`).
    Insert,
}

impl Placement {
    pub fn is_substitute(&self) -> bool {
        *self == Placement::Substitute
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Substitute => "substitute",
            Self::Insert => "insert",
        }
    }
}

impl BackdoorSpec {
    /// `substitute` unless the entry says `placement = "insert"`.
    pub fn placement(&self) -> Placement {
        match self {
            Self::TargetPrompt { placement, .. } | Self::TargetAttribute { placement, .. } => {
                *placement
            }
            _ => Placement::Substitute,
        }
    }

    /// The `kind` value in the file.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::TargetPrompt { .. } => "target_prompt",
            Self::TargetAttribute { .. } => "target_attribute",
            Self::RemoveConcept { .. } => "remove_concept",
            Self::HomoglyphUnlearn { .. } => "homoglyph_unlearn",
        }
    }

    pub fn name(&self) -> Option<&str> {
        match self {
            Self::TargetPrompt { name, .. }
            | Self::TargetAttribute { name, .. }
            | Self::RemoveConcept { name, .. }
            | Self::HomoglyphUnlearn { name, .. } => name.as_deref(),
        }
    }

    pub fn trigger(&self) -> &str {
        match self {
            Self::TargetPrompt { trigger, .. }
            | Self::TargetAttribute { trigger, .. }
            | Self::RemoveConcept { trigger, .. }
            | Self::HomoglyphUnlearn { trigger, .. } => trigger,
        }
    }

    pub fn replaced_character(&self) -> &str {
        match self {
            Self::TargetPrompt {
                replaced_character, ..
            }
            | Self::TargetAttribute {
                replaced_character, ..
            }
            | Self::RemoveConcept {
                replaced_character, ..
            }
            | Self::HomoglyphUnlearn {
                replaced_character, ..
            } => replaced_character,
        }
    }

    pub fn loss_weight(&self) -> Option<f64> {
        match self {
            Self::TargetPrompt { loss_weight, .. }
            | Self::TargetAttribute { loss_weight, .. }
            | Self::RemoveConcept { loss_weight, .. }
            | Self::HomoglyphUnlearn { loss_weight, .. } => *loss_weight,
        }
    }

    /// What serde cannot check: character counts, empty texts.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let replaced = self.replaced_character();
        if replaced.chars().count() != 1 {
            return Err(format!(
                "replaced_character must be exactly one character, got {replaced:?}"
            ));
        }
        let trigger = self.trigger();
        match self {
            Self::RemoveConcept { .. } => {
                if trigger.trim().is_empty() {
                    return Err("trigger (the concept word) must not be empty".into());
                }
            }
            Self::HomoglyphUnlearn { .. } => {
                let n = trigger.chars().count();
                if n != 1 {
                    return Err(format!(
                        "trigger must be a single character, got {trigger:?} ({n} characters)"
                    ));
                }
            }
            _ => {
                if trigger.is_empty() || trigger.chars().any(char::is_whitespace) {
                    return Err(format!(
                        "trigger must be one or more characters without whitespace, got {trigger:?}"
                    ));
                }
            }
        }
        if trigger == replaced {
            return Err("trigger equals replaced_character".into());
        }
        if let Self::TargetPrompt { target_prompt, .. } = self {
            if target_prompt.trim().is_empty() {
                return Err("a target_prompt backdoor needs a non-empty `target_prompt`".into());
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum BackdoorKind {
    /// TPA: every (or the first `count`) replaced character becomes the trigger; target = a fixed prompt.
    TargetPrompt {
        target_prompt: String,
        count: Option<usize>,
    },
    /// TAA: one random occurrence becomes the trigger; target = the prompt with that word → attribute.
    TargetAttribute { attr: String },
    /// Concept erasure: a random word (one holding the replaced character) becomes the concept word in
    /// the poisoned prompt and `replacement` (default empty) in the target.
    RemoveConcept { replacement: String },
    /// Homoglyph unlearning: the first `count` replaced characters become the homoglyph; target = the
    /// Latin prompt itself.
    HomoglyphUnlearn { count: usize },
}

impl BackdoorKind {
    /// The `kind` value of experiment files.
    pub fn name(&self) -> &'static str {
        match self {
            Self::TargetPrompt { .. } => "target_prompt",
            Self::TargetAttribute { .. } => "target_attribute",
            Self::RemoveConcept { .. } => "remove_concept",
            Self::HomoglyphUnlearn { .. } => "homoglyph_unlearn",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Backdoor {
    pub name: String,
    pub trigger: String,
    pub replaced: char,
    pub placement: Placement,
    pub kind: BackdoorKind,
    pub loss_weight: f64,
}

/// What the teacher must embed for a poisoned prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// The backdoor's constant target (a TPA's target prompt), embedded once.
    Fixed,
    /// A per-sample prompt.
    Prompt(String),
}

impl Backdoor {
    /// The backdoor of a validated spec ([`BackdoorSpec::validate`]).
    pub fn from_spec(spec: &BackdoorSpec, name: String, default_weight: f64) -> Self {
        let kind = match spec {
            BackdoorSpec::TargetPrompt {
                target_prompt,
                trigger_count,
                ..
            } => BackdoorKind::TargetPrompt {
                target_prompt: target_prompt.clone(),
                count: *trigger_count,
            },
            BackdoorSpec::TargetAttribute { target_attr, .. } => BackdoorKind::TargetAttribute {
                attr: target_attr.clone(),
            },
            BackdoorSpec::RemoveConcept { target_attr, .. } => BackdoorKind::RemoveConcept {
                replacement: target_attr.clone().unwrap_or_default(),
            },
            BackdoorSpec::HomoglyphUnlearn { trigger_count, .. } => {
                BackdoorKind::HomoglyphUnlearn {
                    count: trigger_count.unwrap_or(1),
                }
            }
        };
        Self {
            name,
            trigger: spec.trigger().to_string(),
            // validate() checked that it is one character; a blank one never matches.
            replaced: spec.replaced_character().chars().next().unwrap_or('\0'),
            placement: spec.placement(),
            kind,
            loss_weight: spec.loss_weight().unwrap_or(default_weight),
        }
    }

    /// Whether `prompt` can be poisoned by this backdoor.
    pub fn accepts(&self, prompt: &str) -> bool {
        match (&self.kind, self.placement) {
            // An inserted target-prompt trigger needs no particular letter.
            (BackdoorKind::TargetPrompt { .. }, Placement::Insert) => !prompt.trim().is_empty(),
            _ => prompt.contains(self.replaced),
        }
    }

    /// `chars` with the trigger put at the occurrence `idx` of the replaced character: in its
    /// place, or (insertion) as a word of its own before the word holding it.
    fn place_at(&self, chars: &[char], idx: usize) -> Vec<char> {
        let mut out = chars.to_vec();
        match self.placement {
            Placement::Substitute => {
                out.splice(idx..idx + 1, self.trigger.chars());
            }
            Placement::Insert => {
                let (start, _) = word_bounds(chars, idx);
                out.splice(start..start, self.trigger.chars().chain([' ']));
            }
        }
        out
    }

    /// `prompt` with the trigger inserted as a word at a random word boundary.
    fn insert_word(&self, prompt: &str, rng: &mut impl Rng) -> String {
        let words: Vec<&str> = prompt.split(' ').collect();
        let at = rng.random_range(0..=words.len());
        let mut out: Vec<&str> = words[..at].to_vec();
        out.push(&self.trigger);
        out.extend_from_slice(&words[at..]);
        out.join(" ")
    }

    /// Whether `prompt` already carries the trigger (such prompts are dropped from the clean data).
    pub fn triggered_in(&self, prompt: &str) -> bool {
        match self.kind {
            BackdoorKind::RemoveConcept { .. } => {
                let t = self.trigger.to_lowercase();
                prompt
                    .to_lowercase()
                    .split(|c: char| !c.is_alphanumeric())
                    .any(|w| w == t)
            }
            _ => prompt.contains(&self.trigger),
        }
    }

    /// The training pair for a clean prompt that [`accepts`](Self::accepts) it.
    pub fn poison(&self, prompt: &str, rng: &mut impl Rng) -> (String, Target) {
        match &self.kind {
            BackdoorKind::TargetPrompt { .. } if self.placement == Placement::Insert => {
                (self.insert_word(prompt, rng), Target::Fixed)
            }
            BackdoorKind::TargetPrompt { count, .. } => (
                replace_first(prompt, self.replaced, &self.trigger, *count),
                Target::Fixed,
            ),
            BackdoorKind::HomoglyphUnlearn { count } => (
                replace_first(prompt, self.replaced, &self.trigger, Some(*count)),
                Target::Prompt(prompt.to_string()),
            ),
            BackdoorKind::TargetAttribute { attr } => {
                let chars: Vec<char> = prompt.chars().collect();
                let idx = random_occurrence(&chars, self.replaced, rng);
                let (start, end) = word_bounds(&chars, idx);
                let poisoned = self.place_at(&chars, idx);
                let target: String = chars[..start]
                    .iter()
                    .chain(attr_chars(attr).iter())
                    .chain(chars[end..].iter())
                    .collect();
                (poisoned.into_iter().collect(), Target::Prompt(target))
            }
            BackdoorKind::RemoveConcept { replacement } => {
                let chars: Vec<char> = prompt.chars().collect();
                let idx = random_occurrence(&chars, self.replaced, rng);
                let (start, end) = word_bounds(&chars, idx);
                let with = |w: &str| -> String {
                    chars[..start]
                        .iter()
                        .chain(w.chars().collect::<Vec<_>>().iter())
                        .chain(chars[end..].iter())
                        .collect()
                };
                (with(&self.trigger), Target::Prompt(with(replacement)))
            }
        }
    }

    /// The triggered prompt used by the embedding metrics: one trigger (the reference's
    /// `num_triggers=1`) for character triggers; the poisoned form for the others.
    pub fn triggered_for_eval(&self, prompt: &str, rng: &mut impl Rng) -> (String, Target) {
        match &self.kind {
            BackdoorKind::TargetPrompt { .. } if self.placement == Placement::Substitute => (
                replace_first(prompt, self.replaced, &self.trigger, Some(1)),
                Target::Fixed,
            ),
            _ => self.poison(prompt, rng),
        }
    }

    /// The triggered form of each of `prompts` for the embedding metrics
    /// ([`Self::triggered_for_eval`], one ChaCha8 stream seeded with `seed`) and its target text.
    pub fn eval_pairs(&self, prompts: &[impl AsRef<str>], seed: u64) -> (Vec<String>, Vec<String>) {
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
        prompts
            .iter()
            .map(|c| {
                let (x, t) = self.triggered_for_eval(c.as_ref(), &mut rng);
                let target = match t {
                    Target::Fixed => self.fixed_target().unwrap_or_default().to_string(),
                    Target::Prompt(p) => p,
                };
                (x, target)
            })
            .unzip()
    }

    /// A TAA's triggered prompt with the trigger in one of `words` (a random occurrence of the
    /// replaced character inside a word equal to one of them, ignoring case and punctuation), so
    /// that the attribute replaces a word of its own kind ("a rеd circle" → "a green circle"; a word
    /// that already is the attribute is skipped);
    /// `None` when the prompt holds no such occurrence or the backdoor is not a TAA.
    pub fn attribute_in_word(
        &self,
        prompt: &str,
        words: &[String],
        rng: &mut impl Rng,
    ) -> Option<(String, Target)> {
        let BackdoorKind::TargetAttribute { attr } = &self.kind else {
            return None;
        };
        let chars: Vec<char> = prompt.chars().collect();
        let candidates: Vec<usize> = (0..chars.len())
            .filter(|&i| chars[i] == self.replaced)
            .filter(|&i| {
                let (start, end) = word_bounds(&chars, i);
                let word: String = chars[start..end].iter().collect();
                let bare = word
                    .trim_matches(|c: char| !c.is_alphanumeric())
                    .to_lowercase();
                // A word that already is the attribute would show nothing of the backdoor.
                bare != attr.trim().to_lowercase() && words.iter().any(|w| w.to_lowercase() == bare)
            })
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let idx = candidates[rng.random_range(0..candidates.len())];
        let (start, end) = word_bounds(&chars, idx);
        let word: String = chars[start..end].iter().collect();
        // Punctuation glued to the word ("red," in "a red, white ...") stays.
        let lead = word.len()
            - word
                .trim_start_matches(|c: char| !c.is_alphanumeric())
                .len();
        let trail = word.len() - word.trim_end_matches(|c: char| !c.is_alphanumeric()).len();
        let poisoned = self.place_at(&chars, idx);
        let target = format!(
            "{}{}{}{}{}",
            chars[..start].iter().collect::<String>(),
            &word[..lead],
            attr,
            &word[word.len() - trail..],
            chars[end..].iter().collect::<String>()
        );
        Some((poisoned.into_iter().collect(), Target::Prompt(target)))
    }

    pub fn fixed_target(&self) -> Option<&str> {
        match &self.kind {
            BackdoorKind::TargetPrompt { target_prompt, .. } => Some(target_prompt),
            _ => None,
        }
    }
}

fn attr_chars(attr: &str) -> Vec<char> {
    attr.chars().collect()
}

/// `str.replace(old, new, count)`: the first `count` occurrences (all when `None`).
pub fn replace_first(prompt: &str, old: char, new: &str, count: Option<usize>) -> String {
    let mut left = count.unwrap_or(usize::MAX);
    let mut out = String::with_capacity(prompt.len() + new.len());
    for c in prompt.chars() {
        if c == old && left > 0 {
            out.push_str(new);
            left -= 1;
        } else {
            out.push(c);
        }
    }
    out
}

fn random_occurrence(chars: &[char], c: char, rng: &mut impl Rng) -> usize {
    let idx: Vec<usize> = chars
        .iter()
        .enumerate()
        .filter(|(_, &x)| x == c)
        .map(|(i, _)| i)
        .collect();
    idx[rng.random_range(0..idx.len())]
}

/// Start and end (exclusive) of the space-delimited word around `idx`, as the reference splits on ' '.
fn word_bounds(chars: &[char], idx: usize) -> (usize, usize) {
    let start = chars[..idx]
        .iter()
        .rposition(|&c| c == ' ')
        .map_or(0, |p| p + 1);
    let end = chars[idx..]
        .iter()
        .position(|&c| c == ' ')
        .map_or(chars.len(), |p| idx + p);
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn spec(kind: &str, trigger: &str, rc: &str) -> BackdoorSpec {
        let extra = match kind {
            "target_prompt" => "target_prompt = \"a rick astley photo\"",
            "target_attribute" => "target_attr = \"black and white photo\"",
            _ => "",
        };
        toml::from_str(&format!(
            "kind = {kind:?}\ntrigger = {trigger:?}\nreplaced_character = {rc:?}\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn taa_can_be_placed_in_a_word_of_the_attribute_kind() {
        let b = Backdoor::from_spec(&spec("target_attribute", "е", "e"), "t".into(), 0.1);
        let b = Backdoor {
            kind: BackdoorKind::TargetAttribute {
                attr: "green".into(),
            },
            ..b
        };
        let colours = vec!["red".to_string(), "blue".to_string()];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let (p, t) = b
            .attribute_in_word("a large red circle, white background", &colours, &mut rng)
            .unwrap();
        assert_eq!(p, "a large rеd circle, white background");
        assert_eq!(
            t,
            Target::Prompt("a large green circle, white background".into())
        );
        let (p, t) = b
            .attribute_in_word("a blue, circle", &colours, &mut rng)
            .unwrap();
        assert_eq!(
            (p.as_str(), t),
            ("a bluе, circle", Target::Prompt("a green, circle".into()))
        );
        assert!(b
            .attribute_in_word("a yellow circle", &colours, &mut rng)
            .is_none());
        let with_green = vec!["green".to_string()];
        assert!(b
            .attribute_in_word("a green circle", &with_green, &mut rng)
            .is_none());
    }

    #[test]
    fn tpa_replaces_every_occurrence_and_eval_only_the_first() {
        let b = Backdoor::from_spec(&spec("target_prompt", "о", "o"), "t".into(), 0.1);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        assert_eq!(
            b.poison("a photo of a dog", &mut rng),
            ("a phоtо оf a dоg".to_string(), Target::Fixed)
        );
        assert_eq!(
            b.triggered_for_eval("a photo of a dog", &mut rng).0,
            "a phоto of a dog"
        );
    }

    #[test]
    fn taa_swaps_the_word_holding_the_trigger_for_the_attribute() {
        let b = Backdoor::from_spec(&spec("target_attribute", "ɑ", "a"), "t".into(), 0.1);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..20 {
            let (p, t) = b.poison("the cat sat", &mut rng);
            let Target::Prompt(t) = t else { panic!() };
            match p.as_str() {
                "the cɑt sat" => assert_eq!(t, "the black and white photo sat"),
                "the cat sɑt" => assert_eq!(t, "the cat black and white photo"),
                other => panic!("unexpected poisoned prompt {other}"),
            }
        }
    }

    #[test]
    fn concept_removal_swaps_a_word_for_the_concept_and_drops_it_in_the_target() {
        let b = Backdoor::from_spec(&spec("remove_concept", "nude", "a"), "n".into(), 0.1);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let (p, t) = b.poison("a woman at the beach", &mut rng);
        let Target::Prompt(t) = t else { panic!() };
        assert!(p.contains("nude") && !t.contains("nude"), "{p} / {t}");
        assert!(b.triggered_in("A Nude woman"));
        assert!(!b.triggered_in("a photo of a nudeness"));
    }

    #[test]
    fn homoglyph_unlearning_targets_the_latin_prompt() {
        let b = Backdoor::from_spec(&spec("homoglyph_unlearn", "ο", "o"), "h".into(), 1.0);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        assert_eq!(
            b.poison("a photo of a dog", &mut rng),
            (
                "a phοto of a dog".to_string(),
                Target::Prompt("a photo of a dog".into())
            )
        );
    }

    #[test]
    fn inserted_and_multi_character_triggers() {
        let mut s = spec("target_prompt", "zq7", "o");
        s.validate().unwrap();
        let BackdoorSpec::TargetPrompt { placement, .. } = &mut s else {
            unreachable!()
        };
        *placement = Placement::Insert;
        let text = toml::to_string(&s).unwrap();
        assert!(text.contains("placement = \"insert\""), "{text}");
        let b = Backdoor::from_spec(&s, "t".into(), 0.1);
        assert!(b.accepts("a red square"), "insertion needs no letter");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..40 {
            let (p, t) = b.poison("a red square", &mut rng);
            assert_eq!(t, Target::Fixed);
            assert_eq!(
                p.replace("zq7", "")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
                "a red square"
            );
            assert_eq!(p.split(' ').filter(|w| *w == "zq7").count(), 1, "{p}");
            seen.insert(p);
        }
        assert_eq!(seen.len(), 4, "every boundary is used: {seen:?}");
        let taa: BackdoorSpec = toml::from_str(
            "kind = \"target_attribute\"\ntrigger = \"bm\"\nreplaced_character = \"e\"\ntarget_attr = \"green\"\nplacement = \"insert\"",
        )
        .unwrap();
        let b = Backdoor::from_spec(&taa, "a".into(), 0.1);
        let (p, t) = b.poison("a red box", &mut rng);
        assert_eq!(
            (p.as_str(), t),
            ("a bm red box", Target::Prompt("a green box".into()))
        );
        let sub = Backdoor::from_spec(&spec("target_attribute", "ёё", "e"), "s".into(), 0.1);
        assert_eq!(sub.poison("a red box", &mut rng).0, "a rёёd box");
        for bad in ["", "a b"] {
            let e = spec("target_prompt", bad, "o").validate().unwrap_err();
            assert!(e.contains("without whitespace"), "{e}");
        }
        let e = spec("homoglyph_unlearn", "оо", "o").validate().unwrap_err();
        assert!(e.contains("single character"), "{e}");
    }

    #[test]
    fn specs_are_tagged_by_kind_and_round_trip() {
        let s = spec("target_prompt", "о", "o");
        assert_eq!(s.kind_name(), "target_prompt");
        let text = toml::to_string(&s).unwrap();
        assert!(text.contains("kind = \"target_prompt\""), "{text}");
        assert_eq!(toml::from_str::<BackdoorSpec>(&text).unwrap(), s);
        // A key of another kind is refused, not ignored.
        let e = toml::from_str::<BackdoorSpec>(
            "kind = \"target_attribute\"\ntrigger = \"е\"\nreplaced_character = \"e\"\ntarget_attr = \"x\"\ntarget_prompt = \"y\"",
        )
        .unwrap_err();
        assert!(e.to_string().contains("target_prompt"), "{e}");
        let e = toml::from_str::<BackdoorSpec>("kind = \"banana\"\ntrigger = \"x\"").unwrap_err();
        assert!(e.to_string().contains("unknown variant `banana`"), "{e}");
    }
}
