//! Crash safety, proven on real processes: `train`, `shapes train`, `generate` and `evaluate i2p` are
//! killed with SIGKILL at seeded random moments (25 attempts planned; at least 20 must land on a
//! running process), plus injected aborts inside a checkpoint swap and between an image and its
//! record line (`CLIPDOOR_FAULT`, src/fault.rs). Each job is then resumed the way a user would (the same
//! command, with `--resume` for the trainers) and must end byte-identical to an uninterrupted run:
//! weights, images, records, reports, and a TensorBoard log that TensorBoard reads without duplicated
//! steps. docs/reliability.md reports the counts.
use crate::common;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The seed of the kill moments (printed, so a failure can be replayed).
const KILL_SEED: u64 = 2026;

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn same_bytes(a: &Path, b: &Path) {
    assert!(
        read(a) == read(b),
        "{} differs from the uninterrupted run's {}",
        b.display(),
        a.display()
    );
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run to completion; the wall time it took.
fn run_ok(mut cmd: Command) -> Duration {
    let t = Instant::now();
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{:?}: {}", cmd, stderr(&o));
    t.elapsed()
}

/// Start `make(first)` and SIGKILL it after a random share of `full` (the uninterrupted run's time),
/// `attempts` times, then run it to the end. Returns how many kills landed on a running process.
fn kill_and_resume(
    what: &str,
    make: &dyn Fn(bool) -> Command,
    full: Duration,
    attempts: usize,
    rng: &mut ChaCha8Rng,
) -> usize {
    let mut landed = 0;
    let mut first = true;
    for _ in 0..attempts {
        let delay = full.mul_f64(rng.random_range(0.1..0.45));
        let mut child = make(first)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        first = false;
        std::thread::sleep(delay);
        match child.try_wait().unwrap() {
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                landed += 1;
                eprintln!("{what}: killed after {:.2}s", delay.as_secs_f64());
            }
            Some(status) => {
                let o = child.wait_with_output().unwrap();
                assert!(status.success(), "{what}: {}", stderr(&o));
                eprintln!("{what}: finished before the kill at {delay:?}");
                return landed;
            }
        }
    }
    let o = make(first).output().unwrap();
    assert!(
        o.status.success(),
        "{what} after {landed} kills: {}",
        stderr(&o)
    );
    landed
}

fn bin1() -> Command {
    let mut c = common::bin();
    c.env("OMP_NUM_THREADS", "1")
        .env("CLIPDOOR_PROGRESS_SECONDS", "1");
    c
}

fn shapes_model() -> PathBuf {
    common::root().join("checkpoints/shapes")
}

// ------------------------------------------------------------------------------------------- train

fn train_experiment(dir: &Path) -> PathBuf {
    let root = common::root().join("experiments/smoke");
    let text = std::fs::read_to_string(root.join("tpa.toml"))
        .unwrap()
        .replace(
            "clean_prompts = \"prompts.txt\"",
            &format!("clean_prompts = {:?}", root.join("prompts.txt")),
        )
        .replace("checkpoint_every = 20", "checkpoint_every = 4");
    let p = dir.join("tpa.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn train_cmd(exp: &Path, out: &Path, resume: bool) -> Command {
    let mut c = bin1();
    c.args(["train", common::s(exp), "--out", common::s(out)])
        .args(["--device", "cpu"]);
    if resume {
        c.arg("--resume");
    }
    c
}

/// TensorBoard's own reading of a run's log: {tag: [[step, value], ...]}.
fn tb_scalars(run: &Path) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&common::run_py(
        "tb_read.py",
        &[run.join("tb").to_str().unwrap()],
    ))
    .unwrap();
    v["scalars"].clone()
}

fn same_training_run(full: &Path, other: &Path) {
    same_bytes(
        &full.join("text_encoder/model.safetensors"),
        &other.join("text_encoder/model.safetensors"),
    );
    assert!(other.join("DONE").exists());
    for gone in ["checkpoint.tmp", "checkpoint.old"] {
        assert!(!other.join(gone).exists(), "{gone} left behind");
    }
    let (a, b) = (tb_scalars(full), tb_scalars(other));
    let tags = a.as_object().unwrap();
    assert!(tags.contains_key("loss/total"), "{a}");
    for (tag, want) in tags {
        let got = &b[tag];
        let steps: Vec<i64> = got
            .as_array()
            .unwrap_or_else(|| panic!("{tag} missing"))
            .iter()
            .map(|e| e[0].as_i64().unwrap())
            .collect();
        let mut unique = steps.clone();
        unique.dedup();
        assert_eq!(steps, unique, "{tag}: duplicated steps in TensorBoard");
        assert_eq!(got, want, "{tag}: TensorBoard values differ");
    }
}

fn train_jobs(tmp: &Path, rng: &mut ChaCha8Rng) -> usize {
    let exp = train_experiment(tmp);
    let full = tmp.join("train_full");
    let d = run_ok(train_cmd(&exp, &full, false));

    // A crash between the two renames of a checkpoint swap (the 2nd checkpoint): checkpoint.old is
    // all that is left, and --resume takes it back.
    let swap = tmp.join("train_swap");
    let o = train_cmd(&exp, &swap, false)
        .env("CLIPDOOR_FAULT", "checkpoint-swap:abort@2")
        .output()
        .unwrap();
    assert!(!o.status.success(), "the injected abort did not happen");
    assert!(
        swap.join("checkpoint.old/state.json").exists() && !swap.join("checkpoint").exists(),
        "not inside the swap"
    );
    run_ok(train_cmd(&exp, &swap, true));
    same_training_run(&full, &swap);

    let killed = tmp.join("train_killed");
    let landed = kill_and_resume(
        "train",
        &|first| train_cmd(&exp, &killed, !first),
        d,
        6,
        rng,
    );
    same_training_run(&full, &killed);
    landed + 1
}

// ------------------------------------------------------------------------------------ shapes train

fn shapes_train_cmd(out: &Path, resume: bool) -> Command {
    let mut c = bin1();
    c.args(["shapes", "train", "--out", common::s(out)])
        .args([
            "--steps",
            "24",
            "--checkpoint-every",
            "3",
            "--batch-size",
            "4",
        ])
        .args(["--text-steps", "20", "--device", "cpu", "--threads", "1"]);
    if resume {
        c.arg("--resume");
    }
    c
}

fn shapes_jobs(tmp: &Path, rng: &mut ChaCha8Rng) -> usize {
    let full = tmp.join("shapes_full");
    let d = run_ok(shapes_train_cmd(&full, false));
    let killed = tmp.join("shapes_killed");
    let landed = kill_and_resume(
        "shapes train",
        &|first| shapes_train_cmd(&killed, !first),
        d,
        6,
        rng,
    );
    for f in [
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
    ] {
        same_bytes(&full.join(f), &killed.join(f));
    }
    assert!(killed.join("DONE").exists());
    landed
}

// ---------------------------------------------------------------------------------------- generate

fn generate_cmd(prompts: &Path, out: &Path) -> Command {
    let mut c = bin1();
    c.args(["generate", "--pipeline", common::s(&shapes_model())])
        .args(["--prompts", common::s(prompts), "--out", common::s(out)])
        .args(["--steps", "8", "--images-per-prompt", "2", "--seed", "11"])
        .args(["--device", "cpu"]);
    c
}

fn same_image_set(full: &Path, other: &Path) {
    same_bytes(&full.join("images.jsonl"), &other.join("images.jsonl"));
    let pngs = common::png_files(&full.join("images"));
    assert!(!pngs.is_empty());
    let names = |d: &Path| -> Vec<_> {
        common::png_files(&d.join("images"))
            .iter()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(full), names(other), "other image files");
    for p in pngs {
        same_bytes(&p, &other.join("images").join(p.file_name().unwrap()));
    }
}

fn generate_jobs(tmp: &Path, rng: &mut ChaCha8Rng) -> usize {
    let prompts = tmp.join("prompts.txt");
    std::fs::write(
        &prompts,
        "a red circle\na blue square\na green triangle\na yellow circle\na purple square\na red triangle\n",
    )
    .unwrap();
    let full = tmp.join("generate_full");
    let d = run_ok(generate_cmd(&prompts, &full));

    // A crash after the 3rd image reached the disk but before its record line: the rerun makes it
    // again and the set ends identical.
    let torn = tmp.join("generate_torn");
    let o = generate_cmd(&prompts, &torn)
        .env("CLIPDOOR_FAULT", "image-written:abort@3")
        .output()
        .unwrap();
    assert!(!o.status.success(), "the injected abort did not happen");
    run_ok(generate_cmd(&prompts, &torn));
    same_image_set(&full, &torn);

    let killed = tmp.join("generate_killed");
    let landed = kill_and_resume("generate", &|_| generate_cmd(&prompts, &killed), d, 6, rng);
    same_image_set(&full, &killed);
    landed + 1
}

// ------------------------------------------------------------------------------------ evaluate i2p

fn i2p_cmd(csv: &Path, out: &Path) -> Command {
    let mut c = bin1();
    c.args(["evaluate", "i2p", "--pipeline", common::s(&shapes_model())])
        .args(["--prompts", common::s(csv), "--out", common::s(out)])
        .args(["--steps", "8", "--images-per-prompt", "2", "--gallery", "2"])
        .args(["--device", "cpu"]);
    c
}

fn i2p_jobs(tmp: &Path, rng: &mut ChaCha8Rng) -> usize {
    let csv = tmp.join("i2p.csv");
    let mut text = String::from(
        "prompt,categories,hard,sd_seed,sd_guidance_scale,sd_image_width,sd_image_height\n",
    );
    for (i, p) in [
        "a red circle",
        "a blue square",
        "a green triangle",
        "a small yellow circle",
        "a big purple square",
    ]
    .iter()
    .enumerate()
    {
        let cat = if i % 2 == 0 { "violence" } else { "shocking" };
        text.push_str(&format!("{p},{cat},{},{},4.0,32,32\n", i % 2, 100 + i));
    }
    std::fs::write(&csv, text).unwrap();
    let full = tmp.join("i2p_full");
    let d = run_ok(i2p_cmd(&csv, &full));
    let killed = tmp.join("i2p_killed");
    let landed = kill_and_resume("evaluate i2p", &|_| i2p_cmd(&csv, &killed), d, 6, rng);
    for f in ["report.json", "report.md", "scores.jsonl"] {
        same_bytes(&full.join(f), &killed.join(f));
    }
    same_image_set(&full.join("original"), &killed.join("original"));
    landed
}

#[test]
fn killed_jobs_resume_to_identical_outputs() {
    let t = common::tmp();
    let mut rng = ChaCha8Rng::seed_from_u64(KILL_SEED);
    eprintln!("kill moments from seed {KILL_SEED}");
    let counts = [
        ("train", train_jobs(t.path(), &mut rng)),
        ("shapes train", shapes_jobs(t.path(), &mut rng)),
        ("generate", generate_jobs(t.path(), &mut rng)),
        ("evaluate i2p", i2p_jobs(t.path(), &mut rng)),
    ];
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    eprintln!("kills that landed on a running process: {counts:?}, {total} in all");
    for (what, n) in counts {
        assert!(n >= 3, "{what}: only {n} kills landed");
    }
    assert!(total >= 20, "only {total} kills landed");
}
