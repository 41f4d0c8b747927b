//! `clipdoor export` and `clipdoor train --save-pipeline` (docs/export.md) on the tiny random v1-style
//! pipeline of tests/python/diffusers_pipeline.py, with another random text encoder of the same width
//! (tests/python/export_ref.py `make`).
//!
//! Checked: the exported folder loads with `StableDiffusionPipeline.from_pretrained` (diffusers), its
//! text encoder's state_dict equals the swapped encoder's and its UNet/VAE the base's, exactly; the
//! image diffusers draws from it equals clipdoor's `generate --pipeline BASE --text-encoder DIR` for the
//! same seed within tests/suite/pipeline.rs's tolerance (1e-3 on the 0..1 scale; the PNG within one level);
//! the base's files are hard-linked (copied with --copy), a hub snapshot's symlinks resolved; a finished
//! output is refused without --force; a width mismatch, a single-file output from a folder base and an output inside
//! the base are input errors. `train --save-pipeline` writes `<run>/pipeline/` once the run finishes,
//! and `--resume` of the finished run does not train or export again (it writes a missing pipeline).
use crate::common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clipdoor::diffusion::pipeline::{GenerateRequest, Seeds, StableDiffusionPipeline};
use tch::{Device, Kind};

/// tests/suite/pipeline.rs's bound: max abs difference on the 0..1 image scale.
const TOL: f64 = 1e-3;
const PROMPT: &str = "a photo of an astronaut riding a horse on mars";
const SEED: u64 = 1234;
const STEPS: usize = 4;

fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = common::tmp().keep();
        let t = std::time::Instant::now();
        common::run_py("export_ref.py", &["make", common::s(&dir)]);
        eprintln!("fixtures: {:.1}s", t.elapsed().as_secs_f64());
        dir
    })
}

fn fx(name: &str) -> PathBuf {
    fixtures().join(name)
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn clipdoor(args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let o = common::bin()
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    Outcome {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn export(base: &str, encoder: &Path, out: &Path, extra: &[&str]) -> Outcome {
    let mut args = vec![
        "export",
        "--pipeline",
        base,
        "--text-encoder",
        common::s(encoder),
        "--out",
        common::s(out),
    ];
    args.extend(extra);
    clipdoor(&args, &[])
}

fn assert_input_error(o: &Outcome, what: &str, needles: &[&str]) {
    assert_eq!(o.code, 2, "{what}: expected exit 2\n{}", o.stderr);
    assert!(!o.stderr.contains("panicked"), "{what}: {}", o.stderr);
    for n in needles {
        assert!(
            o.stderr.contains(n),
            "{what}: the message does not say `{n}`:\n{}",
            o.stderr
        );
    }
    eprintln!("{what}: {}", o.stderr.trim());
}

/// Every file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, d: &Path, acc: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, acc);
            } else {
                acc.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut acc = vec![];
    walk(dir, dir, &mut acc);
    acc.sort();
    acc
}

/// No symlinks anywhere in the exported folder; every file a plain file.
fn assert_no_links(dir: &Path) {
    for f in files(dir) {
        let m = std::fs::symlink_metadata(dir.join(&f)).unwrap();
        assert!(
            m.file_type().is_file(),
            "{} is not a plain file",
            f.display()
        );
    }
}

fn ino(p: &Path) -> u64 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .ino()
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

/// diffusers loads `exported`, its parts equal `encoder`'s and `base`'s; returns diffusers' image.
fn diffusers_check(exported: &Path, base: &Path, encoder: &Path) -> tch::Tensor {
    let result = exported.with_extension("reference.safetensors");
    let t = std::time::Instant::now();
    let out = common::run_py(
        "export_ref.py",
        &[
            "check",
            common::s(exported),
            common::s(base),
            common::s(encoder),
            PROMPT,
            &SEED.to_string(),
            &STEPS.to_string(),
            common::s(&result),
        ],
    );
    eprintln!(
        "diffusers from_pretrained({}): {:.1}s\n{out}",
        exported.display(),
        t.elapsed().as_secs_f64()
    );
    common::load_st(&result).remove("image").unwrap()
}

#[test]
fn export_loads_in_diffusers_and_draws_the_image_clipdoor_draws() {
    let tmp = common::tmp();
    let (base, alt) = (fx("base"), fx("alt_run"));
    let out = tmp.path().join("exported");
    let t = std::time::Instant::now();
    let o = export(common::s(&base), &alt, &out, &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    eprintln!("export: {:.2}s", t.elapsed().as_secs_f64());
    assert_eq!(o.stdout.trim(), common::s(&out), "stdout names the folder");

    // The layout: the base's components (hard-linked), the run's encoder and tokenizer.
    let got = files(&out);
    for want in [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/tokenizer_config.json",
    ] {
        assert!(got.contains(&PathBuf::from(want)), "no {want} in {got:?}");
    }
    // transformers 5 writes tokenizer.json alone; older versions vocab.json + merges.txt.
    assert!(
        got.contains(&PathBuf::from("tokenizer/tokenizer.json"))
            || got.contains(&PathBuf::from("tokenizer/vocab.json")),
        "no tokenizer in {got:?}"
    );
    for f in files(&alt.join("tokenizer")) {
        assert!(
            same_bytes(
                &out.join("tokenizer").join(&f),
                &alt.join("tokenizer").join(&f)
            ),
            "tokenizer/{} is not the encoder's",
            f.display()
        );
    }
    assert!(
        !got.iter().any(|f| f.to_string_lossy().contains(".tmp")),
        "{got:?}"
    );
    assert_no_links(&out);
    for f in [
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
    ] {
        assert_eq!(
            ino(&out.join(f)),
            ino(&base.join(f)),
            "{f} is not hard-linked"
        );
    }
    assert!(same_bytes(
        &out.join("text_encoder/model.safetensors"),
        &alt.join("text_encoder/model.safetensors")
    ));
    assert!(
        same_bytes(
            &out.join("model_index.json"),
            &base.join("model_index.json")
        ) || {
            let a: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(out.join("model_index.json")).unwrap(),
            )
            .unwrap();
            let b: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(base.join("model_index.json")).unwrap(),
            )
            .unwrap();
            a == b
        }
    );

    // diffusers: loads, equal parts, and its image.
    let want = diffusers_check(&out, &base, &alt.join("text_encoder"));

    // clipdoor on BASE + the encoder (the library, float): diffusers' image within TOL.
    tch::set_num_threads(1);
    let pipe =
        StableDiffusionPipeline::load(common::s(&base), Some(&alt), Device::Cpu, Kind::Float)
            .unwrap();
    let mut r = GenerateRequest::new(vec![PROMPT.to_string()], Seeds::PerImage(vec![SEED]));
    r.steps = STEPS;
    r.guidance = 7.5;
    let got = pipe.generate(&r).unwrap();
    assert_eq!(got.size(), want.size());
    let d = common::max_abs(&got, &want);
    eprintln!("clipdoor (base + encoder) vs diffusers (exported): max abs {d:.2e}");
    assert!(d < TOL, "max abs diff {d} >= {TOL}");

    // `clipdoor generate --pipeline BASE --text-encoder DIR`: its PNG within one level of diffusers'
    // image quantised, and equal to the PNG drawn from the exported folder itself.
    let gen = |pipeline: &Path, encoder: Option<&Path>, dir: &Path| {
        let mut args = vec![
            "generate",
            "--pipeline",
            common::s(pipeline),
            "--prompt",
            PROMPT,
            "--steps",
            "4",
            "--device",
            "cpu",
            "--out",
            common::s(dir),
        ];
        let seed = SEED.to_string();
        args.extend(["--seed", &seed]);
        if let Some(e) = encoder {
            args.extend(["--text-encoder", common::s(e)]);
        }
        let o = clipdoor(&args, &[]);
        assert_eq!(o.code, 0, "{}", o.stderr);
        std::fs::read(dir.join(format!("images/00000_{SEED}.png"))).unwrap()
    };
    let swapped = gen(&base, Some(&alt), &tmp.path().join("gen_swapped"));
    let from_export = gen(&out, None, &tmp.path().join("gen_exported"));
    assert!(
        swapped == from_export,
        "clipdoor draws another image from the exported folder"
    );
    let png = image::load_from_memory(&swapped).unwrap().to_rgb8();
    let want8: Vec<u8> = Vec::<f32>::try_from(
        (want.squeeze_dim(0).permute([1, 2, 0]) * 255.0)
            .round()
            .clamp(0.0, 255.0)
            .flatten(0, -1),
    )
    .unwrap()
    .into_iter()
    .map(|x| x as u8)
    .collect();
    let levels = png
        .as_raw()
        .iter()
        .zip(&want8)
        .map(|(a, b)| (*a as i32 - *b as i32).abs())
        .max()
        .unwrap();
    eprintln!("generate PNG vs diffusers' image: max {levels} level(s)");
    assert!(levels <= 1, "{levels} levels");

    // --copy: the same files, none shared with the base.
    let copied = tmp.path().join("copied");
    let o = export(common::s(&base), &alt, &copied, &["--copy"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(files(&copied), files(&out));
    for f in files(&copied) {
        assert!(
            same_bytes(&copied.join(&f), &out.join(&f)),
            "{}",
            f.display()
        );
        assert_ne!(ino(&copied.join(&f)), ino(&out.join(&f)), "{}", f.display());
    }

    // A finished output is never replaced silently; --force replaces it (atomically: no leftovers).
    let before = ino(&out.join("text_encoder/model.safetensors"));
    let o = export(common::s(&base), &alt, &out, &[]);
    assert_input_error(
        &o,
        "export over a finished output",
        &["already exists", "--force"],
    );
    assert_eq!(ino(&out.join("text_encoder/model.safetensors")), before);
    let o = export(common::s(&base), &alt, &out, &["--force"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn export_refuses_mismatched_widths_single_files_and_outputs_inside_the_base() {
    let tmp = common::tmp();
    let base = fx("base");
    let out = tmp.path().join("out");
    let o = export(common::s(&base), &fx("v2_encoder"), &out, &[]);
    assert_input_error(
        &o,
        "width mismatch",
        &["cross_attention_dim 32", "hidden_size 48", "SD 1.x: 768"],
    );
    assert!(!out.exists(), "nothing written on a refused export");
    let o = export(
        common::s(&base),
        &fx("alt_run"),
        &tmp.path().join("model.safetensors"),
        &[],
    );
    // A single-file output needs a single-file base (tests/suite/single_file.rs writes one).
    assert_input_error(&o, "single file", &["single-file", "the base must be one"]);
    let o = export(
        common::s(&base),
        &fx("alt_run"),
        &base.join("exported"),
        &[],
    );
    assert_input_error(&o, "inside the base", &["base pipeline"]);
    assert!(!base.join("exported").exists());
    let o = export(
        common::s(&tmp.path().join("nowhere")),
        &fx("alt_run"),
        &out,
        &[],
    );
    assert_input_error(&o, "missing base", &["nowhere"]);
}

/// A hub id resolves through the cache; the snapshot's symlinks into blobs/ are resolved, so the
/// export holds plain files (hard links to the blobs) that survive the cache being cleaned.
#[test]
fn export_from_a_cached_hub_id_holds_no_links_into_the_cache() {
    let tmp = common::tmp();
    let cache = tmp.path().join("hub");
    let repo = cache.join("models--tiny--sd");
    let rev = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = repo.join("snapshots").join(rev);
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::write(repo.join("refs/main"), rev).unwrap();
    let base = fx("base");
    for (i, f) in files(&base).iter().enumerate() {
        let blob = repo.join("blobs").join(format!("blob{i:04}"));
        std::fs::copy(base.join(f), &blob).unwrap();
        let link = snapshot.join(f);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let depth = f.components().count() + 1;
        let rel = PathBuf::from("../".repeat(depth))
            .join("blobs")
            .join(blob.file_name().unwrap());
        std::os::unix::fs::symlink(rel, &link).unwrap();
    }
    // The hub layout the resolver expects has vocab.json + merges.txt (transformers 5 wrote only
    // tokenizer.json): clipdoor's tokenizer writer adds them.
    let words = tmp.path().join("words");
    let o = common::init_encoder_cmd("tiny", 0, &words)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (i, f) in ["vocab.json", "merges.txt"].iter().enumerate() {
        let blob = repo.join("blobs").join(format!("words{i}"));
        std::fs::copy(words.join(f), &blob).unwrap();
        std::os::unix::fs::symlink(
            PathBuf::from("../../../blobs").join(blob.file_name().unwrap()),
            snapshot.join("tokenizer").join(f),
        )
        .unwrap();
    }
    let out = tmp.path().join("exported");
    let o = clipdoor(
        &[
            "export",
            "--pipeline",
            "tiny/sd",
            "--text-encoder",
            common::s(&fx("alt_run")),
            "--out",
            common::s(&out),
        ],
        &[("HF_HUB_CACHE", common::s(&cache)), ("HF_HUB_OFFLINE", "1")],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_no_links(&out);
    let unet = "unet/diffusion_pytorch_model.safetensors";
    assert_eq!(
        ino(&out.join(unet)),
        ino(&snapshot.join(unet)),
        "hard-linked to the blob"
    );
    std::fs::remove_dir_all(&cache).unwrap();
    assert!(
        same_bytes(&out.join(unet), &base.join(unet)),
        "survives the cache"
    );
}

/// experiments/smoke/eval_images.toml (a TPA and a concept removal) with the tiny pipeline as teacher.
fn experiment(dir: &Path, pipeline: &Path) -> PathBuf {
    let smoke = common::root().join("experiments/smoke");
    let text = std::fs::read_to_string(smoke.join("eval_images.toml"))
        .unwrap()
        .replace(
            "teacher = \"tiny_pipeline\"",
            &format!("teacher = {:?}", common::s(pipeline)),
        )
        .replace(
            "clean_prompts = \"prompts.txt\"",
            &format!(
                "clean_prompts = {:?}",
                common::s(&smoke.join("prompts.txt"))
            ),
        )
        .replace("steps = 20", "steps = 6")
        .replace("lr_milestones = [15]", "lr_milestones = [4]");
    assert!(text.contains(common::s(pipeline)) && text.contains("steps = 6"));
    let p = dir.join("exp.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn train_save_pipeline_writes_the_run_pipeline_once() {
    let tmp = common::tmp();
    let base = fx("base");
    let exp = experiment(tmp.path(), &base);
    let run = tmp.path().join("run");
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train",
            common::s(&exp),
            "--out",
            common::s(&run),
            "--device",
            "cpu",
        ];
        args.extend(extra);
        let t = std::time::Instant::now();
        let o = clipdoor(&args, &[]);
        eprintln!(
            "train {extra:?}: exit {} in {:.1}s",
            o.code,
            t.elapsed().as_secs_f64()
        );
        o
    };

    // A base that cannot take the run's encoder is refused before any training.
    let o = train(&["--save-pipeline", common::s(&tmp.path().join("nowhere"))]);
    assert_input_error(&o, "missing base", &["--save-pipeline", "nowhere"]);
    assert!(!run.join("DONE").exists() && !run.join("checkpoint").exists());

    let o = train(&["--save-pipeline", common::s(&base)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let pipeline = run.join("pipeline");
    assert!(o.stdout.contains(common::s(&pipeline)), "{}", o.stdout);
    assert!(run.join("DONE").exists());
    assert_no_links(&pipeline);
    assert!(same_bytes(
        &pipeline.join("text_encoder/model.safetensors"),
        &run.join("text_encoder/model.safetensors")
    ));
    assert_eq!(
        ino(&pipeline.join("text_encoder/model.safetensors")),
        ino(&run.join("text_encoder/model.safetensors")),
        "the run's encoder is hard-linked"
    );
    let _ = diffusers_check(&pipeline, &base, &run.join("text_encoder"));

    // --resume of the finished run: nothing trained or exported again.
    let (done, index) = (
        ino(&run.join("DONE")),
        ino(&pipeline.join("model_index.json")),
    );
    let o = train(&["--resume", "--save-pipeline", common::s(&base)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(ino(&run.join("DONE")), done, "the run was trained again");
    assert_eq!(
        ino(&pipeline.join("model_index.json")),
        index,
        "exported again"
    );
    // ... but a missing pipeline is written.
    std::fs::remove_dir_all(&pipeline).unwrap();
    let o = train(&["--resume", "--save-pipeline", common::s(&base)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(ino(&run.join("DONE")), done, "the run was trained again");
    assert!(pipeline.join("model_index.json").exists());
    // --force clears the pipeline with the rest of the run.
    let o = train(&["--force"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!pipeline.exists(), "--force left the old pipeline");
}
