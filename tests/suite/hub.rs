//! Hub ids resolved like Python's huggingface_hub: the cache layout it writes (blobs, snapshots, refs
//! for branches and tags), revisions and weight variants, and downloads from `HF_ENDPOINT` with the
//! token from `HF_TOKEN` or `HF_HOME/token` — against a local HTTP server that speaks the hub's
//! `resolve` protocol, since the real hub is out of reach here.
use crate::common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const COMMIT_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1";
const COMMIT_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2";
/// What a CLIP repo on the hub holds (transformers' layout at the repo root).
const REPO_FILES: [&str; 5] = [
    "config.json",
    "model.safetensors",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
];

fn tiny(dir: &Path, seed: u64) -> PathBuf {
    let out = dir.join(format!("tiny{seed}"));
    let o = common::init_encoder_cmd("tiny", seed, &out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// `model.safetensors` of `src` in half precision: what an `fp16` variant file holds.
fn half_weights(src: &Path, out: &Path) {
    let tensors = tch::Tensor::read_safetensors(src.join("model.safetensors")).unwrap();
    let half: Vec<(String, tch::Tensor)> = tensors
        .into_iter()
        .map(|(n, t)| (n, t.to_kind(tch::Kind::Half)))
        .collect();
    tch::Tensor::write_safetensors(&half, out).unwrap();
}

/// Put `bytes` into the cache the way huggingface_hub does: a blob named by its etag, and a relative
/// symlink to it from `snapshots/<commit>/<file>`.
fn put(hub: &Path, id: &str, commit: &str, file: &str, bytes: &[u8]) {
    let repo = hub.join(format!("models--{}", id.replace('/', "--")));
    let etag = format!("{commit}-{}", file.replace('/', "_"));
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::write(repo.join("blobs").join(&etag), bytes).unwrap();
    let link = repo.join("snapshots").join(commit).join(file);
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    let up = "../".repeat(Path::new(file).components().count() + 1);
    std::os::unix::fs::symlink(format!("{up}blobs/{etag}"), &link).unwrap();
}

fn set_ref(hub: &Path, id: &str, name: &str, commit: &str) {
    let refs = hub
        .join(format!("models--{}", id.replace('/', "--")))
        .join("refs");
    std::fs::create_dir_all(&refs).unwrap();
    std::fs::write(refs.join(name), commit).unwrap();
}

fn put_folder(hub: &Path, id: &str, commit: &str, folder: &Path) {
    for f in REPO_FILES {
        put(hub, id, commit, f, &std::fs::read(folder.join(f)).unwrap());
    }
}

fn prompts(dir: &Path) -> PathBuf {
    let p = dir.join("p.txt");
    std::fs::write(&p, "a red circle\na photo of a cat\n").unwrap();
    p
}

/// Encode `model` with `flags` and `env`; the last hidden state, or the exit code and stderr.
fn encode(
    dir: &Path,
    model: &str,
    flags: &[&str],
    env: &[(&str, &Path)],
) -> Result<tch::Tensor, (i32, String)> {
    let out = dir.join(format!("enc{}.safetensors", rand_suffix()));
    let mut c = common::encode_cmd(model, &prompts(dir), &out);
    c.args(flags)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HUGGINGFACE_HUB_CACHE")
        .env_remove("HF_TOKEN")
        .env_remove("HUGGING_FACE_HUB_TOKEN")
        .env_remove("HF_TOKEN_PATH")
        .env_remove("HF_ENDPOINT")
        .env_remove("HF_HUB_OFFLINE");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    if !o.status.success() {
        return Err((
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ));
    }
    Ok(common::load_st(&out)["last_hidden_state"].shallow_clone())
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

fn must(r: Result<tch::Tensor, (i32, String)>) -> tch::Tensor {
    r.unwrap_or_else(|(code, msg)| panic!("exit {code}: {msg}"))
}

fn must_fail(r: Result<tch::Tensor, (i32, String)>, needles: &[&str]) -> String {
    let (code, msg) = match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    };
    assert_eq!(code, 2, "exit code for: {msg}");
    for n in needles {
        assert!(msg.contains(n), "`{n}` missing from: {msg}");
    }
    msg
}

#[test]
fn cache_like_python_with_branches_tags_commits_and_variants_offline() {
    let t = common::tmp();
    let (a, b, c) = (tiny(t.path(), 1), tiny(t.path(), 2), tiny(t.path(), 3));
    let hf_home = t.path().join("hf_home");
    let hub = hf_home.join("hub");
    let id = "org/tiny-clip";
    // main -> commit A (encoder 1); tag v1 -> commit B (encoder 2, with an fp16 variant that holds
    // encoder 3, so a test can tell which file was read).
    put_folder(&hub, id, COMMIT_A, &a);
    put_folder(&hub, id, COMMIT_B, &b);
    let fp16 = t.path().join("fp16.safetensors");
    half_weights(&c, &fp16);
    put(
        &hub,
        id,
        COMMIT_B,
        "model.fp16.safetensors",
        &std::fs::read(&fp16).unwrap(),
    );
    set_ref(&hub, id, "main", COMMIT_A);
    set_ref(&hub, id, "v1", COMMIT_B);
    let offline = [
        ("HF_HOME", hf_home.as_path()),
        ("HF_HUB_OFFLINE", Path::new("1")),
    ];
    let direct = |dir: &Path, flags: &[&str]| must(encode(t.path(), common::s(dir), flags, &[]));

    let enc_a = direct(&a, &[]);
    let enc_b = direct(&b, &[]);
    assert!(common::max_abs(&enc_a, &enc_b) > 1e-2, "seeds must differ");
    // The default revision is main.
    assert_eq!(
        common::max_abs(&must(encode(t.path(), id, &[], &offline)), &enc_a),
        0.0
    );
    // A tag, by flag and in the id; a full commit hash.
    for (model, flags) in [
        (id.to_string(), vec!["--revision", "v1"]),
        (format!("{id}@v1"), vec![]),
        (format!("{id}@{COMMIT_B}"), vec![]),
    ] {
        let got = must(encode(t.path(), &model, &flags, &offline));
        assert_eq!(common::max_abs(&got, &enc_b), 0.0, "{model} {flags:?}");
    }
    // `@revision` in the id wins over --revision.
    let got = must(encode(
        t.path(),
        &format!("{id}@main"),
        &["--revision", "v1"],
        &offline,
    ));
    assert_eq!(common::max_abs(&got, &enc_a), 0.0);

    // --variant fp16 reads model.fp16.safetensors (encoder 3 in half precision).
    let enc_c = direct(&c, &[]);
    let got = must(encode(
        t.path(),
        id,
        &["--revision", "v1", "--variant", "fp16"],
        &offline,
    ));
    assert!(
        common::max_abs(&got, &enc_c) < 5e-2,
        "fp16 variant not read"
    );
    assert!(common::max_abs(&got, &enc_b) > 1e-1);
    // The same choice in a local folder that holds both files.
    let both = t.path().join("both");
    common::copy_dir(&b, &both);
    std::fs::copy(&fp16, both.join("model.fp16.safetensors")).unwrap();
    assert_eq!(common::max_abs(&direct(&both, &[]), &enc_b), 0.0);
    let local_fp16 = direct(&both, &["--variant", "fp16"]);
    assert_eq!(common::max_abs(&local_fp16, &got), 0.0);

    // HF_HUB_CACHE wins over HF_HOME.
    let moved = t.path().join("elsewhere");
    std::fs::rename(&hub, &moved).unwrap();
    let via_cache = [
        ("HF_HUB_CACHE", moved.as_path()),
        ("HF_HUB_OFFLINE", Path::new("1")),
    ];
    assert_eq!(
        common::max_abs(&must(encode(t.path(), id, &[], &via_cache)), &enc_a),
        0.0
    );

    // What is missing is named, with the revision and where to put it.
    must_fail(
        encode(t.path(), id, &["--revision", "v2"], &via_cache),
        &["revision `v2`", "HF_HUB_OFFLINE", "refs/v2", "config.json"],
    );
    must_fail(
        encode(t.path(), id, &["--variant", "bf16"], &via_cache),
        &["model.bf16.safetensors"],
    );
    must_fail(
        encode(t.path(), common::s(&both), &["--variant", "bf16"], &[]),
        &["model.bf16.safetensors", "--variant"],
    );
}

/// A local stand-in for the hub's `resolve` endpoint: serves `files` of one repo at revision `main`
/// (commit `commit`) to requests that carry `Authorization: Bearer <token>`, else answers 401.
struct FakeHub {
    url: String,
    /// The Authorization header of every request, in order.
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

fn fake_hub(id: &str, commit: &str, token: &str, files: HashMap<String, Vec<u8>>) -> FakeHub {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(vec![]));
    let (seen2, id, commit, token) = (
        seen.clone(),
        id.to_string(),
        commit.to_string(),
        token.to_string(),
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut headers = HashMap::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let auth = headers.get("authorization").cloned();
            seen2.lock().unwrap().push(auth.clone());
            let prefix = format!("/{id}/resolve/main/");
            let reply = |status: &str, extra: &str, body: &[u8]| {
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
                    body.len()
                );
                (head, body.to_vec())
            };
            let (head, body) = if auth.as_deref() != Some(&format!("Bearer {token}")) {
                reply("401 Unauthorized", "", b"")
            } else if let Some((file, bytes)) = path
                .strip_prefix(&prefix)
                .and_then(|f| files.get(f).map(|b| (f, b)))
            {
                let n = bytes.len();
                let start: usize = headers
                    .get("range")
                    .and_then(|r| r.strip_prefix("bytes="))
                    .and_then(|r| r.split('-').next())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let end = match headers.get("range").map(|r| r.ends_with("-0")) {
                    Some(true) => start.min(n - 1),
                    _ => n - 1,
                };
                let extra = format!(
                    "X-Repo-Commit: {commit}\r\nETag: \"{commit}-{}\"\r\nContent-Range: bytes {start}-{end}/{n}\r\n",
                    file.replace('/', "_")
                );
                reply("206 Partial Content", &extra, &bytes[start..=end])
            } else {
                reply("404 Not Found", "", b"")
            };
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    FakeHub { url, seen }
}

#[test]
fn downloads_from_hf_endpoint_with_the_token_and_report_the_server_answer() {
    let t = common::tmp();
    let a = tiny(t.path(), 1);
    let files: HashMap<String, Vec<u8>> = REPO_FILES
        .iter()
        .map(|f| (f.to_string(), std::fs::read(a.join(f)).unwrap()))
        .collect();
    let server = fake_hub("org/gated-clip", COMMIT_A, "hf_secret", files);
    let endpoint = PathBuf::from(&server.url);
    let enc_a = must(encode(t.path(), common::s(&a), &[], &[]));

    // The token comes from HF_HOME/token, as `huggingface-cli login` writes it.
    let home = t.path().join("home1");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("token"), "hf_secret\n").unwrap();
    let env = [
        ("HF_HOME", home.as_path()),
        ("HF_ENDPOINT", endpoint.as_path()),
    ];
    let got = must(encode(t.path(), "org/gated-clip", &[], &env));
    assert_eq!(common::max_abs(&got, &enc_a), 0.0);
    assert!(server
        .seen
        .lock()
        .unwrap()
        .iter()
        .all(|a| a.as_deref() == Some("Bearer hf_secret")));
    // Downloaded into Python's layout: refs/main names the commit, snapshots link to blobs.
    let repo = home.join("hub/models--org--gated-clip");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main"))
            .unwrap()
            .trim(),
        COMMIT_A
    );
    let snap = repo.join("snapshots").join(COMMIT_A);
    for f in REPO_FILES {
        assert_eq!(
            std::fs::read(snap.join(f)).unwrap(),
            std::fs::read(a.join(f)).unwrap(),
            "{f}"
        );
    }
    // Now cached: offline works, and nothing more is requested.
    let before = server.seen.lock().unwrap().len();
    let offline = [
        ("HF_HOME", home.as_path()),
        ("HF_HUB_OFFLINE", Path::new("1")),
    ];
    assert_eq!(
        common::max_abs(
            &must(encode(t.path(), "org/gated-clip", &[], &offline)),
            &enc_a
        ),
        0.0
    );
    assert_eq!(server.seen.lock().unwrap().len(), before);

    // HF_TOKEN works without a token file.
    let home2 = t.path().join("home2");
    let token = PathBuf::from("hf_secret");
    let env = [
        ("HF_HOME", home2.as_path()),
        ("HF_ENDPOINT", endpoint.as_path()),
        ("HF_TOKEN", token.as_path()),
    ];
    assert_eq!(
        common::max_abs(&must(encode(t.path(), "org/gated-clip", &[], &env)), &enc_a),
        0.0
    );

    // No token: the server's 401 is in the message, with what to do.
    let home3 = t.path().join("home3");
    let env = [
        ("HF_HOME", home3.as_path()),
        ("HF_ENDPOINT", endpoint.as_path()),
    ];
    must_fail(
        encode(t.path(), "org/gated-clip", &[], &env),
        &["401", "HF_TOKEN", "huggingface-cli login", &server.url],
    );
    // A wrong token: refused, and said so.
    let bad = PathBuf::from("hf_wrong");
    let env = [
        ("HF_HOME", home3.as_path()),
        ("HF_ENDPOINT", endpoint.as_path()),
        ("HF_TOKEN", bad.as_path()),
    ];
    must_fail(
        encode(t.path(), "org/gated-clip", &[], &env),
        &["401", "refused"],
    );
    // A repo the server does not have: 404.
    let env = [
        ("HF_HOME", home.as_path()),
        ("HF_ENDPOINT", endpoint.as_path()),
    ];
    must_fail(
        encode(t.path(), "org/no-such-model", &[], &env),
        &["404", "no such repo"],
    );
}
