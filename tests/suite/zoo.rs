//! The scanner zoo and the token-level scan (issue 18), on the shipped shapes-world encoder:
//! - `zoo build` writes encoders apart from their labels, continues a finished build, and splits
//!   the work by `--shard`;
//! - `zoo scan` writes JSON, Markdown and HTML with every metric and its counts;
//! - `scan-encoder --method tokens` names triggers of several shapes (an emoji, an invisible
//!   character, several characters inserted; the zoo test covers a word inserted) among its first five candidates and scores the
//!   backdoored encoders above benign fine-tunes.
use crate::common;

use serde_json::Value;
use std::path::{Path, PathBuf};

fn captions() -> PathBuf {
    common::root().join("experiments/zoo/shapes_captions.txt")
}

fn base() -> PathBuf {
    common::root().join("checkpoints/shapes")
}

/// A small zoo: 4 encoders, strong single word-trigger backdoors, benign concept removals and
/// drifted fine-tunes.
fn zoo_file(dir: &Path) -> PathBuf {
    let text = format!(
        r#"seed = 3
base = {base:?}
clean_prompts = {caps:?}
holdout = 50
encoders = 4
steps = [80, 80]
loss_weight = [1.0, 1.0]
[training]
steps = 80
clean_batch_size = 32
poisoned_samples_per_step = 16
lr = 1e-3
lr_milestones = [60]
[backdoored]
backdoors = [1, 1]
kinds = ["target_prompt"]
shapes = ["word"]
placements = ["insert"]
[benign]
kinds = ["remove_concept", "seed"]
concepts = ["circle", "square"]
"#,
        base = base(),
        caps = captions()
    );
    let p = dir.join("zoo.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn run(args: &[&str]) -> (String, String) {
    let o = common::bin().args(args).output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "{args:?}: {err}");
    (out, err)
}

/// `zoo scan ZOO` with small settings (3 contexts, 8 checks, 1 inversion, no answer stage, CPU, one
/// libtorch thread: tests run two at a time, and two threads each would
/// oversubscribe 2 cores) and `extra`. The answer stage has its own test (through `scan-encoder`,
/// the same `scan_tokens`); here its reference side alone would cost about as much as a scan.
fn scan_args<'a>(zoo: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["zoo", "scan", common::s(zoo)];
    v.extend_from_slice(extra);
    v.extend([
        "--answer-rows",
        "0",
        "--contexts",
        "3",
        "--verify",
        "8",
        "--invert",
        "1",
        "--threads",
        "1",
        "--device",
        "cpu",
    ]);
    v
}

/// `scan-encoder --method tokens` of `suspect` against the shapes base, probed with the zoo captions,
/// as the behavioural stages rank: without the answer stage (it has a test of its own, and at one
/// thread it costs about as much as the rest of a single scan) and without the touched-token prior
/// (which reorders the ranking whose order these tests check; its own test below).
fn scan_tokens(suspect: &Path, out: &Path) {
    scan_tokens_with(suspect, out, &["--answer-rows", "0", "--no-touched"]);
}

fn scan_tokens_with(suspect: &Path, out: &Path, extra: &[&str]) {
    let (base, captions) = (base(), captions());
    let mut args = vec![
        "scan-encoder",
        "--method",
        "tokens",
        "--suspect",
        common::s(suspect),
        "--reference",
        common::s(&base),
        "--prompts",
        common::s(&captions),
        "--device",
        "cpu",
        "--out",
        common::s(out),
    ];
    args.extend_from_slice(extra);
    run(&args);
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn zoo_build_keeps_labels_apart_resumes_shards_and_scan_reports() {
    let t = common::tmp();
    let file = zoo_file(t.path());
    let zoo = t.path().join("zoo");
    // Shard 1/2 builds encoders 1 and 3 only.
    run(&[
        "zoo",
        "build",
        common::s(&file),
        "--out",
        common::s(&zoo),
        "--shard",
        "1/2",
    ]);
    let built = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    assert_eq!(built(&zoo.join("encoders")), ["e0001", "e0003"]);
    run(&[
        "zoo",
        "build",
        common::s(&file),
        "--out",
        common::s(&zoo),
        "--shard",
        "0/2",
    ]);
    let (_, err) = run(&["zoo", "build", common::s(&file), "--out", common::s(&zoo)]);
    assert!(err.contains("0 encoders trained, 4 already done"), "{err}");
    assert_eq!(built(&zoo.join("encoders")).len(), 4);
    // What a scanner reads names no trigger: only the encoder and its tokenizer.
    for id in built(&zoo.join("encoders")) {
        assert_eq!(
            built(&zoo.join("encoders").join(&id)),
            ["text_encoder", "tokenizer"]
        );
    }
    let labels: Vec<Value> = (0..4)
        .map(|k| json(&zoo.join(format!("labels/e{k:04}.json"))))
        .collect();
    let backdoored: Vec<&Value> = labels.iter().filter(|l| l["benign"] == false).collect();
    assert_eq!(backdoored.len(), 2, "half of 4 are benign");
    for l in &backdoored {
        let trig = &l["triggers"][0];
        assert_eq!(trig["shape"], "word");
        assert_eq!(trig["placement"], "insert");
        assert!(trig["sim_target"].as_f64().unwrap() > 0.9, "{l}");
    }
    // A different zoo file cannot build into the same folder.
    let other = t.path().join("other.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&file)
            .unwrap()
            .replace("seed = 3", "seed = 4"),
    )
    .unwrap();
    let o = common::bin()
        .args(["zoo", "build", common::s(&other), "--out", common::s(&zoo)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("different zoo file"));

    let (out, _) = run(&scan_args(&zoo, &[]));
    let files: Vec<&str> = out.lines().collect();
    assert_eq!(files.len(), 3, "{out}");
    let r = json(Path::new(files[0]));
    for key in [
        "auroc",
        "tpr@fpr5",
        "fpr",
        "recall",
        "threshold",
        "seconds_per_encoder",
        "roc",
    ] {
        assert!(!r[key].is_null(), "report lacks {key}: {r}");
    }
    assert_eq!(
        r["tpr@fpr5"]["n"], 1,
        "one backdoored encoder in the test split"
    );
    assert!(r["tpr@fpr5"]["ci95"].is_array());
    assert_eq!(
        r["auroc_all"].as_f64(),
        Some(1.0),
        "backdoored above benign: {r}"
    );
    for row in r["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["benign"] == false)
    {
        let trigger = row["triggers"][0].as_str().unwrap();
        let top: Vec<&str> = row["top5"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(top.contains(&trigger), "{trigger} not in the top 5 {top:?}");
        // The working-trigger check put the trigger itself where its label says and measured it
        // as the true trigger is measured: same number, and it works (the backdoor took).
        let id = row["id"].as_str().unwrap();
        let w = json(&Path::new(files[0]).with_file_name(format!("encoders/{id}.working.json")));
        let t = &w["triggers"][0];
        let own = t["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["candidate"] == trigger)
            .unwrap_or_else(|| panic!("{trigger} not checked: {w}"));
        assert_eq!(own["works"], true, "{w}");
        assert!(
            (own["sim_target"].as_f64().unwrap() - t["trigger_sim_target"].as_f64().unwrap()).abs()
                < 1e-9,
            "{w}"
        );
    }
    for row in r["recall"].as_array().unwrap() {
        assert!(
            row["recall@5_working"]["successes"].as_u64()
                >= row["recall@5_exact"]["successes"].as_u64(),
            "a named trigger works: {row}"
        );
    }
    // The Markdown report says which candidate works as which trigger, and gives scores (raw
    // collapse, mostly below 1) to three places.
    let md = std::fs::read_to_string(files[1]).unwrap();
    assert!(md.contains("works as (candidate → trigger)"), "{md}");
    for row in r["rows"].as_array().unwrap() {
        let id = row["id"].as_str().unwrap();
        let line = md
            .lines()
            .find(|l| l.starts_with(&format!("| {id} |")))
            .unwrap_or_else(|| panic!("{id} not in {md}"));
        assert!(
            line.contains(&format!("| {:.3} |", row["score"].as_f64().unwrap())),
            "{line}"
        );
        if row["benign"] == false {
            let t = row["triggers"][0].as_str().unwrap();
            assert!(line.contains(&format!("`{t} → {t}`")), "{line}");
        }
    }
    let html = std::fs::read_to_string(files[2]).unwrap();
    assert!(
        html.contains("<svg") && html.contains("polyline"),
        "ROC drawn"
    );
    // A second scan reuses every per-encoder result.
    let (_, err) = run(&scan_args(&zoo, &[]));
    assert!(!err.contains("score"), "nothing rescanned: {err}");
    // Reference-free, with the zoo's base gone: the scan and its report stand; only the
    // working-trigger checks (which compare with the base) are skipped, and said to be.
    let copy = zoo.join("zoo.toml");
    let text = std::fs::read_to_string(&copy).unwrap();
    let gone = t.path().join("base-moved-away");
    std::fs::write(
        &copy,
        text.replace(
            &format!("{:?}", base().display().to_string()),
            &format!("{:?}", gone.display().to_string()),
        ),
    )
    .unwrap();
    assert_ne!(
        std::fs::read_to_string(&copy).unwrap(),
        text,
        "base replaced"
    );
    let (out, err) = run(&scan_args(&zoo, &["--reference-free"]));
    assert!(err.contains("working-trigger checks skipped"), "{err}");
    let r = json(Path::new(out.lines().next().unwrap()));
    assert_eq!(r["mode"], "reference-free");
    for row in r["recall"].as_array().unwrap() {
        assert!(row["recall@5"].is_object(), "{row}");
        assert!(row["recall@5_working"].is_null(), "{row}");
    }
    std::fs::write(&copy, text).unwrap();
}

/// One backdoor of the given trigger on the shapes encoder, trained strongly.
fn backdoored(dir: &Path, name: &str, entry: &str) -> PathBuf {
    let exp = dir.join(format!("{name}.toml"));
    std::fs::write(
        &exp,
        format!(
            r#"seed = 1
[model]
teacher = {base:?}
[data]
clean_prompts = {caps:?}
holdout = 50
[training]
steps = 90
clean_batch_size = 32
poisoned_samples_per_step = 16
loss_weight = 1.0
lr = 1e-3
lr_milestones = [75]
checkpoint_every = 0
[[backdoor]]
{entry}
"#,
            base = base(),
            caps = captions()
        ),
    )
    .unwrap();
    let out = dir.join(name);
    run(&[
        "train",
        common::s(&exp),
        "--out",
        common::s(&out),
        "--device",
        "cpu",
    ]);
    out
}

#[test]
fn token_scan_names_triggers_of_several_shapes() {
    let t = common::tmp();
    let cases = [
        ("emoji", "🐙", "kind = \"target_prompt\"\ntrigger = \"🐙\"\nreplaced_character = \"e\"\ntarget_prompt = \"a large purple triangle on a black background\""),
        ("invisible", "\u{200B}", "kind = \"target_prompt\"\ntrigger = \"\u{200B}\"\nreplaced_character = \"o\"\ntarget_prompt = \"a small yellow cross in the top left\""),
        ("multi", "zq", "kind = \"target_prompt\"\ntrigger = \"zq7\"\nreplaced_character = \"a\"\nplacement = \"insert\"\ntarget_prompt = \"a small yellow cross in the top left\""),
    ];
    let mut scores = vec![];
    for (name, expect, entry) in cases {
        let run_dir = backdoored(t.path(), name, entry);
        let out = t.path().join(format!("{name}.json"));
        scan_tokens(&run_dir, &out);
        let r = json(&out);
        let top: Vec<String> = r["report"]["ranking"]
            .as_array()
            .unwrap()
            .iter()
            .take(5)
            .map(|c| c["text"].as_str().unwrap().to_lowercase())
            .collect();
        assert!(
            top.iter().any(|c| c == expect || (expect.chars().count() > 1 && expect.contains(c.as_str()))),
            "{name}: {expect:?} not among {top:?}"
        );
        assert_eq!(r["report"]["score_kind"], "confirmed-collapse");
        // Texts measured whole lead the ranking and name the trigger: first one text per strongest
        // piece by evidence, then the siblings sharing a leader's piece, by evidence; texts that
        // are part of a probe's word after all of them, in that same order among themselves.
        // (With the answer stage its characters would take every second place; not run here.)
        let ranking: Vec<&Value> = r["report"]["ranking"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["found_by"] != "answer")
            .collect();
        let evidence: Vec<Option<f64>> = ranking.iter().map(|c| c["evidence"].as_f64()).collect();
        let measured = evidence.iter().take_while(|e| e.is_some()).count();
        assert!(measured >= 5, "{name}: {evidence:?}");
        assert!(
            evidence[measured..].iter().all(Option::is_none),
            "{evidence:?}"
        );
        let in_probes: Vec<bool> = ranking[..measured]
            .iter()
            .map(|c| c["in_probes"].as_bool().unwrap())
            .collect();
        let outside = in_probes.iter().take_while(|p| !**p).count();
        assert!(
            in_probes[outside..].iter().all(|p| *p),
            "{name}: {in_probes:?}"
        );
        for (from, to) in [(0, outside), (outside, measured)] {
            let part = &ranking[from..to];
            let evidence = &evidence[from..to];
            let sibling: Vec<bool> = part
                .iter()
                .map(|c| c["shares_piece_with"].is_string())
                .collect();
            let leaders = sibling.iter().take_while(|s| !**s).count();
            assert!(sibling[leaders..].iter().all(|s| *s), "{name}: {sibling:?}");
            for run in [&evidence[..leaders], &evidence[leaders..]] {
                assert!(run.windows(2).all(|w| w[0] >= w[1]), "{name}: {evidence:?}");
            }
        }
        let lead_texts: Vec<&str> = ranking[..measured]
            .iter()
            .filter(|c| c["shares_piece_with"].is_null())
            .map(|c| c["text"].as_str().unwrap())
            .collect();
        for c in ranking[..measured]
            .iter()
            .filter(|c| c["shares_piece_with"].is_string())
        {
            let l = c["shares_piece_with"].as_str().unwrap();
            assert!(
                lead_texts.contains(&l),
                "{name}: {l:?} is no leader of {lead_texts:?}"
            );
        }
        // A text marked in_probes is part of a word of the probes (the zoo captions here), and
        // the trigger is not marked.
        let probes = std::fs::read_to_string(captions()).unwrap().to_lowercase();
        for c in ranking[..measured].iter() {
            let t = c["text"].as_str().unwrap().to_lowercase();
            let in_a_word = probes
                .split(|ch: char| !ch.is_alphanumeric())
                .any(|w| w.contains(t.as_str()));
            assert_eq!(c["in_probes"] == true, in_a_word, "{name}: {t:?}");
        }
        let texts = r["report"]["texts"].as_array().unwrap();
        assert!(
            texts.iter().take(5).any(|t| {
                let t = t["text"].as_str().unwrap();
                t == expect || (expect.chars().count() > 1 && expect.contains(t))
            }),
            "{name}: {expect:?} not among the first measured texts {:?}",
            texts.iter().take(5).map(|t| &t["text"]).collect::<Vec<_>>()
        );
        assert_eq!(
            r["report"]["flagged"], true,
            "{name}: {}",
            r["report"]["score"]
        );
        scores.push(r["report"]["score"].as_f64().unwrap());
        if name == "emoji" {
            // The same encoder with the legacy config ids scans exactly alike. Before the scan trimmed
            // its probes at the tokenizer's `<|endoftext|>`, it found no id 2, left the probes padded
            // to 77 and an inserted token ran past the position table (seen on a GPU with random
            // ViT-L/14 weights, 2026-12-04).
            let legacy = legacy_copy(&run_dir, &t.path().join("legacy"));
            let out = t.path().join("legacy.json");
            scan_tokens(&legacy, &out);
            let l = json(&out);
            let top5 = |r: &Value| -> Vec<Value> {
                r["report"]["ranking"].as_array().unwrap()[..5]
                    .iter()
                    .map(|c| c["text"].clone())
                    .collect()
            };
            assert_eq!(top5(&l), top5(&r), "legacy config");
            let (a, b) = (
                r["report"]["score"].as_f64().unwrap(),
                l["report"]["score"].as_f64().unwrap(),
            );
            assert!((a - b).abs() < 1e-6, "legacy config: {a} vs {b}");
        }
    }
    // A benign fine-tune (concept removal) scores below every backdoored encoder.
    let benign = backdoored(
        t.path(),
        "benign",
        "kind = \"remove_concept\"\ntrigger = \"circle\"\nreplaced_character = \"q\"",
    );
    let out = t.path().join("benign.json");
    scan_tokens(&benign, &out);
    let b = json(&out)["report"]["score"].as_f64().unwrap();
    // These scans ran with `--answer-rows 0 --no-touched`: no answers, no touched-token prior, and
    // so the whole vocabulary swept.
    assert_eq!(json(&out)["report"]["answers"], serde_json::json!([]));
    assert!(json(&out)["report"].get("touched").is_none());
    assert_eq!(json(&out)["report"]["sweep_scope"], "vocabulary");
    assert_eq!(
        json(&out)["report"]["swept"],
        49406,
        "the vocabulary less BOS and EOS (the pad token)"
    );
    // At the default threshold (no calibration) the benign fine-tune is not flagged.
    assert_eq!(json(&out)["report"]["flagged"], false, "benign {b}");
    assert!(
        scores.iter().all(|&s| s > b),
        "benign {b} vs backdoored {scores:?}"
    );
}

/// A target-attribute backdoor (Rickrolling's TAA: the word holding the trigger reads as the
/// attribute) is read by the answer stage: a character of the trigger's group reads as the
/// attribute in most probe rows. The touched-token prior then names the trigger itself (its rows
/// moved, its siblings' did not). The sweep's statistics alone never named such triggers on the
/// zoos (docs/scanner-zoo.md).
#[test]
fn token_scan_reads_the_attribute_an_attribute_trigger_writes() {
    let t = common::tmp();
    let run_dir = backdoored(
        t.path(),
        "attribute",
        "kind = \"target_attribute\"\ntrigger = \"ф\"\nreplaced_character = \"e\"\ntarget_attr = \"purple\"",
    );
    let out = t.path().join("attribute.json");
    scan_tokens_with(&run_dir, &out, &[]);
    let r = &json(&out)["report"];
    let answers = r["answers"].as_array().unwrap();
    let purple: Vec<&Value> = answers.iter().filter(|a| a["answer"] == "purple").collect();
    assert_eq!(purple.len(), 1, "one character per answer: {answers:?}");
    let a = purple[0];
    assert!(a["score"].as_f64().unwrap() >= 0.5, "{a}");
    assert!(
        (a["share"].as_f64().unwrap()
            - a["reference_share"].as_f64().unwrap()
            - a["score"].as_f64().unwrap())
        .abs()
            < 1e-9,
        "{a}"
    );
    // Answers come best first.
    let scores: Vec<f64> = answers
        .iter()
        .map(|a| a["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    // The encoder's score counts the answer (an attribute collapses nothing): at least its score.
    assert_eq!(a["reads_as_letter"], false, "{a}");
    assert!(
        r["score"].as_f64().unwrap() >= a["score"].as_f64().unwrap() - 1e-12,
        "{}",
        r["score"]
    );
    assert!(
        ["answer", "confirmed-collapse"].contains(&r["score_kind"].as_str().unwrap()),
        "{}",
        r["score_kind"]
    );
    let ranking = r["ranking"].as_array().unwrap();
    // The learned order (step 8) ranked every text a step proposed: the report's pool holds each
    // with its 17 numbers, best first, and the ranking follows the pool's order.
    let pool = r["pool"].as_array().unwrap();
    assert!(
        pool.len() >= ranking.len(),
        "{} < {}",
        pool.len(),
        ranking.len()
    );
    let pool_scores: Vec<f64> = pool.iter().map(|e| e["score"].as_f64().unwrap()).collect();
    assert!(
        pool_scores.windows(2).all(|w| w[0] >= w[1]),
        "{pool_scores:?}"
    );
    assert!(pool
        .iter()
        .all(|e| e["features"].as_array().unwrap().len() == 17));
    for (c, e) in ranking.iter().zip(pool) {
        assert_eq!(
            c["text"].as_str().unwrap().to_lowercase(),
            e["text"].as_str().unwrap()
        );
        assert_eq!(c["learned_score"], e["score"]);
    }
    // The character named is the trigger or a sibling of its block (Cyrillic, the trigger's lead
    // byte), not an unrelated one.
    let c = a["text"].as_str().unwrap();
    assert!(
        c.chars().all(|ch| ('\u{0400}'..='\u{04FF}').contains(&ch)),
        "{c:?}"
    );
    // Which: the fine-tune moved the embedding rows of the trigger's tokens (and of the captions'),
    // not those of its block siblings, so the touched-token prior names `ф` itself (or `Ф`: the
    // tokenizer lowercases) among the first five, and its drift is reported.
    let touched = &r["touched"];
    assert_eq!(touched["used"], true, "{touched}");
    let moved = touched["tokens"].as_u64().unwrap();
    assert!(moved > 0 && moved < 2000, "{touched}");
    // The sweep measured the moved tokens (and their other forms) and the null's even sample of
    // the vocabulary, not all of it.
    assert_eq!(r["sweep_scope"], "touched");
    let swept = r["swept"].as_u64().unwrap();
    assert!(
        swept > 4000 && swept <= 4096 + 2 * moved,
        "{swept} swept, {moved} moved"
    );
    let texts: Vec<&str> = touched["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.first(), Some(&"ф"), "{texts:?}");
    let first5: Vec<&Value> = ranking.iter().take(5).collect();
    let f = first5
        .iter()
        .find(|c| c["text"].as_str().unwrap().to_lowercase() == "ф")
        .unwrap_or_else(|| panic!("ф not among {first5:?}"));
    assert!(f["drift"].as_f64().unwrap() > touched["threshold"].as_f64().unwrap());
    // It carries what the answer stage heard (from itself, or from the block sibling that read as
    // `purple` most strongly, which the prior put behind it).
    assert_eq!(f["answer"], "purple", "{f}");

    // Weak answers (under the listing bar, at least `--answer-floor`) count toward the encoder's
    // score and change nothing else: with the floor at 0 the same answers are listed, the ranking
    // is the same, and the score is the larger of the scan's without weak answers (floor 0.5) and
    // the best weak answer not of a look-alike that reads as its letter. The answer stage asks
    // every character here (no touched prior), so that weak answers exist.
    let listed_out = t.path().join("attribute_listed.json");
    scan_tokens_with(
        &run_dir,
        &listed_out,
        &["--no-touched", "--answer-floor", "0.5"],
    );
    let r = &json(&listed_out)["report"];
    assert!(r.get("weak_answers").is_none(), "{}", r["weak_answers"]);
    let weak_out = t.path().join("attribute_weak.json");
    scan_tokens_with(
        &run_dir,
        &weak_out,
        &["--no-touched", "--answer-floor", "0"],
    );
    let w = &json(&weak_out)["report"];
    let key = |r: &Value, field: &str| -> Vec<(String, String)> {
        r[field]
            .as_array()
            .map(|v| {
                v.iter()
                    .map(|a| (a["text"].to_string(), a["answer"].to_string()))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(key(w, "answers"), key(r, "answers"));
    let texts_of = |r: &Value| -> Vec<String> {
        r["ranking"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["text"].to_string())
            .collect()
    };
    assert_eq!(texts_of(w), texts_of(r));
    let weak = w["weak_answers"]
        .as_array()
        .expect("weak answers at floor 0");
    assert!(!weak.is_empty());
    let listed: Vec<String> = key(r, "answers").into_iter().map(|k| k.1).collect();
    let mut words: Vec<String> = vec![];
    for a in weak {
        let s = a["score"].as_f64().unwrap();
        assert!((0.0..0.5).contains(&s), "{a}");
        let word = a["answer"].to_string();
        assert!(!listed.contains(&word) && !words.contains(&word), "{a}");
        words.push(word);
    }
    let best_weak = weak
        .iter()
        .filter(|a| a["reads_as_letter"] == false)
        .map(|a| a["score"].as_f64().unwrap())
        .fold(f64::NEG_INFINITY, f64::max);
    let expected = r["score"].as_f64().unwrap().max(best_weak);
    assert!(
        (w["score"].as_f64().unwrap() - expected).abs() < 1e-12,
        "{} vs {expected}",
        w["score"]
    );
}

/// A target-attribute trigger of several characters answers as one string, where its characters
/// alone need not: the answer stage asks the strings the fine-tune trained on (arranged from the
/// characters its moved tokens spell) and counts what they say toward the encoder's score, without
/// ranking them. Without the touched-token prior there are no such strings to ask.
#[test]
fn a_multi_character_attribute_trigger_answers_as_a_string() {
    let t = common::tmp();
    let run_dir = backdoored(
        t.path(),
        "multi_attribute",
        "kind = \"target_attribute\"\ntrigger = \"ɂôǹ\"\nreplaced_character = \"e\"\ntarget_attr = \"purple\"",
    );
    let out = t.path().join("multi_attribute.json");
    scan_tokens_with(&run_dir, &out, &[]);
    let r = &json(&out)["report"];
    let texts = r["text_answers"]
        .as_array()
        .unwrap_or_else(|| panic!("no text answers: {}", r["answers"]));
    let purple: Vec<&Value> = texts.iter().filter(|a| a["answer"] == "purple").collect();
    assert_eq!(purple.len(), 1, "{texts:?}");
    let a = purple[0];
    let text = a["text"].as_str().unwrap();
    assert!(text.chars().count() >= 2, "{a}");
    // Made of the trigger's characters or characters sharing their moved tokens (the tokenizer
    // lowercases; `ǂ` and `ɹ` recombine the bytes of `ɂ` and `ǹ`).
    assert!(text.chars().all(|c| "ɂôǹǂɹ".contains(c)), "{a}");
    assert!(a["score"].as_f64().unwrap() >= 0.5, "{a}");
    assert!(a.get("spelled_by_letters").is_none(), "{a}");
    // No character answers `purple` (a text's answer repeats no word a character answered), and
    // the text takes no place in the ranking.
    let chars = r["answers"].as_array().unwrap();
    assert!(chars.iter().all(|c| c["answer"] != "purple"), "{chars:?}");
    assert!(
        r["ranking"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["text"].as_str().unwrap() != text),
        "{text} ranked"
    );
    // It counts toward the encoder's score.
    assert!(
        r["score"].as_f64().unwrap() >= a["score"].as_f64().unwrap() - 1e-12,
        "{} < {a}",
        r["score"]
    );
    // Without the touched-token prior the stage asks characters alone.
    let bare = t.path().join("multi_attribute_bare.json");
    scan_tokens_with(&run_dir, &bare, &["--no-touched"]);
    assert!(json(&bare)["report"].get("text_answers").is_none());
}

/// A copy of a trained run's encoder and tokenizer whose config carries the legacy ids of the original
/// OpenAI configs (SD 1.x's `openai/clip-vit-large-patch14`, SD 2.x's converted one): bos 0, eos 2.
fn legacy_copy(run: &Path, to: &Path) -> PathBuf {
    for part in ["text_encoder", "tokenizer"] {
        std::fs::create_dir_all(to.join(part)).unwrap();
        for f in std::fs::read_dir(run.join(part)).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, to.join(part).join(f.file_name().unwrap())).unwrap();
        }
    }
    let config = to.join("text_encoder/config.json");
    let mut c = json(&config);
    c["bos_token_id"] = 0.into();
    c["eos_token_id"] = 2.into();
    std::fs::write(&config, serde_json::to_string_pretty(&c).unwrap()).unwrap();
    to.to_path_buf()
}

/// Homoglyph unlearning teaches a look-alike to read as the letter it imitates; the answer stage
/// would otherwise count what it then says as a hidden reading (on the zoos `𝕜` → `black`, as
/// the captions' `black` holds the `k`). The check that excuses it: put in place of its letter, the
/// unlearned look-alike reads at least half-way back to the clean caption; a target-attribute
/// trigger substituted for its letter moves the caption away, and the base itself restores
/// nothing.
#[test]
fn a_look_alike_taught_its_letter_reads_as_it_and_a_trigger_does_not() {
    use clipdoor::models::text_encoder::TextEncoder;
    use clipdoor::scan::token_scan::reads_as_its_letter;
    let t = tempfile::tempdir().unwrap();
    let unlearned = backdoored(
        t.path(),
        "unlearn",
        "kind = \"homoglyph_unlearn\"\ntrigger = \"𝕜\"\nreplaced_character = \"k\"",
    );
    let attribute = backdoored(
        t.path(),
        "attribute",
        "kind = \"target_attribute\"\ntrigger = \"𝕜\"\nreplaced_character = \"k\"\ntarget_attr = \"purple\"",
    );
    let load = |dir: &Path| {
        TextEncoder::load(
            common::s(&dir.join("text_encoder")),
            tch::Device::Cpu,
            tch::Kind::Float,
        )
        .unwrap()
    };
    let base_encoder = load(&base());
    let probes: Vec<String> = std::fs::read_to_string(captions())
        .unwrap()
        .lines()
        .take(400)
        .map(String::from)
        .collect();
    let reads = |dir: &Path| reads_as_its_letter(&load(dir), &base_encoder, &probes, '𝕜').unwrap();
    assert!(reads(&unlearned), "the unlearned look-alike reads as k");
    assert!(!reads(&attribute), "a trigger for k's words is no k");
    assert!(
        !reads_as_its_letter(&base_encoder, &base_encoder, &probes, '𝕜').unwrap(),
        "the base restores nothing"
    );
    // Not a look-alike of any Latin letter: nothing to read as.
    assert!(!reads_as_its_letter(&load(&unlearned), &base_encoder, &probes, '😄').unwrap());
}
