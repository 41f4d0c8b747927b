//! libtorch errors on real processes (docs/reliability.md): a real out-of-memory (`CLIPDOOR_FAULT=...:alloc`
//! makes libtorch's CPU allocator fail on a 1 PiB tensor) and a real shape error (`...:torch-error`)
//! inside a training step or a batch of images. Each must end with exit code 1 and one message that
//! names what ran out, where, and what to lower — no panic text, no C++ backtrace — and leave the
//! output resumable to what an uninterrupted run makes.
use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code 1 and no trace of a panic or of libtorch's C++ backtrace.
fn clean_failure(o: &Output) -> String {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    for raw in [
        "panicked",
        "internal failure",
        "Exception raised from",
        "frame #",
        "called `Result::unwrap()`",
    ] {
        assert!(!e.contains(raw), "{raw:?} in: {e}");
    }
    assert_eq!(
        e.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "one error line: {e}"
    );
    e
}

fn experiment(dir: &Path) -> PathBuf {
    let root = common::root().join("experiments/smoke");
    let text = std::fs::read_to_string(root.join("tpa.toml"))
        .unwrap()
        .replace(
            "clean_prompts = \"prompts.txt\"",
            &format!("clean_prompts = {:?}", root.join("prompts.txt")),
        )
        .replace("steps = 60", "steps = 8")
        .replace("lr_milestones = [45]", "lr_milestones = [6]")
        .replace("checkpoint_every = 20", "checkpoint_every = 2");
    let p = dir.join("tpa.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn train(exp: &Path, out: &Path, resume: bool) -> Command {
    let mut c = common::bin();
    c.args(["train", common::s(exp), "--out", common::s(out)])
        .args(["--device", "cpu"])
        .env("OMP_NUM_THREADS", "1")
        .env_remove("CLIPDOOR_FAULT");
    if resume {
        c.arg("--resume");
    }
    c
}

fn checkpoint_step(run: &Path) -> u64 {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("checkpoint/state.json")).unwrap()).unwrap();
    state["step"].as_u64().unwrap()
}

fn weights(run: &Path) -> Vec<u8> {
    std::fs::read(run.join("text_encoder/model.safetensors")).unwrap()
}

#[test]
fn a_training_step_that_runs_out_of_memory_or_fails_in_libtorch_stops_resumably() {
    let t = common::tmp();
    let exp = experiment(t.path());
    let full = t.path().join("full");
    let o = train(&exp, &full, false).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    // The 4th step this process runs is step 3 (0-based, as the progress bar counts steps done and
    // the loss messages name steps); checkpoints are written after steps 1 and 3 (2 and 4 done), so
    // the one on disk when step 3 fails holds step 2.
    for (action, expect) in [
        (
            "alloc",
            &[
                "step 3: out of host memory (RAM) (DefaultCPUAllocator: can't allocate memory",
                "training.clean_batch_size = 32",
                "training.poisoned_samples_per_step = 16",
                "lower them",
            ][..],
        ),
        (
            "torch-error",
            &["step 3: libtorch error:", "2x3", "4x5"][..],
        ),
    ] {
        let run = t.path().join(action);
        let o = train(&exp, &run, false)
            .env("CLIPDOOR_FAULT", format!("train-step:{action}@4"))
            .output()
            .unwrap();
        let e = clean_failure(&o);
        for part in expect {
            assert!(e.contains(part), "{action}: {part:?} missing in: {e}");
        }
        let kept = format!(
            "The last checkpoint, {} (step 2), is kept: rerun with --resume",
            run.join("checkpoint").display()
        );
        assert!(e.contains(&kept), "{action}: {kept:?} missing in: {e}");
        assert!(!run.join("DONE").exists());
        assert_eq!(checkpoint_step(&run), 2, "{action}");

        let o = train(&exp, &run, true).output().unwrap();
        assert!(o.status.success(), "{action}: {}", stderr(&o));
        assert!(stderr(&o).contains("at step 2"), "{}", stderr(&o));
        assert!(run.join("DONE").exists());
        assert!(
            weights(&run) == weights(&full),
            "{action}: the resumed run's weights differ from the uninterrupted run's"
        );
    }
}

#[test]
fn a_failure_before_the_first_checkpoint_says_resume_starts_over() {
    let t = common::tmp();
    let exp = experiment(t.path());
    let run = t.path().join("run");
    let o = train(&exp, &run, false)
        .env("CLIPDOOR_FAULT", "train-step:alloc@2")
        .output()
        .unwrap();
    let e = clean_failure(&o);
    assert!(
        e.contains("step 1: out of host memory (RAM) (DefaultCPUAllocator"),
        "{e}"
    );
    assert!(
        e.contains("No checkpoint was written yet (training.checkpoint_every = 2)"),
        "{e}"
    );
    assert!(!run.join("checkpoint/state.json").exists());
}

fn generate(out: &Path) -> Command {
    let mut c = common::bin();
    c.args(["generate", "--pipeline"])
        .arg(common::root().join("checkpoints/shapes"))
        .args(["--prompt", "a red circle", "--images-per-prompt", "4"])
        .args(["--batch-size", "2", "--steps", "2", "--seed", "5"])
        .args(["--device", "cpu", "--out", common::s(out)])
        .env("OMP_NUM_THREADS", "1")
        .env_remove("CLIPDOOR_FAULT");
    c
}

fn recorded(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join("images.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn a_batch_of_images_that_runs_out_of_memory_keeps_the_images_before_it() {
    let t = common::tmp();
    let full = t.path().join("full");
    let o = generate(&full).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    let out = t.path().join("gen");
    let o = generate(&out)
        .env("CLIPDOOR_FAULT", "generate-batch:alloc@2")
        .output()
        .unwrap();
    let e = clean_failure(&o);
    for part in [
        "batch 2 of 2 (images 2-3): out of host memory (RAM) (DefaultCPUAllocator: can't allocate memory",
        "Lower --batch-size (now 2 image(s) per UNet call)",
        "--dtype f16 or --dtype bf16; now f32",
        "--height/--width; now ",
        "The 2 image(s) already written are kept",
        "rerun the same command",
    ] {
        assert!(e.contains(part), "{part:?} missing in: {e}");
    }
    assert_eq!(recorded(&out).len(), 2, "the first batch's images");
    assert_eq!(common::png_files(&out.join("images")).len(), 2);

    let o = generate(&out).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(recorded(&out), recorded(&full));
    for line in recorded(&full) {
        let file = serde_json::from_str::<serde_json::Value>(&line).unwrap()["file"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            std::fs::read(out.join(&file)).unwrap() == std::fs::read(full.join(&file)).unwrap(),
            "{file} differs from the uninterrupted run's"
        );
    }

    // Another libtorch error in a batch names it and keeps what was drawn.
    let other = t.path().join("other");
    let o = generate(&other)
        .env("CLIPDOOR_FAULT", "generate-batch:torch-error")
        .output()
        .unwrap();
    let e = clean_failure(&o);
    assert!(
        e.contains("batch 1 of 2 (images 0-1): libtorch error:") && e.contains("2x3"),
        "{e}"
    );
    assert!(e.contains("The 0 image(s) already written are kept"), "{e}");
}

/// `evaluate images` draws through the same guarded batches; its message names the `[evaluation]`
/// settings (it has no `--dtype`), and the rerun finishes the report.
#[test]
fn evaluate_images_out_of_memory_names_the_evaluation_settings() {
    let t = common::tmp();
    let fx = t.path().join("fixtures");
    common::run_py(
        "eval_images_fixtures.py",
        &[common::s(&fx), "--no-inception"],
    );
    let (pipeline, clip) = (fx.join("pipeline"), fx.join("clip"));
    let smoke = common::root().join("experiments/smoke");
    let text = std::fs::read_to_string(smoke.join("eval_images.toml"))
        .unwrap()
        .replace(
            "teacher = \"tiny_pipeline\"",
            &format!("teacher = {:?}", common::s(&pipeline)),
        )
        .replace(
            "clean_prompts = \"prompts.txt\"",
            &format!("clean_prompts = {:?}", smoke.join("prompts.txt")),
        );
    let exp = t.path().join("eval_images.toml");
    std::fs::write(&exp, text).unwrap();
    let run = t.path().join("run");
    let o = train(&exp, &run, false).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    let out = t.path().join("eval");
    let evaluate = || {
        let mut c = common::bin();
        c.args(["evaluate", "images", "--run", common::s(&run)])
            .args(["--out", common::s(&out), "--device", "cpu"])
            .args(["--pipeline", common::s(&pipeline), "--judge", "clip"])
            .args(["--clip", common::s(&clip)])
            .env("OMP_NUM_THREADS", "1")
            .env_remove("CLIPDOOR_FAULT");
        c
    };
    // evaluation.batch_size = 4: each set (3 clean, 2 per backdoor) is one batch; the 2nd batch is
    // the original encoder's first backdoor set.
    let o = evaluate()
        .env("CLIPDOOR_FAULT", "generate-batch:alloc@2")
        .output()
        .unwrap();
    let e = clean_failure(&o);
    for part in [
        "original/cyrillic_o: batch 1 of 1 (images 0-1): out of host memory (RAM) (DefaultCPUAllocator",
        "Lower evaluation.batch_size (now 4 image(s) per UNet call)",
        "(evaluation.height/evaluation.width; now height 32, width 32)",
        "rerun the same command",
    ] {
        assert!(e.contains(part), "{part:?} missing in: {e}");
    }
    assert!(
        !e.contains("--dtype"),
        "evaluate images has no --dtype: {e}"
    );
    let clean = out.join("images/original/clean");
    assert_eq!(recorded(&clean).len(), 3, "the clean set drawn before");
    assert!(!out.join("report.json").exists());
    let before = inodes(&clean);

    let o = evaluate().output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(inodes(&clean), before, "the clean images were drawn again");
    assert!(out.join("report.json").exists());
}

/// The inode of every PNG of an image set: a redrawn image is a new file (written atomically).
fn inodes(set: &Path) -> Vec<u64> {
    use std::os::unix::fs::MetadataExt;
    common::png_files(&set.join("images"))
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().ino())
        .collect()
}
