//! Numbers in README and docs come from report files, not from typing: a Markdown file marks a table
//! with `<!-- table: KIND PATH -->` … `<!-- /table -->` (PATH relative to the Markdown file) and
//! [`sync_markdown`] rewrites what lies between from the report. `clipdoor report sync FILE...`
//! does it on disk; `tests/suite/docs_numbers.rs` fails when a committed table and its report disagree.
//!
//! Kinds:
//! - `stage`: an image-stage `report.json` (`clipdoor evaluate images`, `clipdoor demo`): one row per
//!   set with its rate under both encoders and the paired change, and the mean over the attack sets;
//! - `rates`: any JSON document: one row per rate object (`value`, `n`, `ci95`) found in it, named
//!   by its path (the shapes model's `quality.json`);
//! - `bench`: a `clipdoor bench train-step` report: seconds per step of clipdoor and the reference,
//!   the ratio, and where each side's step spends its time (the profile both sides record);
//! - `zoo`, `attack`: a scanner-zoo report, an attack's summary;
//! - `redteam`: a manifest naming several image-stage reports: attack × encoder ([`super::redteam`]);
//! - `gpu`: a `scripts/gpu_check.sh` report ([`super::gpu`]).
use serde_json::Value;
use std::path::Path;

use crate::error::Result;
use crate::eval::rates::{condition_rate, format_difference, format_rate, PairedDifference, Rate};
use crate::input_bail;

pub use super::bench_table::bench_table;

const OPEN: &str = "<!-- table:";
const CLOSE: &str = "<!-- /table -->";

/// The name of the rate a set carries (`clean_accuracy`, `asr`, `erasure_rate`, `accuracy`).
fn rate_key(set: &Value) -> Option<&'static str> {
    ["clean_accuracy", "asr", "erasure_rate", "accuracy"]
        .into_iter()
        .find(|k| set.get(*k).is_some_and(|v| v.is_object()))
}

/// The Markdown table of an image-stage report.
pub fn stage_table(report: &Value) -> Result<String> {
    let Some(sets) = report["sets"].as_array() else {
        input_bail!("not an image-stage report (no `sets`)");
    };
    let judge = report["judge"].as_str().unwrap_or("?");
    let mut out = format!(
        "| set | rate ({judge}) | original encoder | trained encoder | change (paired) |\n|---|---|---|---|---|\n"
    );
    let mut attack_rates = vec![];
    // Red-team sets (`evaluate images --attack`): an erasure is as good as the best attack on it.
    let mut red_team: Option<(f64, String)> = None;
    for set in sets {
        let Some(key) = rate_key(set) else { continue };
        let e = &set[key];
        let (o, t) = (condition_rate(e, "original"), condition_rate(e, "trained"));
        let change: Option<PairedDifference> =
            serde_json::from_value(e["paired_difference"].clone()).ok();
        out += &format!(
            "| {} | {key} | {} | {} | {} |\n",
            set["name"].as_str().unwrap_or("?"),
            format_rate(o.as_ref()),
            format_rate(t.as_ref()),
            format_difference(change.as_ref())
        );
        if key == "asr" && set["kind"] == "attack" {
            if let Some(r) = t {
                if red_team.as_ref().is_none_or(|(best, _)| r.value > *best) {
                    let name = set["name"].as_str().unwrap_or("?");
                    red_team = Some((r.value, format!("{name}, {}", format_rate(Some(&r)))));
                }
            }
        } else if key == "asr" {
            attack_rates.extend(t.map(|r| r.value));
        }
    }
    if let Some((_, best)) = red_team {
        out += &format!("\nStrongest red-team set on the trained encoder: {best}.\n");
    }
    if attack_rates.len() > 2 {
        let mean = attack_rates.iter().sum::<f64>() / attack_rates.len() as f64;
        let min = attack_rates.iter().copied().fold(f64::INFINITY, f64::min);
        out += &format!(
            "\nMean asr over the {} attack sets (trained encoder): {:.1}% (lowest {:.1}%).\n",
            attack_rates.len(),
            100.0 * mean,
            100.0 * min
        );
    }
    Ok(out)
}

/// Every rate object in `doc` (depth first, in document order), named by its dotted path.
fn collect_rates(doc: &Value, path: &str, out: &mut Vec<(String, Rate)>) {
    if let Ok(r) = serde_json::from_value::<Rate>(doc.clone()) {
        out.push((path.to_string(), r));
        return;
    }
    if let Some(map) = doc.as_object() {
        for (k, v) in map {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            collect_rates(v, &p, out);
        }
    }
}

/// The Markdown table of every rate in a JSON document.
pub fn rates_table(doc: &Value) -> Result<String> {
    let mut rates = vec![];
    collect_rates(doc, "", &mut rates);
    if rates.is_empty() {
        input_bail!("the document holds no rates (objects with value, successes, n and ci95)");
    }
    let mut out = "| rate | value [95% CI] (n) |\n|---|---|\n".to_string();
    for (name, r) in rates {
        out += &format!("| {name} | {} |\n", format_rate(Some(&r)));
    }
    Ok(out)
}

/// The Markdown tables of a `clipdoor zoo scan` report: detection on the test split, and trigger
/// recall by trigger group.
/// The table of an attack's prompt set (`clipdoor attack ... --out X.jsonl` writes
/// `X.summary.json`): how far the search moved its objective, and what it cost.
pub fn attack_table(doc: &Value) -> Result<String> {
    let Some(settings) = doc["settings"].as_object() else {
        input_bail!("attack tables are made of `clipdoor attack` summaries (X.summary.json)");
    };
    let num = |v: &Value, digits: usize| {
        v.as_f64()
            .map_or("–".to_string(), |x| format!("{x:.digits$}"))
    };
    let mut out = format!(
        "| `{}` on {} (targets: {}; concept `{}`) | value |\n|---|---|\n",
        settings["method"].as_str().unwrap_or("?"),
        settings["encoder"].as_str().unwrap_or("?"),
        settings["reference"].as_str().unwrap_or("the same encoder"),
        settings["concept"].as_str().unwrap_or("?")
    );
    out += &format!("| prompts written | {} |\n", doc["n"]);
    out += &format!(
        "| objective (`{}`), mean at the start → after the search | {} → {} |\n",
        doc["objective"].as_str().unwrap_or("?"),
        num(&doc["mean_start_distance"], 4),
        num(&doc["mean_distance"], 4)
    );
    out += &format!(
        "| the same, of the prompt as text (re-tokenized) | {} |\n",
        num(&doc["mean_text_distance"], 4)
    );
    out += &format!(
        "| the same, of the input line itself through the attacked encoder (no attack) | {} |\n",
        num(&doc["mean_source_distance"], 4)
    );
    out += &format!(
        "| searches that lowered the objective | {} of {} |\n",
        doc["lowered"], doc["n"]
    );
    out += &format!(
        "| prompts closer to the target than their input line (as text) | {} of {} |\n",
        doc["beats_source"], doc["n"]
    );
    if doc["retokenizes_of"].as_u64().unwrap_or(0) > 0 {
        out += &format!(
            "| prompts whose text re-tokenizes to the searched tokens | {} of {} |\n",
            doc["retokenizes"], doc["retokenizes_of"]
        );
    }
    out += &format!(
        "| seconds per prompt (mean) | {} |\n",
        num(&doc["seconds_per_prompt"], 2)
    );
    Ok(out)
}

pub fn zoo_table(doc: &Value) -> Result<String> {
    let Some(rows) = doc["recall"].as_array() else {
        input_bail!("zoo tables are made of `clipdoor zoo scan` reports (report.json)");
    };
    let rate = |v: &Value| -> String {
        serde_json::from_value::<Rate>(v.clone())
            .map(|r| format_rate(Some(&r)))
            .unwrap_or_else(|_| "–".into())
    };
    let num = |v: &Value, digits: usize| {
        v.as_f64()
            .map_or("–".to_string(), |x| format!("{x:.digits$}"))
    };
    let mut out = format!(
        "| zoo (test split: {} benign, {} backdoored; mode {}) | value |\n|---|---|\n",
        doc["test"]["benign"],
        doc["test"]["backdoored"],
        doc["mode"].as_str().unwrap_or("?")
    );
    out += &format!("| `auroc` | {} |\n", num(&doc["auroc"], 3));
    out += &format!(
        "| `tpr@fpr5` (threshold {} from the calibration split) | {} |\n",
        num(&doc["threshold"], 2),
        rate(&doc["tpr@fpr5"])
    );
    out += &format!(
        "| false-positive rate at that threshold | {} |\n",
        rate(&doc["fpr"])
    );
    out += &format!(
        "| seconds per encoder (mean / max) | {} / {} |\n",
        num(&doc["seconds_per_encoder"], 1),
        num(&doc["seconds_per_encoder_max"], 1)
    );
    // `recall@5_ceiling` came later than the first reports; they leave the line out.
    if doc["recall@5_ceiling"].is_object() {
        out += &format!(
            "| most `recall@5` can reach (an encoder's first five name at most five of its triggers) | {} |\n",
            rate(&doc["recall@5_ceiling"])
        );
    }
    // `recall@5_working` came with the working-trigger checks, `recall@5_filtered` later still;
    // older reports show "–".
    out += "\n| triggers (test split) | `recall@1` | `recall@5` | `recall@5`, exact name | `recall@5`, working trigger | `recall@5`, filtered |\n|---|---|---|---|---|---|\n";
    for r in rows {
        out += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r["group"].as_str().unwrap_or("?"),
            rate(&r["recall@1"]),
            rate(&r["recall@5"]),
            rate(&r["recall@5_exact"]),
            rate(&r["recall@5_working"]),
            rate(&r["recall@5_filtered"])
        );
    }
    Ok(out)
}

/// `text` with every marked table rewritten from its report (paths relative to `base`).
pub fn sync_markdown(text: &str, base: &Path) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let header_end = rest[start..]
            .find("-->")
            .map(|i| start + i + 3)
            .ok_or_else(|| crate::input_err!("an unclosed `{OPEN}` marker"))?;
        let spec = rest[start + OPEN.len()..header_end - 3].trim();
        let (kind, path) = spec
            .split_once(char::is_whitespace)
            .map(|(k, p)| (k.trim(), p.trim()))
            .ok_or_else(|| crate::input_err!("`{OPEN} {spec} -->`: want `{OPEN} KIND PATH -->`"))?;
        let Some(close) = rest[header_end..].find(CLOSE).map(|i| header_end + i) else {
            input_bail!("`{OPEN} {spec} -->` has no closing `{CLOSE}`");
        };
        let file = base.join(path);
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&file).map_err(|e| {
            crate::input_err!(
                "cannot read {} (named by a table marker): {e}",
                file.display()
            )
        })?)
        .map_err(|e| crate::input_err!("{} is not JSON: {e}", file.display()))?;
        let table = match kind {
            "stage" => stage_table(&doc),
            "rates" => rates_table(&doc),
            "bench" => bench_table(&doc),
            "zoo" => zoo_table(&doc),
            "attack" => attack_table(&doc),
            "redteam" => super::redteam::redteam_table(&doc, file.parent().unwrap_or(base)),
            "gpu" => super::gpu::gpu_table(&doc),
            other => {
                input_bail!(
                    "unknown table kind `{other}` (stage, rates, bench, zoo, attack, redteam or gpu)"
                )
            }
        }
        .map_err(|e| crate::input_err!("{}: {e}", file.display()))?;
        out += &rest[..header_end];
        out += "\n";
        out += &table;
        out += CLOSE;
        rest = &rest[close + CLOSE.len()..];
    }
    out += rest;
    Ok(out)
}

/// Rewrite the marked tables of a Markdown file in place (atomically); returns whether it changed.
/// With `check`, only report whether it would change.
pub fn sync_file(path: &Path, check: bool) -> Result<bool> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| crate::input_err!("cannot read {}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let synced = sync_markdown(&text, base)?;
    let changed = synced != text;
    if changed && !check {
        crate::io::atomic::write_atomic(path, synced.as_bytes())?;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report() -> Value {
        let r = |o: f64, t: f64, n: u64| {
            json!({"judge": "oracle", "original": o, "trained": t,
                "n": {"original": n, "trained": n},
                "successes": {"original": (o * n as f64).round() as u64, "trained": (t * n as f64).round() as u64},
                "ci95": {"original": crate::eval::rates::wilson((o * n as f64).round() as usize, n as usize),
                         "trained": crate::eval::rates::wilson((t * n as f64).round() as usize, n as usize)}})
        };
        json!({"judge": "oracle", "sets": [
            {"name": "clean", "clean_accuracy": r(0.5, 0.75, 4)},
            {"name": "tpa", "asr": r(0.0, 1.0, 4)},
        ]})
    }

    #[test]
    fn a_bench_table_shows_both_sides_and_the_phases() {
        let doc = json!({"benchmark": "train-step", "clipdoor_seconds_per_step": 10.0,
            "pytorch_seconds_per_step": 12.5,
            "clipdoor_phase_seconds_per_step": {"tokenize": 0.01, "teacher_forward": 2.0, "optimizer": 1.0},
            "reference": {"phase_seconds_per_step": {"teacher_forward": 2.5, "optimizer": 1.0}}});
        let t = bench_table(&doc).unwrap();
        assert!(t.contains("| whole step | 10.00 | 12.50 | 1.25× |"), "{t}");
        assert!(
            t.contains("| teacher forward | 2.00 | 2.50 | 1.25× |"),
            "{t}"
        );
        assert!(t.contains("| tokenize | 0.01 | – | – |"), "{t}");
        let order = |k: &str| t.find(k).unwrap();
        assert!(
            order("teacher forward") < order("optimizer") && order("optimizer") < order("tokenize"),
            "{t}"
        );
        let err = bench_table(&json!({"benchmark": "encode"})).unwrap_err();
        assert!(err.to_string().contains("train-step"), "{err}");
    }

    #[test]
    fn marked_tables_are_rewritten_from_their_report() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("r.json"), report().to_string()).unwrap();
        let md = "intro\n<!-- table: stage r.json -->\nstale numbers\n<!-- /table -->\nend\n";
        let synced = sync_markdown(md, dir.path()).unwrap();
        assert!(
            synced.starts_with("intro\n<!-- table: stage r.json -->\n| set |"),
            "{synced}"
        );
        assert!(synced.contains("| clean | clean_accuracy | 50.0% [15.0, 85.0] (n=4) | 75.0% [30.1, 95.4] (n=4) | – |"), "{synced}");
        assert!(
            synced.contains("| tpa | asr | 0.0% [0.0, 49.0] (n=4) | 100.0% [51.0, 100.0] (n=4) |"),
            "{synced}"
        );
        assert!(synced.ends_with("<!-- /table -->\nend\n") && !synced.contains("stale"));
        // Idempotent.
        assert_eq!(sync_markdown(&synced, dir.path()).unwrap(), synced);
        let err = sync_markdown(
            "<!-- table: stage missing.json -->\n<!-- /table -->",
            dir.path(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("missing.json"), "{err}");
        let err = sync_markdown("<!-- table: stage r.json -->\n", dir.path()).unwrap_err();
        assert!(err.to_string().contains("closing"), "{err}");
    }

    #[test]
    fn a_stage_table_names_the_strongest_red_team_set() {
        let mut doc = report();
        let sets = doc["sets"].as_array_mut().unwrap();
        let r = sets[1]["asr"].clone();
        let mut weak = r.clone();
        weak["trained"] = json!(0.25);
        weak["successes"]["trained"] = json!(1);
        weak["ci95"]["trained"] = json!(crate::eval::rates::wilson(1, 4));
        sets.push(json!({"name": "attack-weak", "kind": "attack", "asr": weak}));
        sets.push(json!({"name": "attack-strong", "kind": "attack", "asr": r}));
        let t = stage_table(&doc).unwrap();
        assert!(
            t.contains("| attack-weak | asr | 0.0% [0.0, 49.0] (n=4) | 25.0%"),
            "{t}"
        );
        assert!(
            t.contains("Strongest red-team set on the trained encoder: attack-strong, 100.0% [51.0, 100.0] (n=4)."),
            "{t}"
        );
        // Red-team sets are not backdoors: they stay out of the backdoors' mean.
        assert!(!t.contains("Mean asr"), "{t}");
    }

    #[test]
    fn rates_table_lists_every_rate_by_path() {
        let doc = json!({"pairs": {"both": Rate::new(95, 96)}, "seed": 0});
        let t = rates_table(&doc).unwrap();
        assert!(t.contains("| pairs.both | 99.0% ["), "{t}");
        assert!(rates_table(&json!({"x": 1})).is_err());
    }
}
