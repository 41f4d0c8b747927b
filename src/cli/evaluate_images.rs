//! `clipdoor evaluate images` (stub: being written).
use clap::Args;
use std::path::PathBuf;

use crate::error::Result;

#[derive(Args, Debug)]
pub struct ImagesArgs {
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(_a: ImagesArgs) -> Result<()> {
    anyhow::bail!("evaluate images is not implemented yet")
}
