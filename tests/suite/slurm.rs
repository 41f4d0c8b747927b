//! scripts/slurm.sh (docs/cluster.md) without Slurm: a fake `sbatch` on `SBATCH` records its arguments
//! and answers job ids as `sbatch --parsable` does; the array job's `--wrap` script is then run by `sh`
//! as Slurm would run task I (with a fake clipdoor that records its arguments). Checked: the array size,
//! each task's `--shard $SLURM_ARRAY_TASK_ID/N` command with its arguments intact (quotes, spaces, `$`),
//! the merge job's `--dependency=afterok:<array job>` and command, `SLURM_DRY_RUN=1`, the refusals
//! (exit 2), and that the commands that shard (`generate`, `evaluate images|i2p|bias`) pass the real
//! binary's `--shard` check while one that does not (`encode`) is refused.
use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    common::root().join("scripts/slurm.sh")
}

fn write_exe(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A fake sbatch that appends each call's arguments (one a line, then `--`) to `log` and prints
/// `<id>;cluster` (ids 500, 501, ...), and a fake clipdoor that records its arguments to `calls`
/// (and claims `--shard` in its help).
fn fakes(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let (log, calls) = (dir.join("sbatch.log"), dir.join("clipdoor.calls"));
    let sbatch = dir.join("sbatch");
    write_exe(
        &sbatch,
        &format!(
            "#!/bin/sh\nn=$(cat '{d}/n' 2>/dev/null || echo 499); n=$((n+1)); echo $n > '{d}/n'\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >> '{log}'\necho -- >> '{log}'\necho \"$n;cluster\"\n",
            d = dir.display(),
            log = log.display()
        ),
    );
    let clipdoor = dir.join("clipdoor");
    write_exe(
        &clipdoor,
        &format!(
            "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = --help ] && {{ echo '  --shard <I/N>'; exit 0; }}; done\nfor a in \"$@\"; do printf '[%s]' \"$a\"; done >> '{}'\necho >> '{}'\n",
            calls.display(),
            calls.display()
        ),
    );
    (sbatch, clipdoor, log, calls)
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn slurm(args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let o = Command::new("bash")
        .arg(script())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    Outcome {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// The recorded sbatch calls, each a list of arguments.
fn calls(log: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(log).unwrap();
    let mut out = vec![];
    let mut cur = vec![];
    for line in text.lines() {
        if line == "--" {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(line.to_string());
        }
    }
    out
}

fn value<'a>(call: &'a [String], flag: &str) -> Option<&'a str> {
    call.iter()
        .find_map(|a| a.strip_prefix(&format!("{flag}=")))
}

#[test]
fn array_job_with_per_task_shards_and_a_dependent_merge() {
    let tmp = common::tmp();
    let (sbatch, clipdoor, log, recorded) = fakes(tmp.path());
    let env = [
        ("SBATCH", common::s(&sbatch)),
        ("CLIPDOOR", common::s(&clipdoor)),
    ];
    let prompt = "it's a $HOME \"cat\"";
    let o = slurm(
        &[
            "-n",
            "4",
            "--gres=gpu:1",
            "--time=01:00:00",
            "--",
            "generate",
            "--pipeline",
            "runs/p",
            "--prompt",
            prompt,
            "--out",
            "out dir",
        ],
        &env,
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        o.stdout.lines().collect::<Vec<_>>(),
        ["500", "501"],
        "job ids"
    );
    let c = calls(&log);
    assert_eq!(c.len(), 2, "an array job and a merge job: {c:?}");
    let (array, merge) = (&c[0], &c[1]);
    assert_eq!(value(array, "--array"), Some("0-3"), "{array:?}");
    assert!(array.contains(&"--parsable".to_string()));
    assert!(
        array.contains(&"--gres=gpu:1".to_string()) && merge.contains(&"--gres=gpu:1".to_string())
    );
    assert!(value(array, "--dependency").is_none());
    assert_eq!(
        value(merge, "--dependency"),
        Some("afterok:500"),
        "{merge:?}"
    );
    assert!(value(merge, "--array").is_none());
    let wrap = value(array, "--wrap").unwrap();
    assert!(
        wrap.contains("--shard \"$SLURM_ARRAY_TASK_ID/4\""),
        "{wrap}"
    );

    // Each task runs the command with its own shard; the arguments arrive intact.
    for task in 0..4 {
        let st = Command::new("sh")
            .args(["-c", wrap])
            .env("SLURM_ARRAY_TASK_ID", task.to_string())
            .status()
            .unwrap();
        assert!(st.success());
    }
    let runs = std::fs::read_to_string(&recorded).unwrap();
    let runs: Vec<&str> = runs.lines().collect();
    assert_eq!(runs.len(), 4);
    for (task, line) in runs.iter().enumerate() {
        assert_eq!(
            *line,
            format!("[generate][--pipeline][runs/p][--prompt][{prompt}][--out][out dir][--shard][{task}/4]")
        );
    }
    let st = Command::new("sh")
        .args(["-c", value(merge, "--wrap").unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let last = std::fs::read_to_string(&recorded).unwrap();
    assert_eq!(
        last.lines().last().unwrap(),
        "[evaluate][merge][--out][out dir]"
    );

    // --no-merge: the array only; --merge-command: another merge.
    std::fs::remove_file(&log).unwrap();
    let o = slurm(
        &[
            "-n",
            "2",
            "--no-merge",
            "--",
            "evaluate",
            "i2p",
            "--out",
            "o",
        ],
        &env,
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let c = calls(&log);
    assert_eq!(c.len(), 1);
    assert_eq!(value(&c[0], "--array"), Some("0-1"));
    assert_eq!(value(&c[0], "--job-name"), Some("clipdoor-evaluate-i2p"));
    std::fs::remove_file(&log).unwrap();
    let o = slurm(
        &[
            "-n",
            "3",
            "--merge-command",
            "zoo merge --out z",
            "--",
            "zoo",
            "build",
            "zoo.toml",
            "--out",
            "z",
        ],
        &env,
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let c = calls(&log);
    assert!(value(&c[0], "--wrap")
        .unwrap()
        .contains("'zoo' 'build' 'zoo.toml'"));
    assert!(value(&c[1], "--wrap")
        .unwrap()
        .ends_with("'zoo' 'merge' '--out' 'z'"));
}

#[test]
fn dry_run_prints_the_commands_and_bad_arguments_exit_2() {
    let bin = env!("CARGO_BIN_EXE_clipdoor");
    let env = [
        ("SLURM_DRY_RUN", "1"),
        ("CLIPDOOR", bin),
        ("SBATCH", "/nonexistent/sbatch"),
    ];
    // Every stage that shards passes the real binary's --shard check.
    for cmd in [
        &["generate", "--prompt", "x"][..],
        &["evaluate", "images", "--run", "r"],
        &["evaluate", "i2p", "--prompts", "p.csv"],
        &["evaluate", "bias", "relative", "--clip", "c"],
    ] {
        let mut args = vec!["-n", "3", "--"];
        args.extend(cmd);
        args.extend(["--out", "o"]);
        let o = slurm(&args, &env);
        assert_eq!(o.code, 0, "{cmd:?}: {}", o.stderr);
        let lines: Vec<&str> = o.stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{}", o.stdout);
        assert!(lines[0].contains("'--array=0-2'"), "{}", lines[0]);
        assert!(
            lines[0].contains("--shard \"$SLURM_ARRAY_TASK_ID/3\""),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains("'--dependency=afterok:$ARRAY_JOB_ID'"),
            "{}",
            lines[1]
        );
        assert!(
            lines[1].contains("evaluate") && lines[1].contains("merge"),
            "{}",
            lines[1]
        );
    }
    for (args, needle) in [
        (
            &["-n", "2", "--", "encode", "--out", "o"][..],
            "does not take --shard",
        ),
        (&["-n", "2", "--", "generate", "--prompt", "x"], "--out"),
        (
            &["-n", "2", "--", "generate", "--out", "o", "--shard", "0/2"],
            "do not pass --shard",
        ),
        (&["-n", "0", "--", "generate", "--out", "o"], "at least 1"),
        (&["--", "generate", "--out", "o"], "-n N"),
        (
            &["-n", "2", "--array=0-1", "--", "generate", "--out", "o"],
            "do not pass --array",
        ),
        (&["-n", "2"], "no clipdoor command"),
    ] {
        let o = slurm(args, &env);
        assert_eq!(o.code, 2, "{args:?}: {}", o.stderr);
        assert!(o.stderr.contains(needle), "{args:?}: {}", o.stderr);
        assert!(o.stdout.is_empty(), "{args:?} submitted: {}", o.stdout);
    }
}
