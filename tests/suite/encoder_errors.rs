//! Bad input to `encode`/`init-encoder`: each a clear message naming the file and the fix, exit code 2.
use crate::common;

use std::path::{Path, PathBuf};

fn tiny(dir: &Path) -> PathBuf {
    let out = dir.join("tiny");
    assert!(common::init_encoder_cmd("tiny", 0, &out)
        .status()
        .unwrap()
        .success());
    out
}

fn encode(model: &str, prompts: &Path, out: &Path) -> (i32, String) {
    let o = common::encode_cmd(model, prompts, out)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn prompts(dir: &Path, bytes: &[u8]) -> PathBuf {
    let p = dir.join("p.txt");
    std::fs::write(&p, bytes).unwrap();
    p
}

fn expect_err(code_msg: (i32, String), needles: &[&str]) {
    let (code, msg) = code_msg;
    assert_eq!(code, 2, "exit code for: {msg}");
    assert!(!msg.contains("panicked"), "panic: {msg}");
    for n in needles {
        assert!(msg.contains(n), "message lacks {n:?}: {msg}");
    }
}

#[test]
fn missing_weight_file() {
    let t = common::tmp();
    let m = tiny(t.path());
    std::fs::remove_file(m.join("model.safetensors")).unwrap();
    expect_err(
        encode(
            m.to_str().unwrap(),
            &prompts(t.path(), b"a cat\n"),
            &t.path().join("o.st"),
        ),
        &["model.safetensors", "missing"],
    );
}

#[test]
fn truncated_safetensors() {
    let t = common::tmp();
    let m = tiny(t.path());
    let f = m.join("model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    expect_err(
        encode(
            m.to_str().unwrap(),
            &prompts(t.path(), b"a cat\n"),
            &t.path().join("o.st"),
        ),
        &["model.safetensors", "truncated or corrupt"],
    );
}

#[test]
fn tensor_of_the_wrong_shape() {
    let t = common::tmp();
    let m = tiny(t.path());
    let f = m.join("model.safetensors");
    let mut ts: Vec<(String, tch::Tensor)> = common::load_st(&f).into_iter().collect();
    for (n, v) in ts.iter_mut() {
        if n == "text_model.final_layer_norm.weight" {
            *v = tch::Tensor::ones([65], (tch::Kind::Float, tch::Device::Cpu));
        }
    }
    clipdoor::io::weights::save_tensors(&f, &ts, None).unwrap();
    expect_err(
        encode(
            m.to_str().unwrap(),
            &prompts(t.path(), b"a cat\n"),
            &t.path().join("o.st"),
        ),
        &["final_layer_norm.weight", "[65]", "[64]"],
    );
}

#[test]
fn config_that_disagrees_with_the_weights() {
    let t = common::tmp();
    let m = tiny(t.path());
    let cfg_path = m.join("config.json");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    let layers = |n: u32| {
        cfg.replace(
            "\"num_hidden_layers\": 2",
            &format!("\"num_hidden_layers\": {n}"),
        )
    };
    let cases: [(String, &[&str]); 4] = [
        // more layers than the file holds
        (layers(3), &["lacks", "layers.2"]),
        // fewer layers than the file holds
        (layers(1), &["does not use", "layers.1"]),
        ("{ not json".to_string(), &["config.json", "not valid JSON"]),
        // a head count that does not divide the width
        (
            cfg.replace("\"num_attention_heads\": 4", "\"num_attention_heads\": 5"),
            &["not divisible"],
        ),
    ];
    for (text, needles) in cases {
        std::fs::write(&cfg_path, text).unwrap();
        expect_err(
            encode(
                m.to_str().unwrap(),
                &prompts(t.path(), b"a cat\n"),
                &t.path().join("o.st"),
            ),
            needles,
        );
    }
}

#[test]
fn invalid_utf8_and_empty_prompt_files() {
    let t = common::tmp();
    let m = tiny(t.path());
    let out = t.path().join("o.st");
    expect_err(
        encode(
            m.to_str().unwrap(),
            &prompts(t.path(), b"a cat\nbad \xff\xfe line\n"),
            &out,
        ),
        &["p.txt line 2", "invalid UTF-8"],
    );
    expect_err(
        encode(m.to_str().unwrap(), &prompts(t.path(), b""), &out),
        &["p.txt", "no prompts"],
    );
    // Blank lines are empty prompts (every line is a prompt, ../shared/conventions.md): two rows.
    let blank_out = t.path().join("blank.st");
    let (code, msg) = encode(
        m.to_str().unwrap(),
        &prompts(t.path(), b"\n  \n"),
        &blank_out,
    );
    assert_eq!(code, 0, "{msg}");
    assert_eq!(
        common::load_st(&blank_out)["last_hidden_state"].size()[0],
        2
    );
    expect_err(
        encode(m.to_str().unwrap(), &t.path().join("absent.txt"), &out),
        &["absent.txt"],
    );
    assert!(!out.exists(), "no output written on failure");
}

#[test]
fn unknown_model_and_uncached_hub_id() {
    let t = common::tmp();
    let p = prompts(t.path(), b"a cat\n");
    expect_err(
        encode("./no/such/folder", &p, &t.path().join("o.st")),
        &["neither a folder nor a hub id"],
    );
    let o = common::bin()
        .args([
            "encode",
            "--model",
            "openai/clip-vit-large-patch14",
            "--prompts",
            p.to_str().unwrap(),
            "--out",
            "x.st",
        ])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", t.path().join("hub"))
        .output()
        .unwrap();
    expect_err(
        (
            o.status.code().unwrap(),
            String::from_utf8_lossy(&o.stderr).into(),
        ),
        &[
            "not in the Hugging Face cache",
            "HF_HUB_OFFLINE",
            "models--openai--clip-vit-large-patch14/snapshots",
            "config.json",
        ],
    );
}

#[test]
fn hub_id_resolves_from_the_python_compatible_cache() {
    // The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<rev>/...}.
    let t = common::tmp();
    let src = tiny(t.path());
    let hub = t.path().join("hf_home/hub");
    let snap = hub.join("models--org--tiny-clip/snapshots/0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(hub.join("models--org--tiny-clip/refs")).unwrap();
    std::fs::write(hub.join("models--org--tiny-clip/refs/main"), "0123abcd").unwrap();
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), snap.join(f.file_name())).unwrap();
    }
    let p = prompts(t.path(), b"a cat\na dog\n");
    let out = t.path().join("o.st");
    let o = common::encode_cmd("org/tiny-clip", &p, &out)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("HF_HUB_CACHE")
        .env("HF_HOME", t.path().join("hf_home"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let hub_out = common::load_st(&out);
    // the same as encoding the folder directly
    let out2 = t.path().join("o2.st");
    assert_eq!(encode(src.to_str().unwrap(), &p, &out2).0, 0);
    let direct = common::load_st(&out2);
    assert_eq!(
        common::max_abs(&hub_out["last_hidden_state"], &direct["last_hidden_state"]),
        0.0
    );
    assert_eq!(hub_out["last_hidden_state"].size(), vec![2, 77, 64]);
}

#[test]
fn diffusers_pipeline_folder_layout() {
    let t = common::tmp();
    let src = tiny(t.path());
    let pipe = t.path().join("pipe");
    std::fs::create_dir_all(pipe.join("text_encoder")).unwrap();
    std::fs::create_dir_all(pipe.join("tokenizer")).unwrap();
    std::fs::write(pipe.join("model_index.json"), "{}").unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), pipe.join("text_encoder").join(f)).unwrap();
    }
    for f in [
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(src.join(f), pipe.join("tokenizer").join(f)).unwrap();
    }
    let out = t.path().join("o.st");
    let (code, msg) = encode(pipe.to_str().unwrap(), &prompts(t.path(), b"a cat\n"), &out);
    assert_eq!(code, 0, "{msg}");
    let o = common::load_st(&out);
    let keys: std::collections::BTreeSet<_> = o.keys().cloned().collect();
    assert_eq!(
        keys.into_iter().collect::<Vec<_>>(),
        vec![
            "input_ids",
            "last_hidden_state",
            "penultimate_hidden_state",
            "pooled_output"
        ]
    );
    assert_eq!(o["input_ids"].kind(), tch::Kind::Int64);
    assert_eq!(o["pooled_output"].size(), vec![1, 64]);
    // a finished output is not overwritten silently
    let (code, msg) = encode(pipe.to_str().unwrap(), &prompts(t.path(), b"a dog\n"), &out);
    assert_eq!(code, 2);
    assert!(msg.contains("--force"));
}
