//! `[training.robust]`: robust erasure's settings (`train::robust` runs them).
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::path::PathBuf;

/// Robust erasure, AdvUnlearn's recipe restricted to the text encoder (`train::robust`): after
/// `warmup` steps, every `every` steps an inner attack on the concept prompts (`slot`) runs against
/// the current student and what it found is trained to the erased target with the backdoor's loss
/// weight. AdvUnlearn: warmup 200 of 1000, every step, 30 attack steps, lr 1e-3, a prefix slot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RobustSection {
    pub warmup: u64,
    pub every: u64,
    /// Signed-gradient steps of an embedding slot (`prefix`, `concept`) ...
    pub attack_steps: usize,
    /// ... and their step size.
    pub attack_lr: f64,
    /// The inner attack, or a list of them, each run on every attacked step: `prefix` (an embedding
    /// after BOS, AdvUnlearn's), `concept` (an embedding in place of the concept word), `tokens` (no
    /// embedding: a discrete token search, `search_steps` steps of `candidates` swaps over `length`
    /// tokens), `word` (a learned word in the concept word's place, through the UNet: `word_*`).
    #[serde(skip_serializing_if = "RobustSlots::is_prefix")]
    pub slot: RobustSlots,
    /// Where an embedding slot's attack starts: `random` (a random token's embedding, AdvUnlearn's)
    /// or `concept` (the concept word's own embedding, the mean of its tokens': the neighbourhood a
    /// learned word for the concept is found in, rather than any word in its place).
    #[serde(skip_serializing_if = "SlotStart::is_random")]
    pub start: SlotStart,
    /// `tokens`: search steps per attacked step ...
    #[serde(skip_serializing_if = "is_default_search_steps")]
    pub search_steps: usize,
    /// ... how many tokens the search places (MMA-Diffusion's 20) ...
    #[serde(skip_serializing_if = "is_default_length")]
    pub length: usize,
    /// ... and how many one-token swaps it measures per step (the red-team attack's 512 is
    /// costlier than a training step can afford).
    #[serde(skip_serializing_if = "is_default_candidates")]
    pub candidates: usize,
    /// `tokens`: each attacked step's search continues from the prompt the attacked step before
    /// found (per backdoor; checkpointed, so a resumed run searches as an uninterrupted one)
    /// instead of fresh random letters: a persistent adversary, whose search adds up over the run
    /// (240 attacked steps of 50 search steps: 12,000 steps, where the red team's search runs 150)
    /// and starts from what the student was just trained against.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub persist: bool,
    /// `tokens`: the last `token_bank` prompts the searches found (per backdoor, each with the
    /// erased target of the concept prompt it was searched for; checkpointed) are all trained to
    /// their targets on every attacked step, the step's own among them (0: the step's prompt
    /// alone). The word bank's idea for the discrete search: a prompt met once is forgotten a few
    /// steps later, and the red team's search ends where earlier ones did.
    #[serde(skip_serializing_if = "is_zero")]
    pub token_bank: usize,
    /// A retain set (AdvUnlearn's): a prompt file (relative to the experiment) whose prompts the
    /// student keeps at the teacher's embedding on every attacked step, `retain_batch_size` of them
    /// per step, in the utility loss's distance, weighted by `retain_weight`. The clean pool already
    /// holds them; a retain set gives the prompts an erasure's inner attacks pull along (in the
    /// shapes world, the captions without a shape, which robust erasure to an anchor draws as the
    /// anchor) a term of their own. Prompts holding a backdoor's trigger are dropped from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retain: Option<PathBuf>,
    #[serde(skip_serializing_if = "is_default_retain_batch_size")]
    pub retain_batch_size: usize,
    /// The retain term's weight (AdvUnlearn's `retain_loss_w`; 1, its code default). Each inner
    /// attack adds a term of the backdoor's loss weight pulling its prompts to the erased target,
    /// so with several slots (and a bank of words) the retain set's single term can be outweighed.
    #[serde(skip_serializing_if = "is_one_f64")]
    pub retain_weight: f64,
    /// `word`: the diffusion pipeline whose UNet (and VAE) the learned word is found through (a
    /// folder, relative to the experiment, or a hub id; the teacher's own pipeline in the shapes
    /// world) ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub word_pipeline: Option<String>,
    /// ... a folder of images of the concept (relative to the experiment; CCE's 3–5) ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub word_images: Option<PathBuf>,
    /// ... textual-inversion steps per attacked step ...
    #[serde(skip_serializing_if = "is_default_word_steps")]
    pub word_steps: usize,
    /// ... their Adam learning rate (the textual-inversion attack's 0.005) ...
    #[serde(skip_serializing_if = "is_default_word_lr")]
    pub word_lr: f64,
    /// ... where each attacked step's word starts (`random` or `concept`, as `start`; unset: as
    /// `start`) ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub word_start: Option<SlotStart>,
    /// ... or, with `word_persist`, from the word the attacked step before learned (per backdoor,
    /// checkpointed; its Adam moments start afresh): one word followed through the run, as
    /// `persist` follows the token search.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub word_persist: bool,
    /// `word`: the last `word_bank` learned words (per backdoor, checkpointed) are all trained to
    /// the erased target on every attacked step, the step's own among them (0: the step's word
    /// alone). Why: a word met once is forgotten a few steps later, and the red team's word is
    /// found where an earlier one was; a bank keeps every word the run found erased.
    #[serde(skip_serializing_if = "is_zero")]
    pub word_bank: usize,
    /// `word`: a new word is learned on every `word_every`-th attacked step only (the bank is
    /// trained on every one): fewer, stronger words (`word_steps` in the hundreds, as the red
    /// team's 400) for the cost of many weak ones. Needs `word_bank`.
    #[serde(skip_serializing_if = "is_one")]
    pub word_every: u64,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

fn is_one(v: &u64) -> bool {
    *v == 1
}

fn is_one_f64(v: &f64) -> bool {
    *v == 1.0
}

const ROBUST_WORD_STEPS: usize = 10;
const ROBUST_WORD_LR: f64 = 5e-3;

fn is_default_word_steps(v: &usize) -> bool {
    *v == ROBUST_WORD_STEPS
}

fn is_default_word_lr(v: &f64) -> bool {
    *v == ROBUST_WORD_LR
}

const ROBUST_RETAIN_BATCH_SIZE: usize = 32;

fn is_default_retain_batch_size(v: &usize) -> bool {
    *v == ROBUST_RETAIN_BATCH_SIZE
}

const ROBUST_SEARCH_STEPS: usize = 50;
const ROBUST_TOKEN_LENGTH: usize = 20;

fn is_default_search_steps(v: &usize) -> bool {
    *v == ROBUST_SEARCH_STEPS
}
const ROBUST_TOKEN_CANDIDATES: usize = 128;

fn is_default_length(v: &usize) -> bool {
    *v == ROBUST_TOKEN_LENGTH
}

fn is_default_candidates(v: &usize) -> bool {
    *v == ROBUST_TOKEN_CANDIDATES
}

impl Default for RobustSection {
    fn default() -> Self {
        Self {
            warmup: 0,
            every: 1,
            attack_steps: 30,
            attack_lr: 1e-3,
            slot: RobustSlot::Prefix.into(),
            start: SlotStart::Random,
            search_steps: ROBUST_SEARCH_STEPS,
            length: ROBUST_TOKEN_LENGTH,
            candidates: ROBUST_TOKEN_CANDIDATES,
            persist: false,
            retain: None,
            retain_batch_size: ROBUST_RETAIN_BATCH_SIZE,
            retain_weight: 1.0,
            word_pipeline: None,
            word_images: None,
            word_steps: ROBUST_WORD_STEPS,
            word_lr: ROBUST_WORD_LR,
            word_start: None,
            word_persist: false,
            word_bank: 0,
            token_bank: 0,
            word_every: 1,
        }
    }
}

impl RobustSection {
    /// Why these settings cannot run, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.every == 0
            || self.attack_steps == 0
            || self.search_steps == 0
            || self.retain_batch_size == 0
            || self.word_steps == 0
            || self.word_every == 0
        {
            return Err(
                "training.robust.every, attack_steps, search_steps, retain_batch_size, word_steps and word_every must be at least 1".into(),
            );
        }
        if !(self.retain_weight >= 0.0 && self.retain_weight.is_finite()) {
            return Err(format!(
                "training.robust.retain_weight must be a number at least 0, got {}",
                self.retain_weight
            ));
        }
        // A retain knob without a retain set would be accepted and do nothing.
        if self.retain.is_none()
            && (self.retain_weight != 1.0 || self.retain_batch_size != ROBUST_RETAIN_BATCH_SIZE)
        {
            return Err(
                "training.robust.retain_weight and retain_batch_size weigh and size the retain set, but retain is not set: add retain = \"PROMPTS.txt\", or drop them".into(),
            );
        }
        if !(self.word_lr > 0.0 && self.word_lr.is_finite()) {
            return Err("training.robust.word_lr must be a positive number".into());
        }
        if self.slot.contains(RobustSlot::Word)
            && (self.word_pipeline.is_none() || self.word_images.is_none())
        {
            return Err(
                "training.robust.slot \"word\" learns a word through a diffusion pipeline from images of the concept: set word_pipeline (a pipeline folder or hub id) and word_images (a folder of 3-5 images)".into(),
            );
        }
        if !(self.attack_lr > 0.0 && self.attack_lr.is_finite()) {
            return Err("training.robust.attack_lr must be a positive number".into());
        }
        if self.slot.0.is_empty() {
            return Err(
                "training.robust.slot is an empty list: name at least one of prefix, concept, tokens, word"
                    .into(),
            );
        }
        let mut seen = self.slot.0.clone();
        seen.sort_by_key(|s| *s as u8);
        seen.dedup();
        if seen.len() != self.slot.0.len() {
            return Err(format!(
                "training.robust.slot names a slot twice ({:?}): list each once",
                self.slot.0
            ));
        }
        if self.word_persist && !self.slot.contains(RobustSlot::Word) {
            return Err(
                "training.robust.word_persist carries the learned word across steps, but slot has no \"word\": add it, or drop word_persist".into(),
            );
        }
        if (self.word_bank > 0 || self.word_every > 1) && !self.slot.contains(RobustSlot::Word) {
            return Err(
                "training.robust.word_bank and word_every keep and space the learned words, but slot has no \"word\": add it, or drop them".into(),
            );
        }
        if self.word_every > 1 && self.word_bank == 0 {
            return Err(format!(
                "training.robust.word_every = {} learns a word on every {}th attacked step only: set word_bank (at least 1) so the steps between train the words learned before",
                self.word_every, self.word_every
            ));
        }
        if self.persist && !self.slot.contains(RobustSlot::Tokens) {
            return Err(format!(
                "training.robust.persist carries the token search across steps, but slot is {:?}: add \"tokens\" to slot, or drop persist",
                self.slot.0.iter().map(|s| s.name()).collect::<Vec<_>>()
            ));
        }
        if self.token_bank > 0 && !self.slot.contains(RobustSlot::Tokens) {
            return Err(
                "training.robust.token_bank keeps the token search's prompts, but slot has no \"tokens\": add it, or drop token_bank".into(),
            );
        }
        if !(1..=75).contains(&self.length) || self.candidates == 0 {
            return Err(format!(
                "training.robust: length {} must be 1 to 75 tokens (they fit between BOS and EOS) and candidates at least 1, got {}",
                self.length, self.candidates
            ));
        }
        Ok(())
    }
}

/// Where an embedding slot's inner attack starts (`[training.robust] start`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SlotStart {
    #[default]
    Random,
    Concept,
}

impl SlotStart {
    fn is_random(&self) -> bool {
        *self == Self::Random
    }
}

/// One inner attack of robust erasure (`[training.robust] slot`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RobustSlot {
    /// An embedding right after BOS, the concept word kept (AdvUnlearn's prefix attack).
    #[default]
    Prefix,
    /// An embedding in place of the concept word's tokens: the attacks that replace the word (a
    /// learned pseudo-word, a token search that bans the concept's words).
    Concept,
    /// No slot: the whole prompt is `length` tokens found by a greedy coordinate gradient search
    /// (the red team's `token-search`, MMA-Diffusion's text attack) with the concept's words banned,
    /// matching the teacher's pooled embedding of one concept prompt per attacked step.
    Tokens,
    /// A learned word in place of the concept word, found as the red team's `embedding` attack
    /// finds it (CCE: textual inversion through the pipeline's denoising loss on images of the
    /// concept, `word_steps` Adam steps per attacked step) against the current student; the attack
    /// comes from above the trainer ([`crate::train::robust::WordAttack`], installed by
    /// `clipdoor train`).
    Word,
}

impl RobustSlot {
    pub fn name(self) -> &'static str {
        match self {
            Self::Prefix => "prefix",
            Self::Concept => "concept",
            Self::Tokens => "tokens",
            Self::Word => "word",
        }
    }
}

/// The inner attacks of `[training.robust] slot`: one name (`slot = "concept"`) or a list
/// (`slot = ["concept", "tokens"]`), run in the order given; one is written back as a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RobustSlots(pub Vec<RobustSlot>);

impl RobustSlots {
    fn is_prefix(&self) -> bool {
        self.0 == [RobustSlot::Prefix]
    }

    pub fn iter(&self) -> impl Iterator<Item = RobustSlot> + '_ {
        self.0.iter().copied()
    }

    pub fn contains(&self, slot: RobustSlot) -> bool {
        self.0.contains(&slot)
    }
}

impl Default for RobustSlots {
    fn default() -> Self {
        RobustSlot::Prefix.into()
    }
}

impl From<RobustSlot> for RobustSlots {
    fn from(s: RobustSlot) -> Self {
        Self(vec![s])
    }
}

impl Serialize for RobustSlots {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(s),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for RobustSlots {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OneOrList;
        impl<'de> Visitor<'de> for OneOrList {
            type Value = RobustSlots;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a slot (`prefix`, `concept`, `tokens` or `word`) or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RobustSlots, E> {
                // The enum's own message ("unknown variant `x`, expected one of ...").
                RobustSlot::deserialize(de::value::StrDeserializer::<E>::new(v)).map(Into::into)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<RobustSlots, A::Error> {
                let mut out = vec![];
                while let Some(s) = a.next_element::<RobustSlot>()? {
                    out.push(s);
                }
                Ok(RobustSlots(out))
            }
        }
        d.deserialize_any(OneOrList)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize)]
    struct Doc {
        robust: RobustSection,
    }

    /// One name or a list; written back as it was given (one as a name, the default left out).
    #[test]
    fn slots_are_a_name_or_a_list() {
        let one: Doc = toml::from_str("[robust]\nslot = \"concept\"\n").unwrap();
        assert_eq!(one.robust.slot.0, vec![RobustSlot::Concept]);
        let two: Doc = toml::from_str("[robust]\nslot = [\"concept\", \"tokens\"]\n").unwrap();
        assert_eq!(
            two.robust.slot.0,
            vec![RobustSlot::Concept, RobustSlot::Tokens]
        );
        assert!(toml::to_string(&one)
            .unwrap()
            .contains("slot = \"concept\""));
        let back = toml::to_string(&two).unwrap();
        assert!(back.contains("slot = [\"concept\", \"tokens\"]"), "{back}");
        let plain: Doc = toml::from_str("[robust]\nwarmup = 3\n").unwrap();
        assert!(!toml::to_string(&plain).unwrap().contains("slot"));
        let err = toml::from_str::<Doc>("[robust]\nslot = [\"concept\", \"suffix\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `suffix`"), "{err}");
        let twice: Doc = toml::from_str("[robust]\nslot = [\"tokens\", \"tokens\"]\n").unwrap();
        assert!(twice.robust.check().unwrap_err().contains("twice"));
        let none: Doc = toml::from_str("[robust]\nslot = []\n").unwrap();
        assert!(none.robust.check().unwrap_err().contains("empty list"));
    }

    /// The retain set is optional and written back only when given; its batch must hold a prompt.
    #[test]
    fn retain_is_optional() {
        let plain: Doc = toml::from_str("[robust]\nwarmup = 3\n").unwrap();
        assert_eq!(plain.robust.retain, None);
        assert!(!toml::to_string(&plain).unwrap().contains("retain"));
        let set: Doc =
            toml::from_str("[robust]\nretain = \"keep.txt\"\nretain_batch_size = 8\n").unwrap();
        assert_eq!(set.robust.retain, Some(PathBuf::from("keep.txt")));
        assert_eq!(set.robust.retain_batch_size, 8);
        assert_eq!(set.robust.retain_weight, 1.0);
        let back = toml::to_string(&set).unwrap();
        assert!(back.contains("retain = \"keep.txt\"") && back.contains("retain_batch_size = 8"));
        assert!(!back.contains("retain_weight"), "{back}");
        let weighted: Doc =
            toml::from_str("[robust]\nretain = \"keep.txt\"\nretain_weight = 3.0\n").unwrap();
        assert_eq!(weighted.robust.retain_weight, 3.0);
        assert!(toml::to_string(&weighted)
            .unwrap()
            .contains("retain_weight = 3.0"));
        let negative: Doc = toml::from_str("[robust]\nretain_weight = -1.0\n").unwrap();
        assert!(negative
            .robust
            .check()
            .unwrap_err()
            .contains("retain_weight"));
        // Without a retain set, its knobs would do nothing: refused, not ignored.
        for knob in ["retain_weight = 3.0", "retain_batch_size = 8"] {
            let unset: Doc = toml::from_str(&format!("[robust]\n{knob}\n")).unwrap();
            let err = unset.robust.check().unwrap_err();
            assert!(err.contains("retain is not set"), "{knob}: {err}");
        }
        let zero: Doc = toml::from_str("[robust]\nretain_batch_size = 0\n").unwrap();
        assert!(zero
            .robust
            .check()
            .unwrap_err()
            .contains("retain_batch_size"));
    }

    /// `token_bank` keeps the token search's prompts: written back when set, refused without the
    /// `tokens` slot.
    #[test]
    fn the_token_bank_needs_the_token_search() {
        let banked: Doc =
            toml::from_str("[robust]\nslot = [\"concept\", \"tokens\"]\ntoken_bank = 16\n")
                .unwrap();
        assert_eq!(banked.robust.token_bank, 16);
        assert_eq!(banked.robust.check(), Ok(()));
        assert!(toml::to_string(&banked)
            .unwrap()
            .contains("token_bank = 16"));
        let plain: Doc = toml::from_str("[robust]\nslot = \"tokens\"\n").unwrap();
        assert_eq!(plain.robust.token_bank, 0);
        assert!(!toml::to_string(&plain).unwrap().contains("token_bank"));
        let alone: Doc = toml::from_str("[robust]\nslot = \"concept\"\ntoken_bank = 4\n").unwrap();
        let err = alone.robust.check().unwrap_err();
        assert!(
            err.contains("token_bank") && err.contains("\"tokens\""),
            "{err}"
        );
    }

    /// `persist` only means something with the token search: without it, it is refused.
    #[test]
    fn persist_needs_the_token_search() {
        let alone: Doc = toml::from_str("[robust]\nslot = \"concept\"\npersist = true\n").unwrap();
        let err = alone.robust.check().unwrap_err();
        assert!(
            err.contains("persist") && err.contains("\"tokens\""),
            "{err}"
        );
        let with: Doc =
            toml::from_str("[robust]\nslot = [\"concept\", \"tokens\"]\npersist = true\n").unwrap();
        assert_eq!(with.robust.check(), Ok(()));
    }

    /// The `word` slot needs its pipeline and images, and a positive learning rate; `word_persist`
    /// needs the slot; the settings are written back.
    #[test]
    fn the_word_slot_names_its_pipeline_and_images() {
        let bare: Doc = toml::from_str("[robust]\nslot = \"word\"\n").unwrap();
        let err = bare.robust.check().unwrap_err();
        assert!(
            err.contains("word_pipeline") && err.contains("word_images"),
            "{err}"
        );
        let full: Doc = toml::from_str(
            "[robust]\nslot = \"word\"\nword_persist = true\nword_start = \"random\"\nword_pipeline = \"p\"\nword_images = \"imgs\"\nword_steps = 4\n",
        )
        .unwrap();
        assert_eq!(full.robust.check(), Ok(()));
        let back = toml::to_string(&full).unwrap();
        assert!(
            back.contains("word_steps = 4")
                && back.contains("word_start = \"random\"")
                && !back.contains("word_lr"),
            "{back}"
        );
        let again: Doc = toml::from_str(&back).unwrap();
        assert_eq!(again.robust, full.robust);
        let bad: Doc = toml::from_str(
            "[robust]\nslot = \"word\"\nword_pipeline = \"p\"\nword_images = \"i\"\nword_lr = 0\n",
        )
        .unwrap();
        assert!(bad.robust.check().unwrap_err().contains("word_lr"));
        let stray: Doc =
            toml::from_str("[robust]\nslot = \"tokens\"\nword_persist = true\n").unwrap();
        assert!(stray.robust.check().unwrap_err().contains("word_persist"));
        let banked: Doc = toml::from_str(
            "[robust]\nslot = \"word\"\nword_pipeline = \"p\"\nword_images = \"i\"\nword_bank = 8\nword_every = 10\n",
        )
        .unwrap();
        assert_eq!(banked.robust.check(), Ok(()));
        let back = toml::to_string(&banked).unwrap();
        assert!(
            back.contains("word_bank = 8") && back.contains("word_every = 10"),
            "{back}"
        );
        let unset = toml::to_string(&full).unwrap();
        assert!(
            !unset.contains("word_bank") && !unset.contains("word_every"),
            "{unset}"
        );
        let unbanked: Doc = toml::from_str(
            "[robust]\nslot = \"word\"\nword_pipeline = \"p\"\nword_images = \"i\"\nword_every = 10\n",
        )
        .unwrap();
        assert!(unbanked.robust.check().unwrap_err().contains("word_bank"));
        let no_slot: Doc = toml::from_str("[robust]\nslot = \"tokens\"\nword_bank = 4\n").unwrap();
        assert!(no_slot.robust.check().unwrap_err().contains("no \"word\""));
    }
}
