//! `clipdoor report sync FILE... [--check]`: rewrite the tables of Markdown files from the report
//! files their `<!-- table: KIND PATH -->` markers name (see `crate::eval::report::tables`).
use clap::{Args, Subcommand};
use std::path::PathBuf;

use crate::error::Result;
use crate::eval::report::tables::sync_file;

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub command: ReportCommand,
}

#[derive(Subcommand, Debug)]
pub enum ReportCommand {
    /// Rewrite every marked table of the Markdown files from its report (README.md, docs/*.md).
    #[command(after_long_help = super::examples::REPORT_SYNC)]
    Sync(SyncArgs),
}

#[derive(Args, Debug)]
pub struct SyncArgs {
    /// Markdown files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Change nothing; fail (exit 1) when a table differs from its report.
    #[arg(long)]
    pub check: bool,
}

pub fn run(a: ReportArgs) -> Result<()> {
    let ReportCommand::Sync(a) = a.command;
    let mut stale = vec![];
    for f in &a.files {
        if sync_file(f, a.check)? {
            stale.push(f.display().to_string());
            println!("{}", f.display());
        }
    }
    if a.check && !stale.is_empty() {
        anyhow::bail!(
            "tables out of date with their reports in {}: run `clipdoor report sync {}`",
            stale.join(", "),
            stale.join(" ")
        );
    }
    Ok(())
}
