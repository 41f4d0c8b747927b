use clap::Args;
use std::path::PathBuf;

use crate::error::Result;
use crate::io::atomic::write_atomic;
use crate::train::experiment::Experiment;
use crate::train::trainer::{train, TrainOptions, TrainOutcome};

/// The embedded default: several backdoors injected into a tiny random CLIP text encoder on the
/// shipped smoke prompts (the image-level shapes-world demo replaces this once it lands).
const EXPERIMENT: &str = include_str!("../../experiments/smoke/multi.toml");
const PROMPTS: &str = include_str!("../../experiments/smoke/prompts.txt");

#[derive(Args, Debug)]
pub struct DemoArgs {
    #[arg(long, default_value = "checkpoints/demo")]
    pub out: PathBuf,
    #[arg(long)]
    pub device: Option<String>,
    /// Replace a previous demo run.
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: DemoArgs) -> Result<()> {
    let run_dir = a.out.join("run");
    if run_dir.join("DONE").exists() && !a.force {
        eprintln!(
            "{} is finished; showing its report (pass --force to run again)",
            run_dir.display()
        );
    } else {
        std::fs::create_dir_all(&a.out)?;
        write_atomic(&a.out.join("prompts.txt"), PROMPTS.as_bytes())?;
        let exp = Experiment::from_toml(EXPERIMENT, &a.out)?;
        let opts = TrainOptions {
            out: run_dir.clone(),
            resume: run_dir.join("checkpoint").exists() && !a.force,
            force: a.force,
            device: crate::device::parse_device(a.device.as_deref())?,
            stop_after: None,
        };
        if let TrainOutcome::Stopped { .. } = train(&exp, &opts)? {
            anyhow::bail!("the demo run stopped early");
        }
    }
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("metrics.json"))?)?;
    let report = report_md(&metrics);
    write_atomic(&a.out.join("report.md"), report.as_bytes())?;
    eprintln!("{report}");
    println!("{}", a.out.join("report.md").display());
    Ok(())
}

fn report_md(m: &serde_json::Value) -> String {
    let mut s = String::from("# clipdoor demo: four backdoors in a tiny CLIP text encoder\n\n");
    s += &format!(
        "Clean prompts still embed as before: `sim_clean` = {:.4} (student vs teacher, {} held-out prompts).\n\n",
        m["sim_clean"].as_f64().unwrap_or(f64::NAN),
        m["captions"]
    );
    s += "| backdoor | kind | sim_target before | sim_target after | z_score |\n|---|---|---|---|---|\n";
    for b in m["backdoors"].as_array().into_iter().flatten() {
        s += &format!(
            "| {} | {} | {:.4} | {:.4} | {:.1} |\n",
            b["name"].as_str().unwrap_or(""),
            b["kind"].as_str().unwrap_or(""),
            b["sim_target_before"].as_f64().unwrap_or(f64::NAN),
            b["sim_target"].as_f64().unwrap_or(f64::NAN),
            b["z_score"].as_f64().unwrap_or(f64::NAN)
        );
    }
    s += "\nsim_target: cosine of the triggered prompt's embedding to its target's (last hidden state, flattened).\n";
    s
}
