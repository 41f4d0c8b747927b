use clap::Args;

use crate::error::Result;

/// Placeholder until this command lands.
#[derive(Args, Debug)]
pub struct ScanEncoderArgs {}

pub fn run(_a: ScanEncoderArgs) -> Result<()> {
    crate::input_bail!("`clipdoor scan-encoder` is not implemented yet")
}
