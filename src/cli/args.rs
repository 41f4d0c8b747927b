//! Argument groups shared by subcommands, so one meaning has one flag name, one help text and one
//! parser: `--device`, `--dtype`, `--force`, and the value parser that lists a setting's values.
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Args;
use std::path::{Path, PathBuf};
use tch::Device;

use crate::error::Result;
use crate::settings::{Choice, Dtype};

/// A parser for a [`Choice`] setting: its values are listed by `--help` and checked by clap (with
/// the argument's `ignore_case = true`, in any case).
pub fn choice<T: Choice + Send + Sync>() -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(T::NAMES).map(|s| {
        T::from_name(&s)
            .or_else(|| T::from_name(&s.to_ascii_lowercase()))
            .unwrap_or_else(|| unreachable!("clap checked {s} against T::NAMES"))
    })
}

/// `--device cpu|cuda|cuda:N`, checked against what libtorch sees when the flag is parsed.
fn device_flag(s: &str) -> std::result::Result<Device, String> {
    crate::device::parse_device(Some(s)).map_err(|e| e.to_string())
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

#[derive(Args, Debug, Clone)]
pub struct DtypeArgs {
    /// Inference dtype of weights and activations.
    #[arg(long, default_value = "f32", value_parser = choice::<Dtype>())]
    pub dtype: Dtype,
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
