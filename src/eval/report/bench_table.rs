//! The bench table (`<!-- table: bench REPORT.json -->`): a `clipdoor bench train-step` report as
//! clipdoor's and the reference's seconds per step and per phase. Its own module because both the
//! table syncer and the GPU-check table (which appends a step profile) use it.
use serde_json::Value;

use crate::error::Result;
use crate::input_bail;

/// The Markdown table of a `bench train-step` report: both sides' seconds per step and per phase.
pub fn bench_table(doc: &Value) -> Result<String> {
    if doc["benchmark"].as_str() != Some("train-step") {
        input_bail!("bench tables are made of `clipdoor bench train-step` reports");
    }
    let ours = doc["clipdoor_seconds_per_step"].as_f64();
    let theirs = doc["pytorch_seconds_per_step"].as_f64();
    let Some(ours) = ours else {
        input_bail!("the report has no clipdoor_seconds_per_step");
    };
    let secs = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.2}"));
    let ratio = |o: f64, t: Option<f64>| {
        t.filter(|t| *t > 0.0 && o > 0.0)
            .map_or("–".to_string(), |t| format!("{:.2}×", t / o))
    };
    let mut out = "| seconds per step | clipdoor | PyTorch | speed ratio (PyTorch time / clipdoor time) |\n|---|---|---|---|\n".to_string();
    out += &format!(
        "| whole step | {} | {} | {} |\n",
        secs(Some(ours)),
        secs(theirs),
        ratio(ours, theirs)
    );
    let our_phases = doc["clipdoor_phase_seconds_per_step"].as_object();
    let their_phases = &doc["reference"]["phase_seconds_per_step"];
    // Step order first (JSON objects come back sorted by name), then anything else.
    let mut names: Vec<&String> = our_phases.into_iter().flatten().map(|(k, _)| k).collect();
    let rank = |n: &str| {
        crate::train::step_timer::PHASES
            .iter()
            .position(|p| *p == n)
            .unwrap_or(usize::MAX)
    };
    names.sort_by_key(|n| rank(n));
    for name in names {
        let Some(o) = doc["clipdoor_phase_seconds_per_step"][name].as_f64() else {
            continue;
        };
        let t = their_phases[name].as_f64();
        out += &format!(
            "| {} | {} | {} | {} |\n",
            name.replace('_', " "),
            secs(Some(o)),
            secs(t),
            ratio(o, t)
        );
    }
    Ok(out)
}
