//! `cargo install --path .` copies the binary out of the checkout: it must run from any folder with a
//! bare environment (no LIBTORCH, no LD_LIBRARY_PATH, no venv activated), finding libtorch through the
//! absolute rpath build.rs records (the set-up venv's torch/lib).
use crate::common;

use std::path::Path;
use std::process::Command;

fn bare(bin: &Path, cwd: &Path, home: &Path) -> Command {
    let mut c = Command::new(bin);
    c.current_dir(cwd)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home);
    c
}

#[test]
fn a_copied_binary_runs_from_another_folder_with_a_bare_environment() {
    let t = common::tmp();
    let bin = t.path().join("bin/clipdoor");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_clipdoor"), &bin).unwrap();
    let work = t.path().join("elsewhere");
    std::fs::create_dir_all(&work).unwrap();

    let o = bare(&bin, &work, t.path())
        .args([
            "init-encoder",
            "--arch",
            "tiny",
            "--seed",
            "3",
            "--out",
            "enc",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(work.join("p.txt"), "a red circle\n").unwrap();
    let o = bare(&bin, &work, t.path())
        .args([
            "encode",
            "--model",
            "enc",
            "--prompts",
            "p.txt",
            "--out",
            "e.safetensors",
        ])
        .args(["--device", "cpu"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e = common::load_st(&work.join("e.safetensors"));
    assert_eq!(e["last_hidden_state"].size(), vec![1, 77, 64]);

    // libtorch resolves to the set-up venv's torch, by absolute path.
    let o = bare(Path::new("/usr/bin/ldd"), &work, t.path())
        .arg(&bin)
        .output()
        .unwrap();
    let ldd = String::from_utf8_lossy(&o.stdout);
    let torch_lib = std::fs::canonicalize(common::root().join(".venv/libtorch/lib")).unwrap();
    let line = ldd
        .lines()
        .find(|l| l.contains("libtorch_cpu.so"))
        .unwrap_or_else(|| panic!("no libtorch_cpu in:\n{ldd}"));
    assert!(
        line.contains(&format!("{}/libtorch_cpu.so", torch_lib.display())),
        "{line}"
    );
}
