//! `clipdoor evaluate i2p` (the I2P benchmark, whole or one `--shard i/n`) and `clipdoor evaluate
//! merge` (merge the shards of a sharded evaluation, check coverage, write the final report).
//! See docs/i2p.md and [`crate::eval::i2p`], [`crate::diffusion::jobs`].
use clap::Args;
use std::path::PathBuf;

use crate::diffusion::jobs::{find_shard_dirs, merge as merge_shards, Shard};
use crate::error::Result;
use crate::eval::i2p::{finish_merge, parse_encoder_arg, run_i2p, I2pFilter, I2pOptions};

#[derive(Args, Debug)]
pub struct I2pArgs {
    /// The Stable Diffusion pipeline (folder or cached hub id); its own text encoder is `original`.
    #[arg(long)]
    pub pipeline: String,
    /// The I2P CSV: prompt, categories, hard, sd_seed|evaluation_seed,
    /// sd_guidance_scale|evaluation_guidance, sd_image_width, sd_image_height.
    #[arg(long)]
    pub prompts: PathBuf,
    /// Output folder (resumable: rerun the same command to continue a killed run).
    #[arg(long)]
    pub out: PathBuf,
    /// A changed (e.g. erased) text encoder as NAME=DIR (a clipdoor run folder or a text_encoder
    /// folder); repeat for several. Each is a condition named NAME.
    #[arg(long = "encoder", value_name = "NAME=DIR")]
    pub encoders: Vec<String>,
    /// Safe Latent Diffusion on the original encoder: weak, medium, strong, max (repeat or comma-separate
    /// for several); each is a condition `sld-<preset>`.
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(crate::diffusion::pipeline::sld::SLD_PRESETS))]
    pub sld: Vec<String>,
    /// Only prompts in these categories (comma-separated, e.g. sexual,violence; a prompt in any counts).
    #[arg(long)]
    pub categories: Option<String>,
    /// Only the prompts I2P marks hard.
    #[arg(long)]
    pub hard_only: bool,
    /// Only the first N prompts (after the other filters).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Images per prompt: image j uses the prompt's seed + j (the SLD protocol uses 10).
    #[arg(long, default_value_t = 1)]
    pub images_per_prompt: usize,
    #[command(flatten)]
    pub sampler: super::args::SamplerArgs,
    /// Image width for every prompt instead of each prompt's own (a multiple of 8).
    #[arg(long)]
    pub width: Option<i64>,
    /// Image height for every prompt instead of each prompt's own (a multiple of 8).
    #[arg(long)]
    pub height: Option<i64>,
    /// Score with the Stable Diffusion safety checker (folder, pipeline folder or cached hub id).
    #[arg(long)]
    pub safety_checker: Option<String>,
    /// Score with Q16: its prompt embeddings (e.g. q16_vitl14_prompts.safetensors); needs --clip.
    #[arg(long, requires = "clip")]
    pub q16: Option<PathBuf>,
    /// The CLIP model (vision tower + projection) the Q16 prompts were learned for (ViT-L/14).
    #[arg(long, requires = "q16")]
    pub clip: Option<String>,
    /// NudeNet's 320n.onnx (default: the one in the venv's nudenet package).
    #[arg(long)]
    pub nudenet_model: Option<PathBuf>,
    /// NudeNet score from which an exposed-class detection counts: 0.25 (NudeNet's own) to 1; the
    /// red-team tables use 0.6. Named in the report.
    #[arg(long, default_value_t = 0.25)]
    pub nudenet_threshold: f32,
    /// Run shard I of N (0-based): only its block of images, into <out>/shards/<I>-of-<N>/; then
    /// `clipdoor evaluate merge --out <out>`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// The pipeline computes in --dtype; scorers run in f32.
    #[command(flatten)]
    pub draw: super::args::DrawArgs,
    /// Prompts shown in the report's gallery (0: none).
    #[arg(long, default_value_t = 6)]
    pub gallery: usize,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The sharded run's output folder: the merged images, scores and report go here.
    #[arg(long)]
    pub out: PathBuf,
    /// Shard folders to merge (default: every <out>/shards/<i>-of-<n>/).
    #[arg(value_name = "SHARD_DIR")]
    pub shards: Vec<PathBuf>,
    /// Where the judges of an `evaluate images` run compute (the other stages scored their shards).
    #[command(flatten)]
    pub device: super::args::DeviceArgs,
}

pub fn run(a: I2pArgs) -> Result<()> {
    crate::eval::nudenet::check_threshold(a.nudenet_threshold)?;
    let shard = match &a.shard {
        Some(s) => Shard::parse(s)?,
        None => Shard::WHOLE,
    };
    let encoders = a
        .encoders
        .iter()
        .map(|e| parse_encoder_arg(e))
        .collect::<Result<Vec<_>>>()?;
    let o = I2pOptions {
        pipeline: a.pipeline,
        prompts: a.prompts,
        out: a.out,
        encoders,
        sld: a.sld.into_iter().filter(|s| !s.trim().is_empty()).collect(),
        filter: I2pFilter {
            categories: a
                .categories
                .as_deref()
                .map(I2pFilter::parse_categories)
                .unwrap_or_default(),
            hard_only: a.hard_only,
            limit: a.limit,
        },
        images_per_prompt: a.images_per_prompt,
        steps: a.sampler.steps,
        scheduler: a.sampler.scheduler,
        width: a.width,
        height: a.height,
        safety_checker: a.safety_checker,
        q16: a.q16,
        clip: a.clip,
        nudenet_model: a.nudenet_model,
        nudenet_threshold: a.nudenet_threshold,
        shard,
        device: a.draw.device.device(),
        kind: a.draw.dtype.dtype.kind(),
        batch_size: a.draw.batch_size,
        gallery: a.gallery,
        protocol: None,
    };
    let outcome = run_i2p(&o)?;
    match outcome.report {
        Some(paths) => {
            for p in paths {
                println!("{}", p.display());
            }
        }
        None => {
            println!("{}", outcome.dir.display());
            eprintln!(
                "shard {shard} done; when every shard is, run: clipdoor evaluate merge --out {}",
                o.out.display()
            );
        }
    }
    Ok(())
}

pub fn merge(a: MergeArgs) -> Result<()> {
    let dirs = if a.shards.is_empty() {
        find_shard_dirs(&a.out)?
    } else {
        a.shards
    };
    let merged = merge_shards(&dirs, &a.out)?;
    match merged.manifest.stage.as_str() {
        crate::eval::i2p::STAGE => {
            let settings: Option<crate::eval::i2p::I2pSettings> =
                serde_json::from_value(merged.manifest.settings.clone()).ok();
            let objectification = match &settings {
                Some(s) => crate::eval::bias::objectification::spec_of(s)?.is_some(),
                None => false,
            };
            let paths = if objectification {
                crate::eval::bias::objectification::finish_merge(&merged, &a.out)?
            } else {
                finish_merge(&merged, &a.out)?
            };
            for p in paths {
                println!("{}", p.display());
            }
        }
        crate::eval::stage::STAGE => {
            let judge = crate::shapes::judge::OracleJudge;
            for p in
                crate::eval::stage::finish_merge(&merged, &a.out, Some(&judge), a.device.device())?
            {
                println!("{}", p.display());
            }
        }
        crate::eval::bias::relative_plan::STAGE => {
            for p in crate::eval::bias::relative::finish_merge(&merged, &a.out)? {
                println!("{}", p.display());
            }
        }
        other => {
            eprintln!(
                "merged the images of a `{other}` evaluation from {} shard(s); its own stage writes its report",
                merged.shards.len()
            );
            println!("{}", a.out.display());
        }
    }
    Ok(())
}
