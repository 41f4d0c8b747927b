//! `clipdoor scan-encoder`: trigger search (`--suspect [--reference]`) and the defense report
//! (`scan-encoder defense --run RUN...`). Parsing and output only; the work is in `crate::scan`.
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use tch::Kind;

use crate::error::Result;
use crate::input_err;
use crate::models::text_encoder::TextEncoder;
use crate::scan::{self, probes, ScanOptions, ScanReport, Source};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ScanEncoderArgs {
    #[command(subcommand)]
    command: Option<ScanEncoderCommand>,
    #[command(flatten)]
    scan: TriggerScanArgs,
}

#[derive(Subcommand, Debug)]
enum ScanEncoderCommand {
    /// Attack success with and without prompt sanitisation (backdoor runs), homoglyph-to-Latin
    /// similarity before and after unlearning (homoglyph_unlearn runs): one Markdown + JSON table.
    #[command(after_long_help = super::examples::SCAN_ENCODER_DEFENSE)]
    Defense(DefenseArgs),
}

#[derive(Args, Debug)]
struct TriggerScanArgs {
    /// The encoder under suspicion: a folder, a clipdoor run folder, a pipeline folder or a hub id.
    #[arg(long, required = true)]
    suspect: Option<String>,
    /// The encoder it claims to be (same forms, or `random:tiny:SEED`). Without it, only characters
    /// that collapse different prompts onto one embedding are flagged.
    #[arg(long)]
    reference: Option<String>,
    /// Candidate sets, comma-separated: confusables (every UTS #39 look-alike of an ASCII letter),
    /// vocab (every non-ASCII single-token character), scripts (every letter of Cyrillic, Greek,
    /// Armenian, Cherokee, Latin Extended, fullwidth), or all.
    /// Default: confusables, or only --chars when that is given.
    #[arg(long)]
    candidates: Option<String>,
    /// Characters to try (besides --candidates, or alone): e.g. `--chars оαե`.
    #[arg(long)]
    chars: Option<String>,
    /// Probe prompts, one a line (.txt/.csv/.tsv/.jsonl, .gz); default: the built-in varied prompts.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Probe prompts per letter.
    #[arg(long, default_value_t = 12)]
    probes: usize,
    /// Replace only the first occurrence of the letter in each probe (default: every occurrence,
    /// as target-prompt backdoors are trained).
    #[arg(long)]
    first_only: bool,
    /// CPU threads for libtorch (default 1: on a shared or small machine more threads spin and slow
    /// the many small batches down).
    #[arg(long, default_value_t = 1)]
    threads: i32,
    /// Further prompts a trigger may lead to (reported as its target when nearest).
    #[arg(long)]
    targets: Option<PathBuf>,
    /// Flag at least this score. Character scan: candidates (default 0.15 with a reference, 0.1
    /// without). `--method tokens`: the encoder (default 0.15 with a reference, on the larger of
    /// the confirmed collapse and the best answer; 12 on the sweep's z-score without).
    #[arg(long)]
    threshold: Option<f64>,
    /// Candidates to list (flagged ones are always listed).
    #[arg(long, default_value_t = 20)]
    top: usize,
    /// `chars`: candidate characters substituted for letters (the lists above); `tokens`: the
    /// whole vocabulary swept by insertion, characters rebuilt from byte tokens, gradient
    /// inversion, every candidate checked inserted and substituted (triggers of any shape: words,
    /// several characters, emoji, invisible characters; docs/scanner-zoo.md).
    #[arg(long, default_value = "chars", value_parser = ["chars", "tokens"])]
    method: String,
    /// `--method tokens` with a reference: probe rows of the answer stage, which asks what each
    /// inserted character reads as (a target-attribute trigger reads as its attribute); 0 turns it
    /// off.
    #[arg(long, default_value_t = 24)]
    answer_rows: usize,
    /// `--method tokens` with a reference: least answer-stage score under the listing bar (0.5) that still counts toward the
    /// encoder's score (a weak answer: not ranked); 0.5 or more counts listed answers only.
    #[arg(long, default_value_t = crate::scan::answer::DEFAULT_FLOOR)]
    answer_floor: f64,
    /// `--method tokens` with a reference: leave the ranking as the behavioural stages made it,
    /// without reordering it by which tokens' embedding rows moved (the touched-token prior).
    #[arg(long)]
    no_touched: bool,
    /// `--method tokens` with a reference: sweep the whole vocabulary, not only the tokens whose
    /// embedding rows moved against the reference (and a sample of the vocabulary for the null).
    #[arg(long)]
    full_sweep: bool,
    /// `--method tokens` with a reference: keep the behavioural stages' order of the candidates
    /// instead of the learned order over every text they proposed (fitted on a zoo's
    /// calibration split).
    #[arg(long)]
    no_learned_rank: bool,
    #[command(flatten)]
    embed: super::args::EmbedArgs,
    /// Write the JSON report here (atomically); without it the JSON goes to stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct DefenseArgs {
    /// clipdoor run folders (`clipdoor train --out`), each with experiment.toml; repeat the flag.
    #[arg(long = "run", required = true)]
    runs: Vec<PathBuf>,
    /// Evaluation prompts; default: the runs' own held-out prompts.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Prompts per run at most.
    #[arg(long, default_value_t = 200)]
    max_prompts: usize,
    #[command(flatten)]
    embed: super::args::EmbedArgs,
    /// Write OUT (JSON) and OUT with .md; without it the Markdown table goes to stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(a: ScanEncoderArgs) -> Result<()> {
    match a.command {
        Some(ScanEncoderCommand::Defense(d)) => run_defense(d),
        None => run_scan(a.scan),
    }
}

fn read_list(path: &Path) -> Result<Vec<String>> {
    Ok(crate::io::prompts::read_prompts(path, None, false)?.prompts)
}

fn run_scan(a: TriggerScanArgs) -> Result<()> {
    let device = a.embed.device.device();
    let suspect_arg = a
        .suspect
        .clone()
        .ok_or_else(|| input_err!("--suspect is required: the encoder to scan"))?;
    let chars: Vec<char> = a
        .chars
        .as_deref()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ',')
        .collect();
    let mut sources = match (&a.candidates, chars.is_empty()) {
        (Some(list), _) => Source::parse_list(list)?,
        (None, true) => vec![Source::Confusables],
        (None, false) => vec![],
    };
    if !chars.is_empty() {
        sources.push(Source::Chars);
    }
    if let Some(t) = a.threshold.filter(|t| !t.is_finite()) {
        crate::input_bail!("--threshold {t} is not a finite number");
    }
    let pool = match &a.prompts {
        Some(p) => read_list(p)?,
        None => probes::BUILTIN.iter().map(|s| s.to_string()).collect(),
    };
    let targets = a
        .targets
        .as_deref()
        .map(read_list)
        .transpose()?
        .unwrap_or_default();
    if device == tch::Device::Cpu {
        tch::set_num_threads(a.threads.max(1));
    }
    let suspect = TextEncoder::load(&suspect_arg, device, Kind::Float)?;
    let reference = a
        .reference
        .as_deref()
        .map(|r| TextEncoder::load(r, device, Kind::Float))
        .transpose()?;
    if a.method == "tokens" {
        return run_token_scan(&a, &suspect_arg, &suspect, reference.as_ref(), pool);
    }
    let opts = ScanOptions {
        sources,
        chars,
        pool,
        probes_per_set: a.probes,
        replace_all: !a.first_only,
        targets,
        threshold: a.threshold,
        top: a.top,
        batch: a.embed.batch_size,
    };
    let bar = crate::progress::task("scan-encoder", 0);
    let report = scan::scan(&suspect, reference.as_ref(), &opts, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish();
    eprint!("{}", summary(&report, &suspect_arg, a.reference.as_deref()));
    let json = serde_json::json!({
        "suspect": suspect_arg,
        "reference": a.reference,
        "report": report,
    });
    emit(a.out.as_deref(), &json)
}

fn run_token_scan(
    a: &TriggerScanArgs,
    suspect_arg: &str,
    suspect: &TextEncoder,
    reference: Option<&TextEncoder>,
    probes: Vec<String>,
) -> Result<()> {
    use crate::scan::char_index::CharIndex;
    use crate::scan::token_scan::{scan_tokens, TokenScanOptions};
    let mut opts = TokenScanOptions {
        probes,
        top: a.top,
        batch: a.embed.batch_size.max(256),
        ..TokenScanOptions::default()
    };
    opts.threshold = a.threshold;
    opts.answer.rows = a.answer_rows;
    opts.answer.floor = a.answer_floor;
    opts.touched = !a.no_touched;
    opts.focus_sweep = !a.full_sweep;
    opts.learned_rank = !a.no_learned_rank;
    let index = CharIndex::new(&suspect.tokenizer)?;
    let mut cache = crate::scan::token_scan::ScanCache::default();
    let report = scan_tokens(suspect, reference, &mut cache, &index, &opts)?;
    eprintln!(
        "scan-encoder --method tokens: {suspect_arg}: score {:.2} ({}; threshold {:.2}, {}), {:.1} s",
        report.score,
        report.mode,
        report.threshold,
        if report.flagged { "FLAGGED" } else { "not flagged" },
        report.seconds
    );
    for c in report.ranking.iter().take(10) {
        eprintln!(
            "  {:>3} {} {:?} {} score {:.2} ({}, {}){}",
            c.rank,
            if c.flagged { "FLAG" } else { "    " },
            c.text,
            c.code_points,
            c.score,
            c.placement,
            c.found_by,
            c.answer
                .as_ref()
                .map_or(String::new(), |w| format!(", reads as {w:?}"))
        );
    }
    let json = serde_json::json!({
        "suspect": suspect_arg,
        "reference": a.reference,
        "method": "tokens",
        "report": report,
    });
    emit(a.out.as_deref(), &json)
}

/// The JSON report to `out` (atomically; its path on stdout), or to stdout.
fn emit(out: Option<&Path>, json: &serde_json::Value) -> Result<()> {
    match out {
        Some(out) => {
            crate::io::atomic::write_json(out, json)?;
            println!("{}", out.display());
        }
        None => println!("{}", serde_json::to_string_pretty(json)?),
    }
    Ok(())
}

fn summary(r: &ScanReport, suspect: &str, reference: Option<&str>) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let against = reference.map_or("no reference (collapse mode)".to_string(), |r| {
        format!("reference {r}")
    });
    let _ = writeln!(
        s,
        "scan-encoder: {suspect} vs {against}: {} candidate(s), {} scored, {} flagged at threshold {} ({:.1}s)",
        r.candidates, r.scored, r.flagged, r.threshold, r.seconds
    );
    for c in r.ranking.iter().take(10.max(r.flagged)) {
        let target = c.target.nearest.first().map_or("", |n| n.prompt.as_str());
        let _ = writeln!(
            s,
            "  {:>3} {} {:<4} {:<9} {:<16} score {:>7.3}  shift {:>6.3}  collapse {:>6.3}  -> {:?}",
            c.rank,
            if c.flagged { "FLAG" } else { "    " },
            c.glyph,
            c.code_point,
            c.family,
            c.score,
            c.suspect.shift,
            c.suspect.collapse,
            target
        );
    }
    s
}

fn run_defense(a: DefenseArgs) -> Result<()> {
    use crate::scan::defense::{evaluate_runs, markdown, DefenseOptions};
    tch::set_num_threads(1);
    let opts = DefenseOptions {
        prompts: a.prompts.as_deref().map(read_list).transpose()?,
        max_prompts: a.max_prompts,
        batch: a.embed.batch_size,
        device: a.embed.device.device(),
    };
    let report = evaluate_runs(&a.runs, &opts)?;
    let table = markdown(&report);
    match &a.out {
        Some(out) => {
            let md = out.with_extension("md");
            crate::io::atomic::write_json(out, &report)?;
            crate::io::atomic::write_atomic(&md, table.as_bytes())?;
            eprint!("{table}");
            println!("{}\n{}", out.display(), md.display());
        }
        None => print!("{table}"),
    }
    Ok(())
}
