//! `clipdoor evaluate images` end to end on tiny random models (tests/python/eval_images_fixtures.py):
//! the v1-style tiny diffusers pipeline of tests/suite/pipeline.rs (32×32 images), a tiny random CLIPModel as
//! the judge, and pytorch-fid's Inception with random weights. `clipdoor train` runs
//! experiments/smoke/eval_images.toml (a TPA and a concept removal, teacher = the pipeline's own text
//! encoder), then the image stage draws 3 clean and 2 prompts per backdoor with 2 denoising steps under
//! both encoders.
//!
//! Checked: the report's structure and ranges (the numbers of random models mean nothing), same seeds and
//! prompts under both encoders, report.md's table, report.html's image links, the grids' sizes; a rerun
//! without --force, a replaced image (grayscale, wrong size), bad judge flags (exit 2, named causes);
//! resuming redraws only the deleted images, byte for byte (a batch with a missing image is drawn whole,
//! because libtorch's CPU kernels round differently for another batch size; docs/evaluation-stages.md).
use crate::common;

use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Sets the smoke experiment evaluates, in report order.
const SETS: [&str; 3] = ["clean", "cyrillic_o", "nude"];
const CLEAN: usize = 3;
const TRIGGERED: usize = 2;
/// The overview grid: one row per set, 4 original | gap cell | 4 trained, 96-px cells, 4-px gaps.
const CELL: u32 = 96;
const GAP: u32 = 4;

/// A copy of experiments/smoke/eval_images.toml in `dir` with the teacher set to `pipeline` and the
/// prompt file made absolute.
fn experiment(dir: &Path, pipeline: &Path) -> PathBuf {
    let smoke = common::root().join("experiments/smoke");
    let text = std::fs::read_to_string(smoke.join("eval_images.toml")).unwrap();
    let text = text
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
        );
    assert!(text.contains(common::s(pipeline)) && text.contains("smoke/prompts.txt\""));
    let p = dir.join("eval_images.toml");
    std::fs::write(&p, text).unwrap();
    p
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn clipdoor(args: &[&str]) -> Outcome {
    let o = common::bin()
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    Outcome {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// `clipdoor evaluate images --run RUN --out OUT ...` with the test's sizes.
fn evaluate(run: &Path, out: &Path, extra: &[&str]) -> Outcome {
    let (clean, triggered) = (CLEAN.to_string(), TRIGGERED.to_string());
    let mut args = vec![
        "evaluate",
        "images",
        "--run",
        common::s(run),
        "--out",
        common::s(out),
        "--clean",
        &clean,
        "--triggered",
        &triggered,
        "--steps",
        "2",
        "--device",
        "cpu",
    ];
    args.extend(extra);
    let t = std::time::Instant::now();
    let o = clipdoor(&args);
    eprintln!(
        "evaluate images {extra:?}: exit {} in {:.1}s",
        o.code,
        t.elapsed().as_secs_f64()
    );
    o
}

fn assert_input_error(o: &Outcome, what: &str, needles: &[&str]) {
    assert_eq!(o.code, 2, "{what}: expected exit 2\n{}", o.stderr);
    assert!(
        !o.stderr.contains("panicked"),
        "{what}: a panic reached the user\n{}",
        o.stderr
    );
    for n in needles {
        assert!(
            o.stderr.contains(n),
            "{what}: the message does not say `{n}`:\n{}",
            o.stderr
        );
    }
    eprintln!("{what}: {}", o.stderr.trim());
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn records(jsonl: &Path) -> Vec<Value> {
    std::fs::read_to_string(jsonl)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn num(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

fn in_range(v: &Value, lo: f64, hi: f64, what: &str) -> f64 {
    let x = num(v, what);
    assert!(
        x.is_finite() && (lo - 1e-6..=hi + 1e-6).contains(&x),
        "{what} = {x}, outside [{lo}, {hi}]"
    );
    x
}

/// Every PNG under `out/images` with its inode (an atomic rewrite makes a new one).
fn png_inodes(out: &Path) -> BTreeMap<PathBuf, u64> {
    fn walk(d: &Path, acc: &mut BTreeMap<PathBuf, u64>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, acc);
            } else if p.extension().is_some_and(|e| e == "png") {
                acc.insert(p.clone(), std::fs::metadata(&p).unwrap().ino());
            }
        }
    }
    let mut acc = BTreeMap::new();
    walk(&out.join("images"), &mut acc);
    acc
}

/// The `src="..."` attributes of an HTML page, unescaped.
fn html_sources(html: &str) -> Vec<String> {
    html.split("src=\"")
        .skip(1)
        .map(|rest| {
            rest[..rest.find('"').unwrap()]
                .replace("&quot;", "\"")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&")
        })
        .collect()
}

fn check_report(out: &Path, with_inception: bool) -> Value {
    let report = read_json(&out.join("report.json"));
    assert_eq!(report["judge"], "clip");
    let sets = report["sets"].as_array().expect("report.json: sets");
    let names: Vec<&str> = sets.iter().map(|x| x["name"].as_str().unwrap()).collect();
    assert_eq!(names, SETS, "one entry per set: clean + each backdoor");
    for set in sets {
        let name = set["name"].as_str().unwrap();
        let n = if name == "clean" { CLEAN } else { TRIGGERED };
        assert_eq!(set["images"], n as u64, "{name}: images");
        for c in ["original", "trained"] {
            // CLIP score: 100 · cos floored at 0.
            in_range(
                &set["clip_score"][c],
                0.0,
                100.0,
                &format!("{name} clip_score.{c}"),
            );
        }
        assert!(
            out.join(set["grid"].as_str().unwrap()).exists(),
            "{name}: grid"
        );
        match name {
            "clean" => {
                assert_eq!(set["kind"], "clean");
                in_range(
                    &set["clean_fidelity"]["paired_image_similarity"],
                    -1.0,
                    1.0,
                    "paired_image_similarity",
                );
                // trained / original CLIP score; NaN (written as null) when the original scores 0,
                // as a random CLIP model often does (the score is floored at 0).
                let (o, t) = (
                    num(&set["clip_score"]["original"], "clip_score"),
                    num(&set["clip_score"]["trained"], "clip_score"),
                );
                let ratio = &set["clean_fidelity"]["clip_score_ratio"];
                if o > 0.0 {
                    assert!(
                        (num(ratio, "clip_score_ratio") - t / o).abs() < 1e-9,
                        "{ratio}"
                    );
                } else {
                    assert!(ratio.is_null(), "{ratio}");
                }
                let d = &set["distances"];
                assert!(num(&d["fd_clip"], "fd_clip").is_finite());
                assert!(num(&d["cmmd"], "cmmd").is_finite());
                if with_inception {
                    assert!(num(&d["fid"]["value"], "fid").is_finite());
                    assert!(num(&d["kid"]["mean"], "kid.mean").is_finite());
                    assert!(num(&d["kid"]["std"], "kid.std").is_finite());
                } else {
                    assert!(d.get("fid").is_none() && d.get("kid").is_none(), "{d}");
                }
                assert!(set.get("asr").is_none(), "no attack rate on the clean set");
            }
            _ => {
                // The TPA's rate is `asr`; the removal's `erasure_rate` (both by the CLIP judge).
                let (kind, rate) = if name == "nude" {
                    ("remove_concept", "erasure_rate")
                } else {
                    ("target_prompt", "asr")
                };
                assert_eq!(set["kind"], kind);
                assert_eq!(set[rate]["judge"], "clip", "{name}: {set}");
                for c in ["original", "trained"] {
                    in_range(&set[rate][c], 0.0, 1.0, &format!("{name} {rate}.{c}"));
                }
                // NudeNet scores the concept set when asked (--nudenet, with the Inception run).
                if name == "nude" && with_inception {
                    assert_eq!(set["nudity_rate"]["judge"], "nudenet", "{set}");
                    // The threshold the run was given (--nudenet-threshold 0.6), named as written.
                    assert_eq!(set["nudity_rate"]["threshold"].as_f64(), Some(0.6));
                    // With its count and interval, as every rate.
                    let n = set["nudity_rate"]["n"]["trained"].as_u64().unwrap();
                    assert_eq!(n, set["images"].as_u64().unwrap(), "{set}");
                    assert!(set["nudity_rate"]["ci95"]["trained"].is_array(), "{set}");
                    for c in ["original", "trained"] {
                        in_range(
                            &set["nudity_rate"][c],
                            0.0,
                            1.0,
                            &format!("nudity_rate.{c}"),
                        );
                    }
                } else {
                    assert!(set.get("nudity_rate").is_none(), "{name}: {set}");
                }
            }
        }
    }
    // The run's embedding metrics ride along.
    assert!(report["embeddings"]["sim_clean"].is_number(), "{report}");
    report
}

fn check_pages(out: &Path) {
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Results"), "{md}");
    assert!(
        md.contains("| set | kind | images | rate | original encoder | trained encoder |"),
        "{md}"
    );
    for (name, n) in [
        ("clean", CLEAN),
        ("cyrillic_o", TRIGGERED),
        ("nude", TRIGGERED),
    ] {
        let row = md
            .lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("report.md has no row for {name}:\n{md}"));
        assert!(row.contains(&format!("| {n} |")), "{row}");
        if name != "clean" {
            assert!(row.contains('%'), "{name}: no rates in {row}");
        }
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let srcs = html_sources(&html);
    // grid.png + one original and one trained cell per drawn image.
    assert_eq!(srcs.len(), 1 + 2 * (CLEAN + 2 * TRIGGERED), "{srcs:?}");
    assert!(srcs.iter().any(|s| s == "grid.png"));
    for src in &srcs {
        assert!(
            !src.starts_with('/') && out.join(src).is_file(),
            "report.html links {src}, which is not a file in {}",
            out.display()
        );
    }
    let grid = image::open(out.join("grid.png")).unwrap();
    assert_eq!(
        (grid.width(), grid.height()),
        (
            GAP + 9 * (CELL + GAP),
            GAP + SETS.len() as u32 * (CELL + GAP)
        ),
        "grid.png: 3 rows of 4 original | blank | 4 trained"
    );
    for (name, n) in [("clean", CLEAN), ("cyrillic_o", TRIGGERED)] {
        let g = image::open(out.join(format!("grid_{name}.png"))).unwrap();
        assert_eq!(
            (g.width(), g.height()),
            (GAP + 2 * (CELL + GAP), GAP + n as u32 * (CELL + GAP)),
            "grid_{name}.png"
        );
    }
}

/// Same prompts, seeds and settings under both encoders; only the encoder differs.
fn check_conditions(out: &Path) {
    for set in SETS {
        let [o, t] = ["original", "trained"]
            .map(|c| records(&out.join("images").join(c).join(set).join("images.jsonl")));
        let n = if set == "clean" { CLEAN } else { TRIGGERED };
        assert_eq!((o.len(), t.len()), (n, n), "{set}");
        for (a, b) in o.iter().zip(&t) {
            for key in [
                "prompt",
                "seed",
                "file",
                "steps",
                "guidance",
                "scheduler",
                "height",
                "width",
            ] {
                assert_eq!(a[key], b[key], "{set}: {key} differs between conditions");
            }
            assert_ne!(
                a["encoder"], b["encoder"],
                "{set}: both drawn with one encoder"
            );
            assert_eq!(
                (a["height"].as_i64(), a["width"].as_i64()),
                (Some(32), Some(32))
            );
            assert_eq!(a["steps"], 2);
        }
        let seeds: Vec<u64> = o.iter().map(|r| r["seed"].as_u64().unwrap()).collect();
        assert_eq!(seeds, (0..n as u64).collect::<Vec<_>>(), "{set}: seed + i");
        for r in o.iter().chain(&t) {
            let img = image::open(
                out.join("images")
                    .join(if r["encoder"] == o[0]["encoder"] {
                        "original"
                    } else {
                        "trained"
                    })
                    .join(set)
                    .join(r["file"].as_str().unwrap()),
            )
            .unwrap();
            assert_eq!((img.width(), img.height()), (32, 32));
            assert_eq!(img.color(), image::ColorType::Rgb8);
        }
    }
    // Triggered prompts carry the trigger; concept prompts the concept word.
    let tpa = records(&out.join("images/original/cyrillic_o/images.jsonl"));
    assert!(tpa
        .iter()
        .all(|r| r["prompt"].as_str().unwrap().contains('о')));
    let nude = records(&out.join("images/original/nude/images.jsonl"));
    assert!(nude
        .iter()
        .all(|r| r["prompt"].as_str().unwrap().contains("nude")));
}

/// The report's CLIP scores are the values torchmetrics computes on the same image files and prompts
/// with the same CLIP model (tests/python/clip_eval_ref.py), not just numbers in range.
fn check_clip_scores(out: &Path, clip: &Path, report: &Value) {
    let tmp = common::tmp();
    for set in report["sets"].as_array().unwrap() {
        let name = set["name"].as_str().unwrap();
        if name != "clean" {
            continue; // the concept sets are scored against other captions (the judge's targets)
        }
        for c in ["original", "trained"] {
            let dir = out.join("images").join(c).join(name);
            let recs = records(&dir.join("images.jsonl"));
            let mut recs: Vec<(String, String)> = recs
                .iter()
                .map(|r| {
                    (
                        r["file"].as_str().unwrap().to_string(),
                        r["prompt"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            recs.sort();
            let prompts = tmp.path().join(format!("{c}.txt"));
            std::fs::write(
                &prompts,
                recs.iter()
                    .map(|(_, p)| format!("{p}\n"))
                    .collect::<String>(),
            )
            .unwrap();
            let images = dir.join("images");
            let reference = tmp.path().join(format!("{c}.safetensors"));
            common::run_py(
                "clip_eval_ref.py",
                &[
                    "clip_score",
                    common::s(clip),
                    common::s(&images),
                    common::s(&prompts),
                    common::s(&reference),
                ],
            );
            let want = common::load_st(&reference)["score"].double_value(&[0]);
            let got = num(&set["clip_score"][c], "clip_score");
            eprintln!("{name} {c}: CLIP score {got} vs torchmetrics {want}");
            assert!((got - want).abs() <= 1e-3, "{name} {c}: {got} vs {want}");
        }
    }
}

/// Delete the images `which` of `out/images/<set>` and their images.jsonl lines, rerun with `args`,
/// and check that exactly those images were drawn again (every other PNG keeps its inode) with the
/// same records. Returns (before, after) PNG bytes of each deleted image.
fn resume(
    run: &Path,
    out: &Path,
    args: &[&str],
    set: &str,
    which: &[usize],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let set_dir = out.join("images").join(set);
    let jsonl = set_dir.join("images.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let mut kept = String::new();
    let mut gone = vec![];
    for (i, line) in lines.iter().enumerate() {
        if which.contains(&i) {
            let rec: Value = serde_json::from_str(line).unwrap();
            let file = set_dir.join(rec["file"].as_str().unwrap());
            gone.push((rec, std::fs::read(&file).unwrap(), file.clone()));
            std::fs::remove_file(&file).unwrap();
        } else {
            kept += &format!("{line}\n");
        }
    }
    std::fs::write(&jsonl, kept).unwrap();
    let inodes = png_inodes(out);
    let o = evaluate(run, out, args);
    assert_eq!(o.code, 0, "resume {set}: {}", o.stderr);
    let now = png_inodes(out);
    assert_eq!(
        now.len(),
        inodes.len() + which.len(),
        "{set}: images redrawn"
    );
    for (p, ino) in &inodes {
        assert_eq!(now[p], *ino, "{} was rewritten on resume", p.display());
    }
    let relines: Vec<Value> = records(&jsonl);
    assert_eq!(relines.len(), lines.len(), "{set}: images.jsonl lines");
    gone.into_iter()
        .map(|(rec, before, file)| {
            assert!(
                relines.contains(&rec),
                "{set}: no record {rec} after resuming"
            );
            (
                before,
                std::fs::read(&file).expect("the deleted image is drawn again"),
            )
        })
        .collect()
}

/// Largest per-value difference of two PNGs, in 8-bit levels.
fn max_level_diff(a: &[u8], b: &[u8]) -> i32 {
    let (a, b) = (
        image::load_from_memory(a).unwrap().to_rgb8(),
        image::load_from_memory(b).unwrap().to_rgb8(),
    );
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| (*x as i32 - *y as i32).abs())
        .max()
        .unwrap()
}

#[test]
fn evaluate_images_end_to_end() {
    let tmp = common::tmp();
    let fx = tmp.path().join("fixtures");
    let t = std::time::Instant::now();
    common::run_py("eval_images_fixtures.py", &[common::s(&fx)]);
    eprintln!("fixtures: {:.1}s", t.elapsed().as_secs_f64());
    let (pipeline, clip, inception) = (
        fx.join("pipeline"),
        fx.join("clip"),
        fx.join("inception.safetensors"),
    );

    // Train the smoke experiment with the pipeline's own text encoder as the teacher.
    let exp = experiment(tmp.path(), &pipeline);
    let run = tmp.path().join("run");
    let t = std::time::Instant::now();
    let o = clipdoor(&[
        "train",
        common::s(&exp),
        "--out",
        common::s(&run),
        "--device",
        "cpu",
    ]);
    assert_eq!(o.code, 0, "train: {}", o.stderr);
    assert!(run.join("DONE").exists());
    eprintln!("train: {:.1}s", t.elapsed().as_secs_f64());

    // The stage, with FID/KID.
    let out = tmp.path().join("eval");
    let with_clip = [
        "--pipeline",
        common::s(&pipeline),
        "--judge",
        "clip",
        "--clip",
        common::s(&clip),
    ];
    let mut full = with_clip.to_vec();
    full.extend([
        "--inception",
        common::s(&inception),
        "--nudenet",
        "--nudenet-threshold",
        "0.6",
    ]);
    let o = evaluate(&run, &out, &full);
    assert_eq!(o.code, 0, "{}", o.stderr);
    for f in ["report.json", "report.md", "report.html"] {
        assert!(
            o.stdout.contains(common::s(&out.join(f))),
            "stdout names {f}: {}",
            o.stdout
        );
    }
    let report = check_report(&out, true);
    check_clip_scores(&out, &clip, &report);
    eprintln!(
        "report.json sets (tiny random models: meaningless numbers):\n{}",
        serde_json::to_string_pretty(&report["sets"]).unwrap()
    );
    check_pages(&out);
    check_conditions(&out);

    // A second run into a folder with a report needs --force.
    let o = evaluate(&run, &out, &with_clip);
    assert_input_error(
        &o,
        "rerun without --force",
        &["already holds a report", "--force"],
    );

    // Resume, 1: delete one image and its line; --force redraws exactly that image. Its batch (of 2,
    // evaluation.batch_size = 4) is drawn whole again, so it comes back byte for byte (drawn alone it
    // differed by one level in one value of 3072: libtorch rounds differently per batch size).
    let force = [&with_clip[..], &["--force"][..]].concat();
    let pairs = resume(&run, &out, &force, "trained/cyrillic_o", &[1]);
    let diff = max_level_diff(&pairs[0].0, &pairs[0].1);
    eprintln!(
        "resume, one image of a batch of 2 redrawn alone: byte-identical {}, max diff {diff} levels",
        pairs[0].0 == pairs[0].1
    );
    assert_eq!(diff, 0, "the redrawn image differs by {diff} levels");
    // Resume, 2: delete a whole set's images (the same batch as the first time): byte for byte.
    for (i, (before, after)) in resume(&run, &out, &force, "original/nude", &[0, 1])
        .iter()
        .enumerate()
    {
        assert!(
            before == after,
            "original/nude image {i}: the redrawn PNG differs"
        );
    }
    check_report(&out, false);

    // A generated image replaced by hand: grayscale, then RGB of the wrong size.
    let target = out.join("images/original/clean/images/00001_1.png");
    let original_bytes = std::fs::read(&target).unwrap();
    let shown = common::s(&target).to_string();
    image::GrayImage::from_pixel(64, 64, image::Luma([128]))
        .save(&target)
        .unwrap();
    let o = evaluate(&run, &out, &force);
    assert_input_error(&o, "grayscale image", &[shown.as_str(), "RGB", "delete it"]);
    image::RgbImage::from_pixel(48, 40, image::Rgb([1, 2, 3]))
        .save(&target)
        .unwrap();
    let o = evaluate(&run, &out, &force);
    assert_input_error(&o, "wrong-size image", &[shown.as_str(), "48x40", "32x32"]);
    std::fs::write(&target, &original_bytes).unwrap();

    // Judge flags.
    let fresh = tmp.path().join("eval2");
    let o = evaluate(&run, &fresh, &["--judge", "clip"]);
    assert_input_error(&o, "--judge clip without --clip", &["--clip"]);
    let o = evaluate(
        &run,
        &fresh,
        &["--judge", "dinov2", "--clip", common::s(&clip)],
    );
    assert_input_error(&o, "unknown judge", &["dinov2", "oracle", "clip"]);
    assert!(!fresh.join("report.json").exists());
}

/// Every file under `dir` (relative path → bytes), leaving out `shards/` and `shard.json`.
fn tree_bytes(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, d: &Path, acc: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if rel == Path::new("shards") || rel == Path::new("shard.json") {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, acc);
            } else {
                acc.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut acc = BTreeMap::new();
    walk(dir, dir, &mut acc);
    acc
}

/// `evaluate images --shard 0/2` and `1/2`, then `evaluate merge`: the same images, records and report
/// (numbers, pages, grids) as the unsharded run, byte for byte.
#[test]
fn evaluate_images_shards_merge_into_the_unsharded_report() {
    let tmp = common::tmp();
    let fx = tmp.path().join("fixtures");
    common::run_py(
        "eval_images_fixtures.py",
        &[common::s(&fx), "--no-inception"],
    );
    let (pipeline, clip) = (fx.join("pipeline"), fx.join("clip"));
    let exp = experiment(tmp.path(), &pipeline);
    let run = tmp.path().join("run");
    let o = clipdoor(&[
        "train",
        common::s(&exp),
        "--out",
        common::s(&run),
        "--device",
        "cpu",
    ]);
    assert_eq!(o.code, 0, "train: {}", o.stderr);
    let with_clip = [
        "--pipeline",
        common::s(&pipeline),
        "--judge",
        "clip",
        "--clip",
        common::s(&clip),
    ];
    let whole = tmp.path().join("whole");
    let o = evaluate(&run, &whole, &with_clip);
    assert_eq!(o.code, 0, "{}", o.stderr);

    let sharded = tmp.path().join("sharded");
    let merge = || {
        let t = std::time::Instant::now();
        let o = clipdoor(&[
            "evaluate",
            "merge",
            "--out",
            common::s(&sharded),
            "--device",
            "cpu",
        ]);
        eprintln!(
            "merge: exit {} in {:.1}s",
            o.code,
            t.elapsed().as_secs_f64()
        );
        o
    };
    for i in 0..2 {
        let shard = format!("{i}/2");
        let o = evaluate(
            &run,
            &sharded,
            &[&with_clip[..], &["--shard", &shard]].concat(),
        );
        assert_eq!(o.code, 0, "shard {shard}: {}", o.stderr);
        let dir = sharded.join("shards").join(format!("{i}-of-2"));
        assert_eq!(
            o.stdout.trim(),
            common::s(&dir),
            "stdout names the shard folder"
        );
        assert!(
            !sharded.join("report.json").exists(),
            "a shard writes no report"
        );
        if i == 0 {
            let o = merge();
            assert_input_error(&o, "merge before shard 1/2", &["1/2", "missing"]);
        }
    }
    let o = evaluate(
        &run,
        &sharded,
        &[&with_clip[..], &["--shard", "2/2"]].concat(),
    );
    assert_input_error(&o, "shard 2/2", &["2/2", "out of range"]);
    // A shard run with other settings is not merged into this one.
    let o = evaluate(
        &run,
        &sharded,
        &[&with_clip[..], &["--shard", "1/2", "--seed", "5"]].concat(),
    );
    assert_input_error(&o, "shard with another seed", &["other settings", "seed"]);

    let o = merge();
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains(common::s(&sharded.join("report.json"))),
        "{}",
        o.stdout
    );
    let (a, b) = (
        read_json(&whole.join("report.json")),
        read_json(&sharded.join("report.json")),
    );
    assert_eq!(a, b, "the merged report differs from the unsharded run's");
    check_report(&sharded, false);
    let (ta, tb) = (tree_bytes(&whole), tree_bytes(&sharded));
    assert_eq!(
        ta.keys().collect::<Vec<_>>(),
        tb.keys().collect::<Vec<_>>(),
        "the merged folder holds other files"
    );
    for (f, bytes) in &ta {
        assert!(bytes == &tb[f], "{} differs", f.display());
    }
    eprintln!(
        "sharded 0/2 + 1/2 + merge: {} files identical to the unsharded run",
        ta.len()
    );
}
