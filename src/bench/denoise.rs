//! `clipdoor bench denoise`: seconds per denoising step (one UNet forward on a classifier-free-guidance
//! batch) and peak memory, clipdoor vs diffusers, same config, input sizes, threads and dtype, at the
//! real SD 1.5 UNet size with random weights.
use std::path::PathBuf;
use std::time::Instant;

use tch::{nn, Device, Kind, Tensor};

use super::reference::{run_reference, sync};
use crate::error::Result;
use crate::models::unet::{UNet2DConditionConfig, UNet2DConditionModel};

/// The runwayml/stable-diffusion-v1-5 `unet/config.json` values that differ from diffusers' defaults.
pub const SD15_UNET_CONFIG: &str = r#"{"sample_size": 64, "cross_attention_dim": 768, "attention_head_dim": 8,
 "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2}"#;

pub struct DenoiseBench {
    /// A UNet `config.json`; `None` = SD 1.5.
    pub unet_config: Option<PathBuf>,
    /// Latent height = width (64 = a 512x512 image).
    pub latent_size: i64,
    /// UNet batch: 2 = one image with classifier-free guidance.
    pub batch: i64,
    pub threads: i32,
    pub repeats: usize,
    pub device: Device,
    pub kind: Kind,
    pub python: Option<PathBuf>,
}

/// `VmHWM` (peak resident set size of this process since it started) or `VmRSS` in MiB, from
/// /proc/self/status; `None` where procfs is absent.
pub fn proc_status_mib(key: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn config(b: &DenoiseBench) -> Result<(UNet2DConditionConfig, String)> {
    Ok(match &b.unet_config {
        Some(p) => (UNet2DConditionConfig::load(p)?, p.display().to_string()),
        None => (serde_json::from_str(SD15_UNET_CONFIG)?, "sd15".to_string()),
    })
}

pub fn run(b: &DenoiseBench) -> Result<serde_json::Value> {
    // The model is dropped before the Python side starts, so the two never share the machine's memory.
    let mut report = run_clipdoor(b)?;
    if let Some(py) = &b.python {
        let (n, s) = (b.batch, b.latent_size);
        let device = report["device"].as_str().unwrap_or("cpu").to_string();
        let mut args: Vec<String> = [
            "denoise",
            "--threads",
            &b.threads.to_string(),
            "--device",
            &device,
            "--dtype",
            crate::device::kind_name(b.kind),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend([
            "--repeats".into(),
            b.repeats.to_string(),
            "--latent-size".into(),
            s.to_string(),
            "--batch".into(),
            n.to_string(),
        ]);
        if let Some(p) = &b.unet_config {
            args.extend(["--unet-config".into(), p.display().to_string()]);
        }
        let r = run_reference(py, &args)?;
        let theirs = r["s_per_step"].as_f64().unwrap_or(f64::NAN);
        let ours = report["clipdoor_s_per_step"].as_f64().unwrap_or(f64::NAN);
        report["diffusers_s_per_step"] = serde_json::json!(theirs);
        report["diffusers_peak_rss_mib"] = r["peak_rss_mib"].clone();
        report["ratio_clipdoor_over_diffusers_time"] = serde_json::json!(ours / theirs);
        report["reference"] = r;
    }
    Ok(report)
}

fn run_clipdoor(b: &DenoiseBench) -> Result<serde_json::Value> {
    tch::set_num_threads(b.threads);
    let (cfg, cfg_name) = config(b)?;
    tch::manual_seed(0);
    let mut vs = nn::VarStore::new(b.device);
    let t0 = Instant::now();
    let unet = UNet2DConditionModel::new(vs.root(), &cfg)?; // random weights
    vs.set_kind(b.kind);
    let build_s = t0.elapsed().as_secs_f64();
    let params: i64 = vs
        .trainable_variables()
        .iter()
        .map(Tensor::numel)
        .map(|n| n as i64)
        .sum();

    let (n, s) = (b.batch, b.latent_size);
    let sample =
        Tensor::randn([n, cfg.in_channels, s, s], (Kind::Float, Device::Cpu)).to_device(b.device);
    let timestep = Tensor::from_slice(&vec![999f32; n as usize]).to_device(b.device);
    let context =
        Tensor::randn([n, 77, cfg.text_width()], (Kind::Float, Device::Cpu)).to_device(b.device);
    unet.check_inputs(&sample, &timestep, &context)?;
    let rss_before = proc_status_mib("VmRSS:");
    let per_step = tch::no_grad(|| {
        let _ = unet.forward(&sample, &timestep, &context); // warm-up
        sync(b.device);
        let t0 = Instant::now();
        for _ in 0..b.repeats {
            let _ = unet.forward(&sample, &timestep, &context);
        }
        sync(b.device);
        t0.elapsed().as_secs_f64() / b.repeats as f64
    });
    let device = format!("{:?}", b.device)
        .to_lowercase()
        .replace("cuda(", "cuda:")
        .replace(')', "");
    let dtype = crate::device::kind_name(b.kind);
    Ok(serde_json::json!({
        "benchmark": "denoise",
        "unet_config": cfg_name,
        "parameters": params,
        "latents": [n, cfg.in_channels, s, s],
        "threads": b.threads, "repeats": b.repeats, "device": device, "dtype": dtype,
        "clipdoor_build_s": build_s,
        "clipdoor_s_per_step": per_step,
        "clipdoor_rss_before_steps_mib": rss_before,
        "clipdoor_peak_rss_mib": proc_status_mib("VmHWM:"),
        "memory_note": "peak resident set size of the whole process (weights, activations, allocator caches, runtime) since it started: VmHWM on the Rust side, getrusage ru_maxrss on the Python side; GPU memory is not included",
    }))
}
