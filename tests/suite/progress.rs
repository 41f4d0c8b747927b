//! Progress when stderr is not a terminal (a Slurm or CI log): plain `[progress]` lines, at most one
//! per `CLIPDOOR_PROGRESS_SECONDS` per task, and a last line when the task ends.
use crate::common;

#[test]
fn a_log_gets_plain_progress_lines() {
    let t = common::tmp();
    let prompts = t.path().join("p.txt");
    std::fs::write(&prompts, "a cat\na dog\na red car\n").unwrap();
    let out = t.path().join("o.st");
    let o = common::encode_cmd("random:tiny:0", &prompts, &out)
        .args(["--batch-size", "1"])
        .env("CLIPDOOR_PROGRESS_SECONDS", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("[progress] encode"))
        .collect();
    // With no interval every batch prints: 1/3, 2/3, 3/3, then the closing line.
    assert_eq!(lines.len(), 4, "{err}");
    assert!(lines[0].contains("1/3 (33.3%)"), "{err}");
    assert!(
        lines[3].contains("3/3 (100.0%)") && lines[3].contains("done"),
        "{err}"
    );
    assert!(
        !err.contains('\r') && !err.contains('\u{1b}'),
        "no terminal control codes: {err:?}"
    );

    // The default interval (10 s) prints the first update and the closing line only.
    let out2 = t.path().join("o2.st");
    let o = common::encode_cmd("random:tiny:0", &prompts, &out2)
        .args(["--batch-size", "1"])
        .env_remove("CLIPDOOR_PROGRESS_SECONDS")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    let n = err
        .lines()
        .filter(|l| l.starts_with("[progress] encode"))
        .count();
    assert_eq!(n, 2, "{err}");
}
