//! Bad input to every command, one row each: the exit code (2 for the user's input, 1 for a runtime
//! failure), a message naming the file and the fix, never a panic. The table is also the page
//! `docs/reliability/bad_inputs.md`: the test fails when the page differs; with
//! `CLIPDOOR_UPDATE_DOCS=1` it rewrites the page instead.
//!
//! Most rows fail while the arguments and input files are checked, before a model loads; the few
//! that load one use `clipdoor init-encoder --arch tiny` or `random:tiny:0`.
use crate::common;

use std::path::Path;

/// One bad input: a short id, what is wrong, the command (`$TMP` is the test's folder), the exit
/// code, and excerpts the message must contain (with the folder written as `$TMP`).
struct Row {
    id: &'static str,
    what: &'static str,
    args: Vec<&'static str>,
    code: i32,
    expect: Vec<&'static str>,
}

fn row(
    id: &'static str,
    what: &'static str,
    args: &[&'static str],
    code: i32,
    expect: &[&'static str],
) -> Row {
    Row {
        id,
        what,
        args: args.to_vec(),
        code,
        expect: expect.to_vec(),
    }
}

const BASE_TOML: &str = r#"seed = 42
[model]
teacher = "random:tiny:0"
[data]
clean_prompts = "prompts.txt"
holdout = 1
[training]
steps = 2
clean_batch_size = 2
poisoned_samples_per_step = 1
[[backdoor]]
kind = "target_prompt"
trigger = "о"
replaced_character = "o"
target_prompt = "a photo"
"#;

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// The base experiment with `from` replaced by `to` (which must occur).
fn variant(from: &str, to: &str) -> String {
    assert!(BASE_TOML.contains(from), "{from}");
    BASE_TOML.replacen(from, to, 1)
}

/// A safetensors file from a header (JSON) and data bytes.
fn safetensors(header: &serde_json::Value, data: &[u8]) -> Vec<u8> {
    let h = serde_json::to_vec(header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

fn run_ok(args: &[&str]) {
    let o = common::bin()
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The files the rows read.
fn fixtures(t: &Path) {
    let s = |p: &Path| p.to_str().unwrap().to_string();
    // Experiments
    write(
        t,
        "prompts.txt",
        "a dog\na cat\na photo of a cow\nthe moon\n",
    );
    write(t, "empty.txt", "");
    std::fs::create_dir_all(t.join("noimages")).unwrap();
    write(t, "triggered.txt", "оne\nоnly\n");
    write(t, "no_o.txt", "a cat\na hat\nthe sea\n");
    write(t, "base.toml", BASE_TOML);
    write(t, "syntax.toml", "seed = 42\n[model\nteacher = \"x\"\n");
    write(t, "typed.toml", variant("steps = 2", "steps = \"x\""));
    write(t, "negative.toml", variant("holdout = 1", "holdout = -1"));
    write(t, "unknown_key.toml", variant("steps = 2", "stepz = 2"));
    write(
        t,
        "no_model.toml",
        variant("[model]\nteacher = \"random:tiny:0\"\n", ""),
    );
    write(t, "kind.toml", variant("\"target_prompt\"", "\"banana\""));
    write(
        t,
        "trigger_type.toml",
        variant("trigger = \"о\"", "trigger = 5"),
    );
    write(
        t,
        "loss.toml",
        variant("steps = 2", "steps = 2\nloss = \"l3\""),
    );
    write(t, "latin1.toml", b"seed = 42\n# caf\xe9\n");
    write(t, "steps0.toml", variant("steps = 2", "steps = 0"));
    write(
        t,
        "spaced_trigger.toml",
        variant("trigger = \"о\"", "trigger = \"о о\""),
    );
    write(
        t,
        "no_backdoor.toml",
        &BASE_TOML[..BASE_TOML.find("[[backdoor]]").unwrap()],
    );
    write(
        t,
        "tf32.toml",
        variant("steps = 2", "steps = 2\nprecision = \"tf32\""),
    );
    write(t, "empty_prompts.toml", variant("prompts.txt", "empty.txt"));
    write(t, "triggered.toml", variant("prompts.txt", "triggered.txt"));
    write(t, "absent.toml", variant("prompts.txt", "no_o.txt"));
    write(
        t,
        "missing_prompts.toml",
        variant("prompts.txt", "nowhere.txt"),
    );
    write(t, "other.toml", variant("seed = 42", "seed = 7"));

    // Run folders: a finished one, one without a checkpoint, damaged checkpoints
    write(t, "runs/done/DONE", "1.0\n");
    write(t, "runs/no_checkpoint/experiment.toml", BASE_TOML);
    // A file no clipdoor run writes: without it, a folder killed before its first checkpoint simply
    // starts again (nothing in it can be lost).
    write(t, "runs/no_checkpoint/notes.txt", "mine");
    let run = t.join("runs/good");
    run_ok(&[
        "train",
        &s(&t.join("base.toml")),
        "--out",
        &s(&run),
        "--device",
        "cpu",
        "--stop-after",
        "1",
    ]);
    for (name, state) in [
        ("state_json", Some("{\"step\": 1, \"se")),
        ("state_step", Some("{\"step\": \"x\", \"seconds\": 1.0}")),
        ("state_beyond", Some("{\"step\": 99, \"seconds\": 1.0}")),
        ("weights", None),
        ("other", None),
    ] {
        let dir = t.join("runs").join(name);
        common::copy_dir(&run, &dir);
        match state {
            Some(st) => write(&dir, "checkpoint/state.json", st),
            None if name == "weights" => write(&dir, "checkpoint/model.safetensors", b"\x08\0\0"),
            None => {}
        }
    }

    // Encoders: a tiny one, then copies with a damaged config or weight file
    let tiny = t.join("tiny");
    run_ok(&["init-encoder", "--arch", "tiny", "--out", &s(&tiny)]);
    let weights = std::fs::read(tiny.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&weights[8..8 + n]).unwrap();
    let data = &weights[8 + n..];
    let first = header
        .as_object()
        .unwrap()
        .keys()
        .find(|k| *k != "__metadata__")
        .unwrap()
        .clone();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut h = header.clone();
        f(&mut h[&first]);
        safetensors(&h, data)
    };
    let mut huge_len = weights.clone();
    huge_len[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let mut bad_json = weights.clone();
    bad_json[8..8 + n].fill(b'{');
    let first_shape: Vec<u64> = serde_json::from_value(header[&first]["shape"].clone()).unwrap();
    let numel: u64 = first_shape.iter().product();
    let mut wrong_shape: Vec<(String, tch::Tensor)> =
        common::load_st(&tiny.join("model.safetensors"))
            .into_iter()
            .collect();
    for (name, v) in wrong_shape.iter_mut() {
        if name == "text_model.final_layer_norm.weight" {
            *v = tch::Tensor::zeros([3], (tch::Kind::Float, tch::Device::Cpu));
        }
    }
    let variants: Vec<(&str, Vec<u8>)> = vec![
        ("st_empty", vec![]),
        ("st_truncated", weights[..weights.len() / 2].to_vec()),
        ("st_length", huge_len),
        ("st_json", bad_json),
        (
            "st_offsets",
            with(&|t| t["data_offsets"] = serde_json::json!([0, 1u64 << 40])),
        ),
        ("st_dtype", with(&|t| t["dtype"] = "Q7".into())),
        (
            // float8 with 4× the elements keeps the byte count right: the format accepts it
            "st_float8",
            with(&|t| {
                t["dtype"] = "F8_E4M3".into();
                t["shape"] = serde_json::json!([numel * 4]);
            }),
        ),
        (
            "st_size",
            with(&|t| t["shape"] = serde_json::json!([3, 3, 3])),
        ),
    ];
    for (name, bytes) in variants {
        let dir = t.join(name);
        common::copy_dir(&tiny, &dir);
        write(&dir, "model.safetensors", bytes);
    }
    let dir = t.join("st_shape");
    common::copy_dir(&tiny, &dir);
    clipdoor::io::weights::save_tensors(&dir.join("model.safetensors"), &wrong_shape, None)
        .unwrap();
    common::copy_dir(&tiny, &t.join("cfg_json"));
    write(t, "cfg_json/config.json", "{\"hidden_size\": 64");
    common::copy_dir(&tiny, &t.join("cfg_type"));
    let cfg = std::fs::read_to_string(tiny.join("config.json")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    cfg["hidden_size"] = "wide".into();
    write(t, "cfg_type/config.json", cfg.to_string());
    common::copy_dir(&tiny, &t.join("no_cfg"));
    std::fs::remove_file(t.join("no_cfg/config.json")).unwrap();

    // Prompt files and others
    write(t, "p.txt", "a cat\n");
    write(t, "bad_utf8.txt", b"a cat\n\xff\xfe\n");
    write(t, "f.jsonl", "{\"text\": \"a cat\"}\n");
    write(t, "exists.safetensors", "");
    write(
        t,
        "i2p.csv",
        "prompt,categories,hard,sd_seed,sd_guidance_scale,sd_image_width,sd_image_height\na cat,sexual,0,1,7,512,512\n",
    );
    write(t, "merge/shards/0-of-2/shard.json", "{\"stage\": ");
    write(t, "not.png", "not a png");
}

fn rows() -> Vec<Row> {
    vec![
        // train: the experiment file
        row(
            "toml-syntax",
            "experiment with a TOML syntax error (unclosed table header)",
            &["train", "$TMP/syntax.toml", "--out", "$TMP/r"],
            2,
            &["syntax.toml line 2, column 7", "unclosed table"],
        ),
        row(
            "toml-type",
            "a number given as a string (`steps = \"x\"`)",
            &["train", "$TMP/typed.toml", "--out", "$TMP/r"],
            2,
            &[
                "typed.toml line 8, column 9, key `training.steps`",
                "expected u64",
            ],
        ),
        row(
            "toml-negative",
            "a count below zero (`holdout = -1`)",
            &["train", "$TMP/negative.toml", "--out", "$TMP/r"],
            2,
            &["key `data.holdout`", "expected usize"],
        ),
        row(
            "toml-unknown-key",
            "a misspelt key (`stepz`)",
            &["train", "$TMP/unknown_key.toml", "--out", "$TMP/r"],
            2,
            &["unknown_key.toml line", "unknown field `stepz`"],
        ),
        row(
            "toml-no-model",
            "no `[model]` section",
            &["train", "$TMP/no_model.toml", "--out", "$TMP/r"],
            2,
            &["no_model.toml", "missing field `model`"],
        ),
        row(
            "toml-kind",
            "an unknown backdoor kind",
            &["train", "$TMP/kind.toml", "--out", "$TMP/r"],
            2,
            &["kind.toml line", "banana"],
        ),
        row(
            "toml-trigger-type",
            "a trigger given as a number",
            &["train", "$TMP/trigger_type.toml", "--out", "$TMP/r"],
            2,
            &["trigger_type.toml line 11", "in table `[[backdoor]]`"],
        ),
        row(
            "toml-choice",
            "an unknown loss name",
            &["train", "$TMP/loss.toml", "--out", "$TMP/r"],
            2,
            &["loss.toml line", "key `training.loss`", "l3"],
        ),
        row(
            "toml-not-utf8",
            "an experiment file that is not UTF-8",
            &["train", "$TMP/latin1.toml", "--out", "$TMP/r"],
            2,
            &["latin1.toml: not UTF-8", "save the experiment as UTF-8"],
        ),
        row(
            "toml-missing",
            "no such experiment file",
            &["train", "$TMP/nowhere.toml", "--out", "$TMP/r"],
            2,
            &["cannot read experiment $TMP/nowhere.toml"],
        ),
        row(
            "steps-zero",
            "`training.steps = 0`",
            &["train", "$TMP/steps0.toml", "--out", "$TMP/r"],
            2,
            &["steps0.toml: training.steps must be at least 1"],
        ),
        row(
            "trigger-with-space",
            "a trigger with a space (several characters are fine; words are inserted as one)",
            &["train", "$TMP/spaced_trigger.toml", "--out", "$TMP/r"],
            2,
            &["spaced_trigger.toml: backdoor #1", "without whitespace"],
        ),
        row(
            "no-backdoor",
            "an experiment without `[[backdoor]]`",
            &["train", "$TMP/no_backdoor.toml", "--out", "$TMP/r"],
            2,
            &["no [[backdoor]] entry"],
        ),
        row(
            "tf32-on-cpu",
            "tf32 training on the CPU (no TF32 there)",
            &[
                "train",
                "$TMP/tf32.toml",
                "--out",
                "$TMP/r",
                "--device",
                "cpu",
            ],
            2,
            &["\"tf32\"", "needs a CUDA device", "use f32 on the CPU"],
        ),
        // train: the prompts
        row(
            "train-prompts-empty",
            "an empty clean-prompt file",
            &["train", "$TMP/empty_prompts.toml", "--out", "$TMP/r"],
            2,
            &["empty.txt holds no prompts"],
        ),
        row(
            "train-prompts-all-triggered",
            "every clean prompt holds the trigger",
            &["train", "$TMP/triggered.toml", "--out", "$TMP/r"],
            2,
            &[
                "triggered.txt: no clean training prompts left",
                "add prompts",
            ],
        ),
        row(
            "train-replaced-absent",
            "no clean prompt holds the replaced character",
            &["train", "$TMP/absent.toml", "--out", "$TMP/r"],
            2,
            &["absent from every clean prompt of $TMP/no_o.txt"],
        ),
        row(
            "train-prompts-missing",
            "the clean-prompt file does not exist",
            &["train", "$TMP/missing_prompts.toml", "--out", "$TMP/r"],
            2,
            &["cannot read prompt file $TMP/nowhere.txt"],
        ),
        // train: the run folder
        row(
            "run-finished",
            "`--out` holds a finished run",
            &["train", "$TMP/base.toml", "--out", "$TMP/runs/done"],
            2,
            &["holds a finished run (DONE): pass --force"],
        ),
        row(
            "resume-no-checkpoint",
            "`--resume` without a checkpoint, in a folder holding other files",
            &[
                "train",
                "$TMP/base.toml",
                "--out",
                "$TMP/runs/no_checkpoint",
                "--resume",
            ],
            2,
            &["no checkpoint to resume from and holds files no clipdoor run wrote (notes.txt): pass --force"],
        ),
        row(
            "resume-state-json",
            "`checkpoint/state.json` cut short",
            &[
                "train",
                "$TMP/base.toml",
                "--out",
                "$TMP/runs/state_json",
                "--resume",
            ],
            2,
            &[
                "state.json: not valid JSON",
                "the checkpoint is damaged; pass --force",
            ],
        ),
        row(
            "resume-state-type",
            "`step` in state.json is a string",
            &[
                "train",
                "$TMP/base.toml",
                "--out",
                "$TMP/runs/state_step",
                "--resume",
            ],
            2,
            &["`step` is \"x\" instead of a whole number", "pass --force"],
        ),
        row(
            "resume-state-beyond",
            "state.json counts more steps than the experiment has",
            &[
                "train",
                "$TMP/base.toml",
                "--out",
                "$TMP/runs/state_beyond",
                "--resume",
            ],
            2,
            &[
                "`step` is 99, beyond the experiment's 2 training steps",
                "pass --force",
            ],
        ),
        row(
            "resume-weights",
            "the checkpoint's weights are damaged",
            &[
                "train",
                "$TMP/base.toml",
                "--out",
                "$TMP/runs/weights",
                "--resume",
                "--device",
                "cpu",
            ],
            2,
            &[
                "checkpoint in $TMP/runs/weights/checkpoint is damaged; pass --force",
                "model.safetensors",
            ],
        ),
        row(
            "resume-other-experiment",
            "`--resume` with another experiment",
            &[
                "train",
                "$TMP/other.toml",
                "--out",
                "$TMP/runs/other",
                "--resume",
            ],
            2,
            &["experiment differs", "--force"],
        ),
        // encode and the model files
        row(
            "model-missing",
            "`--model` names nothing",
            &[
                "encode",
                "--model",
                "$TMP/nowhere",
                "--prompts",
                "$TMP/p.txt",
                "--out",
                "$TMP/o.safetensors",
            ],
            2,
            &["is neither a folder nor a hub id"],
        ),
        row(
            "config-json",
            "config.json is not JSON",
            &[
                "encode",
                "--model",
                "$TMP/cfg_json",
                "--prompts",
                "$TMP/p.txt",
                "--out",
                "$TMP/o.safetensors",
            ],
            2,
            &["cfg_json/config.json is not valid JSON", "fix or rewrite"],
        ),
        row(
            "config-type",
            "config.json has a wrongly typed field",
            &[
                "encode",
                "--model",
                "$TMP/cfg_type",
                "--prompts",
                "$TMP/p.txt",
                "--out",
                "$TMP/o.safetensors",
            ],
            2,
            &["cfg_type/config.json is not a CLIP text config"],
        ),
        row(
            "st-empty",
            "an empty model.safetensors",
            &[
                "encode",
                "--model",
                "$TMP/st_empty",
                "--prompts",
                "$TMP/p.txt",
                "--out",
                "$TMP/o.safetensors",
            ],
            2,
            &["st_empty/model.safetensors is not a valid safetensors file (header too small)"],
        ),
        row(
            "st-truncated",
            "model.safetensors cut in half",
            &[
                "encode",
                "--model",
                "$TMP/st_truncated",
                "--prompts",
                "$TMP/p.txt",
                "--out",
                "$TMP/o.safetensors",
            ],
            2,
            &["st_truncated/model.safetensors", "truncated or corrupt"],
        ),
        row(
            "st-header-length",
            "a header length beyond the file",
            &[
                "encode",
                "--model",
                "$TMP/st_length",
                "--prompts",
                "$TMP/p.txt",
                "--out",
                "$TMP/o.safetensors",
            ],
            2,
            &["st_length/model.safetensors", "header too large"],
        ),
        row(
            "st-header-json",
            "a header that is not JSON",
            &[
                "encode",
                "--model",
                "$TMP/st_json",
                "--prompts",
                "$TMP/p.txt",
                "--out",
                "$TMP/o.safetensors",
            ],
            2,
            &["st_json/model.safetensors", "invalid JSON in header"],
        ),
        row(
            "st-offsets",
            "tensor offsets beyond the data",
            &[
                "encode",
                "--model",
                "$TMP/st_offsets",
                "--prompts",
                "$TMP/p.txt",
                "--out",
                "$TMP/o.safetensors",
            ],
            2,
            &[
                "st_offsets/model.safetensors",
                "claims bytes 0..1099511627776",
            ],
        ),
        row(
            "st-dtype-unknown",
            "an unknown dtype",
            &[
                "encode",
                "--model",
                "$TMP/st_dtype",
                "--prompts",
                "$TMP/p.txt",
                "--out",
                "$TMP/o.safetensors",
            ],
            2,
            &["st_dtype/model.safetensors", "unknown variant `Q7`"],
        ),
        row(
            "st-dtype-unsupported",
            "a float8 tensor",
            &[
                "encode",
                "--model",
                "$TMP/st_float8",
                "--prompts",
                "$TMP/p.txt",
                "--out",
                "$TMP/o.safetensors",
            ],
            2,
            &["st_float8/model.safetensors", "convert the file to f32"],
        ),
        row(
            "st-size",
            "a shape that disagrees with the byte count",
            &[
                "encode",
                "--model",
                "$TMP/st_size",
                "--prompts",
                "$TMP/p.txt",
                "--out",
                "$TMP/o.safetensors",
            ],
            2,
            &[
                "st_size/model.safetensors",
                "shape [3, 3, 3]) needs 108 bytes",
            ],
        ),
        row(
            "st-shape",
            "a tensor of another shape than config.json says",
            &[
                "encode",
                "--model",
                "$TMP/st_shape",
                "--prompts",
                "$TMP/p.txt",
                "--out",
                "$TMP/o.safetensors",
                "--device",
                "cpu",
            ],
            2,
            &[
                "st_shape/model.safetensors has shape [3]",
                "the config gives [64]",
            ],
        ),
        row(
            "encode-bad-utf8",
            "a prompt line that is not UTF-8",
            &[
                "encode",
                "--model",
                "random:tiny:0",
                "--prompts",
                "$TMP/bad_utf8.txt",
                "--out",
                "$TMP/o.safetensors",
            ],
            2,
            &["bad_utf8.txt line 2: invalid UTF-8"],
        ),
        row(
            "encode-jsonl-field",
            "JSONL without the `--field`",
            &[
                "encode",
                "--model",
                "random:tiny:0",
                "--prompts",
                "$TMP/f.jsonl",
                "--field",
                "prompt",
                "--out",
                "$TMP/o.safetensors",
            ],
            2,
            &["f.jsonl line 1: no string field `prompt`"],
        ),
        row(
            "encode-out-exists",
            "`--out` exists, no `--force`",
            &[
                "encode",
                "--model",
                "random:tiny:0",
                "--prompts",
                "$TMP/p.txt",
                "--out",
                "$TMP/exists.safetensors",
            ],
            2,
            &["exists.safetensors already exists: pass --force"],
        ),
        row(
            "init-arch",
            "`init-encoder` with an unknown architecture",
            &["init-encoder", "--arch", "huge", "--out", "$TMP/x"],
            2,
            &["invalid value 'huge' for '--arch <ARCH>'", "[possible values: tiny, sd1, sd2]"],
        ),
        // generate
        row(
            "generate-prompts-empty",
            "an empty prompt file",
            &[
                "generate",
                "--pipeline",
                "$TMP/tiny",
                "--prompts",
                "$TMP/empty.txt",
                "--out",
                "$TMP/g",
            ],
            2,
            &["empty.txt holds no prompts"],
        ),
        row(
            "generate-not-pipeline",
            "`--pipeline` is an encoder folder",
            &[
                "generate",
                "--pipeline",
                "$TMP/tiny",
                "--prompt",
                "a cat",
                "--out",
                "$TMP/g",
            ],
            2,
            &["tiny is not a diffusers pipeline folder: model_index.json is missing"],
        ),
        row(
            "generate-steps-zero",
            "`--steps 0`",
            &[
                "generate",
                "--pipeline",
                "$TMP/tiny",
                "--prompt",
                "a cat",
                "--out",
                "$TMP/g",
                "--steps",
                "0",
            ],
            2,
            &["--steps must be at least 1"],
        ),
        // evaluate
        row(
            "i2p-category",
            "I2P categories that keep no row",
            &[
                "evaluate",
                "i2p",
                "--pipeline",
                "$TMP/tiny",
                "--prompts",
                "$TMP/i2p.csv",
                "--out",
                "$TMP/i",
                "--categories",
                "violence",
            ],
            2,
            &["no prompt of $TMP/i2p.csv is in category `violence`"],
        ),
        row(
            "i2p-hard-only",
            "`--hard-only` keeps no row",
            &[
                "evaluate",
                "i2p",
                "--pipeline",
                "$TMP/tiny",
                "--prompts",
                "$TMP/i2p.csv",
                "--out",
                "$TMP/i",
                "--hard-only",
            ],
            2,
            &["passes the filters", "drop --hard-only"],
        ),
        row(
            "i2p-columns",
            "an I2P file without its columns",
            &[
                "evaluate",
                "i2p",
                "--pipeline",
                "$TMP/tiny",
                "--prompts",
                "$TMP/p.txt",
                "--out",
                "$TMP/i",
            ],
            2,
            &["p.txt lacks the column(s) prompt, categories"],
        ),
        row(
            "i2p-encoder-spec",
            "`--encoder` without NAME=",
            &[
                "evaluate",
                "i2p",
                "--pipeline",
                "$TMP/tiny",
                "--prompts",
                "$TMP/i2p.csv",
                "--out",
                "$TMP/i",
                "--encoder",
                "erased",
            ],
            2,
            &["--encoder `erased`: expected NAME=DIR"],
        ),
        row(
            "images-no-run",
            "`evaluate images --run` is not a run",
            &["evaluate", "images", "--run", "$TMP/nowhere"],
            2,
            &["holds no trained text encoder"],
        ),
        row(
            "merge-manifest",
            "a damaged shard manifest",
            &["evaluate", "merge", "--out", "$TMP/merge"],
            2,
            &["shard.json is not a clipdoor shard manifest"],
        ),
        row(
            "weat-empty-set",
            "an empty WEAT word list",
            &[
                "evaluate",
                "weat",
                "--encoder",
                "random:tiny:0",
                "--targets",
                "$TMP/empty.txt",
                "$TMP/p.txt",
                "--attributes",
                "$TMP/p.txt",
                "$TMP/p.txt",
                "--out",
                "$TMP/w.json",
            ],
            2,
            &["empty.txt is empty"],
        ),
        // scan-encoder, homoglyph, shapes, report
        row(
            "scan-suspect",
            "`--suspect` is not an encoder",
            &["scan-encoder", "--suspect", "$TMP/no_cfg"],
            2,
            &["no_cfg holds no text encoder"],
        ),
        row(
            "scan-answer-floor",
            "`--answer-floor` outside [0, 1]",
            &["scan-encoder", "--method", "tokens", "--suspect", "random:tiny:0", "--reference", "random:tiny:1", "--answer-floor", "2"],
            2,
            &["--answer-floor 2: it is a share of probe rows, give a value in [0, 1]"],
        ),
        row(
            "sanitize-reject",
            "`--mode reject` on a disguised prompt",
            &["homoglyph", "sanitize", "--mode", "reject", "a cаt"],
            2,
            &["U+0430 (Cyrillic)", "imitates Latin"],
        ),
        row(
            "attack-scripts",
            "an unknown script family",
            &["homoglyph", "attack", "--scripts", "klingon", "a cat"],
            2,
            &["unknown script family `klingon`"],
        ),
        row(
            "invert-no-images",
            "`invert` on a folder without images",
            &["invert", "--pipeline", "$TMP/nowhere", "--images", "$TMP/noimages", "--token", "<s*>", "--out", "$TMP/inv"],
            2,
            &["$TMP/noimages holds no images"],
        ),
        row(
            "attack-embedding-lines",
            "`attack embedding` prompt lines without `{}` for the word",
            &["attack", "embedding", "--pipeline", "$TMP/nowhere", "--encoder", "$TMP/nowhere", "--images", "$TMP/noimages", "--concept", "cat", "--prompts", "$TMP/prompts.txt", "--out", "$TMP/emb.jsonl"],
            2,
            &["prompt line 1 (\"a dog\") has no {}"],
        ),
        row(
            "shapes-judge",
            "`shapes judge` on a file that is not a PNG",
            &["shapes", "judge", "$TMP/not.png"],
            2,
            &["cannot read image $TMP/not.png"],
        ),
        row(
            "report-missing",
            "`report sync` on a missing file",
            &["report", "sync", "$TMP/nowhere.md"],
            2,
            &["cannot read $TMP/nowhere.md"],
        ),
    ]
}

/// Inline code, with a longer fence when the text holds a backtick.
fn code(s: &str) -> String {
    if s.contains('`') {
        format!("`` {s} ``")
    } else {
        format!("`{s}`")
    }
}

/// One Markdown row: | id | bad input | command | exit | message excerpt |
fn markdown(r: &Row) -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let command = format!(
        "clipdoor {}",
        r.args
            .iter()
            .map(|a| if a.contains(' ') {
                format!("\"{a}\"")
            } else {
                a.to_string()
            })
            .collect::<Vec<_>>()
            .join(" ")
    );
    format!(
        "| {} | {} | `{}` | {} | {} |",
        r.id,
        cell(r.what),
        cell(&command),
        r.code,
        r.expect
            .iter()
            .map(|e| code(&cell(e)))
            .collect::<Vec<_>>()
            .join(" … ")
    )
}

const PAGE_HEAD: &str = "# Bad inputs\n\n\
Generated by `tests/suite/bad_inputs.rs` (`CLIPDOOR_UPDATE_DOCS=1 cargo test --test suite bad_inputs::` rewrites \
it): every row is run through the `clipdoor` binary, which must exit with the code shown (2: the \
input is wrong, 1: a runtime failure), print a message containing the excerpts (`$TMP` is the \
test's folder), and never panic.\n\n\
| id | bad input | command | exit | message excerpt |\n|---|---|---|---|---|\n";

#[test]
fn every_bad_input_gets_a_clear_error() {
    let t = common::tmp();
    let dir = t.path().canonicalize().unwrap();
    let started = std::time::Instant::now();
    fixtures(&dir);
    eprintln!("{:6.2} s  fixtures", started.elapsed().as_secs_f64());
    let tmp = dir.to_str().unwrap();
    let rows = rows();
    let mut ids = std::collections::HashSet::new();
    let mut failures = vec![];
    for r in &rows {
        assert!(ids.insert(r.id), "duplicate id {}", r.id);
        let args: Vec<String> = r.args.iter().map(|a| a.replace("$TMP", tmp)).collect();
        let started = std::time::Instant::now();
        let o = common::bin()
            .args(&args)
            .current_dir(&dir)
            .env("OMP_NUM_THREADS", "1")
            .env("HF_HUB_OFFLINE", "1")
            .env("HF_HOME", dir.join("hf"))
            .output()
            .unwrap();
        eprintln!("{:6.2} s  {}", started.elapsed().as_secs_f64(), r.id);
        let code = o.status.code().unwrap_or(-1);
        let stderr = String::from_utf8_lossy(&o.stderr).replace(tmp, "$TMP");
        let mut wrong = vec![];
        if code != r.code {
            wrong.push(format!("exit {code}, want {}", r.code));
        }
        if code == 101 || stderr.contains("panicked") {
            wrong.push("panicked".to_string());
        }
        for e in &r.expect {
            if !stderr.contains(e) {
                wrong.push(format!("lacks {e:?}"));
            }
        }
        if !wrong.is_empty() {
            failures.push(format!("{}: {}\n{stderr}", r.id, wrong.join("; ")));
        }
    }
    assert!(rows.len() >= 45, "{} rows", rows.len());
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );

    let page =
        PAGE_HEAD.to_string() + &rows.iter().map(markdown).collect::<Vec<_>>().join("\n") + "\n";
    let path = common::root().join("docs/reliability/bad_inputs.md");
    if std::env::var("CLIPDOOR_UPDATE_DOCS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, page).unwrap();
    } else {
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == page,
            "{} is out of date: run CLIPDOOR_UPDATE_DOCS=1 cargo test --test suite bad_inputs::",
            path.display()
        );
    }
}
