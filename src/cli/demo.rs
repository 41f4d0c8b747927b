//! `clipdoor demo`: the embedded end-to-end demo on the shapes world (see `crate::demo`).
use clap::Args;
use std::path::PathBuf;

use crate::demo::{run as run_demo, DemoOptions};
use crate::error::Result;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// The shapes text-to-image model (shipped in checkpoints/shapes/).
    #[arg(long, default_value = "checkpoints/shapes")]
    pub model: PathBuf,
    #[arg(long, default_value = "checkpoints/demo")]
    pub out: PathBuf,
    #[command(flatten)]
    pub device: super::args::DeviceArgs,
    /// Start over (the trained encoder and drawn images of a previous demo are deleted).
    #[arg(long)]
    pub force: bool,
    /// A short version: fewer training steps and images (what CI runs).
    #[arg(long)]
    pub quick: bool,
}

pub fn run(a: DemoArgs) -> Result<()> {
    let paths = run_demo(&DemoOptions {
        model: a.model,
        out: a.out,
        device: a.device.device(),
        force: a.force,
        quick: a.quick,
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
