//! `clipdoor demo`: the embedded end-to-end demo on the shapes world (see `crate::demo`).
use clap::Args;
use std::path::PathBuf;

use crate::demo::{run as run_demo, DemoOptions, DemoSize};
use crate::error::Result;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// The shapes text-to-image model (shipped in checkpoints/shapes/).
    #[arg(long, default_value = "checkpoints/shapes")]
    pub model: PathBuf,
    /// Output folder: the trained encoder, the drawn images, report.{md,html,json} and grid.png.
    #[arg(long, default_value = "checkpoints/demo")]
    pub out: PathBuf,
    #[command(flatten)]
    pub device: super::args::DeviceArgs,
    /// Start over (the trained encoder and drawn images of a previous demo are deleted).
    #[arg(long)]
    pub force: bool,
    /// A short version: 24 images per set instead of 96 (what CI runs); the same training.
    #[arg(long, conflicts_with = "full")]
    pub quick: bool,
    /// The full version: 160 images per set.
    #[arg(long)]
    pub full: bool,
    /// Another shapes experiment instead of the built-in experiments/shapes_demo.toml (e.g.
    /// experiments/shapes_tpa32.toml); its own [evaluation] image counts hold unless --quick/--full.
    #[arg(long)]
    pub experiment: Option<PathBuf>,
}

pub fn run(a: DemoArgs) -> Result<()> {
    let paths = run_demo(&DemoOptions {
        model: a.model,
        out: a.out,
        device: a.device.device(),
        force: a.force,
        size: match (a.quick, a.full, &a.experiment) {
            (true, _, _) => Some(DemoSize::Quick),
            (_, true, _) => Some(DemoSize::Full),
            (_, _, Some(_)) => None,
            _ => Some(DemoSize::Default),
        },
        experiment: a.experiment,
    })?;
    if let Ok(md) = std::fs::read_to_string(&paths[1]) {
        // The results table: everything up to the image galleries.
        let summary = md.split("\n## Overview").next().unwrap_or(&md);
        eprintln!("{summary}");
    }
    for p in paths {
        println!("{}", p.display());
    }
    Ok(())
}
