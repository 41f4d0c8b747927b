//! The command line explains itself: every flag has a help text, fixed-choice values are listed by
//! `--help` (and checked by clap), every command has an example in its long help, and the help of
//! every command is a snapshot in tests/snapshots/help/ (regenerate with CLIPDOOR_UPDATE_DOCS=1 after
//! a deliberate change, and review the diff).
use crate::common;

use clap::CommandFactory;
use clipdoor::cli::Cli;
use std::path::PathBuf;

/// Every command with its path (`clipdoor evaluate images`), depth first.
fn commands() -> Vec<(String, clap::Command)> {
    fn walk(prefix: &str, c: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
        let path = if prefix.is_empty() {
            c.get_name().to_string()
        } else {
            format!("{prefix} {}", c.get_name())
        };
        out.push((path.clone(), c.clone()));
        // clap's own `help` subcommands print the others' help.
        for s in c.get_subcommands().filter(|s| s.get_name() != "help") {
            walk(&path, s, out);
        }
    }
    let mut root = Cli::command();
    root.build();
    let mut out = vec![];
    walk("", &root, &mut out);
    out
}

fn is_builtin(a: &clap::Arg) -> bool {
    matches!(a.get_id().as_str(), "help" | "version")
}

#[test]
fn every_flag_has_a_help_text_and_every_command_an_example() {
    let mut missing = vec![];
    for (path, c) in commands() {
        if c.get_about().is_none() && path != "clipdoor" {
            missing.push(format!("{path}: no about line"));
        }
        for a in c.get_arguments().filter(|a| !is_builtin(a)) {
            if a.get_help().is_none() && a.get_long_help().is_none() {
                missing.push(format!("{path} {}: no help text", a.get_id()));
            }
        }
        // A command that runs (not only a group of subcommands) shows how.
        let leaf = c.get_subcommands().next().is_none()
            || c.get_arguments()
                .any(|a| !is_builtin(a) && !a.is_global_set());
        let example = c
            .get_after_long_help()
            .map(|h| h.to_string())
            .unwrap_or_default();
        if leaf && !example.contains("Example") {
            missing.push(format!("{path}: no example in the long help"));
        }
        if leaf && !example.contains(&path) {
            missing.push(format!("{path}: the example does not run `{path}`"));
        }
    }
    assert!(
        missing.is_empty(),
        "{} gaps:\n{}",
        missing.len(),
        missing.join("\n")
    );
}

#[test]
fn fixed_choice_values_are_listed_and_checked() {
    // (command path, flag, a value it must list)
    let expected = [
        ("clipdoor init-encoder", "arch", "sd1"),
        ("clipdoor bench encode", "arch", "tiny"),
        ("clipdoor generate", "scheduler", "dpm++"),
        ("clipdoor generate", "dtype", "bf16"),
        ("clipdoor train", "precision", "f16"),
        ("clipdoor train", "precision", "tf32"),
        ("clipdoor generate", "sld", "max"),
        ("clipdoor evaluate i2p", "sld", "strong"),
        ("clipdoor evaluate weat", "preset", "cyrillic"),
    ];
    let all = commands();
    for (path, flag, value) in expected {
        let c = &all
            .iter()
            .find(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("no command {path}"))
            .1;
        let a = c
            .get_arguments()
            .find(|a| a.get_id() == flag)
            .unwrap_or_else(|| panic!("{path} has no --{flag}"));
        let values: Vec<String> = a
            .get_possible_values()
            .iter()
            .map(|v| v.get_name().to_string())
            .collect();
        assert!(
            values.iter().any(|v| v == value),
            "{path} --{flag} lists {values:?}, not {value}"
        );
    }
    // clap refuses a value that is not listed, naming the choices (exit 2).
    let o = common::bin()
        .args([
            "init-encoder",
            "--arch",
            "sd3",
            "--seed",
            "0",
            "--out",
            "/nonexistent",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("possible values") && err.contains("sd2"),
        "{err}"
    );
}

fn snapshot_dir() -> PathBuf {
    common::root().join("tests/snapshots/help")
}

#[test]
fn help_of_every_command_matches_its_snapshot() {
    let update = std::env::var("CLIPDOOR_UPDATE_DOCS").is_ok_and(|v| v == "1");
    let dir = snapshot_dir();
    let mut changed = vec![];
    let mut names = vec![];
    for (path, mut c) in commands() {
        let name = format!("{}.txt", path.replace(' ', "_"));
        let text = c.render_long_help().to_string();
        let file = dir.join(&name);
        names.push(name);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&file, &text).unwrap();
        } else if std::fs::read_to_string(&file).ok().as_deref() != Some(text.as_str()) {
            changed.push(format!("{}:\n{text}", file.display()));
        }
    }
    // No snapshot of a command that no longer exists.
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    on_disk.sort();
    names.sort();
    if update {
        for stale in on_disk.iter().filter(|n| !names.contains(n)) {
            std::fs::remove_file(dir.join(stale)).unwrap();
        }
    } else {
        assert_eq!(
            on_disk, names,
            "snapshots without a command, or commands without one"
        );
    }
    assert!(
        changed.is_empty(),
        "help changed (CLIPDOOR_UPDATE_DOCS=1 cargo test --test suite cli_help:: to accept):\n{}",
        changed.join("\n")
    );
}

#[test]
fn the_binary_prints_the_same_help() {
    // `clipdoor generate --help` is what the snapshot holds (the library's Command is the binary's).
    let o = common::bin().args(["generate", "--help"]).output().unwrap();
    assert!(o.status.success());
    let printed = String::from_utf8_lossy(&o.stdout);
    let snap = std::fs::read_to_string(snapshot_dir().join("clipdoor_generate.txt")).unwrap();
    assert_eq!(printed.trim_end(), snap.trim_end());
}
