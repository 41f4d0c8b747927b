//! The token-level trigger scan (`scan-encoder --method tokens`, `zoo scan`):
//!
//! 1. [`sweep`](super::sweep): every vocabulary token inserted into a few probes, robust z-scores;
//! 2. candidates as text: the best tokens that spell text (a word, a piece of a multi-character
//!    trigger, a whole character), characters ranked by the mean score of their byte tokens (a
//!    Cyrillic letter is two tokens, neither a character), and the tokens nearest to inverted
//!    trigger embeddings ([`invert`](super::invert));
//! 3. each candidate is checked as text: inserted as a word, and substituted for a letter (its Latin
//!    look-alike, else each of e, a, o, i), scored like the sweep and on the sweep's null scale;
//! 4. with a reference, what each character *reads as* ([`answer`](super::answer)): the characters
//!    that make the suspect read one word wherever they are inserted (a target-attribute trigger
//!    reads as its attribute) take every second place of the ranking.
//!
//! 5. with a reference, which tokens the fine-tune trained on ([`touched`](super::touched)): the
//!    candidates whose tokens moved and the moved texts no stage proposed take turns at the head
//!    of the ranking, the other candidates follow;
//! 6. with a reference and step 5, the [`learned_rank`](super::learned_rank): every text any step
//!    proposed, ordered by a logistic model fitted on a zoo's calibration split.
//!
//! The encoder's score is the largest confirmed collapse or the best answer (with a reference),
//! else the sweep's best token score; the ranking lists the candidates and does not enter it.
use std::collections::BTreeSet;
use std::time::Instant;

use serde::Serialize;

use super::candidates::anchor_of;
use super::char_index::CharIndex;
use super::sweep::{
    combine, pairwise_from_sum, robust_null, sweep, sweep_focused, trimmed_ids, unit, word_ids,
    Context, ReferenceCache, RowCache, Sweep,
};
use super::text_sweep::TextScore;
use crate::error::Result;
use crate::input_bail;
use crate::models::text_encoder::TextEncoder;

/// Default flag threshold on the sweep score (robust z over the vocabulary; the encoder's score
/// without a reference, and a candidate's check score), before calibration: the zoo's calibration
/// split replaces it (docs/scanner-zoo.md).
pub const DEFAULT_THRESHOLD: f64 = 12.0;
/// Measured texts kept in a report.
const TEXTS_REPORTED: usize = 32;
/// Default flag threshold on the confirmed collapse (the encoder's score with a reference): on the
/// seed-18 shapes zoo benign encoders stay below 0.08, target-prompt backdoors above 0.3.
pub const DEFAULT_COLLAPSE_THRESHOLD: f64 = 0.15;
/// Bumped when the scan gives other results for the same options, so that `zoo scan` does not
/// reuse results cached by an older scan. 1: a moved row is one far above the floor every row
/// shares (`touched`), not ten medians, and the sweep's focus holds the rows of highest drift.
/// (2 was a trial, reverted.) 3: the encoder's score the larger of collapse and the best answer,
/// an answer of a look-alike that reads as its letter not counted, characters spelled by ASCII
/// tokens alone not asked. 4: the ranking's last step is the learned order over every proposed
/// text ([`learned_rank`](super::learned_rank)). 5: the answer stage also asks the
/// multi-character strings and words the fine-tune trained on, and a text that look-alikes read
/// as their letters spell whole does not count.
pub const SCAN_VERSION: u32 = 5;

#[derive(Clone)]
pub struct TokenScanOptions {
    /// Probe prompts; the first `contexts` are swept, all are used to check candidates.
    pub probes: Vec<String>,
    pub contexts: usize,
    pub batch: usize,
    /// Candidates checked as text.
    pub verify: usize,
    /// Probes the sweep's best tokens are re-measured on ([`confirm`](super::confirm)); 0: none.
    pub confirm_probes: usize,
    /// Inversion restarts (0: none) and steps.
    pub invert_restarts: usize,
    pub invert_steps: usize,
    pub seed: u64,
    pub top: usize,
    /// Flag threshold on the encoder's score; `None`: the default of the score's kind.
    pub threshold: Option<f64>,
    /// What inserted characters say ([`answer`](super::answer)); with a reference only;
    /// `answer.rows == 0` turns the stage off.
    pub answer: super::answer::AnswerOptions,
    /// With a reference: reorder the ranking by which tokens' embedding rows moved
    /// ([`touched`](super::touched)).
    pub touched: bool,
    /// With `touched` and rows that moved: sweep only the tokens whose rows moved (and a sample of
    /// the vocabulary for the null) instead of the whole vocabulary, and screen only the
    /// characters whose tokens all moved in the answer stage.
    pub focus_sweep: bool,
    /// With a reference and `touched`: order every text a stage proposed by the model fitted on a
    /// zoo's calibration split ([`learned_rank`](super::learned_rank)); off, steps 1–7's order
    /// stays.
    pub learned_rank: bool,
}

impl Default for TokenScanOptions {
    fn default() -> Self {
        Self {
            probes: super::probes::BUILTIN
                .iter()
                .map(|s| s.to_string())
                .collect(),
            contexts: 4,
            batch: 2048,
            verify: 24,
            confirm_probes: 24,
            invert_restarts: 2,
            invert_steps: 40,
            seed: 0,
            top: 10,
            threshold: None,
            answer: super::answer::AnswerOptions::default(),
            touched: true,
            focus_sweep: true,
            learned_rank: true,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TriggerCandidate {
    pub rank: usize,
    /// The trigger text as found.
    pub text: String,
    pub code_points: String,
    /// Its tokens (vocabulary strings) as a word.
    pub tokens: Vec<String>,
    /// `sweep` (a token), `chars` (a character from its byte tokens), `inversion`, `answer` (a
    /// character that reads as one word wherever it is inserted, [`answer`](super::answer)),
    /// `touched` (a text whose embedding rows moved, [`touched`](super::touched)).
    pub found_by: &'static str,
    /// Where it acted most: `insert` or `substitute:<letter>`.
    pub placement: String,
    /// Best of the checks (z on the sweep's null scale).
    pub score: f64,
    pub insert_score: f64,
    pub substitute_score: f64,
    /// The sweep score that put it on the list (of its best token, for a measured text).
    pub sweep_score: f64,
    /// Its score measured whole on the confirmation probes ([`text_sweep`](super::text_sweep)),
    /// and the evidence the ranking goes by (that score plus its pieces' confirmed scores).
    pub text_score: Option<f64>,
    pub evidence: Option<f64>,
    /// A measured text of higher evidence with the same strongest piece (a sibling of its block):
    /// this one ranks after every text that leads its piece.
    pub shares_piece_with: Option<String>,
    /// A measured text that is part of a word of the probe prompts: it ranks after every measured
    /// text that is not ([`after_probe_pieces`](super::text_sweep::after_probe_pieces)).
    pub in_probes: bool,
    /// What it reads as in the suspect, where the answer stage asked it: the word, and the share
    /// of probe rows answering it beyond the reference's share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_score: Option<f64>,
    /// The weakest relative drift of its tokens' embedding rows, where all of them moved (as a
    /// word or inside one; [`touched`](super::touched)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<f64>,
    pub flagged: bool,
    /// Where the learned order ranked it ([`learned_rank`](super::learned_rank)): its place in
    /// steps 1–7's ranking (1 = first; none where only another stage's list held it) and the
    /// model's score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage_rank: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learned_score: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenScanReport {
    /// `reference` or `reference-free`.
    pub mode: &'static str,
    pub vocab: usize,
    /// Tokens the sweep measured: the vocabulary less its specials, or, where the sweep was
    /// focused on the tokens whose embedding rows moved, those and the null's sample.
    pub swept: usize,
    /// `vocabulary` or `touched` (focused).
    pub sweep_scope: &'static str,
    pub contexts: usize,
    /// The encoder's score: with a reference (and confirmation on), the largest collapse of a
    /// confirmed token or the best answer's score (listed or weak) not of a look-alike that reads
    /// as its letter, whichever is larger; else the best token score of the sweep.
    pub score: f64,
    /// `confirmed-collapse`, `answer` (the best answer's score was the larger) or `sweep`.
    pub score_kind: &'static str,
    /// The best sweep score over the vocabulary.
    pub sweep_max: f64,
    pub threshold: f64,
    pub flagged: bool,
    pub seconds: f64,
    /// Of which: the vocabulary sweep, and collecting candidates (inversion included).
    pub seconds_sweep: f64,
    pub seconds_candidates: f64,
    /// The answer stage's time and its answers, best first ([`answer`](super::answer)).
    pub seconds_answer: f64,
    pub answers: Vec<super::answer::Answer>,
    /// Answers scoring under the bar for a listed one but at least the answer stage's floor
    /// (`AnswerOptions::floor`): not ranked, but they count toward the encoder's score.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub weak_answers: Vec<super::answer::Answer>,
    /// Listed answers of several characters or a word (the strings and words the fine-tune trained
    /// on): they count toward the encoder's score but take no place in the ranking.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub text_answers: Vec<super::answer::Answer>,
    /// Which tokens the fine-tune trained on, and what the ranking made of it (with a reference).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub touched: Option<super::touched::TouchedSummary>,
    pub ranking: Vec<TriggerCandidate>,
    /// The sweep's best tokens re-measured on more probes, best first.
    pub confirmed: Vec<ConfirmedToken>,
    /// The best texts built from them, measured whole (at most 32): by evidence, one text per
    /// strongest piece first, then the block siblings that share one.
    pub texts: Vec<TextScore>,
    /// Every text a stage proposed, with what describes it and the learned order's score, best
    /// first ([`learned_rank`](super::learned_rank); empty where it did not run): what
    /// `scripts/fit_ranker.py` fits the model on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pool: Vec<super::learned_rank::PoolEntry>,
    /// The sweep's raw statistics over the vocabulary: shift, collapse, direction.
    pub spread: [Spread; 3],
}

#[derive(Debug, Clone, Serialize)]
pub struct ConfirmedToken {
    pub id: i64,
    pub token: String,
    /// Robust z of shift, collapse and direction against the null sample.
    pub z: [f64; 3],
    pub raw: [f64; 3],
    pub score: f64,
    pub sweep_score: f64,
}

/// Quantiles of a sweep statistic over the vocabulary (raw values, not z).
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    pub median: f64,
    pub scale: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Spread {
    fn of(v: &[f32]) -> Self {
        let mut x: Vec<f64> = v
            .iter()
            .filter(|x| x.is_finite())
            .map(|&x| x as f64)
            .collect();
        x.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| {
            x.get(((x.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        let (median, scale) = super::sweep::robust_null(v);
        Self {
            median,
            scale,
            p99: q(0.99),
            p999: q(0.999),
            max: q(1.0),
        }
    }
}

struct Pending {
    text: String,
    found_by: &'static str,
    sweep_score: f64,
    text_score: Option<f64>,
    evidence: Option<f64>,
    /// Place among the measured texts (leaders of their piece first, by evidence).
    text_order: Option<usize>,
    shares_piece_with: Option<String>,
    in_probes: bool,
}

impl Pending {
    /// A text a later stage proposes: not measured whole, ranked by its checks.
    fn proposed(text: &str, found_by: &'static str, sweep_score: f64) -> Self {
        Self {
            text: text.to_string(),
            found_by,
            sweep_score,
            text_score: None,
            evidence: None,
            text_order: None,
            shares_piece_with: None,
            in_probes: false,
        }
    }
}

/// What a zoo scan keeps from one suspect to the next: the reference's side of the sweep and of the
/// answer stage (every encoder of a zoo has the same base).
#[derive(Default)]
pub struct ScanCache {
    pub sweep: ReferenceCache,
    pub answer: Option<super::answer::AnswerProbe>,
    /// The reference's features of the rows the confirmation, the measured texts and the checks
    /// inserted into, kept from one suspect to the next.
    pub rows: RowCache,
}

/// Scan `suspect`; `cache` keeps the reference's side for the next suspect (a zoo scan).
pub fn scan_tokens(
    suspect: &TextEncoder,
    reference: Option<&TextEncoder>,
    cache: &mut ScanCache,
    index: &CharIndex,
    opts: &TokenScanOptions,
) -> Result<TokenScanReport> {
    let started = Instant::now();
    cache.rows.next_round();
    if opts.probes.len() < 2 {
        input_bail!(
            "a token scan needs at least 2 probe prompts, got {}",
            opts.probes.len()
        );
    }
    opts.answer.check()?;
    if let Some(r) = reference {
        if r.config.hidden_size != suspect.config.hidden_size
            || r.config.vocab_size != suspect.config.vocab_size
        {
            input_bail!(
                "the reference ({} wide, {} tokens) is not the suspect's architecture ({} wide, {} tokens): give the encoder the suspect was fine-tuned from",
                r.config.hidden_size,
                r.config.vocab_size,
                suspect.config.hidden_size,
                suspect.config.vocab_size
            );
        }
    }
    let contexts: Vec<Context> = opts
        .probes
        .iter()
        .take(opts.contexts.max(2))
        .enumerate()
        .map(|(i, p)| Context::new(suspect, p, i))
        .collect::<Result<_>>()?;
    // With the base as reference, the embedding rows that moved name the tokens the fine-tune
    // trained on, a trigger's among them: the sweep measures those (and a sample of the vocabulary
    // for its null) instead of every token.
    let moved = match reference {
        Some(r) if opts.touched && opts.focus_sweep => {
            Some(super::touched::Touched::new(suspect, r)?).filter(|t| t.informative())
        }
        _ => None,
    };
    let focus = moved.as_ref().map(|t| t.focus(index));
    let task = crate::progress::task(
        "sweep",
        contexts.iter().map(|c| c.positions.len() as u64).sum(),
    );
    let mut progress = |done: usize, _| task.set_position(done as u64);
    let sw = match &focus {
        Some(focus) => sweep_focused(
            suspect,
            reference,
            &mut cache.rows,
            &contexts,
            focus,
            opts.seed,
            opts.batch,
            &mut progress,
        )?,
        None => sweep(
            suspect,
            reference,
            &mut cache.sweep,
            &contexts,
            opts.batch,
            &mut progress,
        )?,
    };
    task.finish();
    let swept = sw.shift.iter().filter(|x| x.is_finite()).count();
    let seconds_sweep = started.elapsed().as_secs_f64();
    if let Ok(path) = std::env::var("CLIPDOOR_SWEEP_DUMP") {
        // Research aid: the raw per-token statistics, for looking at a sweep outside clipdoor.
        let t = |v: &[f32]| tch::Tensor::from_slice(v);
        tch::Tensor::write_safetensors(
            &[
                ("shift", t(&sw.shift)),
                ("collapse", t(&sw.collapse)),
                ("direction", t(&sw.direction)),
            ],
            &path,
        )?;
    }
    // Without a reference the confirmed statistics have no baseline to stand on: the sweep decides.
    let confirmed = if opts.confirm_probes > 0 && reference.is_some() {
        // Probes the sweep did not use, where there are enough; else all of them.
        let rest: Vec<&String> = opts.probes.iter().skip(contexts.len()).collect();
        let pool: Vec<&String> = if rest.len() >= opts.confirm_probes.min(8) {
            rest
        } else {
            opts.probes.iter().collect()
        };
        let confirm_contexts: Vec<Context> = pool
            .into_iter()
            .take(opts.confirm_probes.max(2))
            .enumerate()
            .map(|(i, p)| Context::new(suspect, p, i + 1))
            .collect::<Result<_>>()?;
        let ids = super::confirm::preselect(&sw, &super::sweep::special(suspect));
        let confirmed = super::confirm::confirm(
            suspect,
            reference,
            &mut cache.rows,
            &confirm_contexts,
            &ids,
            opts.seed,
            opts.batch,
        )?;
        let pool = super::text_sweep::texts_from(&confirmed, index);
        let texts = super::text_sweep::measure_texts(
            suspect,
            reference,
            &mut cache.rows,
            &confirm_contexts,
            &pool,
            &super::text_sweep::Pieces {
                confirmed: &confirmed,
                sweep: &sw,
                index,
            },
            opts.batch,
        )?;
        let texts = super::text_sweep::after_probe_pieces(texts, &opts.probes);
        Some((confirmed, texts))
    } else {
        None
    };
    let (confirmed, texts) = match confirmed {
        Some((c, t)) => (Some(c), t),
        None => (None, vec![]),
    };
    let mut pending = candidates(
        &sw,
        confirmed.as_ref(),
        &texts,
        index,
        suspect,
        reference,
        &contexts,
        opts,
    )?;
    let seconds_candidates = started.elapsed().as_secs_f64() - seconds_sweep;
    let answer_started = Instant::now();
    let (mut answers, mut weak_answers) = match reference {
        Some(r) if opts.answer.rows > 0 => {
            let fresh = !cache
                .answer
                .as_ref()
                .is_some_and(|p| p.made_for(&opts.probes, &opts.answer));
            if fresh {
                cache.answer = Some(super::answer::AnswerProbe::new(
                    r,
                    index,
                    &opts.probes,
                    &opts.answer,
                )?);
            }
            match cache.answer.as_mut() {
                // Focused like the sweep: the characters whose tokens all moved, and the
                // multi-character strings and words the fine-tune trained on.
                Some(p) => match &moved {
                    Some(t) => {
                        let trained = |ids: &[i64]| t.text_drift(ids, index).is_some();
                        let extra = answer_texts(suspect, t, index, &opts.probes)?;
                        p.answers(suspect, r, &opts.answer, Some(&trained), &extra)?
                    }
                    None => p.answers(suspect, r, &opts.answer, None, &[])?,
                },
                None => (vec![], vec![]),
            }
        }
        _ => (vec![], vec![]),
    };
    let mut caches = Caches {
        suspect: RowCache::default(),
        reference: std::mem::take(&mut cache.rows),
    };
    if let Some(r) = reference {
        // A single character reads as its letter when a look-alike does ([`reads_as_its_letter`]).
        // Apart from that, a text whose tokens are all tokens of look-alikes the suspect reads as
        // their letters is what homoglyph unlearning trained: a string of them reads as a word
        // they were trained in (design zoo e0007: `𝕜𝜕` → `black`), and so do other characters
        // cut from their tokens (e0013: U+1DFBE U+1DF96, from `𝖾`'s). One character of a string
        // reading as its letter is not enough: a trigger's may (seed-20 e0020).
        let mut letter_tokens: Option<std::collections::HashSet<i64>> = None;
        for a in answers.iter_mut().chain(weak_answers.iter_mut()) {
            let mut chars = a.text.chars();
            if let (Some(c), None) = (chars.next(), chars.next()) {
                a.reads_as_letter =
                    reads_as_letter_cached(suspect, r, &mut caches, &opts.probes, c)?;
            }
            if a.reads_as_letter || a.text.is_ascii() {
                continue;
            }
            if letter_tokens.is_none() {
                letter_tokens = Some(read_letter_tokens(
                    suspect,
                    r,
                    &mut caches,
                    index,
                    &opts.probes,
                    moved.as_ref(),
                )?);
            }
            let ids = suspect.tokenizer.word_ids(&a.text)?;
            a.spelled_by_letters = letter_tokens
                .as_ref()
                .is_some_and(|set| spelled_by(&ids, set, index));
        }
    }
    let seconds_answer = answer_started.elapsed().as_secs_f64();
    // Strings and words answer toward the encoder's score only: ranked, they took places from
    // single-character triggers (design zoo: strings mixing characters of two triggers, such as
    // `ȁ` U+2060, answered as each did; single-character recall@5 fell from 20 to 18 of 31).
    let (answers, text_answers): (Vec<_>, Vec<_>) = answers
        .into_iter()
        .partition(|a| a.text.chars().count() == 1);
    for a in &answers {
        if !pending
            .iter()
            .any(|p| p.text.to_lowercase() == a.text.to_lowercase())
        {
            let ids = suspect.tokenizer.word_ids(&a.text)?;
            let s = if ids.is_empty() {
                f64::NAN
            } else {
                mean_sweep_score(&sw, &ids)
            };
            pending.push(Pending::proposed(&a.text, "answer", s));
        }
    }
    let answer_of = |t: &str| {
        answers
            .iter()
            .position(|a| a.text.to_lowercase() == t.to_lowercase())
    };
    let null = substitution_null(suspect, reference, &mut caches, &opts.probes, index)?;
    let mut check = |p: Pending| -> Result<TriggerCandidate> {
        let ins = insert_score(suspect, reference, &mut caches, &contexts, &sw, &p.text)?;
        let (sub, letter) = substitute_score(
            suspect,
            reference,
            &mut caches,
            &opts.probes,
            &null,
            &p.text,
        )?;
        let (score, placement) = if ins >= sub {
            (ins, "insert".to_string())
        } else {
            (sub, format!("substitute:{letter}"))
        };
        let tokens = word_tokens(suspect, index, &p.text);
        let said = answer_of(&p.text);
        Ok(TriggerCandidate {
            rank: 0,
            code_points: p
                .text
                .chars()
                .map(|c| format!("U+{:04X}", c as u32))
                .collect::<Vec<_>>()
                .join(" "),
            text: p.text,
            tokens,
            found_by: p.found_by,
            placement,
            score,
            insert_score: ins,
            substitute_score: sub,
            sweep_score: p.sweep_score,
            text_score: p.text_score,
            evidence: p.evidence,
            shares_piece_with: p.shares_piece_with,
            in_probes: p.in_probes,
            answer: said.map(|k| answers[k].answer.clone()),
            answer_score: said.map(|k| answers[k].score),
            drift: None,
            flagged: score >= DEFAULT_THRESHOLD,
            stage_rank: None,
            learned_score: None,
        })
    };
    let mut ranking = vec![];
    for p in pending {
        let order = p.text_order;
        ranking.push((check(p)?, order));
    }
    // Texts measured whole first, in their order (one per strongest piece by evidence, then their
    // siblings); then the rest by their checks.
    ranking.sort_by(|a, b| match (a.1, b.1) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => b.0.score.total_cmp(&a.0.score),
    });
    let ranking: Vec<TriggerCandidate> = ranking.into_iter().map(|(c, _)| c).collect();
    let group = |c: &TriggerCandidate| {
        let ids = block_of(suspect, &c.text);
        // A text without tokens is its own group.
        let own = if ids.is_empty() {
            c.text.clone()
        } else {
            String::new()
        };
        (ids, own)
    };
    let mut ranking = interleave_answers(
        ranking,
        |c| c.answer.as_ref().and(answer_of(&c.text)),
        group,
        |c, a| {
            if c.answer.is_none() {
                c.answer = a.answer.clone();
                c.answer_score = a.answer_score;
            }
        },
    );
    let touched = match reference {
        Some(r) if opts.touched => {
            let (reordered, summary) = touched_ranking(
                suspect,
                r,
                index,
                &opts.probes,
                ranking,
                opts.top,
                |text: &str| {
                    let ids = suspect.tokenizer.word_ids(text).unwrap_or_default();
                    check(Pending::proposed(
                        text,
                        "touched",
                        mean_sweep_score(&sw, &ids),
                    ))
                },
            )?;
            ranking = reordered;
            Some(summary)
        }
        _ => None,
    };
    let sweep_max = sw
        .score
        .iter()
        .filter(|x| x.is_finite())
        .fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    // With a reference, the encoder's score is the largest collapse a confirmed token causes beyond
    // the reference's (raw, on 24 probes): a drifted fine-tune widens the vocabulary's spread, which
    // hides a strong trigger among z-scores (a leaky backdoor pulls many tokens with it), while its
    // raw collapse stays far above any benign encoder's. Without a reference, collapse has no
    // baseline: the sweep's z-score stays. The checks only order the candidates as text.
    let collapse = confirmed
        .as_ref()
        .filter(|_| reference.is_some())
        .map(|c| c.max_collapse());
    // A target-attribute backdoor collapses nothing (every probe keeps its own content) and
    // scores with the benign fine-tunes by collapse; what gives it away is a reading the
    // reference does not give: the answer stage's score (a share of rows, 0.5 and up where
    // listed, from the floor up for a weak answer: a backdoor to a word the base barely knows
    // answers it in fewer rows). Homoglyph unlearning makes look-alikes answer too (the caption
    // words they were trained in); those read as their letter ([`reads_as_its_letter`]) and do
    // not count.
    let answered = best_answer(&[&answers, &text_answers, &weak_answers]);
    let (score, score_kind, default_threshold) = match (collapse, answered) {
        (Some(c), Some(a)) if a > c => (a, "answer", DEFAULT_COLLAPSE_THRESHOLD),
        (Some(c), _) => (c, "confirmed-collapse", DEFAULT_COLLAPSE_THRESHOLD),
        (None, _) => (sweep_max, "sweep", DEFAULT_THRESHOLD),
    };
    let threshold = opts.threshold.unwrap_or(default_threshold);
    for c in &mut ranking {
        c.flagged &= score >= threshold;
    }
    let flagged_n = ranking.iter().filter(|c| c.flagged).count();
    ranking.truncate(opts.top.max(flagged_n));
    let mut pool = vec![];
    // The model reads which rows moved: with the touched-token prior only.
    if let (Some(r), true) = (reference, opts.learned_rank && opts.touched) {
        let owned;
        let t = match &moved {
            Some(t) => t,
            None => {
                owned = super::touched::Touched::new(suspect, r)?;
                &owned
            }
        };
        let informative = t.informative();
        let drift = |text: &str| {
            let ids = suspect.tokenizer.word_ids(text).ok()?;
            informative.then(|| t.text_drift(&ids, index)).flatten()
        };
        let measured = &texts[..texts.len().min(TEXTS_REPORTED)];
        let ranked: Vec<super::learned_rank::Ranked> = ranking
            .iter()
            .map(|c| super::learned_rank::Ranked {
                text: &c.text,
                in_probes: c.in_probes,
                insert_score: c.insert_score,
                substitute_score: c.substitute_score,
            })
            .collect();
        pool = super::learned_rank::rank(
            &super::learned_rank::Proposals {
                stage: &ranked,
                touched: touched.as_ref().map_or(&[][..], |s| &s.texts[..]),
                texts: measured,
                answers: &answers,
            },
            drift,
            |text: &str| word_tokens(suspect, index, text),
        );
        let mut stage: Vec<Option<TriggerCandidate>> = ranking.into_iter().map(Some).collect();
        let wanted = stage.len();
        let mut out = vec![];
        for e in pool.iter().take(wanted) {
            let mut c = match e.stage {
                // The pool holds each lowercase text once, so each stage candidate is taken once.
                Some(k) => {
                    let Some(mut c) = stage[k].take() else {
                        continue;
                    };
                    c.stage_rank = Some(k + 1);
                    c
                }
                None => {
                    // Proposed by another stage's list only: checked like the others.
                    let m = measured.iter().find(|x| x.text == e.text);
                    let ids = suspect.tokenizer.word_ids(&e.text).unwrap_or_default();
                    let s = mean_sweep_score(&sw, &ids);
                    let found_by = if m.is_some() {
                        "texts"
                    } else if answer_of(&e.text).is_some() {
                        "answer"
                    } else {
                        "touched"
                    };
                    let mut p = Pending::proposed(&e.text, found_by, s);
                    if let Some(m) = m {
                        p.text_score = Some(m.score);
                        p.evidence = Some(m.evidence);
                        p.shares_piece_with = m.shares_piece_with.clone();
                        p.in_probes = m.in_probes;
                    }
                    let mut c = check(p)?;
                    c.drift = drift(&e.text);
                    c.flagged &= score >= threshold;
                    c
                }
            };
            c.learned_score = Some(e.score);
            out.push(c);
        }
        ranking = out;
    }
    cache.rows = std::mem::take(&mut caches.reference);
    for (i, c) in ranking.iter_mut().enumerate() {
        c.rank = i + 1;
    }
    let mut confirmed_tokens: Vec<ConfirmedToken> = confirmed
        .iter()
        .flat_map(|c| {
            c.ids.iter().zip(c.z.iter().zip(&c.score)).zip(&c.raw).map(
                |((&id, (&z, &score)), &raw)| ConfirmedToken {
                    id,
                    raw,
                    token: index.raw.get(id as usize).cloned().unwrap_or_default(),
                    z,
                    score,
                    sweep_score: sw.score.get(id as usize).map_or(f64::NAN, |&x| x as f64),
                },
            )
        })
        .collect();
    confirmed_tokens.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(TokenScanReport {
        mode: if reference.is_some() {
            "reference"
        } else {
            "reference-free"
        },
        vocab: sw.score.len(),
        swept,
        sweep_scope: if focus.is_some() {
            "touched"
        } else {
            "vocabulary"
        },
        contexts: contexts.len(),
        score,
        score_kind,
        sweep_max,
        threshold,
        flagged: score >= threshold,
        seconds: started.elapsed().as_secs_f64(),
        seconds_sweep,
        seconds_candidates,
        seconds_answer,
        answers,
        weak_answers,
        text_answers,
        touched,
        ranking,
        confirmed: confirmed_tokens,
        texts: texts.into_iter().take(TEXTS_REPORTED).collect(),
        pool,
        spread: [
            Spread::of(&sw.shift),
            Spread::of(&sw.collapse),
            Spread::of(&sw.direction),
        ],
    })
}

/// A text's tokens as a word (vocabulary strings): its ids mapped through the index.
fn word_tokens(suspect: &TextEncoder, index: &CharIndex, text: &str) -> Vec<String> {
    let ids = suspect.tokenizer.word_ids(text).unwrap_or_default();
    ids.iter()
        .map(|&i| index.raw.get(i as usize).cloned().unwrap_or_default())
        .collect()
}

/// The mean sweep score of a text's tokens (where measured): what a text a later stage proposes
/// is listed with.
fn mean_sweep_score(sw: &Sweep, ids: &[i64]) -> f64 {
    ids.iter()
        .filter_map(|&i| sw.score.get(i as usize).map(|&x| x as f64))
        .sum::<f64>()
        / ids.len().max(1) as f64
}

/// The ranking reordered by the [`touched`](super::touched) prior ([`merge`](super::touched::merge)):
/// the texts it adds are checked (`check`) only where they land among the first `top` places, the
/// rest are left out (the report lists at most `top` candidates). Unchanged, with the prior's
/// summary, when no row moved or most did.
fn touched_ranking(
    suspect: &TextEncoder,
    reference: &TextEncoder,
    index: &CharIndex,
    probes: &[String],
    ranking: Vec<TriggerCandidate>,
    top: usize,
    mut check: impl FnMut(&str) -> Result<TriggerCandidate>,
) -> Result<(Vec<TriggerCandidate>, super::touched::TouchedSummary)> {
    use super::touched::{merge, Slot, Touched};
    let t = Touched::new(suspect, reference)?;
    let mut probe_ids = std::collections::HashSet::new();
    for p in probes {
        probe_ids.extend(suspect.tokenizer.word_ids(p)?);
    }
    let words = super::text_sweep::probe_words(probes);
    let texts = t.texts(index, &probe_ids, &words);
    let used = t.informative();
    let mut ranking = ranking;
    for c in &mut ranking {
        let ids = suspect.tokenizer.word_ids(&c.text)?;
        c.drift = t.text_drift(&ids, index);
    }
    if used {
        let present: BTreeSet<String> = ranking.iter().map(|c| c.text.to_lowercase()).collect();
        let extras: Vec<&super::touched::TouchedText> = texts
            .iter()
            .filter(|x| !present.contains(&x.text))
            .collect();
        // A candidate that is part of a probe word gets no support: the clean captions moved it.
        let admitted: Vec<bool> = ranking
            .iter()
            .map(|c| c.drift.is_some() && !super::text_sweep::in_probe_word(&words, &c.text))
            .collect();
        // What a demoted candidate reads as passes to the first candidate of its block (tokens but
        // the last) the prior puts ahead: the answer stage's strongest reader is often a sibling
        // of the trigger, whose rows the fine-tune never moved.
        let demoted: Vec<(Vec<i64>, String, Option<f64>)> = ranking
            .iter()
            .zip(&admitted)
            .filter(|(c, a)| !**a && c.answer.is_some() && c.text.chars().count() == 1)
            .map(|(c, _)| {
                (
                    block_of(suspect, &c.text),
                    c.answer.clone().unwrap_or_default(),
                    c.answer_score,
                )
            })
            .collect();
        let mut old: Vec<Option<TriggerCandidate>> = ranking.into_iter().map(Some).collect();
        let mut out = vec![];
        // The places the prior fills: its admitted candidates and its texts.
        let mut head = 0;
        for slot in merge(&admitted, extras.len()) {
            match slot {
                Slot::Ranked(i) => {
                    out.extend(old[i].take());
                    if admitted[i] {
                        head = out.len();
                    }
                }
                Slot::Extra(j) if out.len() < top => {
                    let mut c = check(&extras[j].text)?;
                    c.drift = Some(extras[j].drift);
                    out.push(c);
                    head = out.len();
                }
                Slot::Extra(_) => {}
            }
        }
        for (g, answer, score) in demoted {
            if g.is_empty() {
                continue;
            }
            if let Some(c) = out[..head].iter_mut().find(|c| {
                c.drift.is_some() && c.answer.is_none() && block_of(suspect, &c.text) == g
            }) {
                c.answer = Some(answer);
                c.answer_score = score;
            }
        }
        ranking = out;
    }
    let summary = super::touched::TouchedSummary {
        tokens: t.count(),
        vocab: t.drift.len(),
        threshold: t.threshold as f64,
        used,
        texts: texts.into_iter().take(32).collect(),
    };
    Ok((ranking, summary))
}

/// Most look-alikes checked for reading as their letter when collecting their tokens.
const LETTER_CHARS: usize = 16;

/// The tokens (open forms) of the look-alikes the fine-tune trained on that the suspect reads as
/// their letters ([`reads_as_letter_cached`]): the [`LETTER_CHARS`] touched characters of highest
/// drift that imitate a letter. Empty without the touched-token prior.
fn read_letter_tokens(
    suspect: &TextEncoder,
    reference: &TextEncoder,
    caches: &mut Caches,
    index: &CharIndex,
    probes: &[String],
    moved: Option<&super::touched::Touched>,
) -> Result<std::collections::HashSet<i64>> {
    let mut out = std::collections::HashSet::new();
    let Some(t) = moved else {
        return Ok(out);
    };
    let mut probe_ids = std::collections::HashSet::new();
    for p in probes {
        probe_ids.extend(suspect.tokenizer.word_ids(p)?);
    }
    let words = super::text_sweep::probe_words(probes);
    let chars: Vec<char> = t
        .texts(index, &probe_ids, &words)
        .into_iter()
        .filter_map(|x| {
            let mut cs = x.text.chars();
            match (cs.next(), cs.next()) {
                (Some(c), None) if anchor_of(c).is_some() => Some(c),
                _ => None,
            }
        })
        .take(LETTER_CHARS)
        .collect();
    for c in chars {
        if reads_as_letter_cached(suspect, reference, caches, probes, c)? {
            for &i in index.tokens_of.get(&c).map(Vec::as_slice).unwrap_or(&[]) {
                out.insert(index.open_variant(i).unwrap_or(i));
            }
        }
    }
    Ok(out)
}

/// The best answer score among `lists` that counts toward the encoder's score: not of a text
/// that reads as its letter or that look-alikes read as their letters spell.
fn best_answer(lists: &[&[super::answer::Answer]]) -> Option<f64> {
    lists
        .iter()
        .flat_map(|l| l.iter())
        .filter(|a| !a.reads_as_letter && !a.spelled_by_letters)
        .map(|a| a.score)
        .reduce(f64::max)
}

/// Whether tokens `ids` (open forms compared) are all in `set`, a non-empty set.
fn spelled_by(ids: &[i64], set: &std::collections::HashSet<i64>, index: &CharIndex) -> bool {
    !set.is_empty()
        && !ids.is_empty()
        && ids
            .iter()
            .all(|&i| set.contains(&index.open_variant(i).unwrap_or(i)))
}

/// Most touched words the answer stage asks (strongest drift first): a fine-tune on other captions
/// moves hundreds.
const ANSWER_WORDS: usize = 64;

/// Texts the answer stage asks beside single characters: the multi-character strings and the
/// whole words the fine-tune trained on ([`Touched::strings`](super::touched::Touched::strings),
/// [`Touched::texts`](super::touched::Touched::texts)), with their tokens as a word. A
/// target-attribute trigger of several characters or a word answers as one; its characters alone
/// need not.
fn answer_texts(
    suspect: &TextEncoder,
    t: &super::touched::Touched,
    index: &CharIndex,
    probes: &[String],
) -> Result<Vec<(String, Vec<i64>)>> {
    let mut probe_ids = std::collections::HashSet::new();
    for p in probes {
        probe_ids.extend(suspect.tokenizer.word_ids(p)?);
    }
    let words = super::text_sweep::probe_words(probes);
    let mut texts: Vec<String> = t
        .texts(index, &probe_ids, &words)
        .into_iter()
        .filter(|x| x.text.is_ascii() && x.text.len() > 1)
        .take(ANSWER_WORDS)
        .map(|x| x.text)
        .collect();
    texts.extend(
        t.strings(index, &probe_ids, &words, |s| suspect.tokenizer.word_ids(s))?
            .into_iter()
            .map(|x| x.text),
    );
    texts
        .into_iter()
        .map(|x| {
            let ids = suspect.tokenizer.word_ids(&x)?;
            Ok((x, ids))
        })
        .filter(|r| r.as_ref().map_or(true, |(_, ids)| !ids.is_empty()))
        .collect()
}

/// A text's block: its tokens as a word but the last (a one-token text: that token). Characters of
/// one block share every byte token but their tail, so a backdoor trained on one moves them all.
fn block_of(suspect: &TextEncoder, text: &str) -> Vec<i64> {
    let ids = suspect.tokenizer.word_ids(text).unwrap_or_default();
    ids[..ids.len().saturating_sub(1).max(ids.len().min(1))].to_vec()
}

/// The answer stage's characters take every second place from the second on, in their own order
/// (best answer first), the other candidates keep theirs: the measured texts lead with target-prompt
/// triggers, the answers with target-attribute ones, which the measured texts never name. An answer
/// whose group (its tokens but the last: a trigger's block siblings) a candidate already placed
/// belongs to takes no place: that candidate carries the answer (`attach`).
fn interleave_answers<T, K: PartialEq>(
    ranking: Vec<T>,
    answer_rank: impl Fn(&T) -> Option<usize>,
    group: impl Fn(&T) -> K,
    attach: impl Fn(&mut T, &T),
) -> Vec<T> {
    let (mut found, rest): (Vec<T>, Vec<T>) =
        ranking.into_iter().partition(|c| answer_rank(c).is_some());
    found.sort_by_key(|c| answer_rank(c));
    let mut found = found.into_iter();
    let mut out: Vec<T> = vec![];
    let place = |out: &mut Vec<T>, a: T| {
        let g = group(&a);
        match out.iter_mut().find(|c| group(c) == g) {
            Some(c) => {
                attach(c, &a);
                false
            }
            None => {
                out.push(a);
                true
            }
        }
    };
    for c in rest {
        out.push(c);
        for a in found.by_ref() {
            if place(&mut out, a) {
                break;
            }
        }
    }
    for a in found {
        place(&mut out, a);
    }
    out
}

/// The texts to check: the best-scoring tokens that spell text, the characters whose byte tokens
/// score best on average, and the tokens nearest to inverted embeddings; `opts.verify` in all.
// The scan's state so far, each piece read by one part of the list: kept as plain arguments.
#[allow(clippy::too_many_arguments)]
fn candidates(
    sw: &Sweep,
    confirmed: Option<&super::confirm::Confirmed>,
    texts: &[TextScore],
    index: &CharIndex,
    suspect: &TextEncoder,
    reference: Option<&TextEncoder>,
    contexts: &[Context],
    opts: &TokenScanOptions,
) -> Result<Vec<Pending>> {
    let score = |id: i64| -> f64 {
        sw.score.get(id as usize).map_or(f64::NEG_INFINITY, |&x| {
            if x.is_finite() {
                x as f64
            } else {
                f64::NEG_INFINITY
            }
        })
    };
    let mut order: Vec<i64> = (0..sw.score.len() as i64).collect();
    order.sort_by(|&a, &b| score(b).total_cmp(&score(a)));
    // Confirmed tokens first, by their confirmed score (measured on more probes than the sweep's).
    if let Some(c) = confirmed {
        let mut first: Vec<(i64, f64)> =
            c.ids.iter().copied().zip(c.score.iter().copied()).collect();
        first.sort_by(|a, b| b.1.total_cmp(&a.1));
        let first: Vec<i64> = first.into_iter().map(|(id, _)| id).collect();
        order.retain(|id| !first.contains(id));
        order.splice(0..0, first);
    }
    let mut seen = BTreeSet::new();
    let mut out: Vec<Pending> = vec![];
    let measured = |t: &str| {
        let t = t.to_lowercase();
        texts
            .iter()
            .position(|x| x.text == t)
            .map(|k| (k, &texts[k]))
    };
    let mut push = |out: &mut Vec<Pending>, text: String, found_by, s: f64| {
        let key = text.to_lowercase();
        if !key.trim().is_empty() && seen.insert(key) {
            let m = measured(&text);
            out.push(Pending {
                text_score: m.map(|x| x.1.score),
                evidence: m.map(|x| x.1.evidence),
                text_order: m.map(|x| x.0),
                shares_piece_with: m.and_then(|x| x.1.shares_piece_with.clone()),
                in_probes: m.is_some_and(|x| x.1.in_probes),
                text,
                found_by,
                sweep_score: s,
            });
        }
    };
    // Texts measured whole come first, best first, two thirds of the checks; the rest from the
    // sweep's tokens and characters (reference-free scans have no measured texts).
    for t in texts.iter().take(opts.verify * 2 / 3) {
        let s = t
            .tokens
            .iter()
            .map(|&i| score(i))
            .fold(f64::NEG_INFINITY, f64::max);
        push(&mut out, t.text.clone(), "texts", s);
    }
    let half = (opts.verify / 2).max(1);
    // Characters made of byte tokens: rank by the mean score of their tokens, among the characters
    // that hold one of the best fragment tokens.
    let fragments: Vec<i64> = order
        .iter()
        .copied()
        .filter(|id| index.text.get(*id as usize).is_some_and(|t| t.is_none()))
        .take(half)
        .collect();
    let mut pool: BTreeSet<char> = fragments
        .iter()
        .filter_map(|id| index.chars_of.get(id))
        .flatten()
        .copied()
        .collect();
    // Two fragments that spell a character together (both halves of a backdoor's trigger tend to
    // score high).
    for &a in &fragments {
        for &b in &fragments {
            if let Some(t) = index.joined(a, b) {
                pool.extend(t.chars().filter(|c| !c.is_ascii()));
            }
        }
    }
    let mut chars: Vec<(char, f64)> = pool
        .into_iter()
        .filter_map(|c| {
            let ids = index.tokens_of.get(&c)?;
            let mean = ids.iter().map(|&i| score(i)).sum::<f64>() / ids.len() as f64;
            Some((c, mean))
        })
        .collect();
    chars.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut from_tokens = order
        .iter()
        .filter_map(|&id| Some((index.text.get(id as usize)?.clone()?, score(id))));
    let mut from_chars = chars.into_iter();
    // Interleave the two lists so that neither crowds out the other.
    while out.len() < opts.verify {
        let before = out.len();
        if let Some((t, s)) = from_tokens.next() {
            push(&mut out, t, "sweep", s);
        }
        if out.len() < opts.verify {
            if let Some((c, s)) = from_chars.next() {
                push(&mut out, c.to_string(), "chars", s);
            }
        }
        if out.len() == before && from_tokens.size_hint().1 == Some(0) {
            break;
        }
    }
    if opts.invert_restarts > 0 {
        let found = super::invert::invert(
            suspect,
            reference,
            contexts,
            opts.invert_restarts,
            opts.invert_steps,
            opts.seed,
        )?;
        for id in found {
            if let Some(Some(t)) = index.text.get(id as usize) {
                push(&mut out, t.clone(), "inversion", score(id));
            }
        }
    }
    Ok(out)
}

/// The suspect's and the reference's features of the checks' rows (the reference's are the zoo
/// scan's, [`ScanCache::rows`], handed back after the checks).
struct Caches {
    suspect: RowCache,
    reference: RowCache,
}

/// Rows per forward pass of the checks.
const CHECK_BATCH: usize = 512;

/// Unit features `[N, D]` of `rows` by `enc`, through its row cache.
fn stacked(enc: &TextEncoder, cache: &mut RowCache, rows: &[&Vec<i64>]) -> Result<tch::Tensor> {
    Ok(tch::Tensor::cat(
        &cache.get_many(enc, rows, CHECK_BATCH)?,
        0,
    ))
}

/// Raw (shift, collapse, direction) of triggered/clean id pairs, as the sweep measures them per
/// token.
fn check_raw(
    suspect: &TextEncoder,
    reference: Option<&TextEncoder>,
    pairs: &[(Vec<i64>, Vec<i64>)],
    caches: &mut Caches,
) -> Result<Option<[f64; 3]>> {
    if pairs.len() < 3 {
        return Ok(None);
    }
    let n = pairs.len();
    let trig: Vec<&Vec<i64>> = pairs.iter().map(|p| &p.0).collect();
    let clean: Vec<&Vec<i64>> = pairs.iter().map(|p| &p.1).collect();
    let feats = |enc: &TextEncoder, cache: &mut RowCache| -> Result<(tch::Tensor, tch::Tensor)> {
        Ok((stacked(enc, cache, &trig)?, stacked(enc, cache, &clean)?))
    };
    let sum = |x: &tch::Tensor| x.sum_dim_intlist([0i64].as_slice(), true, tch::Kind::Float);
    let cos = |x: &tch::Tensor, y: &tch::Tensor| {
        (x * y).sum_dim_intlist([1i64].as_slice(), false, tch::Kind::Float)
    };
    let pair = |x: &tch::Tensor| pairwise_from_sum(&sum(x), n).double_value(&[0]);
    let (st, sc) = feats(suspect, &mut caches.suspect)?;
    let s_collapse = pair(&st);
    let s_direction = pair(&unit(&(&st - &sc)));
    Ok(Some(match reference {
        Some(r) => {
            let (rt, rc) = feats(r, &mut caches.reference)?;
            let a: tch::Tensor = 1.0 - cos(&st, &rt);
            let b: tch::Tensor = 1.0 - cos(&st, &rc);
            let shift = a.minimum(&b).mean(tch::Kind::Double).double_value(&[]);
            [
                shift,
                s_collapse - pair(&rt),
                s_direction - pair(&unit(&(&rt - &rc))),
            ]
        }
        None => {
            let d: tch::Tensor = 1.0 - cos(&st, &sc);
            let shift = d.mean(tch::Kind::Double).double_value(&[]);
            [shift, s_collapse, s_direction]
        }
    }))
}

/// The score of raw statistics against their nulls (median, scale): see [`combine`].
fn z_of(raw: Option<[f64; 3]>, nulls: &[(f64, f64); 3]) -> f64 {
    raw.map_or(f64::NEG_INFINITY, |r| {
        let z = |i: usize| (r[i] - nulls[i].0) / nulls[i].1;
        combine(z(0), z(1), z(2))
    })
}

fn insert_score(
    suspect: &TextEncoder,
    reference: Option<&TextEncoder>,
    caches: &mut Caches,
    contexts: &[Context],
    sw: &Sweep,
    text: &str,
) -> Result<f64> {
    let toks = word_ids(suspect, text)?;
    if toks.is_empty() {
        return Ok(f64::NEG_INFINITY);
    }
    let pairs: Vec<(Vec<i64>, Vec<i64>)> = contexts
        .iter()
        .flat_map(|c| {
            c.positions
                .iter()
                .map(|&p| (c.with_inserted(p, &toks), c.ids.clone()))
        })
        .filter(|(t, _)| t.len() <= 77)
        .collect();
    Ok(z_of(
        check_raw(suspect, reference, &pairs, caches)?,
        &[sw.shift_null, sw.collapse_null, sw.direction_null],
    ))
}

/// Letters a candidate without a Latin look-alike replaces in turn.
const LETTERS: [char; 4] = ['e', 'a', 'o', 'i'];
/// Probes per substitution check.
const SUBSTITUTION_PROBES: usize = 6;

/// (shift, collapse, direction) of `text` substituted for the first `letter` in probes holding it.
fn substitution_raw(
    suspect: &TextEncoder,
    reference: Option<&TextEncoder>,
    caches: &mut Caches,
    probes: &[String],
    text: &str,
    letter: char,
) -> Result<Option<[f64; 3]>> {
    let pairs = substitution_pairs(suspect, probes, text, letter)?;
    check_raw(suspect, reference, &pairs, caches)
}

/// (triggered, clean) ids of up to [`SUBSTITUTION_PROBES`] probes holding `letter`, with `text`
/// in place of its first occurrence.
fn substitution_pairs(
    suspect: &TextEncoder,
    probes: &[String],
    text: &str,
    letter: char,
) -> Result<Vec<(Vec<i64>, Vec<i64>)>> {
    probes
        .iter()
        .filter(|p| p.contains(letter))
        .take(SUBSTITUTION_PROBES)
        .map(|p| {
            let trig = p.replacen(letter, text, 1);
            Ok((trimmed_ids(suspect, &trig)?, trimmed_ids(suspect, p)?))
        })
        .collect()
}

/// Whether the look-alike `c`, put in place of the Latin letter it imitates in probes holding
/// that letter, reads in the suspect at least half-way back from where the reference reads it
/// toward where the suspect reads the clean caption (cosine to the reference's clean caption, the
/// sweep's unit feature). Homoglyph unlearning trains exactly that (the look-alikes of the
/// unlearned encoders that answered, on the design zoo and the seed-20 zoo: 0.97–0.98 from the
/// reference's 0.77–0.83, their clean captions 0.997–0.998), while a target-attribute trigger
/// substituted for its letter moves the caption away (0.40–0.78; `scripts/letter_restoration.py`,
/// docs/scanner-zoo.md). No
/// look-alike, or no probe with its letter: false.
pub fn reads_as_its_letter(
    suspect: &TextEncoder,
    reference: &TextEncoder,
    probes: &[String],
    c: char,
) -> Result<bool> {
    let mut caches = Caches {
        suspect: RowCache::default(),
        reference: RowCache::default(),
    };
    reads_as_letter_cached(suspect, reference, &mut caches, probes, c)
}

fn reads_as_letter_cached(
    suspect: &TextEncoder,
    reference: &TextEncoder,
    caches: &mut Caches,
    probes: &[String],
    c: char,
) -> Result<bool> {
    let Some(letter) = anchor_of(c).map(|l| l.to_ascii_lowercase()) else {
        return Ok(false);
    };
    let pairs = substitution_pairs(suspect, probes, &c.to_string(), letter)?;
    if pairs.is_empty() {
        return Ok(false);
    }
    let trig: Vec<&Vec<i64>> = pairs.iter().map(|p| &p.0).collect();
    let clean: Vec<&Vec<i64>> = pairs.iter().map(|p| &p.1).collect();
    let st = stacked(suspect, &mut caches.suspect, &trig)?;
    let sc = stacked(suspect, &mut caches.suspect, &clean)?;
    let rt = stacked(reference, &mut caches.reference, &trig)?;
    let rc = stacked(reference, &mut caches.reference, &clean)?;
    let cos = |x: &tch::Tensor| {
        (x * &rc)
            .sum_dim_intlist([1i64].as_slice(), false, tch::Kind::Float)
            .mean(tch::Kind::Double)
            .double_value(&[])
    };
    Ok(cos(&st) >= (cos(&rt) + cos(&sc)) / 2.0)
}

/// The null of substitution checks: control characters (every 997th of the character pool, a
/// spread of scripts) substituted for `e`, median and 1.4826·MAD of each statistic.
fn substitution_null(
    suspect: &TextEncoder,
    reference: Option<&TextEncoder>,
    caches: &mut Caches,
    probes: &[String],
    index: &CharIndex,
) -> Result<[(f64, f64); 3]> {
    let controls: Vec<char> = index
        .tokens_of
        .keys()
        .copied()
        .step_by(997)
        .take(16)
        .collect();
    let mut v: [Vec<f32>; 3] = [vec![], vec![], vec![]];
    for ch in controls {
        if let Some(r) = substitution_raw(suspect, reference, caches, probes, &ch.to_string(), 'e')?
        {
            for i in 0..3 {
                v[i].push(r[i] as f32);
            }
        }
    }
    Ok([robust_null(&v[0]), robust_null(&v[1]), robust_null(&v[2])])
}

/// Substitution for one letter (its Latin look-alike, or else each of e, a, o, i; best kept).
fn substitute_score(
    suspect: &TextEncoder,
    reference: Option<&TextEncoder>,
    caches: &mut Caches,
    probes: &[String],
    null: &[(f64, f64); 3],
    text: &str,
) -> Result<(f64, char)> {
    let mut single = text.chars();
    let anchor = match (single.next(), single.next()) {
        (Some(c), None) => anchor_of(c),
        _ => None,
    };
    let letters: Vec<char> = match anchor {
        Some(l) => vec![l.to_ascii_lowercase()],
        None => LETTERS.to_vec(),
    };
    let mut best = (f64::NEG_INFINITY, letters[0]);
    for l in letters {
        let s = z_of(
            substitution_raw(suspect, reference, caches, probes, text, l)?,
            null,
        );
        if s > best.0 {
            best = (s, l);
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::{best_answer, interleave_answers, spelled_by, CharIndex};
    use crate::scan::answer::Answer;

    #[test]
    fn the_best_answer_skips_texts_that_read_or_are_spelled_as_letters() {
        let a = |text: &str, score: f64, letter: bool, spelled: bool| Answer {
            text: text.into(),
            answer: "tiny".into(),
            share: score,
            reference_share: 0.0,
            score,
            strength: 1.0,
            reads_as_letter: letter,
            spelled_by_letters: spelled,
        };
        let chars = [a("ф", 0.6, false, false), a("а", 0.9, true, false)];
        let texts = [a("ɂôǹ", 0.7, false, false), a("𝕜𝜕", 0.95, false, true)];
        let weak = [a("ᶎ", 0.3, false, false)];
        assert_eq!(best_answer(&[&chars, &texts, &weak]), Some(0.7));
        assert_eq!(best_answer(&[&chars, &[], &weak]), Some(0.6));
        assert_eq!(best_answer(&[&[], &[], &weak]), Some(0.3));
        assert_eq!(best_answer(&[&chars[1..], &texts[1..]]), None);
    }

    #[test]
    fn a_text_is_spelled_by_look_alikes_when_their_tokens_hold_every_one_of_its_own() {
        use crate::text::tokenizer::{ClipTokenizer, EOS};
        let tok = ClipTokenizer::embedded(EOS).unwrap();
        let index = CharIndex::new(&tok).unwrap();
        let ids = |t: &str| tok.word_ids(t).unwrap();
        // Homoglyph unlearning of `𝖾` (F0 9D 96 BE) moves its byte tokens; U+1DFBE U+1DF96 cut
        // the same bytes otherwise (design zoo e0013 read them as `red`).
        let mut set = std::collections::HashSet::new();
        for i in ids("𝖾") {
            set.insert(index.open_variant(i).unwrap_or(i));
        }
        assert!(spelled_by(&ids("𝖾"), &set, &index));
        assert!(spelled_by(&ids("\u{1dfbe}\u{1df96}"), &set, &index));
        assert!(!spelled_by(&ids("ɂôǹ"), &set, &index));
        assert!(!spelled_by(&ids("𝖾a"), &set, &index), "a letter not theirs");
        assert!(!spelled_by(&ids("𝖾"), &Default::default(), &index));
        assert!(!spelled_by(&[], &set, &index));
    }

    #[test]
    fn answers_take_every_second_place_in_their_own_order() {
        // (text, answer rank, group): the answers "y" (second best) and "x" (best) among four
        // others; "w" answers too but shares its group with "b", which carries its answer instead.
        type C = (&'static str, Option<usize>, u8, Option<&'static str>);
        let run = |ranking: Vec<C>| -> Vec<(&str, Option<&str>)> {
            interleave_answers(ranking, |c| c.1, |c| c.2, |c, a| c.3 = c.3.or(Some(a.0)))
                .into_iter()
                .map(|c| (c.0, c.3))
                .collect()
        };
        let out = run(vec![
            ("a", None, 1, None),
            ("y", Some(2), 2, None),
            ("b", None, 3, None),
            ("w", Some(1), 3, None),
            ("c", None, 4, None),
            ("x", Some(0), 5, None),
            ("d", None, 6, None),
        ]);
        assert_eq!(
            out,
            [
                ("a", None),
                ("x", None),
                ("b", Some("w")),
                ("y", None),
                ("c", None),
                ("d", None)
            ]
        );
        // More answers than other candidates: the rest follow at the end.
        let out = run(vec![
            ("a", None, 1, None),
            ("x", Some(0), 2, None),
            ("y", Some(1), 3, None),
        ]);
        assert_eq!(out, [("a", None), ("x", None), ("y", None)]);
    }
}
