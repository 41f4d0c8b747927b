//! Shared test helpers: the project venv's Python (the reference implementations), the shared data
//! folder, the built binary.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv interpreter that scripts/setup.sh made (transformers, diffusers, tensorboard, ...).
pub fn python() -> PathBuf {
    root().join(".venv/bin/python")
}

/// Run `tests/python/<script>` with args; panic with its stderr if it fails; return stdout.
pub fn run_py(script: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(root().join("tests/python").join(script))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_VERBOSITY", "error")
        .env("TQDM_DISABLE", "1")
        .output()
        .expect("running the venv python (run scripts/setup.sh)");
    assert!(
        out.status.success(),
        "python {script} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `../shared/data` when present (CI has it; a user's fresh clone may not). Missing, the test is
/// skipped, and the skip is recorded in `target/test-skips.txt` (scripts/test.sh prints the count) —
/// unless `CLIPDOOR_REQUIRE_SHARED_DATA=1` (set by .ci/run, and by scripts/test.sh under `CI`): then a
/// missing folder fails the test, so CI can never pass by skipping.
pub fn shared_data() -> Option<PathBuf> {
    let p = root().join("../shared/data");
    if p.join("README.md").exists() {
        return Some(p);
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("unknown test")
        .to_string();
    if std::env::var_os("CLIPDOOR_REQUIRE_SHARED_DATA").is_some_and(|v| v == "1") {
        panic!(
            "{test}: ../shared/data is missing and CLIPDOOR_REQUIRE_SHARED_DATA=1: put the shared data \
             folder beside the checkout (../shared/data with its README.md)"
        );
    }
    eprintln!("SKIPPED: {test}: ../shared/data not present");
    record_skip(&format!("{test}: ../shared/data not present"));
    None
}

/// Append a skipped test to `target/test-skips.txt`, which scripts/test.sh counts and prints.
pub fn record_skip(what: &str) {
    use std::io::Write;
    let path = root().join("target/test-skips.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{} {what}", env!("CARGO_CRATE_NAME"));
    }
}

/// The `clipdoor` binary built for this test run.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_clipdoor"))
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Max |a - b| of two tensors.
pub fn max_abs(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    (a.to_kind(tch::Kind::Double) - b.to_kind(tch::Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

pub fn load_st(path: &Path) -> std::collections::HashMap<String, tch::Tensor> {
    clipdoor::io::weights::SafetensorsFile::open(path)
        .unwrap()
        .tensors()
        .unwrap()
}

/// A path as `&str` (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Whether an error is the user's input (exit code 2) rather than a runtime failure.
pub fn is_input_error(e: &anyhow::Error) -> bool {
    clipdoor::error::exit_code(e) == 2
}

/// The `.png` files of a folder, sorted by name.
pub fn png_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    v.sort();
    v
}

/// Run `tests/python/<script> DIR` once per test run and return DIR: every test of the module
/// reads the reference outputs from there.
pub fn reference_dir(cell: &'static OnceLock<PathBuf>, script: &str) -> &'static Path {
    cell.get_or_init(|| {
        let dir = tmp().keep();
        run_py(script, &[dir.to_str().unwrap()]);
        dir
    })
}

/// `clipdoor encode --model M --prompts P --out O --device cpu`; callers add flags and environment.
pub fn encode_cmd(model: &str, prompts: &Path, out: &Path) -> Command {
    let mut c = bin();
    c.args([
        "encode",
        "--model",
        model,
        "--prompts",
        s(prompts),
        "--out",
        s(out),
    ])
    .args(["--device", "cpu"]);
    c
}

/// `clipdoor init-encoder --arch A --seed S --out O`; callers add flags.
pub fn init_encoder_cmd(arch: &str, seed: u64, out: &Path) -> Command {
    let mut c = bin();
    c.args([
        "init-encoder",
        "--arch",
        arch,
        "--seed",
        &seed.to_string(),
        "--out",
        s(out),
    ]);
    c
}

/// Copy a folder tree (fixtures a test then damages).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Three images of a red disc in `dir/images`, of another size than the tiny pipelines' (textual
/// inversion and the `word` slot crop and resize them): a concept to learn a word for.
pub fn disc_images(dir: &Path) -> PathBuf {
    let d = dir.join("images");
    std::fs::create_dir_all(&d).unwrap();
    for i in 0..3u32 {
        let img = image::RgbImage::from_fn(48, 40, |x, y| {
            let (dx, dy) = (x as f32 - 22.0 - i as f32, y as f32 - 20.0);
            if dx * dx + dy * dy < 120.0 {
                image::Rgb([200, 30 + 10 * i as u8, 30])
            } else {
                image::Rgb([240, 240, 240])
            }
        });
        img.save(d.join(format!("{i}.png"))).unwrap();
    }
    d
}
