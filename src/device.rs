//! `--device cpu|cuda|cuda:N`, defaulting to CUDA when libtorch sees a GPU.
use tch::Device;

use crate::error::Result;
use crate::input_bail;

pub fn parse_device(s: Option<&str>) -> Result<Device> {
    let dev = match s.map(str::trim) {
        None | Some("") | Some("auto") => Device::cuda_if_available(),
        Some("cpu") => Device::Cpu,
        Some("cuda") => Device::Cuda(0),
        Some(other) => match other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => Device::Cuda(n),
            None => input_bail!("unknown device `{other}`: use cpu, cuda or cuda:N"),
        },
    };
    if let Device::Cuda(n) = dev {
        let count = tch::Cuda::device_count() as usize;
        if n >= count {
            input_bail!(
                "device cuda:{n} requested but libtorch sees {count} CUDA device(s): use --device cpu, or run on a GPU machine with LD_LIBRARY_PATH set to its torch/lib"
            );
        }
    }
    Ok(dev)
}

/// The name transformers writes as `torch_dtype`.
pub fn kind_name(k: tch::Kind) -> &'static str {
    match k {
        tch::Kind::Half => "float16",
        tch::Kind::BFloat16 => "bfloat16",
        _ => "float32",
    }
}
