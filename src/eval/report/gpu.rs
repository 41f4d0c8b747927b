//! The GPU-check table (`<!-- table: gpu gpu_check.json -->`): what `scripts/gpu_check.sh` measured
//! on a GPU — per precision, the paper's target-prompt attack at ViT-L/14 size, clipdoor next to the
//! plain-PyTorch loop (end to end and training alone), the backdoor's effect and peak GPU memory; then
//! the SD 1.5-size denoising step next to diffusers; then, where the check profiled a training step,
//! its phases next to transformers' (the `bench` table). A precision that failed shows clipdoor's error.
use serde_json::Value;

use crate::error::Result;
use crate::input_bail;

fn secs(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |v| format!("{v:.1}"))
}

fn ratio(theirs: &Value, ours: &Value) -> String {
    match (theirs.as_f64(), ours.as_f64()) {
        (Some(t), Some(o)) if o > 0.0 => format!("{:.2}×", t / o),
        _ => "–".into(),
    }
}

fn mib(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |v| format!("{v:.0}"))
}

/// The Markdown table of a `gpu_check.json`.
pub fn gpu_table(doc: &Value) -> Result<String> {
    if doc["warmup"].is_array() {
        return Ok(warmup_table(doc));
    }
    let Some(tpa) = doc["tpa"].as_object() else {
        input_bail!("not a scripts/gpu_check.sh report (no `tpa`)");
    };
    let gpu = doc["gpu"].as_str().unwrap_or("?");
    let torch = doc["torch_version"].as_str().unwrap_or("?");
    let mut out = format!(
        "| {gpu}, torch {torch} | wall s, clipdoor | wall s, PyTorch | speed ratio, end to end | train s, clipdoor | train s, PyTorch | speed ratio, training | sim_target, clipdoor (sim_clean: clipdoor / PyTorch) | peak GPU MiB (clipdoor, nvidia-smi / PyTorch, torch) | checkpoint s, clipdoor (not in train s) |\n|---|---|---|---|---|---|---|---|---|---|\n"
    );
    // Precisions in the order the check ran them where known (JSON objects come back sorted).
    let mut names: Vec<&String> = tpa.keys().collect();
    let order = ["f32", "tf32", "bf16", "f16"];
    names.sort_by_key(|n| order.iter().position(|o| o == n).unwrap_or(order.len()));
    for name in names {
        let r = &tpa[name.as_str()];
        if let Some(why) = r["failed"].as_str().or(r["skipped"].as_str()) {
            let first = why.lines().next().unwrap_or(why).replace('|', "\\|");
            out += &format!("| attack, {name} | failed: {first} | | | | | | | | |\n");
            continue;
        }
        let (ours, theirs) = (&r["clipdoor"], &r["pytorch"]);
        let sim = ours["sim_target"]
            .as_object()
            .and_then(|m| m.values().next())
            .and_then(Value::as_f64)
            .map_or("–".into(), |v| format!("{v:.3}"));
        out += &format!(
            "| attack, {name} | {} | {} | {} | {} | {} | {} | {sim} (sim_clean {:.3} / {:.3}) | {} / {} | {} |\n",
            secs(&ours["wall_seconds"]),
            secs(&theirs["wall_seconds"]),
            ratio(&theirs["wall_seconds"], &ours["wall_seconds"]),
            secs(&ours["train_seconds"]),
            secs(&theirs["train_seconds"]),
            ratio(&theirs["train_seconds"], &ours["train_seconds"]),
            ours["sim_clean"].as_f64().unwrap_or(f64::NAN),
            theirs["sim_clean"].as_f64().unwrap_or(f64::NAN),
            mib(&ours["peak_gpu_memory_mib_nvidia_smi"]),
            mib(&theirs["peak_gpu_memory_mib"]),
            // Reports from before `training.checkpoint_seconds` existed: "–" (their train s hold it).
            secs(&ours["checkpoint_seconds"]),
        );
    }
    let d = &doc["denoise"]["report"];
    // A check run with `--parts profile` measured neither: no empty table above the profiles.
    if tpa.is_empty() && !d.is_object() {
        out.clear();
    }
    if d.is_object() {
        let ms = |v: &Value| {
            v.as_f64()
                .map_or("–".into(), |v| format!("{:.1} ms", v * 1e3))
        };
        out += &format!(
            "| SD 1.5-size denoising step, {} | {} per step | {} per step (diffusers) | {} | | | | | {} / {} | |\n",
            d["dtype"].as_str().unwrap_or("?"),
            ms(&d["clipdoor_s_per_step"]),
            ms(&d["diffusers_s_per_step"]),
            ratio(&d["diffusers_s_per_step"], &d["clipdoor_s_per_step"]),
            mib(&doc["denoise"]["peak_gpu_memory_mib_nvidia_smi"]),
            mib(&d["reference"]["cuda_max_allocated_mib"]),
        );
    }
    // The train-step profiles, where the check ran them: the bench table of each report below. Reports
    // from before the profile ran per precision hold one (f32) as `train_step.report`.
    let profiles = &doc["train_step"];
    if profiles["report"].is_object() {
        out += "\n";
        out += &super::bench_table::bench_table(&profiles["report"])?;
    } else if let Some(by_precision) = profiles.as_object() {
        let mut names: Vec<&String> = by_precision.keys().collect();
        names.sort_by_key(|n| order.iter().position(|o| o == n).unwrap_or(order.len()));
        for name in names {
            let r = &by_precision[name.as_str()];
            out += &format!("\nTraining step at the attack's batch, {name}:\n");
            match r["failed"].as_str().or(r["skipped"].as_str()) {
                Some(why) => out += &format!("{}\n", why.replace('|', "\\|")),
                None => {
                    out += "\n";
                    out += &super::bench_table::bench_table(&r["report"])?;
                }
            }
        }
    }
    Ok(out.trim_start_matches('\n').to_string())
}

/// `scripts/gpu_warmup.sh`'s runs (the attack at two step counts per precision): training seconds
/// (the final checkpoint apart), then per precision the cost of a step (the difference over the
/// extra steps) and what is left, the fixed cost of the first steps.
fn warmup_table(doc: &Value) -> String {
    let rows = doc["warmup"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let gpu = doc["gpu"].as_str().unwrap_or("?");
    let mut out = format!(
        "| {gpu}, precision | steps | train s (checkpoint apart) | checkpoint s | wall s (launch to saved encoder) |\n|---|---|---|---|---|\n"
    );
    for r in rows {
        out += &format!(
            "| {} | {} | {} | {} | {} |\n",
            r["precision"].as_str().unwrap_or("?"),
            r["steps"],
            secs(&r["train_seconds"]),
            secs(&r["checkpoint_seconds"]),
            secs(&r["wall_seconds"]),
        );
    }
    let mut seen: Vec<&str> = vec![];
    for r in rows {
        let p = r["precision"].as_str().unwrap_or("?");
        if seen.contains(&p) {
            continue;
        }
        seen.push(p);
        let mut runs: Vec<(f64, f64)> = rows
            .iter()
            .filter(|x| x["precision"].as_str() == Some(p))
            .filter_map(|x| Some((x["steps"].as_f64()?, x["train_seconds"].as_f64()?)))
            .collect();
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        if let (Some(&(n0, t0)), Some(&(n1, t1))) = (runs.first(), runs.last()) {
            if n1 > n0 {
                let per_step = (t1 - t0) / (n1 - n0);
                out += &format!(
                    "| {p}: per step (difference) | | {:.1} ms | | |\n| {p}: fixed (first steps) | | {:.2} s | | |\n",
                    per_step * 1e3,
                    t0 - n0 * per_step
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_per_precision_in_run_order_failures_and_the_denoising_step() {
        let doc = json!({
            "gpu": "NVIDIA H200", "torch_version": "2.11.0",
            "tpa": {
                "tf32": {"clipdoor": {"wall_seconds": 15.0, "train_seconds": 10.0, "sim_clean": 0.99,
                                      "sim_target": {"t": 0.976}, "peak_gpu_memory_mib_nvidia_smi": 13403.0,
                                      "checkpoint_seconds": 4.53},
                         "pytorch": {"wall_seconds": 36.0, "train_seconds": 6.7, "sim_clean": 0.993,
                                     "peak_gpu_memory_mib": 11292.7}},
                "f32": {"failed": "error: boom | bang\nmore"}
            },
            "denoise": {"report": {"dtype": "float16", "clipdoor_s_per_step": 0.0132,
                                   "diffusers_s_per_step": 0.026, "reference": {"cuda_max_allocated_mib": 1815.9}},
                        "peak_gpu_memory_mib_nvidia_smi": 6807.0}
        });
        let t = gpu_table(&doc).unwrap();
        let rows: Vec<&str> = t.lines().collect();
        assert_eq!(rows.len(), 5, "{t}");
        assert!(
            rows[2].starts_with("| attack, f32 | failed: error: boom \\| bang |"),
            "{t}"
        );
        assert!(
            rows[3].contains("| 15.0 | 36.0 | 2.40× | 10.0 | 6.7 | 0.67× | 0.976")
                && rows[3].ends_with("| 13403 / 11293 | 4.5 |"),
            "{t}"
        );
        assert!(
            rows[4].contains("13.2 ms per step | 26.0 ms per step (diffusers) | 1.97×"),
            "{t}"
        );
        assert!(gpu_table(&json!({"x": 1})).is_err());
        let mut with_profile = doc.clone();
        with_profile["train_step"] = json!({"part": "train_step", "report": {
            "benchmark": "train-step", "clipdoor_seconds_per_step": 0.08, "pytorch_seconds_per_step": 0.04,
            "clipdoor_phase_seconds_per_step": {"backward": 0.03}, "reference": {"phase_seconds_per_step": {"backward": 0.02}}}});
        let t = gpu_table(&with_profile).unwrap();
        assert!(
            t.contains("\n\n| seconds per step | clipdoor | PyTorch |"),
            "{t}"
        );
        assert!(t.contains("| whole step | 0.08 | 0.04 | 0.50× |"), "{t}");
        // One profile per precision, in run order, a skipped one said so.
        let mut per_precision = doc.clone();
        let report = with_profile["train_step"]["report"].clone();
        per_precision["train_step"] = json!({
            "bf16": {"part": "train_step", "precision": "bf16", "report": report},
            "f32": {"part": "train_step", "precision": "f32", "skipped": "time budget"},
        });
        per_precision["tpa"] = json!({});
        per_precision["denoise"] = Value::Null;
        let t = gpu_table(&per_precision).unwrap();
        assert!(
            t.starts_with("Training step at the attack's batch, f32:"),
            "{t}"
        );
        let f32_at = t.find("batch, f32:\ntime budget\n").expect(&t);
        let bf16_at = t.find("batch, bf16:\n\n| seconds per step").expect(&t);
        assert!(f32_at < bf16_at, "{t}");
        // Two step counts per precision: the step's cost is the difference, the rest fixed.
        let warm = json!({"gpu": "H200", "warmup": [
            {"precision": "bf16", "steps": 10, "train_seconds": 1.9, "checkpoint_seconds": 3.7, "wall_seconds": 9.9},
            {"precision": "bf16", "steps": 100, "train_seconds": 5.5, "checkpoint_seconds": 3.8, "wall_seconds": 12.8}]});
        let t = gpu_table(&warm).unwrap();
        assert!(t.contains("| bf16 | 100 | 5.5 | 3.8 | 12.8 |"), "{t}");
        assert!(
            t.contains("| bf16: per step (difference) | | 40.0 ms |"),
            "{t}"
        );
        assert!(
            t.contains("| bf16: fixed (first steps) | | 1.50 s |"),
            "{t}"
        );
    }
}
