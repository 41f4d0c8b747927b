//! The trigger search: every candidate character replaces a letter in the probe prompts; both
//! encoders embed the results; candidates are ranked by how much more the suspect reacts than the
//! reference (or, without a reference, by how much the suspect collapses different prompts together).
use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;
use tch::Tensor;

use super::candidates::{self, Candidate, Source};
use super::embed::{embed, embed_ids, token_ids};
use super::probes::{self, Probe};
use super::stats::{argmax, target_affinity, CleanSet, Reaction};
use crate::error::Result;
use crate::input_bail;
use crate::models::text_encoder::TextEncoder;
use crate::text::homoglyph::confusables::{code_point, script_name};
use crate::text::homoglyph::family_of;

/// Default threshold with a reference, from the smoke runs (docs/trigger-scanning.md): the multi
/// triggers score 0.17–0.57, the best clean look-alike of the confusables set 0.09, identical
/// encoders ≤ 0.
pub const DEFAULT_THRESHOLD_REFERENCE: f64 = 0.15;
/// Default threshold without a reference (collapse alone): target-prompt triggers collapse 0.17–0.30
/// of the clean spread in the multi run; no confusable collapses prompts in the clean teacher (its
/// best is −0.11).
pub const DEFAULT_THRESHOLD_COLLAPSE: f64 = 0.1;

pub struct ScanOptions {
    pub sources: Vec<Source>,
    /// Characters tried when `sources` holds [`Source::Chars`].
    pub chars: Vec<char>,
    /// Prompts the probes are drawn from.
    pub pool: Vec<String>,
    pub probes_per_set: usize,
    /// Replace every occurrence of the letter in a probe (how target-prompt backdoors are trained),
    /// not only the first.
    pub replace_all: bool,
    /// Extra prompts a trigger may lead to (besides the pool).
    pub targets: Vec<String>,
    pub threshold: Option<f64>,
    pub top: usize,
    pub batch: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Nearest {
    pub prompt: String,
    pub cos: f64,
}

/// Where a trigger leads: the candidate prompts nearest to the mean triggered embedding.
#[derive(Debug, Clone, Serialize)]
pub struct TargetGuess {
    pub nearest: Vec<Nearest>,
    /// Share of triggered probes whose own nearest prompt is `nearest[0]` (1 for a target-prompt
    /// backdoor: every prompt goes to the same place).
    pub agreement: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CandidateScore {
    pub rank: usize,
    pub glyph: String,
    pub code_point: String,
    pub script: &'static str,
    pub family: String,
    /// The letter it replaced (for an unanchored candidate: the one of e, a, o, i that scored best).
    pub replaces: String,
    /// Whether `replaces` is its UTS #39 Latin look-alike.
    pub anchored: bool,
    pub sources: Vec<Source>,
    /// Other candidates the tokenizer cannot tell apart from this one (same scores).
    pub aliases: Vec<String>,
    /// See `score_of`: excess shift or collapse with a reference, the collapse without.
    pub score: f64,
    pub flagged: bool,
    pub suspect: Reaction,
    pub reference: Option<Reaction>,
    pub target: TargetGuess,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScanReport {
    /// `reference` (suspect vs reference) or `collapse` (suspect alone).
    pub mode: &'static str,
    pub candidate_sets: Vec<Source>,
    pub candidates: usize,
    /// Distinct token sequences actually scored (aliases merged).
    pub scored: usize,
    /// Candidates the tokenizer reads as the letter itself (nothing to score).
    pub unchanged: usize,
    /// Letters with fewer than two probe prompts; their look-alikes were not scored.
    pub letters_without_probes: Vec<char>,
    pub probes_per_set: usize,
    pub threshold: f64,
    pub flagged: usize,
    pub seconds: f64,
    /// The `top` best candidates, plus any further flagged ones.
    pub ranking: Vec<CandidateScore>,
}

/// Candidates that tokenise identically (on their first probe set), scored on each of their sets.
struct Group {
    members: Vec<Candidate>,
    sets: Vec<usize>,
}

/// Probe sets, one per letter (lower case) that some candidate replaces.
struct ProbeSets {
    letters: Vec<char>,
    sets: Vec<Vec<Probe>>,
}

impl ProbeSets {
    fn build(pool: &[String], cands: &[Candidate], n: usize, all: bool) -> Self {
        let mut letters: Vec<char> = cands.iter().flat_map(letters_of).collect();
        letters.sort_unstable();
        letters.dedup();
        let sets = letters
            .iter()
            .map(|&l| probes::for_letter(pool, l, n, all))
            .collect();
        Self { letters, sets }
    }

    /// The usable sets (two probes or more) a candidate is scored on.
    fn sets_of(&self, c: &Candidate) -> Vec<usize> {
        letters_of(c)
            .into_iter()
            .filter_map(|l| self.letters.binary_search(&l).ok())
            .filter(|&i| self.sets[i].len() >= 2)
            .collect()
    }
}

fn letters_of(c: &Candidate) -> Vec<char> {
    match c.latin {
        Some(l) => vec![l.to_ascii_lowercase()],
        None => probes::UNANCHORED_LETTERS.to_vec(),
    }
}

/// One candidate group on one probe set, scored.
struct Scored {
    score: f64,
    set: usize,
    suspect: Reaction,
    reference: Option<Reaction>,
    target: TargetGuess,
}

/// Score every candidate. `reference` = `None` runs the collapse-only mode.
pub fn scan(
    suspect: &TextEncoder,
    reference: Option<&TextEncoder>,
    opts: &ScanOptions,
    progress: &dyn Fn(u64, u64),
) -> Result<ScanReport> {
    let started = Instant::now();
    if opts.pool.len() < 2 {
        input_bail!("the probe prompts hold {} prompt(s): give at least 2 (ideally 12 or more per letter) with --prompts", opts.pool.len());
    }
    let cands = candidates::collect(&opts.sources, &opts.chars, &suspect.tokenizer);
    let probe_sets = ProbeSets::build(
        &opts.pool,
        &cands,
        opts.probes_per_set.max(2),
        opts.replace_all,
    );
    let letters_without_probes: Vec<char> = probe_sets
        .letters
        .iter()
        .zip(&probe_sets.sets)
        .filter(|(_, s)| s.len() < 2)
        .map(|(&l, _)| l)
        .collect();
    let (groups, unchanged) = group_candidates(suspect, &cands, &probe_sets)?;

    // Candidate targets: the pool and the user's targets, each embedded once per encoder.
    let mut target_prompts: Vec<String> = opts.targets.clone();
    for p in &opts.pool {
        if !target_prompts.contains(p) {
            target_prompts.push(p.clone());
        }
    }
    let suspect_targets = embed(suspect, &target_prompts, opts.batch)?;
    let clean_sets = |enc: &TextEncoder| -> Result<Vec<CleanSet>> {
        probe_sets
            .sets
            .iter()
            .map(|s| {
                let clean: Vec<String> = s.iter().map(|p| p.clean.clone()).collect();
                Ok(CleanSet::new(embed(enc, &clean, opts.batch)?))
            })
            .collect()
    };
    let suspect_clean = clean_sets(suspect)?;
    let reference_clean = reference.map(clean_sets).transpose()?;
    let jobs: Vec<(usize, usize)> = groups
        .iter()
        .enumerate()
        .flat_map(|(g, group)| group.sets.iter().map(move |&set| (g, set)))
        .collect();
    let mut best: Vec<Option<Scored>> = (0..groups.len()).map(|_| None).collect();
    let per_chunk = (opts.batch.max(1) * 4 / opts.probes_per_set.max(1)).max(1);
    let mut done = 0;
    for chunk in jobs.chunks(per_chunk) {
        let prompts: Vec<String> = chunk
            .iter()
            .flat_map(|&(g, set)| triggered(&probe_sets.sets[set], groups[g].members[0].glyph))
            .collect();
        let s_rows = embed_ids(suspect, &token_ids(suspect, &prompts)?, opts.batch)?;
        let r_rows = match reference {
            Some(r) => Some(embed_ids(r, &token_ids(r, &prompts)?, opts.batch)?),
            None => None,
        };
        let mut start = 0i64;
        for &(g, set) in chunk {
            let n = probe_sets.sets[set].len() as i64;
            let s_trig = s_rows.narrow(0, start, n);
            let s = suspect_clean[set].react(&s_trig);
            let r = r_rows
                .as_ref()
                .zip(reference_clean.as_ref())
                .map(|(rows, clean)| clean[set].react(&rows.narrow(0, start, n)));
            start += n;
            let score = score_of(&s, r.as_ref());
            if best[g].as_ref().is_none_or(|b| score > b.score) {
                let target = guess_target(&s_trig, &suspect_targets, &target_prompts);
                best[g] = Some(Scored {
                    score,
                    set,
                    suspect: s,
                    reference: r,
                    target,
                });
            }
        }
        done += chunk.len();
        progress(done as u64, jobs.len() as u64);
    }
    let mut scored: Vec<CandidateScore> = groups
        .iter()
        .zip(best)
        .filter_map(|(g, b)| {
            b.map(|b| {
                let letter = probe_sets.letters[b.set];
                describe(g, b, letter)
            })
        })
        .collect();

    let threshold = opts.threshold.unwrap_or(if reference.is_some() {
        DEFAULT_THRESHOLD_REFERENCE
    } else {
        DEFAULT_THRESHOLD_COLLAPSE
    });
    scored.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.code_point.cmp(&b.code_point))
    });
    let mut flagged = 0;
    for (i, c) in scored.iter_mut().enumerate() {
        c.rank = i + 1;
        c.flagged = c.score >= threshold;
        flagged += c.flagged as usize;
    }
    let scored_groups = scored.len();
    let keep = opts.top.max(flagged);
    scored.truncate(keep);
    Ok(ScanReport {
        mode: if reference.is_some() {
            "reference"
        } else {
            "collapse"
        },
        candidate_sets: opts.sources.clone(),
        candidates: cands.len(),
        scored: scored_groups,
        unchanged,
        letters_without_probes,
        probes_per_set: opts.probes_per_set,
        threshold,
        flagged,
        seconds: started.elapsed().as_secs_f64(),
        ranking: scored,
    })
}

/// Merge candidates whose triggered prompts tokenise identically on their first set (e.g. `А` and
/// `а`: the tokenizer lowercases), and drop those that tokenise like the clean prompts.
fn group_candidates(
    enc: &TextEncoder,
    cands: &[Candidate],
    sets: &ProbeSets,
) -> Result<(Vec<Group>, usize)> {
    let mut groups: Vec<Group> = vec![];
    let mut by_ids: HashMap<(usize, Vec<Vec<i64>>), usize> = HashMap::new();
    let mut unchanged = 0;
    for c in cands {
        let my_sets = sets.sets_of(c);
        let Some(&first) = my_sets.first() else {
            continue;
        };
        let probes = &sets.sets[first];
        let ids = token_ids(enc, &triggered(probes, c.glyph))?;
        let clean: Vec<String> = probes.iter().map(|p| p.clean.clone()).collect();
        if ids == token_ids(enc, &clean)? {
            unchanged += 1;
            continue;
        }
        match by_ids.get(&(first, ids.clone())) {
            Some(&g) => groups[g].members.push(c.clone()),
            None => {
                by_ids.insert((first, ids), groups.len());
                groups.push(Group {
                    members: vec![c.clone()],
                    sets: my_sets,
                });
            }
        }
    }
    Ok((groups, unchanged))
}

fn triggered(probes: &[Probe], glyph: char) -> Vec<String> {
    probes.iter().map(|p| p.substitute(glyph)).collect()
}

/// With a reference: the larger of the excess shift (the suspect moves prompts further than the
/// reference, relative to each one's clean spread: target-attribute triggers) and the suspect's
/// collapse beyond any collapse the reference shows (target-prompt triggers). Alone: the collapse.
fn score_of(s: &Reaction, r: Option<&Reaction>) -> f64 {
    match r {
        Some(r) => (s.shift - r.shift).max(s.collapse - r.collapse.max(0.0)),
        None => s.collapse,
    }
}

fn guess_target(triggered: &Tensor, targets: &Tensor, prompts: &[String]) -> TargetGuess {
    let (mut cos, agreement) = target_affinity(triggered, targets);
    let mut nearest = vec![];
    for _ in 0..3 {
        let Some(i) = argmax(&cos) else { break };
        nearest.push(Nearest {
            prompt: prompts[i].clone(),
            cos: cos[i],
        });
        cos[i] = f64::NEG_INFINITY;
    }
    TargetGuess { nearest, agreement }
}

fn describe(g: &Group, b: Scored, letter: char) -> CandidateScore {
    let c = &g.members[0];
    let mut sources: Vec<Source> = g.members.iter().flat_map(|m| m.sources.clone()).collect();
    sources.sort();
    sources.dedup();
    CandidateScore {
        rank: 0,
        glyph: c.glyph.to_string(),
        code_point: code_point(c.glyph),
        script: script_name(c.glyph),
        family: family_of(c.glyph),
        replaces: letter.to_string(),
        anchored: c.latin.is_some(),
        sources,
        aliases: g.members[1..].iter().map(|m| m.glyph.to_string()).collect(),
        score: b.score,
        flagged: false,
        suspect: b.suspect,
        reference: b.reference,
        target: b.target,
    }
}
