//! Injected faults on real processes (docs/reliability.md): a read-only output folder, a full disk
//! (`RLIMIT_FSIZE` with SIGXFSZ ignored, so writes fail with EFBIG as they would with ENOSPC), a file
//! cut in half mid-write, a panic, and shard manifests that try to write outside `--out`. Each must
//! end with a clear error and exit code, and no finished output may be damaged.
use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn no_panic(o: &Output) {
    let e = stderr(o);
    assert_ne!(o.status.code(), Some(101), "{e}");
    assert!(!e.contains("panicked at"), "raw panic text: {e}");
}

fn prompts(dir: &Path, n: usize) -> PathBuf {
    let p = dir.join("prompts.txt");
    let text: String = (0..n)
        .map(|i| format!("a photo of a cat number {i}\n"))
        .collect();
    std::fs::write(&p, text).unwrap();
    p
}

fn encode(prompts: &Path, out: &Path) -> Command {
    let mut c = common::encode_cmd("random:tiny:0", prompts, out);
    c.env("OMP_NUM_THREADS", "1");
    c
}

/// `cmd` run through `bash -c` with a file-size limit (KiB) and SIGXFSZ ignored.
fn with_file_limit(cmd: &Command, kib: u64) -> Command {
    let mut c = Command::new("bash");
    let args: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect();
    c.arg("-c").arg(format!(
        "trap '' XFSZ; ulimit -f {kib}; exec {}",
        args.join(" ")
    ));
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".tmp-"))
        .collect()
}

#[test]
fn full_disk_fails_cleanly_and_keeps_the_finished_output() {
    let t = common::tmp();
    let p = prompts(t.path(), 40);
    let out = t.path().join("emb.safetensors");
    let o = encode(&p, &out).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let before = std::fs::read(&out).unwrap();
    assert!(before.len() > 64 * 1024, "output too small for the limit");

    let mut cmd = encode(&p, &out);
    cmd.arg("--force");
    let o = with_file_limit(&cmd, 64).output().unwrap();
    no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("emb.safetensors") && e.contains("too large"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        before,
        "finished output damaged"
    );
    assert!(temp_files(t.path()).is_empty(), "temp file left behind");

    // Training: a checkpoint that cannot be written stops the run with exit 1; the run resumes
    // once there is room.
    let root = common::root().join("experiments/smoke");
    let exp = t.path().join("tpa.toml");
    std::fs::write(
        &exp,
        std::fs::read_to_string(root.join("tpa.toml"))
            .unwrap()
            .replace(
                "clean_prompts = \"prompts.txt\"",
                &format!("clean_prompts = {:?}", root.join("prompts.txt")),
            )
            .replace("steps = 60", "steps = 8")
            .replace("checkpoint_every = 20", "checkpoint_every = 4"),
    )
    .unwrap();
    let run = t.path().join("run");
    let train = |resume: bool| {
        let mut c = common::bin();
        c.args(["train", common::s(&exp), "--out", common::s(&run)])
            .args(["--device", "cpu"])
            .env("OMP_NUM_THREADS", "1");
        if resume {
            c.arg("--resume");
        }
        c
    };
    let o = with_file_limit(&train(false), 256).output().unwrap();
    no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains(common::s(&run)), "{}", stderr(&o));
    assert!(!run.join("DONE").exists());
    let o = train(true).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(run.join("DONE").exists());
}

#[test]
fn read_only_output_folder_is_a_clear_error() {
    let t = common::tmp();
    let p = prompts(t.path(), 3);
    let ro = t.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let out = ro.join("emb.safetensors");
    let cmd = encode(&p, &out);
    let o = if unsafe { geteuid() } == 0 {
        // Root writes through any permission bits: make the folder a read-only bind mount, in a
        // mount namespace of this command alone.
        let mut args = vec![cmd.get_program().to_string_lossy().to_string()];
        args.extend(cmd.get_args().map(|a| a.to_string_lossy().to_string()));
        let d = shell_quote(common::s(&ro));
        let script = format!(
            "mount --bind {d} {d} && mount -o remount,bind,ro {d} && exec {}",
            args.iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let mut c = Command::new("unshare");
        c.args(["-m", "sh", "-c", &script]);
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        c.output().unwrap()
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        let mut cmd = cmd;
        let o = cmd.output().unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
        o
    };
    no_panic(&o);
    let e = stderr(&o);
    assert!(
        o.status.code() == Some(1) || o.status.code() == Some(2),
        "{e}"
    );
    assert!(e.contains(common::s(&ro)), "the folder is not named: {e}");
    let lower = e.to_lowercase();
    assert!(
        lower.contains("read-only file system") || lower.contains("permission denied"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_dir(&ro).unwrap().count(),
        0,
        "something written"
    );
}

extern "C" {
    fn geteuid() -> u32;
}

#[test]
fn a_file_cut_mid_write_never_replaces_the_finished_one() {
    let t = common::tmp();
    let p = prompts(t.path(), 5);
    let out = t.path().join("emb.safetensors");
    let o = encode(&p, &out).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let before = std::fs::read(&out).unwrap();
    // Overwrite with --force, dying when half of the new file reached its temp file.
    let o = encode(&p, &out)
        .arg("--force")
        .env("CLIPDOOR_FAULT", "atomic-write:abort")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert_eq!(
        std::fs::read(&out).unwrap(),
        before,
        "finished output damaged"
    );
    let torn = temp_files(t.path());
    assert_eq!(torn.len(), 1, "the cut temp file: {torn:?}");
    // The rerun writes the whole file, and it reads back.
    let o = encode(&p, &out).arg("--force").output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&out).unwrap(), before);
    assert_eq!(common::load_st(&out)["last_hidden_state"].size()[0], 5);
}

#[test]
fn a_panic_is_one_clear_line_and_exit_code_1() {
    let t = common::tmp();
    let out = t.path().join("gen");
    let o = common::bin()
        .args(["generate", "--pipeline"])
        .arg(common::root().join("checkpoints/shapes"))
        .args(["--prompt", "a red circle", "--images-per-prompt", "3"])
        .args(["--steps", "2", "--device", "cpu", "--out", common::s(&out)])
        .env("OMP_NUM_THREADS", "1")
        .env("CLIPDOOR_FAULT", "image-written:panic@2")
        .output()
        .unwrap();
    no_panic(&o);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("error: internal failure: injected fault"), "{e}");
    assert_eq!(e.matches("error:").count(), 1, "{e}");
    // The image finished before the panic is on disk and recorded.
    let recorded = std::fs::read_to_string(out.join("images.jsonl")).unwrap();
    assert_eq!(recorded.lines().count(), 1, "{recorded}");
}

#[test]
fn shard_manifests_cannot_write_outside_the_output_folder() {
    let t = common::tmp();
    let p = t.path().join("p.txt");
    std::fs::write(&p, "a red circle\na blue square\n").unwrap();
    let out = t.path().join("gen");
    for shard in ["0/2", "1/2"] {
        let o = common::bin()
            .args(["generate", "--pipeline"])
            .arg(common::root().join("checkpoints/shapes"))
            .args(["--prompts", common::s(&p), "--steps", "2"])
            .args([
                "--device",
                "cpu",
                "--out",
                common::s(&out),
                "--shard",
                shard,
            ])
            .env("OMP_NUM_THREADS", "1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let merge = || {
        common::bin()
            .args(["evaluate", "merge", "--out", common::s(&out)])
            .output()
            .unwrap()
    };
    let shard0 = out.join("shards/0-of-2");
    let jsonl = shard0.join("images.jsonl");
    let good = std::fs::read_to_string(&jsonl).unwrap();
    // An image file that climbs out of the folder.
    std::fs::write(&jsonl, good.replace("images/0", "../../../escaped/0")).unwrap();
    let o = merge();
    no_panic(&o);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not a relative path inside"),
        "{}",
        stderr(&o)
    );
    assert!(!t.path().join("escaped").exists());
    std::fs::write(&jsonl, &good).unwrap();
    // A set name that climbs out.
    let manifest = shard0.join("shard.json");
    let m = std::fs::read_to_string(&manifest).unwrap();
    for shard in ["0-of-2", "1-of-2"] {
        let f = out.join("shards").join(shard).join("shard.json");
        let text = std::fs::read_to_string(&f).unwrap();
        std::fs::write(&f, text.replace("\".\"", "\"../../escaped\"")).unwrap();
    }
    let o = merge();
    no_panic(&o);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("../../escaped"), "{}", stderr(&o));
    assert!(!t.path().join("escaped").exists());
    std::fs::write(&manifest, m).unwrap();
}
