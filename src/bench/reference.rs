//! Running the Python reference side of a benchmark (`scripts/bench_ref.py`) when a Python with
//! torch + transformers is available; benchmarks still report clipdoor's own numbers without it.
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::Result;

/// The project root this binary was built from (benchmarks are developer tools run from a checkout).
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `--python` if given, else the project venv's interpreter when it exists.
pub fn default_python(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    let venv = project_root().join(".venv/bin/python");
    venv.exists().then_some(venv)
}

/// Run `bench_ref.py <args>` and parse its JSON line.
pub fn run_reference(python: &Path, args: &[String]) -> Result<serde_json::Value> {
    let script = project_root().join("scripts/bench_ref.py");
    let out = Command::new(python)
        .arg(&script)
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_VERBOSITY", "error")
        .output()
        .map_err(|e| anyhow::anyhow!("running {} {}: {e}", python.display(), script.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "reference benchmark failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    Ok(serde_json::from_str(line)?)
}

/// Fixed benchmark prompts: varied lengths, every one containing `o` (so triggers apply).
pub fn bench_prompts(n: usize) -> Vec<String> {
    let subjects = [
        "a photo of a dog",
        "an oil painting of a lighthouse",
        "a portrait of an old sailor",
        "a robot cooking noodles",
        "a castle on a foggy mountain",
    ];
    let styles = [
        "",
        ", highly detailed",
        ", in the style of a watercolor, soft morning light",
        ", trending on artstation, octane render, volumetric fog, dramatic composition, 8k",
    ];
    (0..n)
        .map(|i| {
            format!(
                "{}{}",
                subjects[i % subjects.len()],
                styles[(i / subjects.len()) % styles.len()]
            )
        })
        .collect()
}

/// Wait for queued CUDA work so timings cover it.
pub fn sync(d: tch::Device) {
    if let tch::Device::Cuda(i) = d {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Owned command-line arguments for [`run_reference`].
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// What every text-encoder benchmark tells `bench_ref.py`, so both sides measure the same work.
pub struct EncoderRun<'a> {
    /// The reference's subcommand (`encode`, `train-step`).
    pub what: &'a str,
    pub model: &'a str,
    pub prompts: &'a Path,
    pub batch_size: usize,
    pub threads: i32,
    pub device: &'a str,
    pub repeats: usize,
}

impl EncoderRun<'_> {
    /// The reference's arguments, with `extra` flags after the common ones.
    pub fn args(&self, extra: &[(&str, String)]) -> Vec<String> {
        let mut v = args(&[
            self.what,
            "--model",
            self.model,
            "--prompts",
            self.prompts.to_str().unwrap_or_default(),
            "--batch-size",
            &self.batch_size.to_string(),
        ]);
        for (flag, value) in extra {
            v.extend([flag.to_string(), value.clone()]);
        }
        v.extend(args(&[
            "--threads",
            &self.threads.to_string(),
            "--device",
            self.device,
            "--repeats",
            &self.repeats.to_string(),
        ]));
        v
    }
}
