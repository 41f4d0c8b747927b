//! `clipdoor evaluate i2p` and `clipdoor evaluate merge` (stub: being written).
use clap::Args;
use std::path::PathBuf;

use crate::error::Result;

#[derive(Args, Debug)]
pub struct I2pArgs {
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(_a: I2pArgs) -> Result<()> {
    anyhow::bail!("evaluate i2p is not implemented yet")
}

pub fn merge(_a: MergeArgs) -> Result<()> {
    anyhow::bail!("evaluate merge is not implemented yet")
}
