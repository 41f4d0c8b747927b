//! Parity of clipdoor's UNet2DConditionModel and AutoencoderKL with diffusers, on tiny random-weight
//! models that tests/python/diffusers_models.py builds with diffusers' own classes and saves with
//! `save_pretrained`. Tolerance: 1e-4 max abs in float32 (the conventions' fp32 bound; measured
//! differences are 0: both sides run the same libtorch kernels in the same order).
use crate::common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clipdoor::io::weights::SafetensorsFile;
use clipdoor::models::unet::{load_unet, UNet2DConditionModel};
use clipdoor::models::vae::{load_vae, AutoencoderKL};
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-4;

/// The Python reference runs once per test run; every test reads its folder.
fn reference_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    common::reference_dir(&DIR, "diffusers_models.py")
}

fn dir(name: &str) -> PathBuf {
    reference_dir().join(name)
}

/// One reference tensor (inputs and diffusers' outputs, float32).
fn t(key: &str) -> Tensor {
    SafetensorsFile::open(&dir("reference.safetensors"))
        .unwrap()
        .tensor(key)
        .unwrap()
}

fn unet(name: &str, kind: Kind) -> (tch::nn::VarStore, UNet2DConditionModel) {
    load_unet(&dir(name), Device::Cpu, kind).unwrap()
}

fn unet_diff(model: &UNet2DConditionModel, case: &str, out_key: &str) -> f64 {
    let (s, ts, e) = (
        t(&format!("{case}.sample")),
        t(&format!("{case}.timestep")),
        t(&format!("{case}.encoder_hidden_states")),
    );
    model.check_inputs(&s, &ts, &e).unwrap();
    let y = tch::no_grad(|| model.forward(&s, &ts, &e));
    assert_eq!(y.kind(), Kind::Float);
    common::max_abs(&y, &t(out_key))
}

fn check_unet(name: &str, cases: usize) {
    let (_vs, model) = unet(name, Kind::Float);
    for i in 0..cases {
        let case = format!("{name}.{i}");
        let d = unet_diff(&model, &case, &format!("{case}.out"));
        println!(
            "{case} ({:?}): max abs diff {d:.3e}",
            t(&format!("{case}.sample")).size()
        );
        assert!(d < TOL, "{case}: max abs diff {d} >= {TOL}");
    }
}

#[test]
fn unet_v1_matches_diffusers() {
    // Case 1 is 15x13: not a multiple of the downsampling, so up blocks upsample to the skip's size.
    check_unet("unet_v1", 2);
}

#[test]
fn unet_v2_matches_diffusers() {
    // Linear projections, per-block head counts, upcast_attention, three levels, 2 layers per block.
    check_unet("unet_v2", 2);
}

#[test]
fn unet_variant_options_match_diffusers() {
    // flip_sin_to_cos=false, freq_shift=1, mish, scale_shift resnets, per-block layers, 2 transformer
    // layers, only_cross_attention, UNetMidBlock2D, center_input_sample, conv_in_kernel=1,
    // addition_embed_type "text" (attention-pooled text added to the time embedding).
    check_unet("unet_variant", 1);
}

#[test]
fn unet_f16_weights_load_as_f32_and_integer_timesteps_work() {
    let path = dir("unet_f16");
    let stored = SafetensorsFile::open(&path.join("diffusion_pytorch_model.safetensors")).unwrap();
    assert_eq!(stored.tensor("conv_in.weight").unwrap().kind(), Kind::Half);
    let (_vs, model) = unet("unet_f16", Kind::Float);
    let d = unet_diff(&model, "unet_v1.0", "unet_f16.out");
    println!("unet_f16 -> f32: max abs diff {d:.3e}");
    assert!(d < TOL, "f16-stored UNet in f32: {d}");
    let (s, e) = (t("unet_v1.0.sample"), t("unet_v1.0.encoder_hidden_states"));
    let y = tch::no_grad(|| model.forward(&s, &t("unet_f16.timestep_i64"), &e));
    let d = common::max_abs(&y, &t("unet_f16.out_i64"));
    println!("unet_f16 i64 timesteps: max abs diff {d:.3e}");
    assert!(d < TOL, "i64 timesteps: {d}");
}

#[test]
fn unet_runs_in_half_and_bfloat16() {
    // Reduced precision on CPU: the output kind follows the weights and stays close to f32.
    for (kind, tol) in [(Kind::BFloat16, 0.25), (Kind::Half, 0.05)] {
        let (_vs, model) = unet("unet_v2", kind);
        let case = "unet_v2.0";
        let y = tch::no_grad(|| {
            model.forward(
                &t(&format!("{case}.sample")),
                &t(&format!("{case}.timestep")),
                &t(&format!("{case}.encoder_hidden_states")),
            )
        });
        assert_eq!(y.kind(), kind);
        let d = common::max_abs(&y, &t(&format!("{case}.out")));
        let scale = t(&format!("{case}.out")).abs().max().double_value(&[]);
        println!(
            "unet_v2 in {kind:?} vs diffusers f32: max abs diff {d:.3e} (output max {scale:.2})"
        );
        assert!(d.is_finite() && d < tol * scale.max(1.0), "{kind:?}: {d}");
        if kind == Kind::Half {
            // diffusers' own f16 forward: the only difference is our float32 attention (upcast_attention).
            let d16 = common::max_abs(&y, &t(&format!("{case}.out_f16")));
            println!("unet_v2 in Half vs diffusers f16: max abs diff {d16:.3e}");
            assert!(d16 < tol * scale.max(1.0), "Half vs diffusers f16: {d16}");
        }
    }
}

fn check_vae(model: &AutoencoderKL, label: &str) {
    let dist = tch::no_grad(|| model.encode(&t("vae.image")));
    let decoded = tch::no_grad(|| model.decode(&t("vae.latents")));
    for (what, got, want) in [
        ("mean", &dist.mean, "vae.mean"),
        ("std", &dist.std, "vae.std"),
        ("decode", &decoded, "vae.decoded"),
    ] {
        let d = common::max_abs(got, &t(want));
        println!("{label} {what}: max abs diff {d:.3e}");
        assert!(d < TOL, "{label} {what}: {d}");
    }
}

#[test]
fn vae_matches_diffusers() {
    let (_vs, model) = load_vae(&dir("vae"), Device::Cpu, Kind::Float).unwrap();
    assert!((model.config.scaling_factor - 0.18215).abs() < 1e-12);
    check_vae(&model, "vae");
    // sample() draws around the mean with the posterior's std.
    let dist = tch::no_grad(|| model.encode(&t("vae.image")));
    let z = dist.sample_with_noise(&dist.mean.zeros_like());
    assert_eq!(common::max_abs(&z, &dist.mean), 0.0);
    assert_eq!(dist.sample().size(), dist.mean.size());
}

#[test]
fn vae_with_legacy_attention_names_matches_diffusers() {
    let (vs, model) = load_vae(&dir("vae_legacy"), Device::Cpu, Kind::Float).unwrap();
    assert!(vs
        .variables()
        .contains_key("decoder.mid_block.attentions.0.query.weight"));
    check_vae(&model, "vae_legacy");
}

fn copy_model(from: &str, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(dir(from).join(f), to.join(f)).unwrap();
    }
}

fn input_error(r: clipdoor::Result<impl Sized>) -> String {
    let e = r.err().expect("expected an error");
    assert_eq!(
        clipdoor::error::exit_code(&e),
        2,
        "not an input error: {e:#}"
    );
    let msg = format!("{e:#}");
    println!("error: {msg}");
    msg
}

#[test]
fn missing_weight_file_is_a_clear_error() {
    let tmp = common::tmp();
    copy_model("unet_v1", tmp.path());
    std::fs::remove_file(tmp.path().join("diffusion_pytorch_model.safetensors")).unwrap();
    let msg = input_error(load_unet(tmp.path(), Device::Cpu, Kind::Float));
    assert!(
        msg.contains("diffusion_pytorch_model.safetensors") && msg.contains("missing"),
        "{msg}"
    );
    let vae = common::tmp();
    copy_model("vae", vae.path());
    std::fs::remove_file(vae.path().join("diffusion_pytorch_model.safetensors")).unwrap();
    let msg = input_error(load_vae(vae.path(), Device::Cpu, Kind::Float));
    assert!(
        msg.contains("diffusion_pytorch_model.safetensors") && msg.contains("missing"),
        "{msg}"
    );
    let empty = common::tmp();
    let msg = input_error(load_unet(empty.path(), Device::Cpu, Kind::Float));
    assert!(msg.contains("config.json"), "{msg}");
}

fn edit_config(path: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let file = path.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    edit(v.as_object_mut().unwrap());
    std::fs::write(&file, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn cross_attention_dim_mismatch_is_a_clear_error() {
    let tmp = common::tmp();
    copy_model("unet_v1", tmp.path());
    edit_config(tmp.path(), |c| {
        c.insert("cross_attention_dim".into(), 768.into());
    });
    let msg = input_error(load_unet(tmp.path(), Device::Cpu, Kind::Float));
    assert!(
        msg.contains("attn2.to_k.weight")
            && msg.contains("[32, 32]")
            && msg.contains("[32, 768]")
            && msg.contains("config"),
        "{msg}"
    );

    // Encoder states of the wrong width are caught before the forward pass.
    let (_vs, model) = unet("unet_v1", Kind::Float);
    let e = Tensor::zeros([2, 7, 768], (Kind::Float, Device::Cpu));
    let msg = input_error(model.check_inputs(&t("unet_v1.0.sample"), &t("unet_v1.0.timestep"), &e));
    assert!(
        msg.contains("cross_attention_dim 32") && msg.contains("768"),
        "{msg}"
    );
}

#[test]
fn unsupported_or_inconsistent_configs_are_clear_errors() {
    let tmp = common::tmp();
    copy_model("unet_v1", tmp.path());
    edit_config(tmp.path(), |c| {
        c.insert("addition_embed_type".into(), "text_time".into());
    });
    let msg = input_error(load_unet(tmp.path(), Device::Cpu, Kind::Float));
    assert!(
        msg.contains("config.json") && msg.contains("addition_embed_type"),
        "{msg}"
    );
    // `text` is supported, but its pooling heads must divide the text width (32 here).
    edit_config(tmp.path(), |c| {
        c.insert("addition_embed_type".into(), "text".into());
        c.insert("addition_embed_type_num_heads".into(), 5.into());
    });
    let msg = input_error(load_unet(tmp.path(), Device::Cpu, Kind::Float));
    assert!(
        msg.contains("config.json")
            && msg.contains("addition_embed_type_num_heads")
            && msg.contains("(5)"),
        "{msg}"
    );
    edit_config(tmp.path(), |c| {
        c.remove("addition_embed_type");
        c.remove("addition_embed_type_num_heads");
    });

    edit_config(tmp.path(), |c| {
        c.insert("addition_embed_type".into(), serde_json::Value::Null);
        c.insert("attention_head_dim".into(), serde_json::json!([8, 8, 8]));
    });
    let msg = input_error(load_unet(tmp.path(), Device::Cpu, Kind::Float));
    assert!(
        msg.contains("attention_head_dim") && msg.contains("2 blocks"),
        "{msg}"
    );

    edit_config(tmp.path(), |c| {
        c.insert("attention_head_dim".into(), 8.into());
        c.insert(
            "down_block_types".into(),
            serde_json::json!(["SimpleCrossAttnDownBlock2D", "DownBlock2D"]),
        );
    });
    let msg = input_error(load_unet(tmp.path(), Device::Cpu, Kind::Float));
    assert!(
        msg.contains("SimpleCrossAttnDownBlock2D") && msg.contains("not supported"),
        "{msg}"
    );

    // A VAE config that does not describe its weights.
    let vae = common::tmp();
    copy_model("vae", vae.path());
    edit_config(vae.path(), |c| {
        c.insert("latent_channels".into(), 8.into());
    });
    let msg = input_error(load_vae(vae.path(), Device::Cpu, Kind::Float));
    assert!(msg.contains("shape") && msg.contains("config"), "{msg}");
    let msg = input_error(load_vae(&dir("vae"), Device::Cpu, Kind::Int64));
    assert!(msg.contains("float"), "{msg}");
}

/// Builds the real SD 1.5 and SD 2.1 UNets and the SD VAE (random weights, ~7 GB of f32 in all) and
/// compares every tensor name and shape with diffusers' own models built from the same configs.
/// Ignored by default for its memory and time: `cargo test --test suite diffusion_models:: -- --ignored`.
#[test]
#[ignore]
fn real_size_models_have_diffusers_names_and_shapes() {
    let out = common::tmp();
    common::run_py(
        "diffusers_models.py",
        &["--real-size", out.path().to_str().unwrap()],
    );
    for name in ["sd15_unet", "sd21_unet", "sd_vae"] {
        let dir = out.path().join(name);
        let want: std::collections::BTreeMap<String, Vec<i64>> =
            serde_json::from_str(&std::fs::read_to_string(dir.join("shapes.json")).unwrap())
                .unwrap();
        let build = || {
            let start = std::time::Instant::now();
            let vs = tch::nn::VarStore::new(Device::Cpu);
            if name.ends_with("unet") {
                let cfg =
                    clipdoor::models::unet::UNet2DConditionConfig::load(&dir.join("config.json"))
                        .unwrap();
                UNet2DConditionModel::new(vs.root(), &cfg).unwrap();
            } else {
                let cfg =
                    clipdoor::models::vae::AutoencoderKLConfig::load(&dir.join("config.json"))
                        .unwrap();
                AutoencoderKL::new(vs.root(), &cfg).unwrap();
            }
            (vs, start.elapsed().as_secs_f64())
        };
        // What load_unet/load_vae do: weights the file overwrites start at zero.
        let (_, zero_secs) = clipdoor::models::unet::layers::without_random_init(build);
        let (vs, random_secs) = build();
        let got: std::collections::BTreeMap<String, Vec<i64>> = vs
            .variables()
            .into_iter()
            .map(|(k, v)| (k, v.size()))
            .collect();
        let params: i64 = got.values().map(|s| s.iter().product::<i64>()).sum();
        println!(
            "{name}: {} tensors, {params} parameters, built in {random_secs:.1}s (random init), {zero_secs:.1}s (zero init)",
            got.len()
        );
        assert_eq!(got, want, "{name}: names/shapes differ from diffusers");
    }
}
