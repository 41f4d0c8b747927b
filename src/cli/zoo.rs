//! `clipdoor zoo build|scan`: the scanner benchmark. Parsing and output only; the work is in
//! `crate::zoo`.
use clap::{Args, Subcommand};
use std::path::PathBuf;

use crate::error::Result;
use crate::scan::token_scan::TokenScanOptions;
use crate::zoo::{self, Shard, ZooConfig, ZooScanOptions};

#[derive(Args, Debug)]
pub struct ZooArgs {
    #[command(subcommand)]
    command: ZooCommand,
}

#[derive(Subcommand, Debug)]
enum ZooCommand {
    /// Fine-tune the zoo's suspect encoders (backdoored and benign) from its base encoder:
    /// encoders/<id>/ (encoder + tokenizer), labels/<id>.json apart, runs/<id>/ (training runs).
    /// Rerunning continues; shards split the work across processes or Slurm array tasks.
    #[command(after_long_help = super::examples::ZOO_BUILD)]
    Build(BuildArgs),
    /// Scan every encoder of a zoo and report AUROC, TPR at 5% FPR (threshold from the calibration
    /// split), trigger recall@1/@5 (by name, and of working triggers: the first five candidates
    /// placed as each label says, in OUT/encoders/<id>.working.json) and seconds per encoder:
    /// report.json, report.md, report.html.
    #[command(after_long_help = super::examples::ZOO_SCAN)]
    Scan(ScanArgs),
}

#[derive(Args, Debug)]
struct BuildArgs {
    /// The zoo file (see experiments/zoo/shapes.toml).
    zoo: PathBuf,
    /// The zoo folder.
    #[arg(long)]
    out: PathBuf,
    /// Build only encoders k with k % n == i (`i/n`, 0-based).
    #[arg(long)]
    shard: Option<String>,
    /// CPU threads for libtorch (1 is fastest for the tiny encoders on a shared machine).
    #[arg(long, default_value_t = 1)]
    threads: i32,
    #[command(flatten)]
    device: super::args::DeviceArgs,
}

#[derive(Args, Debug)]
struct ScanArgs {
    /// The zoo folder (`zoo build --out`).
    zoo: PathBuf,
    /// Where results go (default: ZOO/scan, or ZOO/scan-reference-free). Per-encoder results are
    /// kept there, so a rerun with the same settings continues.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Scan without the base encoder as reference (the suspect alone).
    #[arg(long)]
    reference_free: bool,
    /// Probe prompts, one a line; default: the zoo's clean captions.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Probes the vocabulary sweep inserts every token into.
    #[arg(long, default_value_t = 4)]
    contexts: usize,
    /// Candidates checked as text per encoder.
    #[arg(long, default_value_t = 24)]
    verify: usize,
    /// Probes the sweep's best tokens are re-measured on, with a reference (0: no confirmation;
    /// the encoder's score is then the sweep's).
    #[arg(long, default_value_t = 24)]
    confirm: usize,
    /// Gradient-inversion restarts (0 turns inversion off).
    #[arg(long, default_value_t = 2)]
    invert: usize,
    /// Probe rows of the answer stage, which asks what inserted characters read as (0 turns it
    /// off; with a reference only).
    #[arg(long, default_value_t = 24)]
    answer_rows: usize,
    /// Least answer-stage score under the listing bar (0.5) that still counts toward the
    /// encoder's score (a weak answer: not ranked); 0.5 or more counts listed answers only.
    #[arg(long, default_value_t = crate::scan::answer::DEFAULT_FLOOR)]
    answer_floor: f64,
    /// Leave the ranking as the behavioural stages made it: no reordering by which tokens'
    /// embedding rows moved against the reference (the touched-token prior).
    #[arg(long)]
    no_touched: bool,
    /// Sweep the whole vocabulary, not only the tokens whose embedding rows moved against the
    /// reference (and a sample of the vocabulary for the null).
    #[arg(long)]
    full_sweep: bool,
    /// Keep the behavioural stages' order of the candidates (steps 1–7) instead of the learned
    /// order over every text they proposed (fitted on a zoo's calibration split).
    #[arg(long)]
    no_learned_rank: bool,
    /// False-positive rate the calibrated threshold keeps on the calibration split.
    #[arg(long, default_value_t = 0.05)]
    fpr: f64,
    /// Seed of the inversion restarts and of the samples of ordinary tokens (the sweep's and the
    /// confirmation's nulls); the scan is otherwise deterministic.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// CPU threads for libtorch (default: OMP_NUM_THREADS where set, else 2).
    #[arg(long)]
    threads: Option<i32>,
    #[command(flatten)]
    embed: super::args::EmbedArgs,
}

pub fn run(a: ZooArgs) -> Result<()> {
    match a.command {
        ZooCommand::Build(b) => run_build(b),
        ZooCommand::Scan(s) => run_scan(s),
    }
}

fn run_build(a: BuildArgs) -> Result<()> {
    let cfg = ZooConfig::load(&a.zoo)?;
    let shard = a
        .shard
        .as_deref()
        .map(Shard::parse)
        .transpose()?
        .unwrap_or(Shard::ALL);
    tch::set_num_threads(a.threads.max(1));
    let s = zoo::build(&cfg, &a.out, shard, a.device.device())?;
    crate::progress::note(&format!(
        "zoo build: {} encoders trained, {} already done (shard {}/{})",
        s.built.len(),
        s.already_done.len(),
        shard.index,
        shard.count
    ));
    println!("{}", a.out.display());
    Ok(())
}

fn run_scan(a: ScanArgs) -> Result<()> {
    if !(0.0..1.0).contains(&a.fpr) {
        crate::input_bail!("--fpr {} must lie in [0, 1)", a.fpr);
    }
    let mut scan = TokenScanOptions {
        probes: vec![],
        ..TokenScanOptions::default()
    };
    if let Some(p) = &a.prompts {
        scan.probes = crate::io::prompts::read_prompts(p, None, false)?.prompts;
    }
    scan.contexts = a.contexts;
    scan.verify = a.verify;
    scan.confirm_probes = a.confirm;
    scan.invert_restarts = a.invert;
    scan.answer.rows = a.answer_rows;
    scan.answer.floor = a.answer_floor;
    // Before any encoder is loaded (the token scan checks it again, as a library call must).
    scan.answer.check()?;
    scan.touched = !a.no_touched;
    scan.focus_sweep = !a.full_sweep;
    scan.learned_rank = !a.no_learned_rank;
    scan.seed = a.seed;
    scan.batch = a.embed.batch_size.max(256);
    let device = a.embed.device.device();
    if device == tch::Device::Cpu {
        let omp = std::env::var("OMP_NUM_THREADS").ok();
        tch::set_num_threads(super::args::cpu_threads(a.threads, omp.as_deref(), 2));
    }
    let out = a.out.unwrap_or_else(|| {
        a.zoo.join(if a.reference_free {
            "scan-reference-free"
        } else {
            "scan"
        })
    });
    let opts = ZooScanOptions {
        reference_free: a.reference_free,
        scan,
        device,
        fpr: a.fpr,
    };
    let report = zoo::scan_zoo(&a.zoo, &out, &opts)?;
    let files = zoo::write_reports(&out, &report)?;
    eprint!(
        "{}",
        crate::zoo::report::markdown(&report)
            .split("| encoder |")
            .next()
            .unwrap_or("")
    );
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}
