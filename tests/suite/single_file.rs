//! SD 1.x / 2.x single files (LDM layout) on the tiny random pipelines of
//! tests/python/diffusers_pipeline.py (SD 1.x: CLIP text, epsilon; SD 2.x: OpenCLIP layout, linear
//! projections, v-prediction): clipdoor writes a single file from a pipeline folder and diffusers'
//! own `from_single_file` reads back the folder's exact state dicts (so our key mapping is diffusers'
//! inverse); clipdoor reads the file back to bit-identical images and embeddings; a trained encoder
//! written into a base file is what diffusers reads, with every other tensor byte-identical; pickles
//! and files without LDM keys are input errors. Comparisons are exact: the conversion moves bytes.
use crate::common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clipdoor::diffusion::pipeline::{
    single_file_pipeline, GenerateRequest, Seeds, StableDiffusionPipeline,
};
use clipdoor::io::single_file::{self, write_from_pipeline, WriteOptions};
use clipdoor::io::weights::SafetensorsFile;
use clipdoor::models::text_encoder::TextEncoder;
use serde_json::Value;
use tch::{Device, Kind};

fn reference_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = common::tmp().keep();
        common::run_py("single_file_ref.py", &["make", common::s(&dir)]);
        dir
    })
}

fn dir(name: &str) -> PathBuf {
    reference_dir().join(name)
}

/// diffusers' verdict on `file` read with `from_single_file(config=<pipeline folder>)`.
fn diffusers_check(file: &Path, pipeline: &str, encoder: Option<&Path>) -> Value {
    let cfg = dir(pipeline);
    let mut args = vec!["check", common::s(file), common::s(&cfg)];
    if let Some(e) = encoder {
        args.push(common::s(e));
    }
    serde_json::from_str(common::run_py("single_file_ref.py", &args).trim()).unwrap()
}

fn assert_all_equal(report: &Value, what: &str) {
    for comp in ["unet", "vae", "text_encoder"] {
        let r = &report[comp];
        println!("{what} {comp}: {} tensors", r["n"]);
        assert!(r["n"].as_u64().unwrap() > 10, "{what} {comp}: {r}");
        for k in ["missing", "extra", "different"] {
            assert_eq!(r[k], serde_json::json!([]), "{what} {comp} {k}: {r}");
        }
    }
    let p = &report["prediction_type"];
    assert_eq!(p[0], p[1], "{what}: scheduler prediction types {p}");
}

/// Write `pipeline`'s folder as a single file (with its configs beside it) in a fresh temp folder.
fn written(pipeline: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = common::tmp();
    let out = tmp.path().join(format!("{pipeline}.safetensors"));
    let opts = WriteOptions {
        overwrite: false,
        config_beside: true,
    };
    write_from_pipeline(&dir(pipeline), &out, &opts).unwrap();
    (tmp, out)
}

/// Remove the conversion cache of `file` (with the config folder it was read with): the tiny
/// pipelines' 49408-token embeddings make each conversion ~15 MB in the shared temp dir.
fn drop_cache(file: &Path, config: Option<&Path>) {
    let sf = single_file::SingleFile::open(file, config).unwrap();
    let _ = std::fs::remove_dir_all(single_file::cache_root(&sf).unwrap());
}

fn input_error<T>(r: clipdoor::Result<T>) -> String {
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
fn diffusers_from_single_file_reads_what_clipdoor_writes() {
    for p in ["v1", "v2"] {
        let (_tmp, file) = written(p);
        assert!(single_file::sidecar_config(&file)
            .join("unet/config.json")
            .is_file());
        assert_all_equal(&diffusers_check(&file, p, None), p);
    }
}

fn embeddings(model: &str) -> tch::Tensor {
    let enc = TextEncoder::load(model, Device::Cpu, Kind::Float).unwrap();
    let (_, out) = enc
        .encode(
            &["a photo of a cat", "", "an astronaut riding a horse"],
            false,
        )
        .unwrap();
    out.last_hidden_state
}

#[test]
fn clipdoor_reads_a_single_file_like_its_folder() {
    tch::set_num_threads(1);
    for (p, steps) in [("v1", 3), ("v2", 3)] {
        let (_tmp, file) = written(p);
        let folder = dir(p);
        let mut req = GenerateRequest::new(vec!["a red circle".into()], Seeds::Single(7));
        req.steps = steps;
        let load = |s: &Path| {
            StableDiffusionPipeline::load(common::s(s), None, Device::Cpu, Kind::Float).unwrap()
        };
        let want = load(&folder).generate(&req).unwrap();
        let got = load(&file).generate(&req).unwrap();
        assert_eq!(got.size(), want.size());
        let d = common::max_abs(&got, &want);
        println!("{p}: images {:?}, max abs diff {d}", got.size());
        assert_eq!(d, 0.0, "{p}: images differ");
        // The same with the config folder named explicitly.
        let root = single_file_pipeline(&file, Some(&folder)).unwrap();
        let again = load(&root).generate(&req).unwrap();
        assert_eq!(common::max_abs(&again, &want), 0.0);
        // As a text encoder / teacher (`--model FILE.safetensors`).
        let (e1, e2) = (embeddings(common::s(&file)), embeddings(common::s(&folder)));
        assert_eq!(common::max_abs(&e1, &e2), 0.0, "{p}: embeddings differ");
        // The command line takes the file wherever it takes a model.
        let tmp = common::tmp();
        let prompts = tmp.path().join("p.txt");
        std::fs::write(&prompts, "a cat\n").unwrap();
        let mut outs = vec![];
        for (i, m) in [&file, &folder].iter().enumerate() {
            let o = tmp.path().join(format!("{i}.safetensors"));
            let r = common::encode_cmd(common::s(m), &prompts, &o)
                .output()
                .unwrap();
            assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
            outs.push(
                SafetensorsFile::open(&o)
                    .unwrap()
                    .tensor("last_hidden_state")
                    .unwrap(),
            );
        }
        assert_eq!(
            common::max_abs(&outs[0], &outs[1]),
            0.0,
            "{p}: clipdoor encode differs"
        );
        drop_cache(&file, None);
        drop_cache(&file, Some(&folder));
    }
}

#[test]
fn a_trained_encoder_replaces_only_the_text_encoder() {
    for p in ["v1", "v2"] {
        let (tmp, base) = written(p);
        let alt = dir(&format!("{p}_alt"));
        let encoder = TextEncoder::load(common::s(&alt), Device::Cpu, Kind::Float).unwrap();
        let out = tmp.path().join("trained.safetensors");
        let opts = WriteOptions {
            overwrite: false,
            config_beside: true,
        };
        encoder.write_into_single_file(&base, &out, &opts).unwrap();
        assert!(single_file::sidecar_config(&out)
            .join("unet/config.json")
            .is_file());
        // diffusers reads the new encoder, and the base's UNet and VAE.
        let report = diffusers_check(&out, p, Some(&alt));
        assert_all_equal(&report, &format!("{p} trained"));
        // Every tensor outside cond_stage_model is byte-identical; the encoder's are not.
        let (a, b) = (
            SafetensorsFile::open(&base).unwrap(),
            SafetensorsFile::open(&out).unwrap(),
        );
        assert_eq!(a.names(), b.names());
        let (mut same, mut changed) = (0, 0);
        for n in a.names() {
            let (ra, rb) = (a.raw(&n).unwrap(), b.raw(&n).unwrap());
            if n.starts_with("cond_stage_model.") {
                assert_eq!(ra.1, rb.1, "{n}: shape");
                changed += usize::from(ra.2 != rb.2);
            } else {
                assert!(ra == rb, "{p}: {n} changed");
                same += 1;
            }
        }
        println!("{p}: {same} tensors kept, {changed} encoder tensors replaced");
        assert!(same > 100 && changed > 10);
        // clipdoor reads the new encoder from the file.
        let (e1, e2) = (embeddings(common::s(&out)), embeddings(common::s(&alt)));
        assert_eq!(common::max_abs(&e1, &e2), 0.0, "{p}: embeddings differ");
        drop_cache(&out, None);
        // No silent overwrite; asked, it overwrites.
        let msg = input_error(encoder.write_into_single_file(&base, &out, &opts));
        assert!(msg.contains("already exists"), "{msg}");
        let force = WriteOptions {
            overwrite: true,
            ..opts
        };
        encoder.write_into_single_file(&base, &out, &force).unwrap();
    }
    // An encoder of another architecture has no place in the base.
    let (tmp, base) = written("v1");
    let v2 = TextEncoder::load(common::s(&dir("v2_alt")), Device::Cpu, Kind::Float).unwrap();
    let msg = input_error(v2.write_into_single_file(
        &base,
        &tmp.path().join("x.safetensors"),
        &WriteOptions::default(),
    ));
    assert!(msg.contains("text encoder"), "{msg}");
}

#[test]
fn pickles_and_files_without_ldm_keys_are_input_errors() {
    let tmp = common::tmp();
    // A pickle is never opened: its bytes do not matter.
    let ckpt = tmp.path().join("model.ckpt");
    std::fs::write(&ckpt, b"not read").unwrap();
    let msg = input_error(StableDiffusionPipeline::load(
        common::s(&ckpt),
        None,
        Device::Cpu,
        Kind::Float,
    ));
    assert!(
        msg.contains("pickled") && msg.contains("safetensors") && msg.contains("from_single_file"),
        "{msg}"
    );
    let msg = input_error(TextEncoder::load(
        common::s(&ckpt),
        Device::Cpu,
        Kind::Float,
    ));
    assert!(msg.contains("pickled"), "{msg}");
    // A safetensors file that is a diffusers component, not an LDM single file.
    let unet = tmp.path().join("unet.safetensors");
    std::fs::copy(
        dir("v1").join("unet/diffusion_pytorch_model.safetensors"),
        &unet,
    )
    .unwrap();
    let msg = input_error(StableDiffusionPipeline::load(
        common::s(&unet),
        None,
        Device::Cpu,
        Kind::Float,
    ));
    assert!(msg.contains("not a Stable Diffusion single file"), "{msg}");
    // A config folder beside the file that lacks a config is named.
    let (_t, file) = written("v1");
    std::fs::remove_file(single_file::sidecar_config(&file).join("vae/config.json")).unwrap();
    let msg = input_error(TextEncoder::load(
        common::s(&file),
        Device::Cpu,
        Kind::Float,
    ));
    assert!(msg.contains("vae/config.json"), "{msg}");
    // The command line: exit code 2 and the message.
    let prompts = tmp.path().join("p.txt");
    std::fs::write(&prompts, "a cat\n").unwrap();
    let out = common::encode_cmd(
        common::s(&ckpt),
        &prompts,
        &tmp.path().join("o.safetensors"),
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("pickled"), "{err}");
}

/// Real checkpoints hold more than diffusers reads: SD 2.x's last OpenCLIP block (SD 2 uses the
/// penultimate layer), `text_projection` and `logit_scale`; SD 1.x's `position_ids` buffer. They are
/// not read, and a written trained encoder leaves them byte-identical.
#[test]
fn real_layout_extras_are_ignored_on_read_and_kept_on_write() {
    use clipdoor::io::weights::save_tensors;
    for p in ["v1", "v2"] {
        let (tmp, base) = written(p);
        let mut tensors: Vec<(String, tch::Tensor)> = SafetensorsFile::open(&base)
            .unwrap()
            .tensors()
            .unwrap()
            .into_iter()
            .collect();
        let extras: Vec<(String, tch::Tensor)> = if p == "v2" {
            let pre = "cond_stage_model.model.";
            let mut x: Vec<(String, tch::Tensor)> = tensors
                .iter()
                .filter(|(n, _)| n.starts_with(&format!("{pre}transformer.resblocks.1.")))
                .map(|(n, t)| (n.replace("resblocks.1.", "resblocks.2."), t.randn_like()))
                .collect();
            x.push((
                format!("{pre}text_projection"),
                tch::Tensor::randn([48, 48], (Kind::Float, Device::Cpu)),
            ));
            x.push((format!("{pre}logit_scale"), tch::Tensor::from(4.6f32)));
            x
        } else {
            let ids = tch::Tensor::arange(77, (Kind::Int64, Device::Cpu)).unsqueeze(0);
            vec![(
                "cond_stage_model.transformer.text_model.embeddings.position_ids".into(),
                ids,
            )]
        };
        tensors.extend(extras.iter().map(|(n, t)| (n.clone(), t.shallow_clone())));
        let real = tmp.path().join("real.safetensors");
        save_tensors(&real, &tensors, None).unwrap();
        common::copy_dir(
            &single_file::sidecar_config(&base),
            &single_file::sidecar_config(&real),
        );
        let folder = dir(p);
        assert_eq!(
            common::max_abs(
                &embeddings(common::s(&real)),
                &embeddings(common::s(&folder))
            ),
            0.0,
            "{p}: the extras changed the embeddings"
        );
        let alt = dir(&format!("{p}_alt"));
        let encoder = TextEncoder::load(common::s(&alt), Device::Cpu, Kind::Float).unwrap();
        let out = tmp.path().join("out.safetensors");
        let opts = WriteOptions {
            overwrite: false,
            config_beside: true,
        };
        encoder.write_into_single_file(&real, &out, &opts).unwrap();
        let (a, b) = (
            SafetensorsFile::open(&real).unwrap(),
            SafetensorsFile::open(&out).unwrap(),
        );
        for (n, _) in &extras {
            assert!(a.raw(n).unwrap() == b.raw(n).unwrap(), "{p}: {n} changed");
        }
        assert_eq!(
            common::max_abs(&embeddings(common::s(&out)), &embeddings(common::s(&alt))),
            0.0,
            "{p}: the written encoder is not the trained one"
        );
        println!("{p}: {} extra tensors ignored and kept", extras.len());
        drop_cache(&real, None);
        drop_cache(&out, None);
    }
}

/// The embedded standard configs (no real checkpoint is available offline) are read by clipdoor's own
/// config types and fit together: SD 1.5 with 768-wide CLIP text and epsilon, SD 2.1 with 1024-wide
/// 23-layer OpenCLIP text and v-prediction.
#[test]
fn embedded_standard_configs_fit_together() {
    use clipdoor::diffusion::schedulers::{PredictionType, SchedulerConfig};
    use clipdoor::io::single_file::{embedded_config, Family};
    use clipdoor::models::clip_text_config::CLIPTextConfig;
    use clipdoor::models::unet::UNet2DConditionConfig;
    use clipdoor::models::vae::AutoencoderKLConfig;
    let tmp = common::tmp();
    for (family, width, layers, act, pred) in [
        (Family::Sd1, 768, 12, "quick_gelu", PredictionType::Epsilon),
        (Family::Sd2, 1024, 23, "gelu", PredictionType::VPrediction),
    ] {
        let file = |c: &str| {
            let p = tmp.path().join(format!("{c}.json"));
            std::fs::write(&p, embedded_config(family, c).unwrap()).unwrap();
            p
        };
        let unet = UNet2DConditionConfig::load(&file("unet")).unwrap();
        let vae = AutoencoderKLConfig::load(&file("vae")).unwrap();
        let text = CLIPTextConfig::load(&file("text_encoder")).unwrap();
        let sched = SchedulerConfig::parse(embedded_config(family, "scheduler").unwrap()).unwrap();
        assert_eq!(unet.text_width(), width, "{family:?}");
        assert_eq!(text.hidden_size, width, "{family:?}");
        assert_eq!(text.num_hidden_layers, layers, "{family:?}");
        assert_eq!(text.hidden_act, act, "{family:?}");
        assert_eq!(unet.in_channels, vae.latent_channels, "{family:?}");
        assert_eq!(sched.prediction_type, pred, "{family:?}");
    }
}

#[test]
fn cli_export_writes_a_single_file_with_the_trained_encoder() {
    let (tmp, base) = written("v1");
    let alt = dir("v1_alt");
    let out = tmp.path().join("exported.safetensors");
    let export = |out: &Path, extra: &[&str]| {
        common::bin()
            .args(["export", "--pipeline", common::s(&base), "--text-encoder"])
            .args([common::s(&alt), "--out", common::s(out)])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = export(&out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // diffusers reads it: the alternative encoder, the base's UNet and VAE.
    assert_all_equal(&diffusers_check(&out, "v1", Some(&alt)), "cli export");
    let (e1, e2) = (embeddings(common::s(&out)), embeddings(common::s(&alt)));
    assert_eq!(common::max_abs(&e1, &e2), 0.0);
    drop_cache(&out, None);
    // Not replaced without --force; with it, it is.
    let o = export(&out, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    assert!(export(&out, &["--force"]).status.success());
    // A folder base cannot give a single file; a .ckpt output is refused.
    let o = common::bin()
        .args([
            "export",
            "--pipeline",
            common::s(&dir("v1")),
            "--text-encoder",
        ])
        .args([
            common::s(&alt),
            "--out",
            common::s(&tmp.path().join("y.safetensors")),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("the base must be one"));
    let o = export(&tmp.path().join("z.ckpt"), &[]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_single_file_without_a_tokenizer_pads_as_its_family_does() {
    // SD 2.x pads with `!`, SD 1.x with the end token (diffusers' single-file loader does the same).
    for (p, pad) in [("v1", "<|endoftext|>"), ("v2", "!")] {
        let (_tmp, file) = written(p);
        std::fs::remove_dir_all(single_file::sidecar_config(&file).join("tokenizer")).unwrap();
        let loc = clipdoor::models::text_encoder::locate_single_file(&file, None).unwrap();
        let dir = loc.tokenizer_dir.expect("a tokenizer folder");
        let tok = clipdoor::text::tokenizer::ClipTokenizer::from_folder(&dir).unwrap();
        assert_eq!(tok.pad_token(), pad, "{p}");
        drop_cache(&file, None);
    }
}
