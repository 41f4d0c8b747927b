//! `clipdoor invert` (textual inversion, issue 17) on a tiny random pipeline: the learned word lowers
//! the probe loss, repeats with a seed, is refused where it cannot be learned, reads back through
//! diffusers' `load_textual_inversion` to the same token ids and hidden states clipdoor computes with
//! `encode --embedding`, and changes what `generate --embedding` draws.
use crate::common;

use serde_json::Value;
use std::path::Path;

fn run(args: &[&str]) -> std::process::Output {
    common::bin()
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn refused(args: &[&str], needles: &[&str]) {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {n:?} not in {err}");
    }
}

#[test]
fn invert_learns_a_word_that_diffusers_and_generate_read() {
    let t = common::tmp();
    let fx = t.path().join("fixtures");
    common::run_py("eval_images_fixtures.py", &[common::s(&fx)]);
    let pipeline = fx.join("pipeline");
    let imgs = common::disc_images(t.path());
    let invert = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "invert",
            "--pipeline",
            common::s(&pipeline),
            "--images",
            common::s(&imgs),
            "--token",
            "<s*>",
            "--init-word",
            "object",
            "--steps",
            "40",
            "--lr",
            "0.02",
            "--device",
            "cpu",
            "--out",
            common::s(out),
        ];
        args.extend(extra);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let a = t.path().join("a");
    let args = invert(&a, &[]);
    let stdout = ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let embeds = a.join("learned_embeds.safetensors");
    assert_eq!(stdout.trim(), common::s(&embeds));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("invert.json")).unwrap()).unwrap();
    let (before, after) = (
        report["probe_loss"]["before"].as_f64().unwrap(),
        report["probe_loss"]["after"].as_f64().unwrap(),
    );
    assert!(
        after < before,
        "the probe loss did not fall: {before} -> {after}"
    );
    assert_eq!(report["loss"]["per_step"].as_array().unwrap().len(), 40);
    assert_eq!(report["settings"]["token"], "<s*>");
    // diffusers' format: one tensor named by its token, as wide as the encoder.
    let st = common::load_st(&embeds);
    assert_eq!(st.len(), 1);
    assert_eq!(st["<s*>"].size(), vec![32]);

    // The same seed learns the same word; a finished inversion is kept without --force.
    let b = t.path().join("b");
    let args_b = invert(&b, &[]);
    ok(&args_b.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        std::fs::read(&embeds).unwrap(),
        std::fs::read(b.join("learned_embeds.safetensors")).unwrap()
    );
    refused(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &["already holds", "--force"],
    );

    // Words that cannot be learned, and images that are not there.
    let c = t.path().join("c");
    let bad = |flag: &str, value: &str| {
        let mut v = invert(&c, &[]);
        let i = v.iter().position(|x| x == flag).unwrap();
        v[i + 1] = value.to_string();
        v
    };
    let v = bad("--init-word", "antidisestablishmentarianism");
    refused(
        &v.iter().map(String::as_str).collect::<Vec<_>>(),
        &["--init-word", "one token"],
    );
    let v = bad("--token", "cat");
    refused(
        &v.iter().map(String::as_str).collect::<Vec<_>>(),
        &["already in the tokenizer's vocabulary"],
    );
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let v = bad("--images", common::s(&empty));
    refused(
        &v.iter().map(String::as_str).collect::<Vec<_>>(),
        &[common::s(&empty), "no images"],
    );
    assert!(!c.exists());

    // diffusers reads the word: same ids (upper case folds to the word, as transformers' added
    // tokens are normalised) and the same hidden states as clipdoor's encoder with it.
    let prompts = t.path().join("p.txt");
    std::fs::write(
        &prompts,
        "a photo of a <s*>\n<s*> on a table, <S*>\na photo of an object\n",
    )
    .unwrap();
    let py = t.path().join("py.safetensors");
    common::run_py(
        "invert_roundtrip.py",
        &[
            common::s(&pipeline),
            common::s(&embeds),
            common::s(&prompts),
            common::s(&py),
        ],
    );
    let rs = t.path().join("rs.safetensors");
    ok(&[
        "encode",
        "--model",
        common::s(&pipeline),
        "--embedding",
        common::s(&embeds),
        "--prompts",
        common::s(&prompts),
        "--out",
        common::s(&rs),
        "--device",
        "cpu",
    ]);
    let (p, r) = (common::load_st(&py), common::load_st(&rs));
    assert!(p["input_ids"].equal(&r["input_ids"]), "token ids differ");
    let new_id = 49408i64;
    assert_eq!(r["input_ids"].get(1).int64_value(&[1]), new_id);
    assert_eq!(r["input_ids"].get(1).int64_value(&[6]), new_id);
    let diff = common::max_abs(&p["last_hidden_state"], &r["last_hidden_state"]);
    assert!(diff < 1e-5, "hidden states differ by {diff}");

    // generate draws with the word, and the word matters.
    let draw = |out: &Path, with: bool| {
        let mut args = vec![
            "generate",
            "--pipeline",
            common::s(&pipeline),
            "--prompt",
            "a photo of a <s*>",
            "--steps",
            "2",
            "--device",
            "cpu",
            "--out",
            common::s(out),
        ];
        if with {
            args.extend(["--embedding", common::s(&embeds)]);
        }
        ok(&args);
        common::png_files(&out.join("images"))
    };
    let with = draw(&t.path().join("g1"), true);
    let without = draw(&t.path().join("g2"), false);
    assert_eq!((with.len(), without.len()), (1, 1));
    assert_ne!(
        std::fs::read(&with[0]).unwrap(),
        std::fs::read(&without[0]).unwrap()
    );
}
