//! `clipdoor homoglyph scan|sanitize|attack`: argument parsing and output; the work is in
//! `crate::text::homoglyph`.
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};
use tch::Kind;

use crate::error::Result;
use crate::input_bail;
use crate::models::text_encoder::TextEncoder;
use crate::text::homoglyph::{
    self as hg, attack, AttackSpec, Count, SanitizeOptions, ScanReport, Variant,
};

/// Append one formatted line to a `String` (writing to a `String` cannot fail).
macro_rules! line {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

/// Results go to stdout; a closed pipe (`| head`) ends the output quietly instead of panicking.
fn emit(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

#[derive(Args, Debug)]
pub struct HomoglyphArgs {
    #[command(subcommand)]
    command: HomoglyphCommand,
}

#[derive(Subcommand, Debug)]
enum HomoglyphCommand {
    /// Report per prompt: each character's code point, script and Latin look-alike, mixed-script
    /// words, the UTS #39 restriction level, invisible characters, NFKC differences.
    #[command(after_long_help = super::examples::HOMOGLYPH_SCAN)]
    Scan(ScanArgs),
    /// Map look-alikes to Latin, strip them, or reject prompts holding them (exit code 2).
    #[command(after_long_help = super::examples::HOMOGLYPH_SANITIZE)]
    Sanitize(SanitizeArgs),
    /// Replace Latin characters with look-alikes; with --model, rank the look-alikes by how far they
    /// move the encoder's embedding.
    #[command(after_long_help = super::examples::HOMOGLYPH_ATTACK)]
    Attack(AttackArgs),
}

/// One prompt on the command line, or a prompt file.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct PromptInput {
    /// The prompt.
    text: Option<String>,
    /// Prompt file: one prompt a line (.txt), or .csv/.tsv/.jsonl with --field; .gz allowed.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Column (CSV/TSV) or field (JSONL) holding the prompt.
    #[arg(long, requires = "prompts")]
    field: Option<String>,
}

#[derive(Args, Debug)]
struct ScanArgs {
    #[command(flatten)]
    input: PromptInput,
    /// JSON instead of the human report.
    #[arg(long)]
    json: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ModeArg {
    Map,
    Strip,
    Reject,
}

#[derive(Args, Debug)]
struct SanitizeArgs {
    #[command(flatten)]
    input: PromptInput,
    /// map: look-alikes → Latin; strip: delete them; reject: exit 2 naming the first one.
    /// Invisible characters are removed by map and strip.
    #[arg(long, value_enum, default_value = "map")]
    mode: ModeArg,
    /// Also map look-alikes in words of other scripts (whole Greek or Cyrillic words included).
    #[arg(long)]
    all_scripts: bool,
    /// Output file (written atomically): one prompt a line, or JSON lines `{"prompt": ...}` when it
    /// ends in .jsonl. Line breaks inside a prompt become spaces in the text form.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    force: super::args::ForceArgs,
}

#[derive(Args, Debug)]
struct AttackArgs {
    #[command(flatten)]
    input: PromptInput,
    /// Script families to draw look-alikes from, comma-separated, or `all`.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "cyrillic,greek,armenian,cherokee,latin-extended,fullwidth"
    )]
    scripts: Vec<String>,
    /// Latin characters to replace, comma-separated (default: every ASCII letter of the prompt).
    #[arg(long = "char", value_delimiter = ',')]
    chars: Vec<String>,
    /// Explicit look-alikes to use for --char instead of the UTS #39 confusables (e.g. the paper's
    /// set for o: ο,о,ه,ㅇ,ọ).
    #[arg(long, value_delimiter = ',', requires = "chars")]
    homoglyphs: Vec<String>,
    /// Occurrences to replace per prompt: a number (first N) or `all`.
    #[arg(long, default_value = "1")]
    count: String,
    /// Text encoder to measure the embedding shift with (folder or cached hub id).
    #[arg(long)]
    model: Option<String>,
    /// cpu, cuda or cuda:N (default: cuda when libtorch sees a GPU, else cpu).
    #[arg(long, requires = "model", value_name = "cpu|cuda|cuda:N", value_parser = super::args::device_flag)]
    device: Option<tch::Device>,
    /// Prompts per forward pass of the text encoder (with --model).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// JSON output (always with --out).
    #[arg(long)]
    json: bool,
    /// Write the JSON report here (atomically) instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    force: super::args::ForceArgs,
}

pub fn run(a: HomoglyphArgs) -> Result<()> {
    match a.command {
        HomoglyphCommand::Scan(a) => run_scan(a),
        HomoglyphCommand::Sanitize(a) => run_sanitize(a),
        HomoglyphCommand::Attack(a) => run_attack(a),
    }
}

/// The prompts and where they came from (for messages).
fn read_input(
    input: &PromptInput,
    field: Option<&str>,
    strict: bool,
) -> Result<(Vec<String>, String)> {
    if let Some(path) = &input.prompts {
        let set = crate::io::prompts::read_prompts(path, field, strict)?;
        if set.bad_lines > 0 {
            eprintln!(
                "warning: skipped {} unreadable line(s) of {}",
                set.bad_lines,
                path.display()
            );
        }
        return Ok((set.prompts, path.display().to_string()));
    }
    Ok((
        vec![input.text.clone().unwrap_or_default()],
        "the prompt".into(),
    ))
}

fn run_scan(a: ScanArgs) -> Result<()> {
    let (prompts, _) = read_input(&a.input, a.input.field.as_deref(), false)?;
    let reports: Vec<ScanReport> = prompts.iter().map(|p| hg::scan(p)).collect();
    let suspicious = reports.iter().filter(|r| r.suspicious).count();
    if a.json {
        let doc = ScanDoc {
            prompts: reports.len(),
            suspicious,
            reports: &reports,
        };
        return emit(&(serde_json::to_string_pretty(&doc)? + "\n"));
    }
    let mut text = String::new();
    for (i, r) in reports.iter().enumerate() {
        format_scan(&mut text, i + 1, r);
    }
    line!(text, "{} prompt(s), {suspicious} suspicious", reports.len());
    emit(&text)
}

fn format_scan(out: &mut String, number: usize, r: &ScanReport) {
    let status = if r.suspicious { "SUSPICIOUS" } else { "clean" };
    line!(
        out,
        "[{number}] {status} ({}): {:?}",
        r.restriction_level,
        r.text
    );
    if r.text.is_ascii() {
        return;
    }
    line!(
        out,
        "    {} confusable(s), {} invisible",
        r.confusables,
        r.invisible
    );
    // Legitimate non-Latin text is summarised; `--json` has every character.
    if !r.suspicious {
        return;
    }
    for w in &r.mixed_script_words {
        line!(
            out,
            "    mixed-script word {:?} at {}: {}",
            w.word,
            w.index + 1,
            w.scripts.join(" + ")
        );
    }
    line!(
        out,
        "    {:<5} {:<12} {:<9} {:<12} {:<10} note",
        "pos",
        "char",
        "code",
        "script",
        "looks like"
    );
    for c in r.chars.iter().filter(|c| !c.char.is_ascii()) {
        let mut notes: Vec<String> = vec![];
        if let Some(kind) = c.invisible {
            notes.push(kind.to_string());
        }
        if let Some(reason) = &c.flagged {
            notes.push(format!("flagged: {}", reason.describe()));
        }
        if let Some(n) = &c.nfkc {
            notes.push(format!("NFKC {n:?}"));
        }
        let shown = format!("{:?}", c.char);
        let looks = c
            .latin_lookalike
            .as_deref()
            .map(|l| format!("{l:?}"))
            .unwrap_or_else(|| "-".into());
        line!(
            out,
            "    {:<5} {:<12} {:<9} {:<12} {:<10} {}",
            c.index + 1,
            shown,
            c.code_point,
            c.script,
            looks,
            notes.join("; ")
        );
    }
    if let Some(n) = &r.nfkc {
        line!(out, "    NFKC: {n:?}");
    }
    if let Some(s) = &r.sanitized {
        line!(out, "    sanitized (map): {s:?}");
    }
}

fn run_sanitize(a: SanitizeArgs) -> Result<()> {
    if let Some(out) = &a.out {
        a.force.check(out)?;
    }
    let (prompts, source) = read_input(&a.input, a.input.field.as_deref(), true)?;
    let mode = match a.mode {
        ModeArg::Map => hg::Mode::Map,
        ModeArg::Strip => hg::Mode::Strip,
        ModeArg::Reject => hg::Mode::Reject,
    };
    let opts = SanitizeOptions {
        mode,
        all_scripts: a.all_scripts,
    };
    if mode == hg::Mode::Reject {
        reject_any(&prompts, &source, a.all_scripts)?;
    }
    let cleaned: Vec<String> = prompts
        .iter()
        .map(|p| hg::sanitize_with(p, &opts))
        .collect::<Result<_>>()?;
    let changed = prompts.iter().zip(&cleaned).filter(|(a, b)| a != b).count();
    eprintln!("sanitize: {changed} of {} prompt(s) changed", prompts.len());
    match &a.out {
        Some(out) => {
            write_prompts(out, &cleaned)?;
            emit(&format!("{}\n", out.display()))?;
        }
        None => emit(
            &cleaned
                .iter()
                .map(|p| one_line(p) + "\n")
                .collect::<String>(),
        )?,
    }
    Ok(())
}

/// Reject mode over many prompts: name the first offending one and count the rest.
fn reject_any(prompts: &[String], source: &str, all_scripts: bool) -> Result<()> {
    let flagged: Vec<(usize, hg::Flag)> = prompts
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            hg::analyze(p, all_scripts)
                .into_iter()
                .next()
                .map(|f| (i, f))
        })
        .collect();
    let Some((i, flag)) = flagged.first() else {
        return Ok(());
    };
    let place = if prompts.len() > 1 {
        format!("prompt {} of {source}", i + 1)
    } else {
        source.to_string()
    };
    let more = match flagged.len() {
        1 => String::new(),
        n => format!(" ({} more prompt(s) flagged)", n - 1),
    };
    input_bail!("{place}: {}{more}", hg::sanitize::reject_message(flag))
}

fn one_line(p: &str) -> String {
    p.replace(['\r', '\n'], " ")
}

fn write_prompts(out: &Path, prompts: &[String]) -> Result<()> {
    let jsonl = out.extension().is_some_and(|e| e == "jsonl");
    let mut text = String::new();
    for p in prompts {
        let line = if jsonl {
            json!({ "prompt": p }).to_string()
        } else {
            one_line(p)
        };
        text.push_str(&line);
        text.push('\n');
    }
    crate::io::atomic::write_atomic(out, text.as_bytes())
}

fn single_chars(values: &[String], flag: &str) -> Result<Vec<char>> {
    values
        .iter()
        .map(|v| {
            let mut it = v.trim().chars();
            match (it.next(), it.next()) {
                (Some(c), None) => Ok(c),
                _ => input_bail!("{flag} takes single characters separated by commas; `{v}` is not one character"),
            }
        })
        .collect()
}

fn attack_spec(a: &AttackArgs) -> Result<AttackSpec> {
    let families: Vec<String> = a
        .scripts
        .iter()
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    let families = if families.iter().any(|f| f == "all") {
        vec![]
    } else {
        families
    };
    attack::validate_families(&families)?;
    let count: Count = a.count.parse()?;
    Ok(AttackSpec {
        families,
        targets: single_chars(&a.chars, "--char")?,
        glyphs: single_chars(&a.homoglyphs, "--homoglyphs")?,
        count,
    })
}

#[derive(Serialize)]
struct ScanDoc<'a> {
    prompts: usize,
    suspicious: usize,
    reports: &'a [ScanReport],
}

/// The attack report: the ranking (with --model) and every attacked prompt.
#[derive(Serialize)]
struct AttackDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    prompts: usize,
    variants: usize,
    families: Vec<String>,
    count: &'a str,
    /// Per homoglyph, most disruptive first.
    #[serde(skip_serializing_if = "Option::is_none")]
    homoglyphs: Option<Vec<crate::scan::shift::HomoglyphScore>>,
    results: Vec<VariantOut<'a>>,
}

#[derive(Serialize)]
struct VariantOut<'a> {
    prompt: usize,
    #[serde(flatten)]
    variant: &'a Variant,
    #[serde(skip_serializing_if = "Option::is_none")]
    sim_hidden: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sim_pooled: Option<f64>,
}

fn run_attack(a: AttackArgs) -> Result<()> {
    if let Some(out) = &a.out {
        a.force.check(out)?;
    }
    if a.batch_size == 0 {
        input_bail!("--batch-size must be at least 1");
    }
    let spec = attack_spec(&a)?;
    let (prompts, source) = read_input(&a.input, a.input.field.as_deref(), true)?;
    let variants: Vec<(usize, Variant)> = prompts
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            hg::attack_variants(p, &spec)
                .into_iter()
                .map(move |v| (i, v))
        })
        .collect();
    if variants.is_empty() {
        input_bail!(
            "no substitution applies to {source}: none of its characters {} has a look-alike in the chosen --scripts; widen --scripts (or `all`) or --char",
            if spec.targets.is_empty() { "(ASCII letters)".to_string() } else { format!("{:?}", spec.targets) }
        );
    }
    let Some(model) = &a.model else {
        return output_variants(&a, &spec, prompts.len(), &variants);
    };
    let device = a.device.unwrap_or_else(tch::Device::cuda_if_available);
    let enc = TextEncoder::load(model, device, Kind::Float)?;
    let pairs: Vec<(String, String)> = variants
        .iter()
        .map(|(i, v)| (prompts[*i].clone(), v.text.clone()))
        .collect();
    let pb = crate::progress::task(
        "encode",
        crate::scan::shift::distinct_prompts(&pairs) as u64,
    );
    let shifts = crate::scan::shift::embedding_shift(&enc, &pairs, a.batch_size, &|n| pb.inc(n))?;
    pb.finish();
    let just_variants: Vec<Variant> = variants.iter().map(|(_, v)| v.clone()).collect();
    let ranked = crate::scan::shift::rank_homoglyphs(&just_variants, &shifts);
    if !a.json && a.out.is_none() {
        return emit(&format_ranking(&ranked));
    }
    let results: Vec<VariantOut> = variants
        .iter()
        .zip(&shifts)
        .map(|((i, v), s)| VariantOut {
            prompt: i + 1,
            variant: v,
            sim_hidden: Some(s.sim_hidden),
            sim_pooled: Some(s.sim_pooled),
        })
        .collect();
    let doc = AttackDoc {
        model: Some(model),
        prompts: prompts.len(),
        variants: variants.len(),
        families: families_of(&spec),
        count: &a.count,
        homoglyphs: Some(ranked),
        results,
    };
    emit_json(&a, &doc)
}

fn output_variants(
    a: &AttackArgs,
    spec: &AttackSpec,
    n_prompts: usize,
    variants: &[(usize, Variant)],
) -> Result<()> {
    if !a.json && a.out.is_none() {
        return emit(
            &variants
                .iter()
                .map(|(_, v)| one_line(&v.text) + "\n")
                .collect::<String>(),
        );
    }
    let results: Vec<VariantOut> = variants
        .iter()
        .map(|(i, v)| VariantOut {
            prompt: i + 1,
            variant: v,
            sim_hidden: None,
            sim_pooled: None,
        })
        .collect();
    let doc = AttackDoc {
        model: None,
        prompts: n_prompts,
        variants: variants.len(),
        families: families_of(spec),
        count: &a.count,
        homoglyphs: None,
        results,
    };
    emit_json(a, &doc)
}

/// The script families an attack drew from, as the report names them.
fn families_of(spec: &AttackSpec) -> Vec<String> {
    if spec.families.is_empty() {
        vec!["all".to_string()]
    } else {
        spec.families.clone()
    }
}

fn emit_json(a: &AttackArgs, doc: &impl Serialize) -> Result<()> {
    match &a.out {
        Some(out) => {
            crate::io::atomic::write_json(out, doc)?;
            emit(&format!("{}\n", out.display()))?;
        }
        None => emit(&(serde_json::to_string_pretty(doc)? + "\n"))?,
    }
    Ok(())
}

fn format_ranking(ranked: &[crate::scan::shift::HomoglyphScore]) -> String {
    let mut out = String::new();
    line!(
        out,
        "{:<5} {:<6} {:<6} {:<9} {:<15} {:>8} {:>10} {:>10}",
        "rank",
        "latin",
        "glyph",
        "code",
        "family",
        "prompts",
        "sim_hidden",
        "sim_pooled"
    );
    for (rank, s) in ranked.iter().enumerate() {
        line!(
            out,
            "{:<5} {:<6} {:<6} {:<9} {:<15} {:>8} {:>10.6} {:>10.6}",
            rank + 1,
            s.latin,
            s.glyph,
            s.code_point,
            s.family,
            s.prompts,
            s.sim_hidden,
            s.sim_pooled
        );
    }
    out
}
