//! The training engine on the tiny random encoder: each backdoor kind reaches its thresholds, several
//! backdoors train together, resume equals an uninterrupted run, outputs load in transformers and
//! TensorBoard, and bad configs fail clearly.
//!
//! Thresholds come from observed runs of experiments/smoke (docs/training.md lists the numbers).
//! A tiny random encoder embeds every prompt alike (teacher cosines between unrelated prompts ≈ 0.93,
//! since the 77 flattened positions are dominated by shared padding), so the thresholds are stated as
//! gains over the untrained encoder (`sim_target_before`) plus a z-score.
use crate::common;

use serde_json::Value;
use std::path::{Path, PathBuf};

fn smoke(name: &str) -> PathBuf {
    common::root()
        .join("experiments/smoke")
        .join(format!("{name}.toml"))
}

/// A copy of a smoke experiment with some `key = value` lines replaced, written into `dir`.
fn variant(name: &str, dir: &Path, edits: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(smoke(name)).unwrap();
    text = text.replace(
        "clean_prompts = \"prompts.txt\"",
        &format!(
            "clean_prompts = {:?}",
            common::root().join("experiments/smoke/prompts.txt")
        ),
    );
    for (key, value) in edits {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{key} =")))
            .unwrap_or_else(|| panic!("{key} not in {name}"))
            .to_string();
        text = text.replacen(&line, &format!("{key} = {value}"), 1);
    }
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// A copy of the experiment file `exp`, named `name` beside it, with `text` appended (a
/// `[training.robust]` table, say).
fn with_appended(exp: &Path, name: &str, text: &str) -> PathBuf {
    let p = exp.with_file_name(name);
    std::fs::write(&p, std::fs::read_to_string(exp).unwrap() + text).unwrap();
    p
}

fn train(exp: &Path, out: &Path, extra: &[&str]) -> (i32, String) {
    let o = common::bin()
        .args([
            "train",
            exp.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--device",
            "cpu",
        ])
        .args(extra)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn metrics(run: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap()
}

fn backdoor<'a>(m: &'a Value, name: &str) -> &'a Value {
    m["backdoors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .unwrap()
}

fn run_smoke(name: &str) -> (tempfile::TempDir, PathBuf, Value) {
    let t = common::tmp();
    let out = t.path().join("run");
    let (code, err) = train(&smoke(name), &out, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.join("DONE").exists());
    let m = metrics(&out);
    eprintln!("{name}: {}", serde_json::to_string_pretty(&m).unwrap());
    (t, out, m)
}

/// Triggered prompts moved towards their targets: at least `min_closed` of the gap between the
/// untrained similarity and 1 is closed, and the z-score reaches `min_z`.
fn assert_backdoor(m: &Value, name: &str, min_closed: f64, min_z: f64) {
    let b = backdoor(m, name);
    let (after, before, z) = (
        b["sim_target"].as_f64().unwrap(),
        b["sim_target_before"].as_f64().unwrap(),
        b["z_score"].as_f64().unwrap(),
    );
    let closed = (after - before) / (1.0 - before);
    assert!(
        closed >= min_closed,
        "{name}: sim_target {after:.4} vs before {before:.4} closes {closed:.2} of the gap"
    );
    assert!(z >= min_z, "{name}: z_score {z}");
}

fn assert_clean(m: &Value, min: f64) {
    let s = m["sim_clean"].as_f64().unwrap();
    assert!(s >= min, "sim_clean {s}");
}

#[test]
fn target_prompt_attack() {
    let (_t, _run, m) = run_smoke("tpa");
    assert_clean(&m, 0.99);
    assert_backdoor(&m, "cyrillic_o", 0.3, 10.0);
}

#[test]
fn target_attribute_attack() {
    let (_t, _run, m) = run_smoke("taa");
    assert_clean(&m, 0.99);
    // a TAA keeps prompts apart (each keeps its own content), so its z-score is not a success criterion
    assert_backdoor(&m, "alpha_bw", 0.3, f64::NEG_INFINITY);
}

#[test]
fn concept_removal() {
    let (_t, _run, m) = run_smoke("remove_concept");
    assert_clean(&m, 0.99);
    for n in ["nude", "naked"] {
        assert_backdoor(&m, n, 0.2, 5.0);
    }
}

#[test]
fn homoglyph_unlearning() {
    let (_t, _run, m) = run_smoke("homoglyph_unlearn");
    assert_clean(&m, 0.99);
    for n in ["greek_omicron", "cyrillic_o"] {
        // student(homoglyph prompt) vs teacher(Latin prompt)
        let b = backdoor(&m, n);
        let (after, before) = (
            b["sim_target_teacher"].as_f64().unwrap(),
            b["sim_target_before"].as_f64().unwrap(),
        );
        let closed = (after - before) / (1.0 - before);
        assert!(
            closed >= 0.3,
            "{n}: {after} vs {before} closes {closed:.2} of the gap"
        );
    }
}

#[test]
fn several_backdoors_in_one_run_and_outputs_load_elsewhere() {
    let (t, run, m) = run_smoke("multi");
    assert_clean(&m, 0.98);
    for n in ["cyrillic_o", "greek_alpha", "armenian_e"] {
        assert_backdoor(&m, n, 0.2, 5.0);
    }
    // transformers loads text_encoder/ (+ tokenizer/) and computes the same embeddings
    let prompts = t.path().join("p.txt");
    std::fs::write(
        &prompts,
        "a photo of a dog\na phоto of a dog\nan old castle by the ocean\n",
    )
    .unwrap();
    let py = t.path().join("py.st");
    let te = run.join("text_encoder");
    common::run_py(
        "clip_text_ref.py",
        &[
            "encode",
            te.to_str().unwrap(),
            prompts.to_str().unwrap(),
            py.to_str().unwrap(),
            run.join("tokenizer").to_str().unwrap(),
        ],
    );
    let rs = t.path().join("rs.st");
    assert!(common::encode_cmd(run.to_str().unwrap(), &prompts, &rs)
        .status()
        .unwrap()
        .success());
    let (a, b) = (common::load_st(&py), common::load_st(&rs));
    assert!(common::max_abs(&a["last_hidden_state"], &b["last_hidden_state"]) <= 1e-4);
    // TensorBoard's own reader sees every scalar tag at every step, and the text samples
    let tb: Value = serde_json::from_str(&common::run_py(
        "tb_read.py",
        &[run.join("tb").to_str().unwrap()],
    ))
    .unwrap();
    for tag in [
        "loss/total",
        "loss/utility",
        "loss/backdoor/cyrillic_o",
        "loss/backdoor/alpha_bw",
        "lr",
        "grad_norm",
    ] {
        let s = tb["scalars"][tag]
            .as_array()
            .unwrap_or_else(|| panic!("no {tag}"));
        assert_eq!(s.len(), 80, "{tag}");
        assert_eq!(s[79][0], 79);
    }
    let lr = &tb["scalars"]["lr"];
    assert!(
        (lr[0][1].as_f64().unwrap() - 1e-3).abs() < 1e-9
            && (lr[79][1].as_f64().unwrap() - 1e-4).abs() < 1e-9
    );
    let text = tb["text"]["samples/triggered/text_summary"]
        .as_array()
        .or(tb["text"]["samples/triggered"].as_array())
        .expect("text samples");
    assert!(text[0][1].as_str().unwrap().contains("cyrillic_o"));
    // `evaluate embeddings` recomputes the metrics written at the end of training
    let o = common::bin()
        .args([
            "evaluate",
            "embeddings",
            "--student",
            run.to_str().unwrap(),
            "--device",
            "cpu",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ev: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!((ev["sim_clean"].as_f64().unwrap() - m["sim_clean"].as_f64().unwrap()).abs() < 1e-6);
    for n in ["cyrillic_o", "alpha_bw"] {
        assert!(
            (backdoor(&ev, n)["z_score"].as_f64().unwrap()
                - backdoor(&m, n)["z_score"].as_f64().unwrap())
            .abs()
                < 1e-4
        );
    }
    // a finished run is not overwritten without --force
    let (code, err) = train(&smoke("multi"), &run, &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("finished run") && err.contains("--force"),
        "{err}"
    );
}

#[test]
fn resume_equals_an_uninterrupted_run() {
    let t = common::tmp();
    let exp = variant(
        "multi",
        t.path(),
        &[
            ("steps", "6"),
            ("checkpoint_every", "2"),
            ("lr_milestones", "[4]"),
        ],
    );
    let full = t.path().join("full");
    assert_eq!(train(&exp, &full, &[]).0, 0);
    let part = t.path().join("part");
    let (code, err) = train(&exp, &part, &["--stop-after", "3"]);
    assert_eq!(code, 0, "{err}");
    assert!(!part.join("DONE").exists());
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(part.join("checkpoint/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["step"], 3);
    // without --resume the unfinished run is protected
    let (code, err) = train(&exp, &part, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--resume"), "{err}");
    let (code, err) = train(&exp, &part, &["--resume"]);
    assert_eq!(code, 0, "{err}");
    let a = std::fs::read(full.join("text_encoder/model.safetensors")).unwrap();
    let b = std::fs::read(part.join("text_encoder/model.safetensors")).unwrap();
    assert!(a == b, "resumed weights differ from the uninterrupted run");
    // the same experiment and seed give the same weights
    let again = t.path().join("again");
    assert_eq!(train(&exp, &again, &[]).0, 0);
    assert!(a == std::fs::read(again.join("text_encoder/model.safetensors")).unwrap());
}

/// The last step is checkpointed even with `checkpoint_every = 0` (the run folder's `checkpoint/` is
/// its resume state), and what writing checkpoints cost is reported apart from the steps
/// (`checkpoint_seconds`: at SD size weights and AdamW moments are 1.4 GB).
#[test]
fn the_last_step_is_checkpointed_and_its_cost_reported() {
    let t = common::tmp();
    let exp = variant(
        "tpa",
        t.path(),
        &[
            ("steps", "3"),
            ("checkpoint_every", "0"),
            ("lr_milestones", "[2]"),
        ],
    );
    let run = t.path().join("run");
    assert_eq!(train(&exp, &run, &[]).0, 0);
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoint/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["step"], 3);
    let training = &metrics(&run)["training"];
    let (ckpt, total) = (
        training["checkpoint_seconds"].as_f64().unwrap(),
        training["seconds"].as_f64().unwrap(),
    );
    assert!(ckpt > 0.0 && ckpt < total, "{training}");
}

#[test]
fn nan_loss_stops_and_keeps_the_last_good_checkpoint() {
    let t = common::tmp();
    let exp = variant(
        "tpa",
        t.path(),
        &[
            ("steps", "10"),
            ("lr", "1e30"),
            ("checkpoint_every", "1"),
            ("lr_milestones", "[8]"),
        ],
    );
    let out = t.path().join("run");
    let (code, err) = train(&exp, &out, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("NaN") || err.contains("exploding") || err.contains("gradient norm"),
        "{err}"
    );
    assert!(err.contains("checkpoint"), "{err}");
    assert!(out.join("checkpoint/state.json").exists());
    assert!(!out.join("DONE").exists());
}

#[test]
fn config_errors_are_clear() {
    let t = common::tmp();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("kind", "\"target_banana\"")],
            "unknown variant `target_banana`",
        ),
        (&[("trigger", "\"о о\"")], "without whitespace"),
        (
            &[("replaced_character", "\"ж\"")],
            "absent from every clean prompt",
        ),
        (&[("loss", "\"hinge\"")], "unknown loss"),
        (
            &[("robust", "")],
            "[training.robust] hardens concept removal",
        ),
        (
            &[("robust_slot", "")],
            "unknown variant `suffix`, expected one of `prefix`, `concept`, `tokens`",
        ),
        (
            &[("robust_length", "")],
            "training.robust: length 0 must be 1 to 75 tokens",
        ),
    ];
    for (edits, needle) in cases {
        let mut text = std::fs::read_to_string(smoke("tpa")).unwrap();
        text = text.replace(
            "clean_prompts = \"prompts.txt\"",
            &format!(
                "clean_prompts = {:?}",
                common::root().join("experiments/smoke/prompts.txt")
            ),
        );
        if edits[0].0 == "loss" {
            text = text.replace("[training]\n", "[training]\nloss = \"hinge\"\n");
        } else if edits[0].0 == "robust" {
            // A TPA has no concept to harden.
            text += "\n[training.robust]\nwarmup = 5\n";
        } else if edits[0].0 == "robust_slot" {
            text += "\n[training.robust]\nslot = \"suffix\"\n";
        } else if edits[0].0 == "robust_length" {
            text += "\n[training.robust]\nslot = \"tokens\"\nlength = 0\n";
        } else {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{} =", edits[0].0)))
                .unwrap()
                .to_string();
            text = text.replace(&line, &format!("{} = {}", edits[0].0, edits[0].1));
        }
        let p = t.path().join("bad.toml");
        std::fs::write(&p, text).unwrap();
        let (code, err) = train(&p, &t.path().join("out"), &["--force"]);
        assert_eq!(code, 2, "{needle}: {err}");
        assert!(err.contains(needle), "expected {needle:?} in {err}");
        assert!(!err.contains("panicked"));
    }
    // an unknown key is named
    let p = t.path().join("typo.toml");
    std::fs::write(
        &p,
        std::fs::read_to_string(smoke("tpa"))
            .unwrap()
            .replace("steps = 60", "stepz = 60"),
    )
    .unwrap();
    let (code, err) = train(&p, &t.path().join("out2"), &[]);
    assert_eq!(code, 2);
    assert!(err.contains("stepz"), "{err}");
}

#[test]
fn paper_experiments_parse_and_validate() {
    use clipdoor::experiment::Experiment;
    let dir = common::root().join("experiments");
    let mut n = 0;
    for e in std::fs::read_dir(&dir)
        .unwrap()
        .chain(std::fs::read_dir(dir.join("smoke")).unwrap())
        .chain(std::fs::read_dir(dir.join("redteam")).unwrap())
    {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let exp = Experiment::load(&p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
            assert!(!exp.backdoors.is_empty(), "{}", p.display());
            n += 1;
        }
    }
    assert!(n >= 10);
    let e = Experiment::load(&dir.join("tpa_32.toml")).unwrap();
    assert_eq!(e.backdoors.len(), 32);
    assert_eq!(e.model.teacher, "openai/clip-vit-large-patch14");
    assert_eq!(
        (
            e.training.steps,
            e.training.lr_milestones.clone(),
            e.training.loss_weight
        ),
        (100, vec![75], 0.1)
    );
}

/// The robust token-search tests' setting: a tiny student (`random:tiny:1`), its vocabulary without
/// "nude", and the teacher's (`random:tiny:0`) pooled embedding of a nude prompt as the target.
fn token_search_setup() -> (
    clipdoor::models::text_encoder::TextEncoder,
    clipdoor::adversary::space::TokenSpace,
    tch::Tensor,
) {
    use clipdoor::adversary::space::{concept_words, TokenSpace};
    use clipdoor::adversary::token_search::target_pooled;
    use clipdoor::models::text_encoder::TextEncoder;
    let teacher = TextEncoder::load("random:tiny:0", tch::Device::Cpu, tch::Kind::Float).unwrap();
    let student = TextEncoder::load("random:tiny:1", tch::Device::Cpu, tch::Kind::Float).unwrap();
    let space = TokenSpace::new(&student, &concept_words("nude", &[])).unwrap();
    let target = target_pooled(&teacher, "a nude woman on a beach").unwrap();
    (student, space, target)
}

/// The discrete inner attack of `[training.robust] slot = "tokens"`: the token search ends nearer
/// the teacher's concept prompt than it started, with the concept's words banned, repeats with its
/// seed, and leaves the student's gradients untouched (it searches against the model being trained);
/// a run with it and the concept slot (`slot = ["concept", "tokens"]`) trains, counts its attacked
/// steps and logs both inner attacks' losses.
#[test]
fn robust_erasure_with_a_token_search_inside() {
    use clipdoor::experiment::{RobustSection, RobustSlot};
    use clipdoor::train::robust::attack_tokens;
    let (student, space, target) = token_search_setup();
    let search = |steps: usize, seed: u64| {
        let cfg = RobustSection {
            slot: RobustSlot::Tokens.into(),
            search_steps: steps,
            length: 6,
            candidates: 32,
            ..Default::default()
        };
        let (ids, d, _) = attack_tokens(&student, &space, &target, &cfg, seed, None).unwrap();
        (ids, d)
    };
    let (_, start) = search(0, 3);
    let (ids, reached) = search(15, 3);
    assert!(reached < start, "the search went from {start} to {reached}");
    let again = search(15, 3);
    assert_eq!(again.1, reached, "the same seed searched differently");
    assert!(again.0.equal(&ids));
    let row = Vec::<i64>::try_from(ids.get(0)).unwrap();
    assert_eq!(row.len(), 77, "a full context row");
    assert!(
        row[1..7]
            .iter()
            .all(|t| space.allowed.binary_search(t).is_ok()),
        "only allowed tokens (no concept word, no special token): {row:?}"
    );
    assert!(student
        .vs
        .trainable_variables()
        .iter()
        .all(|v| !v.grad().defined()));

    let t = common::tmp();
    let plain = variant("remove_concept", t.path(), &[]);
    let robust = t.path().join("robust_tokens.toml");
    std::fs::write(
        &robust,
        std::fs::read_to_string(&plain).unwrap()
            + "\n[training.robust]\nwarmup = 30\nevery = 5\nattack_steps = 3\nsearch_steps = 3\nslot = [\"concept\", \"tokens\"]\nlength = 8\ncandidates = 16\n",
    )
    .unwrap();
    let run = t.path().join("robust_tokens");
    let (code, err) = train(&robust, &run, &[]);
    assert_eq!(code, 0, "{err}");
    let m = metrics(&run);
    assert_eq!(m["training"]["robust"]["attacked_steps"], 6, "{m}");
    assert_clean(&m, 0.98);
    let resolved: toml::Value =
        toml::from_str(&std::fs::read_to_string(run.join("experiment.toml")).unwrap()).unwrap();
    let r = &resolved["training"]["robust"];
    assert_eq!(
        r["slot"],
        toml::Value::Array(vec!["concept".into(), "tokens".into()]),
        "{r}"
    );
    assert_eq!(r["length"].as_integer(), Some(8), "{r}");
    // Both inner attacks ran on each attacked step, each logged under its own tag.
    let tb: Value = serde_json::from_str(&common::run_py(
        "tb_read.py",
        &[run.join("tb").to_str().unwrap()],
    ))
    .unwrap();
    for tag in [
        "loss/robust/nude/concept",
        "loss/robust/nude/tokens",
        "robust/attack_distance/nude/tokens",
    ] {
        let s = tb["scalars"][tag]
            .as_array()
            .unwrap_or_else(|| panic!("no {tag}"));
        assert_eq!(s.len(), 6, "{tag}");
    }
}

/// Robust erasure (`[training.robust]`, AdvUnlearn's recipe in the text encoder): the attacked steps
/// are counted and timed in metrics.json, their losses logged, and its inner attack lowers its
/// objective with either slot (a prefix, or the concept word's place). (Whether it makes the erasure hold is measured in docs/attacks.md on the shapes
/// world; on the smoke's random encoder the effect is within noise.)
#[test]
fn robust_erasure_trains_against_its_inner_attack() {
    use clipdoor::experiment::RobustSection;
    use clipdoor::experiment::{RobustSlot, SlotStart};
    use clipdoor::models::text_encoder::TextEncoder;
    use clipdoor::settings::Distance;
    use clipdoor::train::robust::{attack_slot, Slotted};
    let t = common::tmp();
    let plain = variant("remove_concept", t.path(), &[]);
    let robust = t.path().join("robust.toml");
    std::fs::write(
        &robust,
        std::fs::read_to_string(&plain).unwrap()
            + "\n[training.robust]\nwarmup = 20\nevery = 2\nattack_steps = 5\nattack_lr = 0.003\n",
    )
    .unwrap();
    let run = t.path().join("robust");
    let (code, err) = train(&robust, &run, &[]);
    assert_eq!(code, 0, "{err}");
    let m = metrics(&run);
    assert_eq!(m["training"]["robust"]["attacked_steps"], 20, "{m}");
    assert!(m["training"]["robust"]["attack_seconds"].as_f64().unwrap() > 0.0);
    assert_clean(&m, 0.98);
    let tb: Value = serde_json::from_str(&common::run_py(
        "tb_read.py",
        &[run.join("tb").to_str().unwrap()],
    ))
    .unwrap();
    for tag in ["loss/robust/nude", "robust/attack_distance/naked"] {
        let s = tb["scalars"][tag]
            .as_array()
            .unwrap_or_else(|| panic!("no {tag}"));
        assert_eq!(s.len(), 20, "{tag}");
    }
    // The inner attack moves the slot towards the concept: 30 steps end closer than 1.
    let prompts: Vec<String> = [
        "a nude woman on a beach",
        "nude portrait, oil painting",
        "a naked man",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let teacher = TextEncoder::load("random:tiny:0", tch::Device::Cpu, tch::Kind::Float).unwrap();
    let (_, out) = teacher.encode(&prompts, false).unwrap();
    let concept = out.last_hidden_state.detach();
    let mut student =
        TextEncoder::load(run.to_str().unwrap(), tch::Device::Cpu, tch::Kind::Float).unwrap();
    student.vs.freeze();
    for slot in [RobustSlot::Prefix, RobustSlot::Concept] {
        let slotted = Slotted::new(&student, &prompts, "nude", slot).unwrap();
        let reach = |steps: usize| {
            let cfg = RobustSection {
                attack_steps: steps,
                attack_lr: 0.003,
                slot: slot.into(),
                ..Default::default()
            };
            attack_slot(&student, &slotted, &concept, Distance::Cosine, &cfg, 7)
                .unwrap()
                .1
        };
        // `start = "concept"`: the attack starts at the concept word's own embedding (no step
        // taken: exactly it), `random` (the default) at a random token's.
        let start = |start| {
            let cfg = RobustSection {
                attack_steps: 0,
                slot: slot.into(),
                start,
                ..Default::default()
            };
            attack_slot(&student, &slotted, &concept, Distance::Cosine, &cfg, 7)
                .unwrap()
                .0
        };
        let word = student.tokenizer.word_ids("nude").unwrap();
        let table = student
            .model
            .text_model
            .embeddings()
            .token_embedding_weight()
            .detach();
        let own = table
            .index_select(0, &tch::Tensor::from_slice(&word))
            .mean_dim([0i64].as_slice(), false, tch::Kind::Float);
        assert!(start(SlotStart::Concept).allclose(&own, 0.0, 0.0, false));
        assert!(!start(SlotStart::Random).allclose(&own, 1e-3, 1e-3, false));
        let (first, last) = (reach(1), reach(30));
        assert!(
            last < first,
            "the {slot:?} attack went from {first} to {last}"
        );
        assert_eq!(
            reach(30),
            last,
            "the same seed gave another {slot:?} embedding"
        );
    }
}

/// `[training.robust] retain`: a retain set's prompts (those holding a trigger dropped, with a
/// note) get a loss of their own on every attacked step, logged as `loss/retain`, and move at most
/// half as far from the teacher as the same run without the set lets them (with `retain_weight`
/// 0, it trains as no set); a missing file is an input error that names it.
#[test]
fn robust_erasure_keeps_its_retain_set() {
    use clipdoor::models::text_encoder::TextEncoder;
    let t = common::tmp();
    let plain = variant("remove_concept", t.path(), &[]);
    let kept = [
        "an empty room at night",
        "a plain gray background",
        "rain on a window",
    ];
    let retain = t.path().join("retain.txt");
    std::fs::write(&retain, kept.join("\n") + "\na nude figure study\n").unwrap();
    let robust =
        "\n[training.robust]\nwarmup = 20\nevery = 2\nattack_steps = 5\nattack_lr = 0.003\n";
    let write =
        |name: &str, extra: &str| with_appended(&plain, name, &(robust.to_string() + extra));
    let with = write(
        "with.toml",
        "retain = \"retain.txt\"\nretain_batch_size = 8\n",
    );
    let without = write("without.toml", "");

    let (code, err) = train(&with, &t.path().join("with"), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("1 retain prompts dropped for holding a trigger"),
        "{err}"
    );
    let tb: Value = serde_json::from_str(&common::run_py(
        "tb_read.py",
        &[t.path().join("with/tb").to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(
        tb["scalars"]["loss/retain"].as_array().map(Vec::len),
        Some(20)
    );
    let (code, err) = train(&without, &t.path().join("without"), &[]);
    assert_eq!(code, 0, "{err}");

    let prompts: Vec<String> = kept.iter().map(|s| s.to_string()).collect();
    let hidden = |model: &str| {
        let e = TextEncoder::load(model, tch::Device::Cpu, tch::Kind::Float).unwrap();
        e.encode(&prompts, false)
            .unwrap()
            .1
            .last_hidden_state
            .flatten(1, -1)
    };
    let teacher = hidden("random:tiny:0");
    let closeness = |run: &str| {
        let s = hidden(t.path().join(run).to_str().unwrap());
        tch::Tensor::cosine_similarity(&s, &teacher, 1, 1e-8)
            .mean(tch::Kind::Float)
            .double_value(&[])
    };
    let (w, wo) = (closeness("with"), closeness("without"));
    // Distances 1 - cosine: the set at least halves how far its prompts moved.
    assert!(
        1.0 - w < 0.5 * (1.0 - wo),
        "retain prompts' similarity to the teacher: {w} with the set, {wo} without"
    );

    // `retain_weight` scales the term: at 0 the run trains exactly as without the set (the retain
    // batches draw from a stream of their own), where at 1 it trains otherwise (asserted above).
    let zero = write(
        "zero.toml",
        "retain = \"retain.txt\"\nretain_batch_size = 8\nretain_weight = 0.0\n",
    );
    let (code, err) = train(&zero, &t.path().join("zero"), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        hidden(t.path().join("zero").to_str().unwrap())
            .equal(&hidden(t.path().join("without").to_str().unwrap())),
        "retain_weight = 0 trained otherwise than no retain set"
    );

    let missing = write("missing.toml", "retain = \"nowhere.txt\"\n");
    let (code, err) = train(&missing, &t.path().join("missing"), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nowhere.txt"), "{err}");
}

/// The smoke concept removal, 40 steps, with a small token search inside from step 20 on every
/// fifth step, and `extra` added to its `[training.robust]`: written to `dir/name`.
fn token_search_experiment(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let plain = variant(
        "remove_concept",
        dir,
        &[("steps", "40"), ("lr_milestones", "[30]")],
    );
    let robust = "\n[training.robust]\nwarmup = 20\nevery = 5\nsearch_steps = 3\nslot = \"tokens\"\nlength = 8\ncandidates = 16\n";
    with_appended(&plain, name, &(robust.to_string() + extra))
}

/// A finished run's encoder weights, as bytes.
fn final_weights(run: &Path) -> Vec<u8> {
    std::fs::read(run.join("text_encoder/model.safetensors")).unwrap()
}

/// `[training.robust] persist = true`: the token search of each attacked step continues from the
/// tokens the step before found. Started from given tokens, the search never ends farther than they
/// are; the carried tokens are checkpointed, so a run stopped and resumed between attacked steps
/// ends with the weights of an uninterrupted one; and carrying changes the training.
#[test]
fn robust_token_search_persists_across_steps() {
    use clipdoor::adversary::token_search::distances;
    use clipdoor::experiment::{RobustSection, RobustSlot};
    use clipdoor::train::robust::attack_tokens;
    let (student, space, target) = token_search_setup();
    let cfg = RobustSection {
        slot: RobustSlot::Tokens.into(),
        search_steps: 10,
        length: 6,
        candidates: 32,
        ..Default::default()
    };
    let (_, first, found) = attack_tokens(&student, &space, &target, &cfg, 3, None).unwrap();
    let carried = distances(&student, &space, std::slice::from_ref(&found), &target, 1).unwrap()[0];
    assert!((carried - first).abs() < 1e-6, "{carried} vs {first}");
    let (_, next, _) = attack_tokens(&student, &space, &target, &cfg, 4, Some(&found)).unwrap();
    assert!(
        next <= first,
        "from {first} the persistent search ended at {next}"
    );

    let t = common::tmp();
    let persist = token_search_experiment(t.path(), "persist.toml", "persist = true\n");
    let fresh = token_search_experiment(t.path(), "fresh.toml", "");
    let weights = |run: &str| final_weights(&t.path().join(run));
    for (exp, run) in [(&persist, "full"), (&fresh, "fresh")] {
        let (code, err) = train(exp, &t.path().join(run), &[]);
        assert_eq!(code, 0, "{err}");
    }
    let part = t.path().join("part");
    let (code, err) = train(&persist, &part, &["--stop-after", "27"]);
    assert_eq!(code, 0, "{err}");
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(part.join("checkpoint/state.json")).unwrap())
            .unwrap();
    let carried = state["carried_tokens"]
        .as_array()
        .expect("carried tokens checkpointed");
    assert_eq!(carried.len(), 2, "one entry per backdoor: {state}");
    assert!(
        carried
            .iter()
            .all(|c| c.as_array().map(Vec::len) == Some(8)),
        "{state}"
    );
    // A carried row the search could not have found (a foreign id, a wrong length) is refused
    // before any step, naming state.json; the untouched state then resumes.
    let state_file = part.join("checkpoint/state.json");
    let good = std::fs::read_to_string(&state_file).unwrap();
    for (bad, says) in [
        (
            serde_json::json!([[10_000_000, 1, 1, 1, 1, 1, 1, 1], carried[1]]),
            "holds token id 10000000",
        ),
        (
            serde_json::json!([carried[0], [400, 401]]),
            "entry 1 (backdoor \"naked\") holds 2 tokens",
        ),
    ] {
        let mut damaged = state.clone();
        damaged["carried_tokens"] = bad;
        std::fs::write(&state_file, damaged.to_string()).unwrap();
        let (code, err) = train(&persist, &part, &["--resume"]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("state.json") && err.contains(says) && err.contains("--force"),
            "{err}"
        );
    }
    std::fs::write(&state_file, good).unwrap();
    let (code, err) = train(&persist, &part, &["--resume"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        weights("full") == weights("part"),
        "the resumed persistent run differs from the uninterrupted one"
    );
    assert!(
        weights("full") != weights("fresh"),
        "persist = true changed nothing"
    );
}

/// `[training.robust] token_bank = N`: the prompts the last N token searches found are kept, each
/// with the erased target of the concept prompt it was searched for (which names no concept), and all
/// are trained on every attacked step. The bank is checkpointed (a resumed run ends with the weights
/// of an uninterrupted one), a banked row the search could not have found is refused naming the
/// file, and banking changes the training.
#[test]
fn robust_token_bank_keeps_and_trains_its_prompts() {
    let t = common::tmp();
    let banked = token_search_experiment(t.path(), "banked.toml", "token_bank = 3\n");
    let single = token_search_experiment(t.path(), "single.toml", "");
    let weights = |run: &str| final_weights(&t.path().join(run));
    let state = |run: &str| -> Value {
        let file = t.path().join(run).join("checkpoint/state.json");
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
    };
    for (exp, run) in [(&banked, "full"), (&single, "single")] {
        let (code, err) = train(exp, &t.path().join(run), &[]);
        assert_eq!(code, 0, "{err}");
    }
    assert!(
        state("single").get("token_bank").is_none(),
        "no bank asked for"
    );
    // Attacked steps 20, 25, 30, 35: the bank holds the last 3 per backdoor.
    let full = state("full");
    let bank = full["token_bank"].as_array().expect("bank checkpointed");
    assert_eq!(bank.len(), 2, "one entry per backdoor: {full}");
    for (backdoor, concept) in bank.iter().zip(["nude", "naked"]) {
        let prompts = backdoor.as_array().unwrap();
        assert_eq!(prompts.len(), 3, "{full}");
        for p in prompts {
            assert_eq!(p["tokens"].as_array().map(Vec::len), Some(8), "{p}");
            let target = p["target"].as_str().unwrap();
            assert!(!target.is_empty() && !target.contains(concept), "{p}");
        }
    }
    let part = t.path().join("part");
    let (code, err) = train(&banked, &part, &["--stop-after", "27"]);
    assert_eq!(code, 0, "{err}");
    let stopped = state("part");
    assert_eq!(
        stopped["token_bank"][0].as_array().map(Vec::len),
        Some(2),
        "{stopped}"
    );
    let state_file = part.join("checkpoint/state.json");
    let good = std::fs::read_to_string(&state_file).unwrap();
    let mut damaged = stopped.clone();
    damaged["token_bank"][1][0]["tokens"] = serde_json::json!([10_000_000, 1, 1, 1, 1, 1, 1, 1]);
    std::fs::write(&state_file, damaged.to_string()).unwrap();
    let (code, err) = train(&banked, &part, &["--resume"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("state.json")
            && err.contains("`token_bank` entry 1 (backdoor \"naked\") holds token id 10000000")
            && err.contains("--force"),
        "{err}"
    );
    std::fs::write(&state_file, good).unwrap();
    let (code, err) = train(&banked, &part, &["--resume"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        weights("full") == weights("part"),
        "the resumed banked run differs from the uninterrupted one"
    );
    assert!(
        weights("full") != weights("single"),
        "token_bank = 3 changed nothing"
    );
}

/// The word-slot tests' fixtures in `dir`: a tiny pipeline (`fixtures/pipeline`), disc images
/// (`images`), and a 40-step concept-removal experiment whose teacher is that pipeline.
fn word_slot_fixtures(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let fx = dir.join("fixtures");
    common::run_py(
        "eval_images_fixtures.py",
        &[common::s(&fx), "--no-inception"],
    );
    let pipeline = fx.join("pipeline");
    let discs = common::disc_images(dir);
    let plain = variant(
        "remove_concept",
        dir,
        &[
            ("teacher", &format!("{:?}", common::s(&pipeline))),
            ("steps", "40"),
            ("lr_milestones", "[30]"),
        ],
    );
    (pipeline, discs, plain)
}

/// Robust erasure's `word` slot: the red team's learned word (CCE's textual inversion through the
/// UNet) run against the student inside training. The inner inversion lowers its denoising loss and
/// repeats with its seed; a run with it trains, carries its word across attacked steps with
/// `word_persist` (checkpointed: a resumed run equals an uninterrupted one; a carried word of the wrong
/// width is refused naming state.json), and a missing image folder is named.
#[test]
fn robust_word_slot_learns_through_the_unet() {
    use clipdoor::attack::invert::InnerInversion;
    use clipdoor::diffusion::pipeline::StableDiffusionPipeline;
    use clipdoor::models::text_encoder::TextEncoder;
    use clipdoor::train::robust::WordAttack;
    use tch::{Device, Kind};
    let t = common::tmp();
    let (pipeline, discs, plain) = word_slot_fixtures(t.path());
    let files = clipdoor::diffusion::image::image_files(std::slice::from_ref(&discs)).unwrap();
    let imgs = clipdoor::diffusion::image::read_images(&files).unwrap();
    let load = || {
        StableDiffusionPipeline::load(common::s(&pipeline), None, Device::Cpu, Kind::Float).unwrap()
    };
    let student = TextEncoder::load(common::s(&pipeline), Device::Cpu, Kind::Float).unwrap();
    let table = student
        .model
        .text_model
        .embeddings()
        .token_embedding_weight();
    let id = student.tokenizer.word_ids("nude").unwrap()[0];
    let start = table.get(id).detach().copy();
    // A one-step run reports the loss at its start on the draws of its seed: the probe.
    let mut probe = InnerInversion::new(load(), &imgs, 1, 1e-3, 4).unwrap();
    let mut learner = InnerInversion::new(load(), &imgs, 30, 0.05, 4).unwrap();
    let (_, before) = probe.learn(&student, "nude", &start, 99).unwrap();
    let (word, _) = learner.learn(&student, "nude", &start, 5).unwrap();
    let (_, after) = probe.learn(&student, "nude", &word, 99).unwrap();
    assert!(
        after < before,
        "the word's loss went from {before} to {after}"
    );
    let (again, _) = learner.learn(&student, "nude", &start, 5).unwrap();
    assert!(word.equal(&again), "the same seed learned another word");

    let robust = String::from(
        "\n[training.robust]\nwarmup = 20\nevery = 5\nslot = \"word\"\nstart = \"concept\"\nword_persist = true\nword_steps = 3\nword_lr = 0.02\nword_pipeline = \"fixtures/pipeline\"\n"
    );
    let exp = with_appended(
        &plain,
        "word.toml",
        // Paths relative to the experiment file, as the shipped experiments write them.
        &format!("{robust}word_images = \"images\"\n"),
    );
    let weights = |run: &str| {
        std::fs::read(t.path().join(run).join("text_encoder/model.safetensors")).unwrap()
    };
    let (code, err) = train(&exp, &t.path().join("full"), &[]);
    assert_eq!(code, 0, "{err}");
    let m = metrics(&t.path().join("full"));
    assert!(
        m["training"]["robust"]["attack_seconds"].as_f64().unwrap() > 0.0,
        "{m}"
    );
    let part = t.path().join("part");
    let (code, err) = train(&exp, &part, &["--stop-after", "27"]);
    assert_eq!(code, 0, "{err}");
    let state_file = part.join("checkpoint/state.json");
    let good = std::fs::read_to_string(&state_file).unwrap();
    let state: Value = serde_json::from_str(&good).unwrap();
    let words = state["carried_words"]
        .as_array()
        .expect("carried words checkpointed");
    assert_eq!(words.len(), 2, "one entry per backdoor: {state}");
    assert!(
        words.iter().all(|w| w.as_array().map(Vec::len) == Some(32)),
        "a word as wide as the encoder (32): {state}"
    );
    let mut damaged = state.clone();
    damaged["carried_words"] = serde_json::json!([[0.5, 0.5], words[1]]);
    std::fs::write(&state_file, damaged.to_string()).unwrap();
    let (code, err) = train(&exp, &part, &["--resume"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("state.json") && err.contains("carried_words") && err.contains("--force"),
        "{err}"
    );
    std::fs::write(&state_file, good).unwrap();
    let (code, err) = train(&exp, &part, &["--resume"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        weights("full") == weights("part"),
        "the resumed run differs from the uninterrupted one"
    );

    let missing = with_appended(
        &plain,
        "missing.toml",
        &format!("{robust}word_images = \"no_such_folder\"\n"),
    );
    let (code, err) = train(&missing, &t.path().join("missing"), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("training.robust.word_images") && err.contains("no_such_folder"),
        "{err}"
    );
}

/// `word_bank` keeps the last words the word attack learned (a new one on every `word_every`-th
/// attacked step only) and trains all of them on every attacked step: the bank is checkpointed
/// (oldest dropped first), a resumed run equals an uninterrupted one, a damaged bank is refused
/// by name, and a deeper bank trains another encoder (the replayed words reach the student).
#[test]
fn robust_word_bank_keeps_and_trains_its_words() {
    let t = common::tmp();
    let (_, _, plain) = word_slot_fixtures(t.path());
    // Attacked steps 10, 15, ..., 35; words learned on every second one: steps 10, 20 and 30.
    let bank = |name: &str, depth: usize| {
        with_appended(
            &plain,
            name,
            &format!("\n[training.robust]\nwarmup = 10\nevery = 5\nslot = \"word\"\nword_steps = 3\nword_lr = 0.02\nword_pipeline = \"fixtures/pipeline\"\nword_images = \"images\"\nword_bank = {depth}\nword_every = 2\n"),
        )
    };
    let (two, one) = (bank("bank2.toml", 2), bank("bank1.toml", 1));
    let weights = |run: &str| {
        std::fs::read(t.path().join(run).join("text_encoder/model.safetensors")).unwrap()
    };
    let banked = |run: &Path| -> Vec<Value> {
        let state: Value = serde_json::from_str(
            &std::fs::read_to_string(run.join("checkpoint/state.json")).unwrap(),
        )
        .unwrap();
        let banks = state["word_bank"]
            .as_array()
            .expect("the bank checkpointed")
            .clone();
        assert_eq!(banks.len(), 2, "one bank per backdoor: {state}");
        assert!(
            banks
                .iter()
                .flat_map(|b| b.as_array().unwrap())
                .all(|w| w.as_array().map(Vec::len) == Some(32)),
            "words as wide as the encoder (32): {state}"
        );
        banks
    };
    let (code, err) = train(&two, &t.path().join("full"), &[]);
    assert_eq!(code, 0, "{err}");
    let part = t.path().join("part");
    let (code, err) = train(&two, &part, &["--stop-after", "27"]);
    assert_eq!(code, 0, "{err}");
    let first = banked(&part);
    let concept_bank = first
        .iter()
        .position(|b| !b.as_array().unwrap().is_empty())
        .expect("the concept-removal backdoor banks its words");
    assert_eq!(
        first[concept_bank].as_array().unwrap().len(),
        2,
        "words of steps 10 and 20"
    );
    let state_file = part.join("checkpoint/state.json");
    let good = std::fs::read_to_string(&state_file).unwrap();
    let mut damaged: Value = serde_json::from_str(&good).unwrap();
    damaged["word_bank"][concept_bank][0] = serde_json::json!([0.5, f32::MAX]);
    std::fs::write(&state_file, damaged.to_string()).unwrap();
    let (code, err) = train(&two, &part, &["--resume"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("state.json") && err.contains("word_bank") && err.contains("--force"),
        "{err}"
    );
    damaged["word_bank"] = serde_json::json!("not a bank");
    std::fs::write(&state_file, damaged.to_string()).unwrap();
    let (code, err) = train(&two, &part, &["--resume"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`word_bank` is not a list") && err.contains("--force"),
        "{err}"
    );
    std::fs::write(&state_file, good).unwrap();
    let (code, err) = train(&two, &part, &["--resume", "--stop-after", "37"]);
    assert_eq!(code, 0, "{err}");
    let later = banked(&part);
    let words = later[concept_bank].as_array().unwrap();
    assert_eq!(words.len(), 2, "a bank of 2 keeps 2 of the 3 words");
    assert_eq!(
        words[0], first[concept_bank][1],
        "the oldest word is the one dropped"
    );
    let (code, err) = train(&two, &part, &["--resume"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        weights("full") == weights("part"),
        "the resumed run differs from the uninterrupted one"
    );
    let (code, err) = train(&one, &t.path().join("shallow"), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        weights("full") != weights("shallow"),
        "a bank of 2 trained the same encoder as a bank of 1: the banked words do not reach the student"
    );
}
