//! The prompt set an attack writes, and the state that lets a stopped attack resume.
//!
//! While an attack runs, `<out>.partial.json` holds its settings, the finished records and the
//! current search's state, rewritten atomically after every record and every few seconds of search.
//! `finish` writes `<out>` (JSONL, one record per line, in input order) and `<out stem>.summary.json`,
//! then removes the partial file. A finished set is never replaced without `force`; an unfinished one
//! continues only with `resume`, and only with the settings it was started with.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::AdversarialPrompt;
use crate::adversary::SearchState;
use crate::error::Result;
use crate::input_bail;
use crate::io::atomic::{write_atomic, write_json};

/// How often a running search saves its state; `CLIPDOOR_ATTACK_SAVE_SECONDS` overrides it (the
/// crash tests save after every step with 0).
pub const STATE_EVERY: Duration = Duration::from_secs(15);

fn state_every() -> Duration {
    std::env::var("CLIPDOOR_ATTACK_SAVE_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(STATE_EVERY, Duration::from_secs_f64)
}

#[derive(Debug, Serialize, Deserialize)]
struct Partial {
    settings: serde_json::Value,
    records: Vec<AdversarialPrompt>,
    state: Option<SearchState>,
}

pub struct PromptSetWriter {
    out: PathBuf,
    partial_path: PathBuf,
    partial: Partial,
    last_save: Instant,
    save_every: Duration,
}

/// `<out>.partial.json`.
pub fn partial_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".partial.json");
    PathBuf::from(s)
}

/// `<out stem>.summary.json` beside `<out>`.
pub fn summary_path(out: &Path) -> PathBuf {
    out.with_extension("summary.json")
}

impl PromptSetWriter {
    /// Start (or, with `resume`, continue) the prompt set `out` made with `settings`.
    pub fn open(
        out: &Path,
        settings: serde_json::Value,
        resume: bool,
        force: bool,
    ) -> Result<Self> {
        let partial_path = partial_path(out);
        if out.exists() && !force {
            input_bail!(
                "{} already exists (a finished prompt set): give another --out, or --force to replace it",
                out.display()
            );
        }
        let partial = if partial_path.is_file() {
            if !resume && !force {
                input_bail!(
                    "{} holds an unfinished attack: add --resume to continue it, or --force to start again",
                    partial_path.display()
                );
            }
            if force && !resume {
                Partial {
                    settings,
                    records: vec![],
                    state: None,
                }
            } else {
                let text = std::fs::read_to_string(&partial_path)
                    .with_context(|| format!("reading {}", partial_path.display()))?;
                let saved: Partial = serde_json::from_str(&text).map_err(|e| {
                    crate::input_err!(
                        "{} is not an attack's saved state ({e}): remove it, or --force to start again",
                        partial_path.display()
                    )
                })?;
                if saved.settings != settings {
                    input_bail!(
                        "{} was started with other settings ({}); now: {}. Give the same flags to resume, or --force to start again",
                        partial_path.display(),
                        saved.settings,
                        settings
                    );
                }
                crate::progress::note(&format!(
                    "resuming {}: {} prompt(s) done{}",
                    out.display(),
                    saved.records.len(),
                    saved
                        .state
                        .as_ref()
                        .map(|s| format!(", line {} run {} at step {}", s.index, s.run, s.step))
                        .unwrap_or_default()
                ));
                saved
            }
        } else {
            Partial {
                settings,
                records: vec![],
                state: None,
            }
        };
        Ok(Self {
            out: out.to_path_buf(),
            partial_path,
            partial,
            last_save: Instant::now(),
            save_every: state_every(),
        })
    }

    pub fn is_done(&self, index: usize, run: usize) -> bool {
        self.partial
            .records
            .iter()
            .any(|r| r.index == index && r.run == run)
    }

    /// The saved state of the search for (`index`, `run`), if it was under way.
    pub fn state_for(&self, index: usize, run: usize) -> Option<SearchState> {
        self.partial
            .state
            .clone()
            .filter(|s| s.index == index && s.run == run)
    }

    /// Save a search's state when [`STATE_EVERY`] has passed since the last save.
    pub fn maybe_save_state(&mut self, state: impl FnOnce() -> SearchState) -> Result<()> {
        if self.last_save.elapsed() < self.save_every {
            return Ok(());
        }
        self.partial.state = Some(state());
        self.save()
    }

    pub fn push(&mut self, record: AdversarialPrompt) -> Result<()> {
        self.partial.state = None;
        self.partial.records.push(record);
        self.save()
    }

    pub fn records(&self) -> &[AdversarialPrompt] {
        &self.partial.records
    }

    fn save(&mut self) -> Result<()> {
        write_json(&self.partial_path, &self.partial)?;
        self.last_save = Instant::now();
        Ok(())
    }

    /// Write the prompt set and its summary; the paths written.
    pub fn finish(mut self) -> Result<(PathBuf, PathBuf)> {
        self.partial.records.sort_by_key(|r| (r.index, r.run));
        let mut text = String::new();
        for r in &self.partial.records {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        write_atomic(&self.out, text.as_bytes())?;
        let summary = summarise(&self.partial.records, &self.partial.settings);
        let summary_file = summary_path(&self.out);
        write_json(&summary_file, &summary)?;
        std::fs::remove_file(&self.partial_path)
            .with_context(|| format!("removing {}", self.partial_path.display()))?;
        Ok((self.out, summary_file))
    }
}

/// Counts, mean distances and time of a finished set.
pub fn summarise(records: &[AdversarialPrompt], settings: &serde_json::Value) -> serde_json::Value {
    let n = records.len();
    let mean = |f: &dyn Fn(&AdversarialPrompt) -> f64| {
        if n == 0 {
            f64::NAN
        } else {
            records.iter().map(f).sum::<f64>() / n as f64
        }
    };
    let lowered = records
        .iter()
        .filter(|r| r.distance < r.start_distance)
        .count();
    let retok: Vec<bool> = records.iter().filter_map(|r| r.retokenizes).collect();
    serde_json::json!({
        "settings": settings,
        "n": n,
        "objective": records.first().map(|r| r.objective.clone()),
        "mean_start_distance": mean(&|r| r.start_distance),
        "mean_distance": mean(&|r| r.distance),
        "mean_text_distance": mean(&|r| r.text_distance),
        "mean_source_distance": mean(&|r| r.source_distance),
        "beats_source": records.iter().filter(|r| r.text_distance < r.source_distance).count(),
        "lowered": lowered,
        "retokenizes": retok.iter().filter(|&&b| b).count(),
        "retokenizes_of": retok.len(),
        "seconds": records.iter().map(|r| r.seconds).sum::<f64>(),
        "seconds_per_prompt": mean(&|r| r.seconds),
    })
}
