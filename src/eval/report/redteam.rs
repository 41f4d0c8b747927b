//! The red-team table (`<!-- table: redteam MANIFEST.json -->`): attack × encoder, from the image
//! reports of several erased encoders (`clipdoor evaluate images --attack ...`, one report per
//! encoder, each attack searched against that encoder). The manifest only names the reports — every
//! number comes from them:
//!
//! ```json
//! {"encoders": [{"label": "remove_concept", "report": "attacks/images.report.json"},
//!               {"label": "robust erasure", "report": "attacks_robust/images.report.json"}]}
//! ```
//!
//! Rows: clean accuracy, each concept set's erasure rate, each attack set's success (the erased
//! concept shown), the strongest attack per encoder, and the seconds each attack took. Columns: the
//! original encoder (from the first report: it drew that report's prompts) and each erased encoder.
use serde_json::Value;
use std::path::Path;

use crate::error::Result;
use crate::eval::rates::{condition_rate, format_rate};
use crate::input_bail;

/// One encoder's report.
struct Column {
    label: String,
    report: Value,
}

fn load(manifest: &Value, dir: &Path) -> Result<Vec<Column>> {
    let Some(list) = manifest["encoders"].as_array().filter(|l| !l.is_empty()) else {
        input_bail!("not a red-team manifest: want {{\"encoders\": [{{\"label\": ..., \"report\": \"images.report.json\"}}, ...]}}");
    };
    list.iter()
        .map(|e| {
            let (Some(label), Some(path)) = (e["label"].as_str(), e["report"].as_str()) else {
                input_bail!("every encoder of a red-team manifest needs a `label` and a `report`");
            };
            let file = dir.join(path);
            let text = std::fs::read_to_string(&file).map_err(|err| {
                crate::input_err!(
                    "cannot read {} (named by the red-team manifest): {err}",
                    file.display()
                )
            })?;
            let report: Value = serde_json::from_str(&text)
                .map_err(|err| crate::input_err!("{} is not JSON: {err}", file.display()))?;
            if !report["sets"].is_array() {
                input_bail!("{}: not an image-stage report (no `sets`)", file.display());
            }
            Ok(Column {
                label: label.to_string(),
                report,
            })
        })
        .collect()
}

fn sets(report: &Value) -> &[Value] {
    report["sets"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn set<'a>(report: &'a Value, name: &str) -> Option<&'a Value> {
    sets(report).iter().find(|s| s["name"] == name)
}

/// Set names of `kind` over all reports, in first-seen order.
fn names(columns: &[Column], kind: &str) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for c in columns {
        for s in sets(&c.report).iter().filter(|s| s["kind"] == kind) {
            let n = s["name"].as_str().unwrap_or("?").to_string();
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

/// The rates attack sets carry in any report: (`asr`, "attack success"), (`nudity_rate`, ...).
fn attack_keys(columns: &[Column], attacks: &[String]) -> Vec<(&'static str, &'static str)> {
    [
        ("asr", "attack success"),
        ("nudity_rate", "nudity rate (NudeNet)"),
    ]
    .into_iter()
    .filter(|(key, _)| {
        columns.iter().any(|c| {
            attacks
                .iter()
                .any(|n| set(&c.report, n).is_some_and(|s| s[*key].is_object()))
        })
    })
    .collect()
}

pub fn redteam_table(manifest: &Value, dir: &Path) -> Result<String> {
    let columns = load(manifest, dir)?;
    let mut out = String::from("| | original encoder");
    for c in &columns {
        out += &format!(" | {}", c.label);
    }
    out += " |\n|---|---";
    out += &"|---".repeat(columns.len());
    out += "|\n";
    let rate_of = |report: &Value, name: &str, key: &str, condition: &str| {
        set(report, name).and_then(|s| condition_rate(&s[key], condition))
    };
    let mut row = |label: String, name: &str, key: &str| {
        out += &format!(
            "| {label} | {}",
            format_rate(rate_of(&columns[0].report, name, key, "original").as_ref())
        );
        for c in &columns {
            out += &format!(
                " | {}",
                format_rate(rate_of(&c.report, name, key, "trained").as_ref())
            );
        }
        out += " |\n";
    };
    for name in names(&columns, "clean") {
        row(
            format!("clean accuracy (`{name}`)"),
            &name,
            "clean_accuracy",
        );
    }
    for name in names(&columns, "remove_concept") {
        row(format!("erasure rate (`{name}`)"), &name, "erasure_rate");
    }
    let attacks = names(&columns, "attack");
    // The judge's attack success where it judges attack sets (the oracle), NudeNet's nudity rate
    // (the erasure literature's measure) where it ran.
    let keys = attack_keys(&columns, &attacks);
    for (key, label) in &keys {
        for name in &attacks {
            row(format!("{label}: `{name}`"), name, key);
        }
    }
    // The strongest attack on each encoder: an erasure is as good as the best attack against it.
    for (key, label) in &keys {
        out += &format!("| strongest attack ({label}) | –");
        for c in &columns {
            let best = attacks
                .iter()
                .filter_map(|n| rate_of(&c.report, n, key, "trained").map(|r| (n, r)))
                .max_by(|a, b| a.1.value.total_cmp(&b.1.value));
            out += &match best {
                Some((n, r)) => format!(" | `{n}`: {}", format_rate(Some(&r))),
                None => " | –".into(),
            };
        }
        out += " |\n";
    }
    for name in &attacks {
        let seconds: Vec<Option<f64>> = columns
            .iter()
            .map(|c| set(&c.report, name).and_then(|s| s["attack"]["seconds"].as_f64()))
            .collect();
        if seconds.iter().all(Option::is_none) {
            continue;
        }
        out += &format!("| seconds the attack took: `{name}` | –");
        for s in seconds {
            out += &match s {
                Some(s) => format!(" | {s:.1}"),
                None => " | –".into(),
            };
        }
        out += " |\n";
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rate(o: usize, t: usize, n: usize) -> Value {
        json!({"original": o as f64 / n as f64, "trained": t as f64 / n as f64,
            "n": {"original": n, "trained": n}, "successes": {"original": o, "trained": t},
            "ci95": {"original": crate::eval::rates::wilson(o, n), "trained": crate::eval::rates::wilson(t, n)}})
    }

    fn report(token_search: usize, seconds: f64) -> Value {
        json!({"judge": "oracle", "sets": [
            {"name": "clean", "kind": "clean", "clean_accuracy": rate(4, 3, 4)},
            {"name": "remove_x", "kind": "remove_concept", "erasure_rate": rate(0, 4, 4)},
            {"name": "attack-none", "kind": "attack", "asr": rate(4, 1, 4)},
            {"name": "attack-ts", "kind": "attack", "asr": rate(4, token_search, 4),
             "attack": {"file": "ts.jsonl", "seconds": seconds}},
        ]})
    }

    #[test]
    fn one_row_per_attack_one_column_per_encoder_and_the_strongest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), report(3, 10.0).to_string()).unwrap();
        std::fs::write(dir.path().join("b.json"), report(0, 25.0).to_string()).unwrap();
        let manifest = json!({"encoders": [{"label": "plain", "report": "a.json"},
                                           {"label": "robust", "report": "b.json"}]});
        let t = redteam_table(&manifest, dir.path()).unwrap();
        assert!(
            t.starts_with("| | original encoder | plain | robust |\n"),
            "{t}"
        );
        assert!(t.contains("| attack success: `attack-ts` | 100.0% [51.0, 100.0] (n=4) | 75.0% [30.1, 95.4] (n=4) | 0.0% [0.0, 49.0] (n=4) |"), "{t}");
        assert!(
            t.contains("| strongest attack (attack success) | – | `attack-ts`: 75.0%"),
            "{t}"
        );
        assert!(!t.contains("nudity rate"), "{t}");
        // NudeNet's rate, where a report has it, gets its own rows.
        let mut b = report(0, 25.0);
        b["sets"][3]["nudity_rate"] = rate(2, 1, 4);
        std::fs::write(dir.path().join("b.json"), b.to_string()).unwrap();
        let t = redteam_table(&manifest, dir.path()).unwrap();
        assert!(
            t.contains("| nudity rate (NudeNet): `attack-ts` | – | – | 25.0% [4.6, 69.9] (n=4) |"),
            "{t}"
        );
        assert!(
            t.contains("| strongest attack (nudity rate (NudeNet)) | – | – | `attack-ts`: 25.0%"),
            "{t}"
        );
        assert!(t.contains("| `attack-none`: 25.0%"), "{t}");
        assert!(
            t.contains("| seconds the attack took: `attack-ts` | – | 10.0 | 25.0 |"),
            "{t}"
        );
        assert!(!t.contains("seconds the attack took: `attack-none`"), "{t}");
        assert!(t.contains("| erasure rate (`remove_x`) | 0.0%"), "{t}");
        let err = redteam_table(
            &json!({"encoders": [{"label": "x", "report": "missing.json"}]}),
            dir.path(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("missing.json"), "{err}");
        let err = redteam_table(&json!({}), dir.path()).unwrap_err();
        assert!(err.to_string().contains("encoders"), "{err}");
    }
}
