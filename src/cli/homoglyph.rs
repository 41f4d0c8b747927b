use clap::Args;

use crate::error::Result;

/// Placeholder until the homoglyph toolkit lands.
#[derive(Args, Debug)]
pub struct HomoglyphArgs {}

pub fn run(_a: HomoglyphArgs) -> Result<()> {
    crate::input_bail!("`clipdoor homoglyph` is not implemented yet")
}
