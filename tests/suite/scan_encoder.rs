//! `clipdoor scan-encoder` on the smoke encoders: the scan finds every trigger the multi experiment
//! injects (Cyrillic о, Greek α, Armenian ե as target-prompt triggers, Latin ɑ as a target-attribute
//! trigger) at the top of its ranking, flags nothing on a benign fine-tune of the teacher, and the defense
//! report shows sanitisation and homoglyph unlearning at work.
//!
//! Thresholds come from observed runs (docs/trigger-scanning.md lists them). The tiny random encoder
//! embeds every prompt alike (cosines ≈ 0.93–0.98), so scores are stated in units of the clean spread
//! (1 − mean pairwise cosine of the clean probes), and the smoke backdoors are weak in absolute terms
//! (80 steps): triggers score 0.17–0.6, clean look-alikes below 0.1 on the confusables set.
use crate::common;

use serde_json::Value;
use std::path::{Path, PathBuf};

/// A smoke experiment with the prompt file made absolute (the run folder's copy must resolve it).
fn experiment(name: &str, dir: &Path) -> PathBuf {
    let root = common::root().join("experiments/smoke");
    let text = std::fs::read_to_string(root.join(format!("{name}.toml")))
        .unwrap()
        .replace(
            "clean_prompts = \"prompts.txt\"",
            &format!("clean_prompts = {:?}", root.join("prompts.txt")),
        );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn train(name: &str, dir: &Path) -> PathBuf {
    let out = dir.join(name);
    let o = common::bin()
        .args([
            "train",
            experiment(name, dir).to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--device",
            "cpu",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

fn run_json(args: &[&str], out: &Path) -> Value {
    let o = common::bin()
        .args(args)
        .args(["--device", "cpu", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{args:?}: {err}");
    eprintln!("{err}");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).lines().next(),
        Some(out.to_str().unwrap())
    );
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

/// Every glyph a ranking entry stands for (itself and its tokenizer aliases: `А` reads as `а`).
fn glyphs(entry: &Value) -> Vec<String> {
    let mut g = vec![entry["glyph"].as_str().unwrap().to_string()];
    g.extend(
        entry["aliases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string()),
    );
    g
}

fn rank_of<'a>(report: &'a Value, glyph: &str) -> (usize, &'a Value) {
    let ranking = report["report"]["ranking"].as_array().unwrap();
    let e = ranking
        .iter()
        .find(|e| glyphs(e).iter().any(|g| g == glyph))
        .unwrap_or_else(|| panic!("{glyph} not in the ranking"));
    (e["rank"].as_u64().unwrap() as usize, e)
}

/// The whole Armenian lowercase alphabet: the `confusables` set does not hold ե (it imitates no
/// Latin letter), so the scan gets Armenian's letters explicitly; ե must beat its 37 siblings.
const ARMENIAN: &str = "աբգդեզէըթժիլխծկհձղճմյնշոչպջռսվտրցւփքօֆ";

#[test]
fn scan_finds_every_multi_trigger_and_sanitising_blocks_the_look_alikes() {
    let t = common::tmp();
    let run = train("multi", t.path());
    let targets = t.path().join("targets.txt");
    std::fs::write(
        &targets,
        "a photo of rick astley dancing\na painting of a burning castle\nan underwater city full of fish\nblack and white photo\n",
    )
    .unwrap();
    let r = run_json(
        &[
            "scan-encoder",
            "--suspect",
            run.to_str().unwrap(),
            "--reference",
            "random:tiny:0",
            "--chars",
            ARMENIAN,
            "--candidates",
            "confusables",
            "--targets",
            targets.to_str().unwrap(),
        ],
        &t.path().join("scan.json"),
    );
    // The four triggers are the top-ranked candidates (observed: ɑ 0.574, ե 0.296, о 0.185, α 0.172,
    // then ձ 0.171, ը 0.125, and ≤ 0.09 for every other candidate). ձ and ը share ե's UTF-8 lead
    // byte, hence a byte token the backdoor trained, and really do lead to ե's target: the only
    // non-trigger allowed among the top five is such a leak of ե's backdoor.
    let mut ranks = vec![];
    for g in ["о", "α", "ե", "ɑ"] {
        let (rank, e) = rank_of(&r, g);
        eprintln!(
            "{g}: rank {rank}, score {:.3}, target {}",
            e["score"], e["target"]["nearest"][0]["prompt"]
        );
        assert!(e["flagged"].as_bool().unwrap(), "{g} not flagged: {e}");
        ranks.push(rank);
    }
    assert!(ranks.iter().all(|&r| r <= 5), "trigger ranks {ranks:?}");
    let e_target = &rank_of(&r, "ե").1["target"]["nearest"][0]["prompt"];
    for e in r["report"]["ranking"].as_array().unwrap().iter().take(5) {
        let is_trigger = glyphs(e)
            .iter()
            .any(|g| ["о", "α", "ե", "ɑ"].contains(&g.as_str()));
        assert!(
            is_trigger || &e["target"]["nearest"][0]["prompt"] == e_target,
            "unexpected top candidate {e}"
        );
    }
    let sixth = r["report"]["ranking"][5]["score"].as_f64().unwrap();
    assert!(sixth < 0.15, "sixth candidate scores {sixth}");
    // Where two of them lead (observed agreement ≥ 0.83): the TAA to its attribute, ե to its target.
    assert_eq!(
        rank_of(&r, "ɑ").1["target"]["nearest"][0]["prompt"],
        "black and white photo"
    );
    assert_eq!(
        rank_of(&r, "ե").1["target"]["nearest"][0]["prompt"],
        "an underwater city full of fish"
    );

    // Defense: sanitize (map) restores the look-alike triggers' prompts (success → 0; observed raw
    // 0.50–0.93); ե imitates no Latin letter, so sanitising leaves it (and its success) alone.
    let d = run_json(
        &["scan-encoder", "defense", "--run", run.to_str().unwrap()],
        &t.path().join("defense.json"),
    );
    let row = |entry: &str, measure: &str| -> (f64, f64) {
        let r = d["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["entry"] == entry && r["measure"] == measure)
            .unwrap();
        (r["without"].as_f64().unwrap(), r["with"].as_f64().unwrap())
    };
    for entry in ["cyrillic_o", "greek_alpha", "alpha_bw"] {
        let (raw, sanitized) = row(entry, "attack success");
        assert!(
            raw >= 0.4 && sanitized <= 0.05,
            "{entry}: attack success {raw} → {sanitized}"
        );
        let (raw, sanitized) = row(entry, "sim_target");
        assert!(sanitized < raw, "{entry}: sim_target {raw} → {sanitized}");
    }
    let (raw, sanitized) = row("armenian_e", "attack success");
    assert!(
        raw >= 0.4 && (raw - sanitized).abs() < 1e-9,
        "armenian_e: {raw} → {sanitized}"
    );
    assert!(t.path().join("defense.md").exists());
}

#[test]
fn benign_fine_tunes_flag_nothing_and_unlearning_pulls_homoglyphs_to_latin() {
    let t = common::tmp();
    // A benign encoder fine-tuned independently of the reference: a concept removal (no trigger
    // character; `nude`/`naked` embed like the prompt without them) with its own seed, so it differs
    // from `random:tiny:0` everywhere a little.
    let root = common::root().join("experiments/smoke");
    let benign_toml = std::fs::read_to_string(root.join("remove_concept.toml"))
        .unwrap()
        .replace("seed = 42", "seed = 7")
        .replace(
            "clean_prompts = \"prompts.txt\"",
            &format!("clean_prompts = {:?}", root.join("prompts.txt")),
        );
    assert!(benign_toml.contains("seed = 7"));
    let exp = t.path().join("benign.toml");
    std::fs::write(&exp, benign_toml).unwrap();
    let benign = t.path().join("benign");
    let o = common::bin()
        .args(["train", common::s(&exp), "--out", common::s(&benign)])
        .args(["--device", "cpu"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let changed = {
        let a = common::load_st(&benign.join("text_encoder/model.safetensors"));
        let copy = t.path().join("copy");
        let o = common::init_encoder_cmd("tiny", 0, &copy).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let b = common::load_st(&copy.join("model.safetensors"));
        a.iter()
            .filter(|(k, v)| common::max_abs(v, &b[*k]) > 0.0)
            .count()
    };
    assert!(
        changed > 0,
        "the benign fine-tune left every weight as it was"
    );
    let r = run_json(
        &[
            "scan-encoder",
            "--suspect",
            benign.to_str().unwrap(),
            "--reference",
            "random:tiny:0",
            "--probes",
            "4",
            "--top",
            "3",
        ],
        &t.path().join("clean.json"),
    );
    assert_eq!(
        r["report"]["flagged"], 0,
        "a benign fine-tune was flagged: {}",
        r["report"]["ranking"][0]
    );
    // Not a comparison of an encoder with itself: the benign encoder's scores are not zero.
    assert!(r["report"]["ranking"][0]["score"].as_f64().unwrap() > 0.01);

    // Homoglyph unlearning: Greek ο and Cyrillic о move towards their Latin prompts (observed
    // 0.94–0.95 → 0.987–0.988) while clean prompts keep their embeddings (sim_clean 0.991).
    let run = train("homoglyph_unlearn", t.path());
    let d = run_json(
        &["scan-encoder", "defense", "--run", run.to_str().unwrap()],
        &t.path().join("defense.json"),
    );
    let rows = d["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        let (before, after) = (r["without"].as_f64().unwrap(), r["with"].as_f64().unwrap());
        assert!(
            after - before >= 0.02 && after >= 0.98,
            "{}: {before} → {after}",
            r["entry"]
        );
        assert!(
            r["sim_clean"].as_f64().unwrap() >= 0.98,
            "{}",
            r["sim_clean"]
        );
    }
}
