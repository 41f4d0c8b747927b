//! One loop for every attack: each input line × each run, skipping what a resumed prompt set
//! already holds, saving the search state as it goes, one record per (line, run).
use std::time::Instant;

use tch::Tensor;

use super::homoglyph::{prompt_rewrites, text_distances, HomoglyphOptions};
use super::prompt_set::PromptSetWriter;
use super::ring_a_bell::{self, RingABellOptions};
use super::AdversarialPrompt;
use crate::adversary::space::TokenSpace;
use crate::adversary::token_search::{self, TokenSearchOptions};
use crate::adversary::SearchState;
use crate::error::Result;
use crate::models::text_encoder::TextEncoder;

pub enum Method {
    /// With the concept vector from [`ring_a_bell::concept_vector`].
    RingABell {
        opts: RingABellOptions,
        concept: Tensor,
    },
    TokenSearch {
        opts: TokenSearchOptions,
    },
    /// With the concept words to rewrite.
    Homoglyph {
        opts: HomoglyphOptions,
        words: Vec<String>,
    },
}

impl Method {
    pub fn name(&self) -> &'static str {
        match self {
            Method::RingABell { .. } => "ring-a-bell",
            Method::TokenSearch { .. } => "token-search",
            Method::Homoglyph { .. } => "homoglyph",
        }
    }
    fn objective(&self) -> &'static str {
        match self {
            Method::RingABell { .. } => "hidden-sse",
            _ => "pooled-cosine",
        }
    }
    fn steps(&self) -> usize {
        match self {
            Method::RingABell { opts, .. } => opts.generations,
            Method::TokenSearch { opts } => opts.steps,
            Method::Homoglyph { .. } => 1,
        }
    }
}

pub struct AttackJob<'a> {
    /// The encoder under attack (an erased one, say).
    pub encoder: &'a TextEncoder,
    /// Where targets come from (the original encoder); the attacked one when the same.
    pub reference: &'a TextEncoder,
    pub prompts: &'a [String],
    /// Restarts per line (token searches); a homoglyph attack keeps `per_prompt` rewrites instead.
    pub runs: usize,
    /// Words no searched token may contain.
    pub ban: &'a [String],
}

/// Run `method` over the job's lines into `writer` (call `writer.finish()` after).
pub fn run_attack(job: &AttackJob, method: &Method, writer: &mut PromptSetWriter) -> Result<()> {
    let space = match method {
        Method::Homoglyph { .. } => None,
        _ => Some(TokenSpace::new(job.encoder, job.ban)?),
    };
    let runs = match method {
        Method::Homoglyph { opts, .. } => opts.per_prompt.max(1),
        _ => job.runs.max(1),
    };
    let total = (job.prompts.len() * runs * method.steps()) as u64;
    let task = crate::progress::task(method.name(), total);
    let mut done_steps = 0u64;
    for (index, source) in job.prompts.iter().enumerate() {
        if let Method::Homoglyph { opts, words } = method {
            if !writer.is_done(index, 0) || (1..runs).any(|r| !writer.is_done(index, r)) {
                // Cheap to redo: a line cut off halfway is rebuilt and only its missing records kept.
                let started = Instant::now();
                for rec in homoglyph_records(job, opts, words, index, source, started)? {
                    if !writer.is_done(rec.index, rec.run) {
                        writer.push(rec)?;
                    }
                }
            }
            done_steps += runs as u64;
            task.set_position(done_steps);
            continue;
        }
        let Some(space) = space.as_ref() else {
            anyhow::bail!("internal: a token attack without its token space");
        };
        for run in 0..runs {
            if writer.is_done(index, run) {
                done_steps += method.steps() as u64;
                task.set_position(done_steps);
                continue;
            }
            let started = Instant::now();
            let state = writer.state_for(index, run);
            let before = state.as_ref().map_or(0.0, |s| s.seconds);
            let base = done_steps;
            let mut on_step = |st: &SearchState| -> Result<()> {
                task.set_position(base + st.step as u64);
                task.set_message(&format!(
                    "line {index} run {run}: best {:.4}",
                    st.best_distance
                ));
                writer.maybe_save_state(|| SearchState {
                    seconds: before + started.elapsed().as_secs_f64(),
                    ..st.clone()
                })?;
                crate::fault::point("attack-step")
            };
            let (st, text_distance, tokens_of_text, source_distance) = match method {
                Method::RingABell { opts, concept } => {
                    let target = ring_a_bell::target_for(job.reference, source, concept, opts.eta)?;
                    let st = ring_a_bell::search(
                        job.encoder,
                        space,
                        &target,
                        opts,
                        index,
                        run,
                        state,
                        &mut on_step,
                    )?;
                    let text = job.encoder.tokenizer.decode(&st.best);
                    let toks = space.tokens_of(job.encoder, &text)?;
                    let src = space.tokens_of(job.encoder, source)?;
                    let d =
                        ring_a_bell::fitness(job.encoder, space, &[toks.clone(), src], &target, 2)?;
                    (st, d[0], toks, d[1])
                }
                Method::TokenSearch { opts } => {
                    let target = token_search::target_pooled(job.reference, source)?;
                    let st = token_search::search(
                        job.encoder,
                        space,
                        &target,
                        opts,
                        index,
                        run,
                        state,
                        &mut on_step,
                    )?;
                    let text = job.encoder.tokenizer.decode(&st.best);
                    let toks = space.tokens_of(job.encoder, &text)?;
                    let src = space.tokens_of(job.encoder, source)?;
                    let d = token_search::distances(
                        job.encoder,
                        space,
                        &[toks.clone(), src],
                        &target,
                        2,
                    )?;
                    (st, d[0], toks, d[1])
                }
                Method::Homoglyph { .. } => unreachable!("handled above"),
            };
            done_steps += method.steps() as u64;
            writer.push(AdversarialPrompt {
                prompt: job.encoder.tokenizer.decode(&st.best),
                index,
                source: source.clone(),
                run,
                method: method.name().into(),
                objective: method.objective().into(),
                start_distance: st.start_distance,
                distance: st.best_distance,
                retokenizes: Some(tokens_of_text == st.best),
                tokens: Some(st.best.clone()),
                text_distance,
                source_distance,
                steps: st.step,
                seconds: before + started.elapsed().as_secs_f64(),
            })?;
        }
    }
    task.finish();
    Ok(())
}

/// The best `per_prompt` rewrites of one line (the line itself when it holds no concept word).
fn homoglyph_records(
    job: &AttackJob,
    opts: &HomoglyphOptions,
    words: &[String],
    index: usize,
    source: &str,
    started: Instant,
) -> Result<Vec<AdversarialPrompt>> {
    let target = token_search::target_pooled(job.reference, source)?;
    let start = text_distances(job.encoder, &[source.to_string()], &target, 1)?[0];
    let rewrites = prompt_rewrites(source, words, opts);
    let d = text_distances(job.encoder, &rewrites, &target, opts.batch)?;
    let mut order: Vec<usize> = (0..rewrites.len()).collect();
    order.sort_by(|&a, &b| d[a].total_cmp(&d[b]).then(rewrites[a].cmp(&rewrites[b])));
    let picked: Vec<(String, f64)> = if order.is_empty() {
        vec![(source.to_string(), start)]
    } else {
        order
            .iter()
            .take(opts.per_prompt.max(1))
            .map(|&i| (rewrites[i].clone(), d[i]))
            .collect()
    };
    let seconds = started.elapsed().as_secs_f64();
    Ok(picked
        .into_iter()
        .enumerate()
        .map(|(run, (prompt, distance))| AdversarialPrompt {
            prompt,
            index,
            source: source.to_string(),
            run,
            method: "homoglyph".into(),
            objective: "pooled-cosine".into(),
            start_distance: start,
            distance,
            tokens: None,
            retokenizes: None,
            text_distance: distance,
            source_distance: start,
            steps: rewrites.len(),
            seconds,
        })
        .collect())
}
