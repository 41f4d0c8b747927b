use clap::Args;
use std::path::PathBuf;

use crate::error::Result;
use crate::experiment::Experiment;
use crate::train::trainer::{train, TrainOptions, TrainOutcome};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Experiment TOML (see experiments/).
    pub experiment: PathBuf,
    /// Run folder (default: checkpoints/<experiment name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue an interrupted run from its checkpoint/.
    #[arg(long)]
    pub resume: bool,
    /// Replace a finished or unfinished run in --out.
    #[arg(long)]
    pub force: bool,
    /// Override the experiment's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub device: super::args::DeviceArgs,
    /// Stop after this many steps with a checkpoint, as if interrupted (continue with --resume).
    #[arg(long)]
    pub stop_after: Option<u64>,
}

pub fn run(a: TrainArgs) -> Result<()> {
    let mut exp = Experiment::load(&a.experiment)?;
    if let Some(s) = a.seed {
        exp.seed = s;
    }
    let out = a.out.unwrap_or_else(|| {
        let stem = a
            .experiment
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        PathBuf::from("checkpoints").join(stem)
    });
    let opts = TrainOptions {
        out: out.clone(),
        resume: a.resume,
        force: a.force,
        device: a.device.device(),
        stop_after: a.stop_after,
    };
    match train(&exp, &opts)? {
        TrainOutcome::Finished { metrics, seconds } => {
            eprintln!(
                "trained in {seconds:.1}s; sim_clean {:.4}",
                metrics.sim_clean
            );
            for m in &metrics.backdoors {
                eprintln!(
                    "  {} ({}): sim_target {:.4} (before {:.4}), z_score {:.2}",
                    m.name, m.kind, m.sim_target, m.sim_target_before, m.z_score
                );
            }
        }
        TrainOutcome::Stopped { step } => {
            eprintln!("stopped after step {step}; continue with --resume")
        }
    }
    println!("{}", out.display());
    Ok(())
}
