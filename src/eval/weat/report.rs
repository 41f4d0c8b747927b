//! A WEAT report: every test on the encoder under study and, for a trained run, on the encoder it
//! was trained from (before/after), as JSON and Markdown.
use serde::Serialize;

use super::presets::{run_on_encoder, WeatWords};
use super::WeatResult;
use crate::error::Result;
use crate::models::text_encoder::TextEncoder;

/// One test's row.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct WeatRow {
    pub name: String,
    pub sets: WeatWords,
    #[serde(flatten)]
    pub result: WeatResult,
    /// The same test on the baseline (e.g. the run's teacher), when there is one.
    pub baseline: Option<WeatResult>,
    /// `effect_size − baseline.effect_size`.
    pub effect_size_change: Option<f64>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct WeatReport {
    pub encoder: String,
    pub baseline: Option<String>,
    /// Which output is embedded (transformers' `pooler_output`).
    pub embedding: String,
    pub samples: usize,
    pub seed: u32,
    pub tests: Vec<WeatRow>,
}

/// What to compare and how.
pub struct WeatRun<'a> {
    pub encoder: (&'a str, &'a TextEncoder),
    pub baseline: Option<(&'a str, &'a TextEncoder)>,
    pub tests: &'a [WeatWords],
    pub batch: usize,
    pub samples: usize,
    pub seed: u32,
}

impl WeatReport {
    /// Run every test; `on_test` is told each finished test's name (progress).
    pub fn run(r: &WeatRun, on_test: &mut dyn FnMut(&str)) -> Result<Self> {
        let mut rows = vec![];
        for words in r.tests {
            let result = run_on_encoder(r.encoder.1, words, r.batch, r.samples, r.seed)?;
            let baseline = r
                .baseline
                .map(|(_, enc)| run_on_encoder(enc, words, r.batch, r.samples, r.seed))
                .transpose()?;
            let effect_size_change = baseline
                .as_ref()
                .map(|b| result.effect_size - b.effect_size);
            rows.push(WeatRow {
                name: words.name.clone(),
                sets: words.clone(),
                result,
                baseline,
                effect_size_change,
            });
            on_test(&words.name);
        }
        Ok(Self {
            encoder: r.encoder.0.to_string(),
            baseline: r.baseline.map(|b| b.0.to_string()),
            embedding: "pooled_output".into(),
            samples: r.samples,
            seed: r.seed,
            tests: rows,
        })
    }

    pub fn to_markdown(&self) -> String {
        let mut md = format!(
            "# WEAT\n\nEncoder: `{}`{}. Embedding: {}. p-values: one-sided permutation test (exact when at most {} partitions, else {} samples, seed {}).\n\n",
            self.encoder,
            self.baseline
                .as_ref()
                .map(|b| format!("; baseline: `{b}`"))
                .unwrap_or_default(),
            self.embedding,
            self.samples,
            self.samples,
            self.seed
        );
        let with_base = self.baseline.is_some();
        md.push_str("| test | sizes X/Y/A/B | effect_size | p_value | permutations |");
        if with_base {
            md.push_str(" baseline effect_size | baseline p_value | change |");
        }
        md.push('\n');
        md.push_str("|---|---|---|---|---|");
        if with_base {
            md.push_str("---|---|---|");
        }
        md.push('\n');
        for t in &self.tests {
            let r = &t.result;
            let [nx, ny, na, nb] = r.sizes;
            md.push_str(&format!(
                "| {} | {nx}/{ny}/{na}/{nb} | {:.3} | {:.4} | {}{} |",
                t.name,
                r.effect_size,
                r.p_value,
                r.permutations,
                if r.exact { " (exact)" } else { "" }
            ));
            if let (Some(b), Some(c)) = (&t.baseline, t.effect_size_change) {
                md.push_str(&format!(
                    " {:.3} | {:.4} | {:+.3} |",
                    b.effect_size, b.p_value, c
                ));
            }
            md.push('\n');
        }
        md
    }
}
