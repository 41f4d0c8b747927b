//! Argument groups shared by subcommands, so one meaning has one flag name, one help text and one
//! parser: `--device`, `--dtype`, `--force`, and the value parser that lists a setting's values.
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Args;
use std::path::{Path, PathBuf};
use tch::Device;

use crate::error::Result;
use crate::settings::{Choice, Dtype, SchedulerKind};

/// A parser for a [`Choice`] setting: its values are listed by `--help` and checked by clap (with
/// the argument's `ignore_case = true`, in any case).
pub fn choice<T: Choice + Send + Sync>() -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(T::NAMES).map(|s| {
        crate::settings::parse_choice::<T>(&s)
            .unwrap_or_else(|e| unreachable!("clap checked {s} against T::NAMES: {e}"))
    })
}

/// `--device cpu|cuda|cuda:N`, checked against what libtorch sees when the flag is parsed.
pub fn device_flag(s: &str) -> std::result::Result<Device, String> {
    crate::device::parse_device(Some(s)).map_err(|e| e.to_string())
}

/// libtorch's CPU threads for a command whose `--threads` has a fixed default: the flag, else
/// `OMP_NUM_THREADS` (`omp`) where it is a positive whole number, else `default`. Why: two jobs
/// started side by side with OMP_NUM_THREADS=1 each spun two threads on two cores, and OpenMP's
/// spin-waiting made both about ten times slower.
pub fn cpu_threads(flag: Option<i32>, omp: Option<&str>, default: i32) -> i32 {
    let from_env = || omp?.trim().parse::<i32>().ok().filter(|n| *n > 0);
    flag.or_else(from_env).unwrap_or(default).max(1)
}

#[derive(Args, Debug, Clone, Default)]
pub struct DeviceArgs {
    /// Where to compute: cpu, cuda or cuda:N (default: cuda when libtorch sees a GPU, else cpu).
    #[arg(long, value_name = "cpu|cuda|cuda:N", value_parser = device_flag)]
    pub device: Option<Device>,
}

impl DeviceArgs {
    pub fn device(&self) -> Device {
        self.device.unwrap_or_else(Device::cuda_if_available)
    }
}

/// Where and in what batches prompts are embedded (embedding metrics, scanning, defenses).
#[derive(Args, Debug, Clone)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Prompts per forward pass of the text encoder.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
}

#[derive(Args, Debug, Clone)]
pub struct DtypeArgs {
    /// Inference dtype of weights and activations.
    #[arg(long, default_value = "f32", value_parser = choice::<Dtype>())]
    pub dtype: Dtype,
}

/// How the diffusion pipeline draws: where, in what dtype, how many images per UNet call.
#[derive(Args, Debug, Clone)]
pub struct DrawArgs {
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub dtype: DtypeArgs,
    /// Images per UNet call (the UNet batch is 2x this with guidance, 3x with SLD).
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
}

/// The sampler: its denoising steps and which scheduler.
#[derive(Args, Debug, Clone)]
pub struct SamplerArgs {
    /// Denoising steps per image.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// The sampler (default: the pipeline's scheduler_config.json).
    #[arg(long, ignore_case = true, value_parser = choice::<SchedulerKind>())]
    pub scheduler: Option<SchedulerKind>,
}

/// A prompt file, with the column/field that holds the prompt in tabular files.
#[derive(Args, Debug, Clone)]
pub struct PromptFileArgs {
    /// Prompt file: one prompt a line (.txt), or .csv/.tsv/.jsonl with --field; .gz allowed.
    #[arg(long)]
    pub prompts: PathBuf,
    /// Column (CSV/TSV) or field (JSONL) holding the prompt.
    #[arg(long)]
    pub field: Option<String>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ForceArgs {
    /// Replace a finished output (never done silently).
    #[arg(long)]
    pub force: bool,
}

impl ForceArgs {
    /// Refuse to replace a finished output unless `--force` was given.
    pub fn check(&self, path: &Path) -> Result<()> {
        super::check_overwrite(path, self.force)
    }
}

/// `--revision` and `--variant`: global, so every command that loads a model takes them.
#[derive(Args, Debug, Clone, Default)]
pub struct HubArgs {
    /// Hub revision (branch, tag or commit) for models given as hub ids without `@REV`; default main.
    #[arg(long, global = true, value_name = "REV")]
    pub revision: Option<String>,
    /// Weight variant to read, as diffusers names it: `fp16` reads model.fp16.safetensors and
    /// diffusion_pytorch_model.fp16.safetensors (hub ids and local folders alike).
    #[arg(long, global = true, value_name = "VARIANT")]
    pub variant: Option<String>,
}

impl HubArgs {
    /// Make the choice the process-wide one ([`crate::io::hub::set_options`]).
    pub fn install(&self) {
        crate::io::hub::set_options(crate::io::hub::HubOptions {
            revision: self.revision.clone(),
            variant: self.variant.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::cpu_threads;

    /// The flag wins; then OMP_NUM_THREADS where it is a positive whole number; then the default.
    #[test]
    fn threads_follow_the_flag_then_omp_num_threads() {
        assert_eq!(cpu_threads(Some(3), Some("1"), 2), 3);
        assert_eq!(cpu_threads(None, Some("1"), 2), 1);
        assert_eq!(cpu_threads(None, Some(" 4\n"), 2), 4);
        for unusable in [None, Some(""), Some("0"), Some("-2"), Some("two")] {
            assert_eq!(cpu_threads(None, unusable, 2), 2, "{unusable:?}");
        }
        assert_eq!(cpu_threads(Some(0), None, 2), 1, "at least one thread");
    }
}
