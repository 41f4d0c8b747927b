//! The shipped shapes model (checkpoints/shapes/) and the image-level demo: diffusers runs the model
//! as clipdoor does, the model draws what it is asked, and a short demo meets its thresholds.
mod common;

use clipdoor::diffusion::pipeline::{GenerateRequest, Seeds, StableDiffusionPipeline};
use std::path::PathBuf;
use tch::{Device, Kind};

fn model() -> PathBuf {
    common::root().join("checkpoints/shapes")
}

#[test]
fn diffusers_runs_the_shipped_pixel_space_pipeline_as_clipdoor_does() {
    tch::set_num_threads(1);
    let dir = common::tmp();
    let out = dir.path().join("ref.safetensors");
    let prompts = ["a red circle", "a small blue square in the top left"];
    let m = model();
    let mut args = vec![m.to_str().unwrap(), out.to_str().unwrap(), "6", "4.0", "3"];
    args.extend(prompts);
    common::run_py("shapes_pipeline_ref.py", &args);
    let reference = common::load_st(&out).remove("images").unwrap();

    let pipe = StableDiffusionPipeline::load(m.to_str().unwrap(), None, Device::Cpu, Kind::Float)
        .unwrap();
    assert!(pipe.vae.is_none(), "the shapes pipeline has no VAE");
    assert_eq!(pipe.default_size(), (32, 32));
    let mut req = GenerateRequest::new(
        prompts.iter().map(|p| p.to_string()).collect(),
        Seeds::PerImage(vec![3, 4]),
    );
    req.steps = 6;
    req.guidance = 4.0;
    let ours = pipe.generate(&req).unwrap();
    assert_eq!(ours.size(), vec![2, 3, 32, 32]);
    // Same weights, same libtorch, same order of operations: fp32 noise only.
    let d = common::max_abs(&ours, &reference);
    eprintln!("clipdoor vs diffusers on the shapes pipeline: max |diff| = {d:e}");
    assert!(d < 1e-4, "clipdoor and diffusers differ by {d}");
}
