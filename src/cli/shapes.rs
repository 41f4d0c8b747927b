use clap::Args;

use crate::error::Result;

/// Placeholder until this command lands.
#[derive(Args, Debug)]
pub struct ShapesArgs {}

pub fn run(_a: ShapesArgs) -> Result<()> {
    crate::input_bail!("`clipdoor shapes` is not implemented yet")
}
