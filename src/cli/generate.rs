use clap::Args;

use crate::error::Result;

/// Placeholder until the diffusion pipeline lands.
#[derive(Args, Debug)]
pub struct GenerateArgs {}

pub fn run(_a: GenerateArgs) -> Result<()> {
    crate::input_bail!("`clipdoor generate` is not implemented yet")
}
