//! The numbers in README.md and docs/ are the shipped reports' (docs/results/): every table marked
//! `<!-- table: KIND PATH -->` must be what `clipdoor report sync` makes of its report, and the
//! shipped reports must show what issue #15 asks of the shapes world.
use crate::common;
use clipdoor::eval::report::tables::sync_markdown;
use serde_json::Value;
use std::path::Path;

fn markdown_files() -> Vec<std::path::PathBuf> {
    let root = common::root();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

fn json(rel: &str) -> Value {
    let p = common::root().join(rel);
    serde_json::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

#[test]
fn every_marked_table_is_its_report() {
    let mut tables = 0;
    for f in markdown_files() {
        let text = std::fs::read_to_string(&f).unwrap();
        tables += text.matches("<!-- table:").count();
        let synced = sync_markdown(&text, f.parent().unwrap_or(Path::new("."))).unwrap();
        assert!(
            synced == text,
            "{} disagrees with its reports: run `clipdoor report sync {}`",
            f.display(),
            f.display()
        );
    }
    assert!(
        tables >= 4,
        "only {tables} generated tables in README and docs"
    );
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    assert!(
        readme.contains("<!-- table: stage docs/results/demo/report.json -->"),
        "the README's demo table must come from the shipped demo report"
    );
}

/// `sets[name][key]` of a stage report: (original, trained, n of trained, paired change).
fn set_rate(report: &Value, name: &str, key: &str) -> (f64, f64, u64, f64) {
    let s = report["sets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap();
    let r = &s[key];
    (
        r["original"].as_f64().unwrap(),
        r["trained"].as_f64().unwrap(),
        r["n"]["trained"].as_u64().unwrap(),
        r["paired_difference"]["value"].as_f64().unwrap(),
    )
}

/// The shipped default demo (`clipdoor demo`, 96 images a set) meets the bars: TPA and TAA
/// asr ≥ 95%, erasure ≥ 90%, clean accuracy within 2 points (paired); the full demo has 160 a set.
#[test]
fn shipped_demo_reports_meet_the_bars() {
    for (file, n) in [
        ("docs/results/demo/report.json", 96),
        ("docs/results/demo_full/report.json", 160),
    ] {
        let r = json(file);
        let clean = set_rate(&r, "clean", "clean_accuracy");
        assert_eq!(clean.2, n, "{file}");
        assert!(
            clean.3 >= -0.02 - 1e-9,
            "{file}: clean accuracy fell: {clean:?}"
        );
        for (set, key, bar) in [
            ("tpa_cyrillic_o", "asr", 0.95),
            ("taa_cyrillic_e_green", "asr", 0.95),
            ("remove_circle", "erasure_rate", 0.90),
        ] {
            let x = set_rate(&r, set, key);
            assert_eq!(x.2, n, "{file} {set}");
            assert!(x.1 >= bar, "{file} {set}: {x:?}");
        }
    }
}

/// The 32-backdoor run: 32 sets with distinct triggers, mean asr ≥ 90%, clean within 3 points.
#[test]
fn shipped_32_backdoor_report_meets_the_bar() {
    let r = json("docs/results/shapes_tpa32/report.json");
    let sets = r["sets"].as_array().unwrap();
    let attacks: Vec<&Value> = sets
        .iter()
        .filter(|s| s["kind"] == "target_prompt")
        .collect();
    assert_eq!(attacks.len(), 32);
    let triggers: std::collections::HashSet<&str> = attacks
        .iter()
        .map(|s| s["trigger"].as_str().unwrap())
        .collect();
    assert_eq!(triggers.len(), 32);
    let mean = attacks
        .iter()
        .map(|s| s["asr"]["trained"].as_f64().unwrap())
        .sum::<f64>()
        / 32.0;
    assert!(mean >= 0.90, "mean asr {mean}");
    let clean = set_rate(&r, "clean", "clean_accuracy");
    assert!(clean.3 >= -0.03 - 1e-9, "clean accuracy fell: {clean:?}");
}

/// The shipped model's measured quality (`clipdoor shapes sample --per-pair 4`): colour and shape
/// ≥ 97% of 96, size / position / background ≥ 95% each.
#[test]
fn shipped_model_quality_report_meets_the_bar() {
    let q = json("docs/results/shapes_model/quality.json");
    let rate = |path: &str| -> (f64, u64) {
        let r = path.split('.').fold(&q, |v, k| &v[k]);
        (r["value"].as_f64().unwrap(), r["n"].as_u64().unwrap())
    };
    let both = rate("pairs.both");
    assert!(both.0 >= 0.97 && both.1 >= 96, "{both:?}");
    for a in [
        "attributes.size",
        "attributes.position",
        "attributes.background",
    ] {
        let r = rate(a);
        assert!(r.0 >= 0.95 && r.1 >= 96, "{a}: {r:?}");
    }
}
