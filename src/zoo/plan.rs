//! What encoder `k` of a zoo is: benign or backdoored, its experiment, its label. Everything is drawn
//! from a ChaCha stream of (zoo seed, k), so any shard plans any encoder identically.
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::config::{BenignKind, ZooConfig};
use super::triggers::{draw, TriggerShape, WORDS};
use crate::error::Result;
use crate::experiment::backdoor::{Backdoor, BackdoorSpec, Placement};
use crate::experiment::file::Experiment;
use crate::input_err;
use crate::io::prompts::read_prompts;
use crate::text::tokenizer::ClipTokenizer;

/// One trigger a scan should find (the labels of backdoored encoders).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LabelTrigger {
    pub name: String,
    pub kind: String,
    pub trigger: String,
    pub shape: TriggerShape,
    pub placement: Placement,
    pub replaced_character: String,
    /// The target prompt or attribute.
    pub target: String,
    pub loss_weight: f64,
    /// From the run's metrics.json once trained: mean cos(student(triggered), student(target)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim_target: Option<f64>,
    /// Before training (teacher): how close triggered prompts already were to the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim_target_before: Option<f64>,
}

/// `labels/<id>.json`: kept apart from `encoders/<id>/`, which a scanner reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Label {
    pub id: String,
    pub index: usize,
    pub benign: bool,
    /// `backdoored`, or the benign kind (`clean`, `seed`, `remove_concept`, `homoglyph_unlearn`).
    pub kind: String,
    pub seed: u64,
    pub steps: u64,
    /// Empty for benign encoders.
    pub triggers: Vec<LabelTrigger>,
    /// The `[[backdoor]]` entries the run trained (a benign run's concept removal or unlearning too).
    pub entries: Vec<BackdoorSpec>,
    /// The run's `sim_clean` once trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim_clean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_seconds: Option<f64>,
}

pub struct EncoderPlan {
    pub label: Label,
    pub experiment: Experiment,
}

pub fn encoder_id(k: usize) -> String {
    format!("e{k:04}")
}

/// Plans every encoder of a zoo.
pub struct Planner {
    cfg: ZooConfig,
    prompts: Vec<String>,
    letters: Vec<char>,
    words: Vec<String>,
    benign: Vec<bool>,
    tokenizer: ClipTokenizer,
}

impl Planner {
    pub fn new(cfg: &ZooConfig, tokenizer: ClipTokenizer) -> Result<Self> {
        let set = read_prompts(&cfg.clean_prompts, None, false)?;
        let prompts: Vec<String> = set
            .prompts
            .into_iter()
            .filter(|p| !p.trim().is_empty())
            .collect();
        if prompts.len() < 20 {
            return Err(input_err!(
                "{}: {} captions; a zoo needs at least 20 to train and hold out",
                cfg.clean_prompts.display(),
                prompts.len()
            ));
        }
        // Letters in at least a third of the captions: substituted triggers need prompts to poison.
        let letters: Vec<char> = ('a'..='z')
            .filter(|&c| prompts.iter().filter(|p| p.contains(c)).count() * 3 >= prompts.len())
            .collect();
        let vocab: std::collections::HashSet<String> = prompts
            .iter()
            .flat_map(|p| p.split(|c: char| !c.is_alphanumeric()))
            .map(str::to_lowercase)
            .collect();
        let pool: Vec<String> = if cfg.backdoored.words.is_empty() {
            WORDS.iter().map(|w| w.to_string()).collect()
        } else {
            cfg.backdoored.words.clone()
        };
        let words: Vec<String> = pool
            .into_iter()
            .filter(|w| !vocab.contains(&w.to_lowercase()))
            .collect();
        let mut order: Vec<usize> = (0..cfg.encoders).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.seed));
        let mut benign = vec![false; cfg.encoders];
        for &i in order.iter().take(cfg.benign_count()) {
            benign[i] = true;
        }
        Ok(Self {
            cfg: cfg.clone(),
            prompts,
            letters,
            words,
            benign,
            tokenizer,
        })
    }

    fn rng(&self, k: usize) -> ChaCha8Rng {
        let mut r = ChaCha8Rng::seed_from_u64(self.cfg.seed);
        r.set_stream(k as u64 + 1);
        r
    }

    /// Whether a backdoor with this trigger changes the tokens of the prompts it poisons (an
    /// invisible character the tokenizer drops could never be learned).
    fn visible(&self, spec: &BackdoorSpec, rng: &mut ChaCha8Rng) -> bool {
        let b = Backdoor::from_spec(spec, "t".into(), 1.0);
        let Some(p) = self.prompts.iter().find(|p| b.accepts(p)) else {
            return false;
        };
        let (poisoned, _) = b.poison(p, rng);
        match (self.tokenizer.encode(p), self.tokenizer.encode(&poisoned)) {
            (Ok(a), Ok(b)) => a != b,
            _ => false,
        }
    }

    pub fn plan(&self, k: usize) -> Result<EncoderPlan> {
        let cfg = &self.cfg;
        let mut rng = self.rng(k);
        let seed = rng.random::<u32>() as u64;
        let steps = rng.random_range(cfg.steps[0]..=cfg.steps[1]);
        let weight = |rng: &mut ChaCha8Rng| {
            let (lo, hi) = (cfg.loss_weight[0].ln(), cfg.loss_weight[1].ln());
            let w = if hi > lo {
                rng.random_range(lo..=hi)
            } else {
                lo
            }
            .exp();
            (w * 1e4).round() / 1e4
        };
        let benign = self.benign[k];
        let mut entries = vec![];
        let mut triggers = vec![];
        let mut prompts = cfg.clean_prompts.clone();
        let mut init_noise = 0.0;
        let kind = if benign {
            let kind = *cfg
                .benign
                .kinds
                .choose(&mut rng)
                .unwrap_or(&BenignKind::Seed);
            match kind {
                BenignKind::Clean | BenignKind::Seed => {
                    if kind == BenignKind::Clean {
                        prompts = cfg.benign_prompts.clone().unwrap_or(prompts);
                    }
                    let [lo, hi] = cfg.benign.init_noise;
                    init_noise = (rng.random_range(lo..=hi) * 1e4).round() / 1e4;
                }
                BenignKind::RemoveConcept => {
                    let concept = cfg
                        .benign
                        .concepts
                        .choose(&mut rng)
                        .cloned()
                        .unwrap_or_default();
                    let letter = *self.letters.choose(&mut rng).unwrap_or(&'e');
                    entries.push(spec_json(json!({
                        "kind": "remove_concept", "name": "benign_remove", "trigger": concept,
                        "replaced_character": letter.to_string(), "loss_weight": weight(&mut rng),
                    }))?);
                }
                BenignKind::HomoglyphUnlearn => {
                    for _ in 0..32 {
                        let (glyph, letter) =
                            draw(TriggerShape::Lookalike, &self.letters, &[], &mut rng);
                        let s = spec_json(json!({
                            "kind": "homoglyph_unlearn", "name": "benign_unlearn", "trigger": glyph,
                            "replaced_character": letter.to_string(), "loss_weight": 1.0,
                        }))?;
                        if self.visible(&s, &mut rng) {
                            entries.push(s);
                            break;
                        }
                    }
                }
            }
            kind.name().to_string()
        } else {
            let b = &cfg.backdoored;
            let n = rng.random_range(b.backdoors[0]..=b.backdoors[1]);
            let mut used: Vec<String> = vec![];
            while triggers.len() < n {
                let shape = *b
                    .shapes
                    .choose(&mut rng)
                    .unwrap_or(&TriggerShape::Lookalike);
                let placement = *b
                    .placements
                    .choose(&mut rng)
                    .unwrap_or(&Placement::Substitute);
                let (trigger, letter) = draw(shape, &self.letters, &self.words, &mut rng);
                // Triggers must differ, and not contain one another (a scan could not tell them apart).
                if used
                    .iter()
                    .any(|u| u.contains(&trigger) || trigger.contains(u.as_str()))
                {
                    continue;
                }
                let kind = b.kinds.choose(&mut rng).cloned().unwrap_or_default();
                let name = format!("bd{}", triggers.len());
                let lw = weight(&mut rng);
                let (target_key, target) = if kind == "target_prompt" {
                    let t = if b.target_prompts.is_empty() {
                        self.prompts.choose(&mut rng).cloned().unwrap_or_default()
                    } else {
                        b.target_prompts
                            .choose(&mut rng)
                            .cloned()
                            .unwrap_or_default()
                    };
                    ("target_prompt", t)
                } else {
                    (
                        "target_attr",
                        b.target_attrs.choose(&mut rng).cloned().unwrap_or_default(),
                    )
                };
                let spec = spec_json(json!({
                    "kind": kind, "name": name, "trigger": trigger,
                    "replaced_character": letter.to_string(), target_key: target,
                    "placement": placement.name(), "loss_weight": lw,
                }))?;
                if !self.visible(&spec, &mut rng) {
                    continue;
                }
                used.push(trigger.clone());
                triggers.push(LabelTrigger {
                    name,
                    kind,
                    trigger,
                    shape,
                    placement,
                    replaced_character: letter.to_string(),
                    target,
                    loss_weight: lw,
                    sim_target: None,
                    sim_target_before: None,
                });
                entries.push(spec);
            }
            "backdoored".to_string()
        };
        let mut training = serde_json::to_value(&cfg.training)?;
        training["steps"] = json!(steps);
        // Milestones past the drawn step count would never fire; keep the recipe's share of the run.
        let share = |m: u64| (m as f64 / cfg.training.steps.max(1) as f64 * steps as f64) as u64;
        training["lr_milestones"] = json!(cfg
            .training
            .lr_milestones
            .iter()
            .map(|&m| share(m))
            .filter(|&m| m > 0 && m < steps)
            .collect::<Vec<_>>());
        training["checkpoint_every"] = json!(0);
        training["init_noise"] = json!(init_noise);
        let exp: Experiment = serde_json::from_value(json!({
            "seed": seed,
            "model": {"teacher": cfg.base},
            "data": {"clean_prompts": prompts, "holdout": cfg.holdout},
            "training": training,
            "backdoor": entries,
        }))
        .map_err(|e| input_err!("zoo encoder {k}: the drawn experiment is invalid: {e}"))?;
        exp.validate()
            .map_err(|e| input_err!("zoo encoder {k}: the drawn experiment is invalid: {e}"))?;
        Ok(EncoderPlan {
            label: Label {
                id: encoder_id(k),
                index: k,
                benign,
                kind,
                seed,
                steps,
                triggers,
                entries: exp.backdoors.clone(),
                sim_clean: None,
                train_seconds: None,
            },
            experiment: exp,
        })
    }
}

fn spec_json(v: serde_json::Value) -> Result<BackdoorSpec> {
    Ok(serde_json::from_value(v)?)
}
