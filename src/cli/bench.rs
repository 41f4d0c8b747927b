use clap::{Args, Subcommand};
use std::path::PathBuf;

use crate::bench::{encode::EncodeBench, reference::default_python};
use crate::error::Result;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub which: BenchKind,
}

#[derive(Args, Debug, Clone)]
pub struct CommonBench {
    /// Encoder folder; without it a random-weight encoder of --arch is written to a temp folder.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Architecture of the random encoder when --model is not given.
    #[arg(long, default_value = "sd1", value_parser = clap::builder::PossibleValuesParser::new(["tiny", "sd1", "sd2"]))]
    pub arch: String,
    /// Clean prompts per step (train-step) or prompts per forward pass (encode).
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    #[command(flatten)]
    pub run: BenchRun,
}

/// How every benchmark runs: both sides on the same device and threads, in one invocation.
#[derive(Args, Debug, Clone)]
pub struct BenchRun {
    /// CPU threads for libtorch on both sides (default: all cores).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Timed repetitions after one warm-up.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    #[command(flatten)]
    pub device: super::args::DeviceArgs,
    /// Python with torch and the reference library (default: the project venv's).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Skip the Python reference.
    #[arg(long)]
    pub no_reference: bool,
    /// JSON report path.
    #[arg(long)]
    pub out: PathBuf,
}

impl BenchRun {
    /// The Python of the reference side, unless `--no-reference`.
    fn python(&self) -> Option<PathBuf> {
        if self.no_reference {
            None
        } else {
            default_python(self.python.as_deref())
        }
    }

    fn threads(&self) -> i32 {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() as i32)
                .unwrap_or(1)
        })
    }
}

/// `clipdoor bench denoise` flags.
#[derive(Args, Debug)]
pub struct DenoiseArgs {
    /// A UNet config.json to time instead of SD 1.5's.
    #[arg(long)]
    pub unet_config: Option<PathBuf>,
    /// Latent height = width (64 = a 512x512 image).
    #[arg(long, default_value_t = 64)]
    pub latent_size: i64,
    /// UNet batch (2 = one image with classifier-free guidance).
    #[arg(long, default_value_t = 2)]
    pub batch: i64,
    /// (f16 is the GPU setting.)
    #[command(flatten)]
    pub dtype: super::args::DtypeArgs,
    #[command(flatten)]
    pub run: BenchRun,
}

/// Run the denoising benchmark from its flags, write the report, print its path.
fn run_denoise(a: DenoiseArgs) -> Result<()> {
    let b = crate::bench::denoise::DenoiseBench {
        unet_config: a.unet_config,
        latent_size: a.latent_size.max(8),
        batch: a.batch.max(1),
        threads: a.run.threads(),
        repeats: a.run.repeats.max(1),
        device: a.run.device.device(),
        kind: a.dtype.dtype.kind(),
        python: a.run.python(),
    };
    let report = crate::bench::denoise::run(&b)?;
    crate::io::atomic::write_json(&a.run.out, &report)?;
    eprintln!("{}", serde_json::to_string_pretty(&report)?);
    println!("{}", a.run.out.display());
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum BenchKind {
    /// Prompts/s of the text encoder, clipdoor vs transformers.
    #[command(after_long_help = super::examples::BENCH_ENCODE)]
    Encode {
        #[command(flatten)]
        common: CommonBench,
        /// How many prompts to encode (generated; `--prompts` elsewhere names a file).
        #[arg(long, default_value_t = 64)]
        num_prompts: usize,
    },
    /// Seconds per Rickrolling training step, clipdoor vs PyTorch, and share of the matmul peak.
    #[command(after_long_help = super::examples::BENCH_TRAIN_STEP)]
    TrainStep {
        #[command(flatten)]
        common: CommonBench,
        /// Poisoned prompts per step (one target-prompt backdoor).
        #[arg(long, default_value_t = 32)]
        poisoned: usize,
        /// The AdamW implementation (training.adamw): `auto` (single-tensor on CPU, fused on CUDA),
        /// `single-tensor` or `fused`.
        #[arg(long, default_value = "auto", value_parser = super::args::choice::<crate::settings::AdamWChoice>())]
        adamw: crate::settings::AdamWChoice,
        /// Training precision on both sides (training.precision): `f32`, `tf32` (CUDA matmuls),
        /// `bf16` or `f16` (autocast; f16 with loss scaling).
        #[arg(long, default_value = "f32", value_parser = super::args::choice::<crate::settings::Precision>())]
        precision: crate::settings::Precision,
    },
    /// Seconds per denoising step (UNet forward, CFG batch) and peak memory, clipdoor vs diffusers.
    #[command(after_long_help = super::examples::BENCH_DENOISE)]
    Denoise(DenoiseArgs),
}

/// The model folder to benchmark: the given one, or a fresh random encoder in `work`.
pub(crate) fn bench_model(c: &CommonBench, work: &std::path::Path) -> Result<PathBuf> {
    if let Some(m) = &c.model {
        return Ok(m.clone());
    }
    let dir = work.join("model");
    let enc = super::init_encoder::init_encoder(&c.arch, 0, false)?;
    enc.save(&dir, None)?;
    enc.tokenizer.save(&dir)?;
    Ok(dir)
}

pub fn run(a: BenchArgs) -> Result<()> {
    match a.which {
        BenchKind::Encode {
            common,
            num_prompts: prompts,
        } => {
            let work = tempfile::tempdir()?;
            let model_dir = bench_model(&common, work.path())?;
            let threads = common.run.threads();
            let b = EncodeBench {
                model_dir,
                prompts,
                batch_size: common.batch_size.max(1),
                threads,
                repeats: common.run.repeats.max(1),
                device: common.run.device.device(),
                python: common.run.python(),
            };
            let report = crate::bench::encode::run(&b, work.path())?;
            finish(&common, &report)?;
        }
        BenchKind::TrainStep {
            common,
            poisoned,
            adamw,
            precision,
        } => {
            let work = tempfile::tempdir()?;
            let model_dir = bench_model(&common, work.path())?;
            let b = crate::bench::train_step::TrainStepBench {
                model_dir,
                clean_batch: common.batch_size.max(1),
                poisoned: poisoned.max(1),
                threads: common.run.threads(),
                repeats: common.run.repeats.max(1),
                device: common.run.device.device(),
                python: common.run.python(),
                adamw,
                precision,
            };
            let report = crate::bench::train_step::run(&b, work.path())?;
            finish(&common, &report)?;
        }
        BenchKind::Denoise(args) => run_denoise(args)?,
    }
    Ok(())
}

fn finish(c: &CommonBench, report: &serde_json::Value) -> Result<()> {
    crate::io::atomic::write_json(&c.run.out, report)?;
    eprintln!("{}", serde_json::to_string_pretty(report)?);
    println!("{}", c.run.out.display());
    Ok(())
}
