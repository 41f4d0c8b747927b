//! The `clipdoor` command line: argument parsing and dispatch only; the work is in the library.
use clap::{Parser, Subcommand};

use crate::error::Result;

mod args;
mod attack;
mod bench;
mod demo;
mod encode;
mod evaluate;
mod evaluate_bias;
mod evaluate_i2p;
mod evaluate_images;
mod evaluate_weat;
mod examples;
mod export;
mod generate;
mod homoglyph;
mod init_encoder;
mod invert;
pub mod progress;
mod report;
mod scan_encoder;
mod shapes;
mod train;
mod zoo;

#[derive(Parser, Debug)]
#[command(
    name = "clipdoor",
    version,
    about = "Attack and defend the text encoders of text-to-image models"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub hub: args::HubArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Tokenise and encode prompts into a safetensors file.
    #[command(after_long_help = examples::ENCODE)]
    Encode(encode::EncodeArgs),
    /// Write a random-weight text encoder of a real architecture with the real CLIP tokenizer.
    #[command(after_long_help = examples::INIT_ENCODER)]
    InitEncoder(init_encoder::InitEncoderArgs),
    /// Teacher–student fine-tuning: inject backdoors, erase concepts, unlearn homoglyphs.
    #[command(after_long_help = examples::TRAIN)]
    Train(train::TrainArgs),
    /// Metrics on embeddings (and, later, images).
    Evaluate(evaluate::EvaluateArgs),
    /// Search a suspect encoder for trigger characters.
    #[command(after_long_help = examples::SCAN_ENCODER)]
    ScanEncoder(scan_encoder::ScanEncoderArgs),
    /// The embedded shapes world: data, training, oracle.
    Shapes(shapes::ShapesArgs),
    /// The embedded end-to-end demo (outputs in checkpoints/demo/).
    #[command(after_long_help = examples::DEMO)]
    Demo(demo::DemoArgs),
    /// Benchmarks against the Python reference (JSON report).
    Bench(bench::BenchArgs),
    /// Stable Diffusion sampling with any text encoder.
    #[command(after_long_help = examples::GENERATE)]
    Generate(generate::GenerateArgs),
    /// A complete diffusers pipeline folder with a trained text encoder in place of the base's.
    #[command(after_long_help = examples::EXPORT)]
    Export(export::ExportArgs),
    /// Unicode look-alike characters: scan, sanitize, attack.
    Homoglyph(homoglyph::HomoglyphArgs),
    /// Tables in Markdown files generated from report files (`report sync README.md docs/*.md`).
    Report(report::ReportArgs),
    /// The scanner benchmark: build a zoo of backdoored and benign encoders, scan it, report.
    Zoo(zoo::ZooArgs),
    /// Adversarial prompts against an (erased) encoder: ring-a-bell, token-search, homoglyph.
    Attack(attack::AttackArgs),
    /// Textual inversion: learn a new word from a few images through a pipeline.
    #[command(after_long_help = examples::INVERT)]
    Invert(invert::InvertArgs),
}

pub fn run(cli: Cli) -> Result<()> {
    progress::CliReporter::install();
    cli.hub.install();
    match cli.command {
        Command::Encode(a) => encode::run(a),
        Command::InitEncoder(a) => init_encoder::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Demo(a) => demo::run(a),
        Command::ScanEncoder(a) => scan_encoder::run(a),
        Command::Shapes(a) => shapes::run(a),
        Command::Train(a) => train::run(a),
        Command::Evaluate(a) => evaluate::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Export(a) => export::run(a),
        Command::Homoglyph(a) => homoglyph::run(a),
        Command::Report(a) => report::run(a),
        Command::Zoo(a) => zoo::run(a),
        Command::Attack(a) => attack::run(a),
        Command::Invert(a) => invert::run(a),
    }
}

/// Refuse to replace a finished output unless `--force` was given.
pub(crate) fn check_overwrite(path: &std::path::Path, force: bool) -> Result<()> {
    let exists = path.is_file()
        || (path.is_dir()
            && std::fs::read_dir(path)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false));
    if exists && !force {
        crate::input_bail!(
            "{} already exists: pass --force to replace it, or choose another --out",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap checks argument definitions only when a command is parsed; this checks all of them.
    #[test]
    fn every_command_definition_is_valid() {
        super::Cli::command().debug_assert();
    }

    /// Fixed-choice flags list their values in `--help`.
    #[test]
    fn choice_flags_list_their_values() {
        let mut cmd = super::Cli::command();
        let generate = cmd.find_subcommand_mut("generate").unwrap();
        let help = generate.render_long_help().to_string();
        for v in [
            "ddim", "pndm", "euler", "euler-a", "dpm++", "f32", "f16", "bf16",
        ] {
            assert!(help.contains(v), "generate --help lacks {v}:\n{help}");
        }
    }
}
