//! `clipdoor evaluate weat`: the Word Embedding Association Test on an encoder's pooled output
//! (homoglyph presets or your own four sets), before/after for a trained run. See docs/bias.md.
use clap::Args;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::eval::weat::presets::{presets, read_set, WeatWords};
use crate::eval::weat::report::{WeatReport, WeatRun};
use crate::eval::weat::{DEFAULT_SAMPLES, DEFAULT_SEED};
use crate::experiment::Experiment;
use crate::input_bail;
use crate::models::text_encoder::TextEncoder;

#[derive(Args, Debug)]
pub struct WeatArgs {
    /// The encoder under test: a clipdoor run folder, a text-encoder folder, a cached hub id, or
    /// random:ARCH[:SEED].
    #[arg(long)]
    pub encoder: String,
    /// Homoglyph test of the reference: greek, cyrillic, arabic, korean (or hangul), african, or all
    /// (repeat or comma-separate). Targets: the culture's words vs Western words; attributes: the
    /// script's characters vs Latin letters.
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(["greek", "cyrillic", "arabic", "korean", "hangul", "african", "all"]))]
    pub preset: Vec<String>,
    /// Your own target sets X and Y: two text files, one word or prompt per line.
    #[arg(long, num_args = 2, value_names = ["X", "Y"], requires = "attributes")]
    pub targets: Vec<PathBuf>,
    /// Your own attribute sets A and B: two text files, one word or prompt per line.
    #[arg(long, num_args = 2, value_names = ["A", "B"], requires = "targets")]
    pub attributes: Vec<PathBuf>,
    /// Name of the test given by --targets/--attributes in the report.
    #[arg(long, default_value = "custom")]
    pub name: String,
    /// The same tests on this encoder too (before/after). Default for a clipdoor run folder: the
    /// teacher of its experiment.toml.
    #[arg(long, conflicts_with = "no_baseline")]
    pub baseline: Option<String>,
    /// Do not test a run folder's teacher.
    #[arg(long)]
    pub no_baseline: bool,
    /// Partitions sampled when the exact permutation test would need more.
    #[arg(long, default_value_t = DEFAULT_SAMPLES)]
    pub samples: usize,
    /// Seed of the sampled permutations (NumPy's legacy stream; the reference uses 1).
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u32,
    #[command(flatten)]
    pub embed: super::args::EmbedArgs,
    /// The report (JSON); a Markdown table is written beside it (same name, .md).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub force: super::args::ForceArgs,
}

/// The teacher of a clipdoor run folder (`experiment.toml` beside `text_encoder/`), if it is one.
fn run_teacher(encoder: &str) -> Result<Option<String>> {
    let exp = Path::new(encoder).join("experiment.toml");
    if !exp.is_file() {
        return Ok(None);
    }
    Ok(Some(Experiment::load(&exp)?.model.teacher))
}

pub fn run(a: WeatArgs) -> Result<()> {
    let mut tests: Vec<WeatWords> = presets(&a.preset)?;
    if !a.targets.is_empty() {
        tests.push(WeatWords {
            name: a.name.clone(),
            x: read_set(&a.targets[0])?,
            y: read_set(&a.targets[1])?,
            a: read_set(&a.attributes[0])?,
            b: read_set(&a.attributes[1])?,
        });
    }
    if tests.is_empty() {
        input_bail!(
            "nothing to test: give --preset NAME (or all) and/or --targets X Y --attributes A B"
        );
    }
    if a.samples == 0 {
        input_bail!("--samples must be at least 1");
    }
    let md = a.out.with_extension("md");
    a.force.check(&a.out)?;
    let baseline = match (&a.baseline, a.no_baseline) {
        (Some(b), _) => Some(b.clone()),
        (None, false) => run_teacher(&a.encoder)?,
        (None, true) => None,
    };
    let device = a.embed.device.device();
    let encoder = TextEncoder::load(&a.encoder, device, tch::Kind::Float)?;
    let base = baseline
        .as_deref()
        .map(|b| TextEncoder::load(b, device, tch::Kind::Float))
        .transpose()?;
    let bar = crate::progress::task("WEAT tests", tests.len() as u64);
    let report = WeatReport::run(
        &WeatRun {
            encoder: (&a.encoder, &encoder),
            baseline: baseline.as_deref().zip(base.as_ref()),
            tests: &tests,
            batch: a.embed.batch_size,
            samples: a.samples,
            seed: a.seed,
        },
        &mut |_| bar.inc(1),
    )?;
    bar.finish();
    let markdown = report.to_markdown();
    crate::io::atomic::write_atomic(&md, markdown.as_bytes())?;
    crate::io::atomic::write_json(&a.out, &report)?;
    eprint!("{markdown}");
    println!("{}", a.out.display());
    Ok(())
}
