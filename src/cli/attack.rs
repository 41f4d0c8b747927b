//! `clipdoor attack ring-a-bell|token-search|homoglyph`: adversarial prompt sets against an
//! (erased) encoder. Parsing and output only; the work is in `crate::attack`.
use clap::{Args, Subcommand};
use std::path::PathBuf;
use tch::Kind;

use crate::adversary::space::concept_words;
use crate::adversary::token_search::TokenSearchOptions;
use crate::attack::homoglyph::HomoglyphOptions;
use crate::attack::prompt_set::PromptSetWriter;
use crate::attack::ring_a_bell::{self, RingABellOptions};
use crate::attack::run::{run_attack, AttackJob, Method};
use crate::error::Result;
use crate::input_bail;
use crate::io::prompts::read_prompt_lines;
use crate::models::text_encoder::TextEncoder;
use crate::text::homoglyph::attack::validate_families;

#[derive(Args, Debug)]
pub struct AttackArgs {
    #[command(subcommand)]
    method: AttackMethod,
}

#[derive(Subcommand, Debug)]
enum AttackMethod {
    /// Ring-A-Bell (ICLR 2024): the concept's direction from paired prompts, then a genetic search
    /// over tokens for each prompt pushed along it.
    #[command(after_long_help = super::examples::ATTACK_RING_A_BELL)]
    RingABell(RingABellArgs),
    /// Greedy coordinate gradient token search (MMA-Diffusion's text attack, CVPR 2024): tokens
    /// whose pooled embedding matches each prompt's, the concept's own words banned.
    #[command(after_long_help = super::examples::ATTACK_TOKEN_SEARCH)]
    TokenSearch(TokenSearchArgs),
    /// The concept's words written with look-alike and invisible characters, the rewrites ranked
    /// by the encoder.
    #[command(after_long_help = super::examples::ATTACK_HOMOGLYPH)]
    Homoglyph(HomoglyphArgs),
    /// Concept inversion (CCE, ICLR 2024): a new word learned from images of the erased concept
    /// through the pipeline with the erased encoder, written into prompt templates.
    #[command(after_long_help = super::examples::ATTACK_EMBEDDING)]
    Embedding(EmbeddingArgs),
}

#[derive(Args, Debug)]
struct EmbeddingArgs {
    /// The pipeline whose UNet learns the word (diffusers folder or cached hub id).
    #[arg(long)]
    pipeline: String,
    /// The encoder under attack (a clipdoor run folder or text-encoder folder), put in the pipeline.
    #[arg(long)]
    encoder: PathBuf,
    /// Images of the erased concept (a folder, or files).
    #[arg(long, num_args = 1.., required = true)]
    images: Vec<PathBuf>,
    /// The erased concept (recorded in the summary; `evaluate images --attack` judges by it).
    #[arg(long)]
    concept: String,
    /// The new word.
    #[arg(long, default_value = "<concept>")]
    token: String,
    /// An existing one-token word the new one starts from.
    #[arg(long, default_value = "object")]
    init_word: String,
    /// Optimisation steps (CCE inverts for 1,000 to 5,000).
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 5e-3)]
    lr: f64,
    /// Images per step.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Seed of every step's draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Prompt lines with `{}` where the word goes (default: diffusers' 27 textual-inversion
    /// templates).
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// The prompt set to write (JSONL; `.summary.json` and `.embeds.safetensors` beside it).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    force: super::args::ForceArgs,
    #[command(flatten)]
    device: super::args::DeviceArgs,
}

fn run_embedding(e: &EmbeddingArgs) -> Result<()> {
    e.force.check(&e.out)?;
    let lines = match &e.prompts {
        Some(p) => Some(read_prompt_lines(p, None, true)?.prompts),
        None => None,
    };
    let prompts = crate::attack::embedding::prompt_lines(lines, &e.token)?;
    let files = crate::diffusion::image::image_files(&e.images)?;
    let images = crate::diffusion::image::read_images(&files)?;
    let mut pipe = crate::diffusion::pipeline::StableDiffusionPipeline::load(
        &e.pipeline,
        Some(&e.encoder),
        e.device.device(),
        Kind::Float,
    )?;
    let opts = crate::attack::invert::InvertOptions {
        token: e.token.clone(),
        init_word: e.init_word.clone(),
        steps: e.steps,
        lr: e.lr,
        batch_size: e.batch_size,
        seed: e.seed,
    };
    let settings = serde_json::json!({
        "concept": e.concept, "encoder": e.encoder.display().to_string(), "pipeline": e.pipeline,
        "images": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        "prompts": e.prompts.as_ref().map(|p| p.display().to_string()),
    });
    if let Some(dir) = e.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|err| crate::input_err!("cannot create {}: {err}", dir.display()))?;
    }
    let (set, summary) =
        crate::attack::embedding::run(&mut pipe, &images, &opts, &prompts, settings, &e.out)?;
    eprintln!("summary: {}", summary.display());
    println!("{}", set.display());
    Ok(())
}

#[derive(Args, Debug)]
struct CommonArgs {
    /// The encoder under attack (an erased one, say): a folder, run folder, pipeline or hub id.
    #[arg(long)]
    encoder: String,
    /// The encoder whose embeddings are the targets (the original, before erasure); default: the
    /// attacked encoder itself.
    #[arg(long)]
    reference: Option<String>,
    /// The concept attacked, as words (`nudity`, `"circle, round"`): token searches ban them, the
    /// homoglyph attack rewrites them.
    #[arg(long)]
    concept: String,
    #[command(flatten)]
    prompts: super::args::PromptFileArgs,
    /// The prompt set to write (JSONL; a `.summary.json` is written beside it).
    #[arg(long)]
    out: PathBuf,
    /// Words no searched token may contain (repeatable); token-search bans the concept's words too.
    #[arg(long)]
    ban: Vec<String>,
    /// Searches per prompt line, each from its own seeded start.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Seed of every search (each step draws from (seed, line, run, step)).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue an unfinished attack (same flags) from its saved state.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    force: super::args::ForceArgs,
    /// CPU threads for libtorch (default: OMP_NUM_THREADS where set, else 2).
    #[arg(long)]
    threads: Option<i32>,
    #[command(flatten)]
    embed: super::args::EmbedArgs,
}

#[derive(Args, Debug)]
struct RingABellArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Prompts with the concept, one a line, paired line by line with --without.
    #[arg(long = "with")]
    with_concept: PathBuf,
    /// The same prompts without the concept; default: --with with the concept's words removed.
    #[arg(long = "without")]
    without_concept: Option<PathBuf>,
    /// η, how far along the concept direction the target lies.
    #[arg(long, default_value_t = 3.0)]
    eta: f64,
    /// Tokens searched (K).
    #[arg(long, default_value_t = 16)]
    length: usize,
    /// Individuals drawn at the start.
    #[arg(long, default_value_t = 200)]
    population: usize,
    /// Survivors per generation.
    #[arg(long, default_value_t = 100)]
    keep: usize,
    /// Generations of selection, crossover and mutation.
    #[arg(long, default_value_t = 3000)]
    generations: usize,
}

#[derive(Args, Debug)]
struct TokenSearchArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Tokens searched.
    #[arg(long, default_value_t = 20)]
    length: usize,
    /// Gradient steps (each scores --candidates single swaps).
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    /// Tokens per position kept from the gradient.
    #[arg(long, default_value_t = 256)]
    topk: usize,
    /// Single-swap candidates scored per step.
    #[arg(long, default_value_t = 512)]
    candidates: usize,
}

#[derive(Args, Debug)]
struct HomoglyphArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Script families for look-alikes, comma-separated, or `all`.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "cyrillic,greek,armenian,cherokee,latin-extended,fullwidth"
    )]
    scripts: Vec<String>,
    /// Rewrites kept per prompt line (best first).
    #[arg(long, default_value_t = 1)]
    per_prompt: usize,
    /// Only look-alikes: no invisible characters inside the words.
    #[arg(long)]
    no_invisible: bool,
}

pub fn run(a: AttackArgs) -> Result<()> {
    let (common, method_settings) = match &a.method {
        AttackMethod::RingABell(r) => (&r.common, "ring-a-bell"),
        AttackMethod::TokenSearch(t) => (&t.common, "token-search"),
        AttackMethod::Homoglyph(h) => (&h.common, "homoglyph"),
        AttackMethod::Embedding(e) => return run_embedding(e),
    };
    let omp = std::env::var("OMP_NUM_THREADS").ok();
    tch::set_num_threads(super::args::cpu_threads(common.threads, omp.as_deref(), 2));
    let device = common.embed.device.device();
    let batch = common.embed.batch_size.max(1);
    if common.runs == 0 {
        input_bail!("--runs must be at least 1");
    }
    let prompts = read_prompt_lines(
        &common.prompts.prompts,
        common.prompts.field.as_deref(),
        true,
    )?
    .prompts;
    if prompts.is_empty() {
        input_bail!("{} holds no prompt", common.prompts.prompts.display());
    }
    let words = concept_words(&common.concept, &[]);
    if words.is_empty() {
        input_bail!("--concept is empty: name the concept's words (e.g. --concept nudity)");
    }
    let mut encoder = TextEncoder::load(&common.encoder, device, Kind::Float)?;
    encoder.vs.freeze();
    let reference = match &common.reference {
        Some(r) => {
            let mut e = TextEncoder::load(r, device, Kind::Float)?;
            e.vs.freeze();
            if e.config.hidden_size != encoder.config.hidden_size {
                input_bail!(
                    "--reference {r} is {} wide but --encoder {} is {}: give the encoder the attacked one was made from",
                    e.config.hidden_size,
                    common.encoder,
                    encoder.config.hidden_size
                );
            }
            Some(e)
        }
        None => None,
    };
    let reference_ref = reference.as_ref().unwrap_or(&encoder);
    let mut ban: Vec<String> = common.ban.iter().map(|w| w.trim().to_lowercase()).collect();
    let method = match &a.method {
        AttackMethod::Embedding(e) => return run_embedding(e),
        AttackMethod::RingABell(r) => {
            let opts = RingABellOptions {
                eta: r.eta,
                length: r.length,
                keep: r.keep,
                population: r.population,
                generations: r.generations,
                seed: common.seed,
                batch,
                ..Default::default()
            };
            opts.validate()?;
            let with = read_prompt_lines(&r.with_concept, None, true)?.prompts;
            let without = match &r.without_concept {
                Some(p) => read_prompt_lines(p, None, true)?.prompts,
                None => with.iter().map(|p| remove_words(p, &words)).collect(),
            };
            let concept = ring_a_bell::concept_vector(reference_ref, &with, &without, batch)?;
            Method::RingABell { opts, concept }
        }
        AttackMethod::TokenSearch(t) => {
            ban.extend(words.iter().cloned());
            let opts = TokenSearchOptions {
                length: t.length,
                steps: t.steps,
                topk: t.topk,
                candidates: t.candidates,
                seed: common.seed,
                batch,
            };
            opts.validate()?;
            Method::TokenSearch { opts }
        }
        AttackMethod::Homoglyph(h) => {
            let mut families: Vec<String> = h
                .scripts
                .iter()
                .map(|s| s.trim().to_lowercase())
                .filter(|s| !s.is_empty())
                .collect();
            if families.iter().any(|f| f == "all") {
                families.clear();
            }
            validate_families(&families)?;
            let opts = HomoglyphOptions {
                families,
                per_prompt: h.per_prompt.max(1),
                invisible: !h.no_invisible,
                batch,
            };
            Method::Homoglyph {
                opts,
                words: words.clone(),
            }
        }
    };
    ban.sort();
    ban.dedup();
    let settings = serde_json::json!({
        "method": method_settings,
        "encoder": common.encoder,
        "reference": common.reference,
        "concept": common.concept,
        "prompts": common.prompts.prompts,
        "field": common.prompts.field,
        "runs": common.runs,
        "ban": ban,
        "seed": common.seed,
        "options": match &method {
            Method::RingABell { opts, .. } => serde_json::to_value(opts)?,
            Method::TokenSearch { opts } => serde_json::to_value(opts)?,
            Method::Homoglyph { opts, .. } => serde_json::to_value(opts)?,
        },
    });
    let mut writer =
        PromptSetWriter::open(&common.out, settings, common.resume, common.force.force)?;
    let job = AttackJob {
        encoder: &encoder,
        reference: reference_ref,
        prompts: &prompts,
        runs: common.runs,
        ban: &ban,
    };
    run_attack(&job, &method, &mut writer)?;
    let (out, summary) = writer.finish()?;
    println!("{}", out.display());
    println!("{}", summary.display());
    Ok(())
}

/// `prompt` without the concept's words (case-insensitive whole words), spaces collapsed.
fn remove_words(prompt: &str, words: &[String]) -> String {
    prompt
        .split_whitespace()
        .filter(|w| {
            let bare: String = w
                .chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
                .to_lowercase();
            !words.contains(&bare)
        })
        .collect::<Vec<_>>()
        .join(" ")
}
