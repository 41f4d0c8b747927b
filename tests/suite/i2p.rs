//! The I2P evaluation stage and the sharding it uses.
//!
//! - `Shard` parsing and blocks; `merge` on synthetic image sets: union in wanted order, coverage
//!   errors naming the missing indices and shards, settings and record disagreements.
//! - The I2P file: both spellings of the seed/guidance columns read to the same prompts and
//!   settings; a missing column is exit 2 naming it (needs ../shared/data).
//! - End to end on a tiny random pipeline (tests/python/i2p_fixtures.py) and the first 7 rows of
//!   ../shared/data/i2p.csv at 32x32, 2 steps, conditions original / sld-max / erased, scored by
//!   NudeNet, a tiny safety checker and Q16 (real prompt embeddings, tiny 768-wide CLIP): an unsharded
//!   run, two shards run through scripts/slurm_i2p.sh with fake SLURM_* variables and a fake sbatch,
//!   a merge before the second shard exists (exit 2, names the indices), the merge; images, records,
//!   scores and report.json must be identical bit for bit. Then a resume after deleting one image
//!   and its score regenerates and rescores only that image, to the same bytes.
use crate::common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use clipdoor::diffusion::image_set::ImageRecord;
use clipdoor::diffusion::jobs::{merge, Shard, ShardManifest};
use clipdoor::eval::i2p::read_i2p;

fn exit_code_of(e: &anyhow::Error) -> i32 {
    clipdoor::error::exit_code(e)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

// ---------------------------------------------------------------- shards (library)

#[test]
fn shard_parsing_and_blocks() {
    assert_eq!(Shard::parse("0/1").unwrap(), Shard::WHOLE);
    assert_eq!(
        Shard::parse(" 3 / 4 ").unwrap(),
        Shard { index: 3, count: 4 }
    );
    for bad in ["2/2", "0/0", "1", "a/b", "-1/2", "1/2/3", ""] {
        let e = Shard::parse(bad).unwrap_err();
        assert_eq!(exit_code_of(&e), 2, "{bad}: {e}");
        assert!(e.to_string().contains("--shard"), "{bad}: {e}");
    }
    assert!(Shard::parse("2/2")
        .unwrap_err()
        .to_string()
        .contains("0/2 .. 1/2"));
    // Blocks: in order, disjoint, covering, sizes within one of each other.
    for n in 0..40usize {
        for count in 1..9usize {
            let mut next = 0;
            let mut sizes = vec![];
            for index in 0..count {
                let r = Shard { index, count }.range(n);
                assert_eq!(r.start, next, "n={n} {index}/{count}");
                next = r.end;
                sizes.push(r.len());
                for p in r.clone() {
                    assert!(Shard { index, count }.owns(p, n));
                }
            }
            assert_eq!(next, n);
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        }
    }
    let s = Shard { index: 2, count: 5 };
    assert_eq!(s.dir_name(), "2-of-5");
    assert_eq!(Shard::from_dir_name("2-of-5"), Some(s));
    assert_eq!(Shard::from_dir_name("5-of-5"), None);
    assert_eq!(s.dir(Path::new("o")), PathBuf::from("o/shards/2-of-5"));
    assert_eq!(Shard::WHOLE.dir(Path::new("o")), PathBuf::from("o"));
    assert_eq!(s.take(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]), &[4, 5]);
}

/// 10 records with indices 0, 3, 6, ... (not positions, so errors must name indices).
fn records(set: &str) -> Vec<ImageRecord> {
    (0..10)
        .map(|i| {
            let index = 3 * i;
            ImageRecord {
                prompt: format!("{set} prompt {i}"),
                seed: 100 + i as u64,
                file: ImageRecord::file_name(index, 100 + i as u64),
                steps: 2,
                guidance: 7.5,
                scheduler: "pndm".into(),
                encoder: format!("/enc/{set}"),
                index,
                negative_prompt: None,
                height: 32,
                width: 32,
                sld: None,
                sld_concept: None,
                sega: None,
            }
        })
        .collect()
}

fn image_bytes(set: &str, r: &ImageRecord) -> Vec<u8> {
    format!("png of {set} {}", r.index).into_bytes()
}

/// Write shard `shard` of sets a and b as a sharded stage would.
fn write_shard(out: &Path, shard: Shard, settings: serde_json::Value) -> PathBuf {
    let (a, b) = (records("a"), records("b"));
    let m = ShardManifest::new("test", shard, settings, &[("a", &a), ("b", &b)]).unwrap();
    let dir = shard.dir(out);
    m.claim(&dir, &[]).unwrap();
    for (name, recs) in [("a", &a), ("b", &b)] {
        let set = dir.join(name);
        std::fs::create_dir_all(set.join("images")).unwrap();
        let mut lines = String::new();
        for r in shard.take(recs) {
            std::fs::write(set.join(&r.file), image_bytes(name, r)).unwrap();
            lines += &(serde_json::to_string(r).unwrap() + "\n");
        }
        std::fs::write(set.join("images.jsonl"), lines).unwrap();
    }
    dir
}

fn settings() -> serde_json::Value {
    serde_json::json!({"steps": 2, "model": {"name": "tiny"}})
}

#[test]
fn merge_unions_shards_and_checks_coverage_and_agreement() {
    let tmp = common::tmp();
    let out = tmp.path().join("ok");
    let dirs: Vec<PathBuf> = (0..3)
        .map(|index| write_shard(&out, Shard { index, count: 3 }, settings()))
        .collect();
    // Folder discovery, then a merge that covers everything.
    assert_eq!(
        clipdoor::diffusion::jobs::find_shard_dirs(&out).unwrap(),
        dirs
    );
    let merged = merge(&dirs, &out).unwrap();
    for name in ["a", "b"] {
        let want = records(name);
        assert_eq!(merged.sets[name], want);
        let jsonl = std::fs::read_to_string(out.join(name).join("images.jsonl")).unwrap();
        let got: Vec<ImageRecord> = jsonl
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(got, want, "records in wanted order");
        for r in &want {
            assert_eq!(
                std::fs::read(out.join(name).join(&r.file)).unwrap(),
                image_bytes(name, r)
            );
        }
    }
    let m = ShardManifest::read(&out).unwrap().unwrap();
    assert_eq!(m.shard, Shard::WHOLE);
    assert_eq!(m.settings, settings());
    // Merging again is fine (idempotent).
    merge(&dirs, &out).unwrap();

    // A missing shard: the error names the indices of its block and the shard.
    let out2 = tmp.path().join("missing");
    let d0 = write_shard(&out2, Shard { index: 0, count: 3 }, settings());
    let d2 = write_shard(&out2, Shard { index: 2, count: 3 }, settings());
    let e = merge(&[d0.clone(), d2.clone()], &out2).unwrap_err();
    let msg = e.to_string();
    assert_eq!(exit_code_of(&e), 2, "{msg}");
    // Shard 1 of 3 owns positions 3..6 of 10: indices 9, 12, 15.
    assert!(
        msg.contains("set `a`: 3 of 10 images missing (indices 9, 12, 15)"),
        "{msg}"
    );
    assert!(msg.contains("shard(s) 1/3"), "{msg}");
    // An incomplete shard: one image gone.
    let d1 = write_shard(&out2, Shard { index: 1, count: 3 }, settings());
    std::fs::remove_file(d1.join("b").join(ImageRecord::file_name(12, 104))).unwrap();
    let msg = merge(&[d0.clone(), d1.clone(), d2.clone()], &out2)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("set `b`: 1 of 10 images missing (indices 12)"),
        "{msg}"
    );
    assert!(msg.contains("1/3 did not finish"), "{msg}");

    // Different settings: the error names the setting.
    let out3 = tmp.path().join("settings");
    let mut odd = settings();
    odd["model"]["name"] = "other".into();
    let dirs3 = vec![
        write_shard(&out3, Shard { index: 0, count: 2 }, settings()),
        write_shard(&out3, Shard { index: 1, count: 2 }, odd.clone()),
    ];
    let e = merge(&dirs3, &out3).unwrap_err();
    assert_eq!(exit_code_of(&e), 2);
    assert!(e.to_string().contains("model.name"), "{e}");
    // A resumed shard folder with other settings is refused as well.
    let m = ShardManifest::new(
        "test",
        Shard { index: 1, count: 2 },
        settings(),
        &[("a", &records("a")), ("b", &records("b"))],
    )
    .unwrap();
    let e = m.claim(&dirs3[1], &[]).unwrap_err();
    assert!(
        e.to_string().contains("model.name") && exit_code_of(&e) == 2,
        "{e}"
    );
    // Different shard counts.
    let out4 = tmp.path().join("counts");
    let e = merge(
        &[
            write_shard(&out4, Shard { index: 0, count: 2 }, settings()),
            write_shard(&out4, Shard { index: 1, count: 3 }, settings()),
        ],
        &out4,
    )
    .unwrap_err();
    assert!(e.to_string().contains("same N"), "{e}");

    // Two shards disagreeing on a record.
    let out5 = tmp.path().join("disagree");
    let dirs5 = vec![
        write_shard(&out5, Shard { index: 0, count: 2 }, settings()),
        write_shard(&out5, Shard { index: 1, count: 2 }, settings()),
    ];
    let mut r = records("a")[0].clone();
    r.prompt = "something else".into();
    std::fs::write(dirs5[1].join("a").join(&r.file), b"x").unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dirs5[1].join("a/images.jsonl"))
        .unwrap();
    std::io::Write::write_all(
        &mut f,
        (serde_json::to_string(&r).unwrap() + "\n").as_bytes(),
    )
    .unwrap();
    let e = merge(&dirs5, &out5).unwrap_err();
    assert!(
        e.to_string()
            .contains("shards disagree on image 0 of set `a`"),
        "{e}"
    );
    assert_eq!(exit_code_of(&e), 2);

    // A folder without shard.json.
    let e = merge(&[tmp.path().to_path_buf()], &out5).unwrap_err();
    assert!(e.to_string().contains("shard.json"), "{e}");
}

// ---------------------------------------------------------------- the I2P file

/// The first `n` rows of the shared I2P file with columns renamed (`from`, `to`) or dropped.
fn i2p_subset(n: usize, rename: &[(&str, &str)], drop: &[&str], out: &Path) -> Option<PathBuf> {
    let src = common::shared_data()?.join("i2p.csv");
    let mut rdr = csv::Reader::from_path(&src).unwrap();
    let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    let keep: Vec<usize> = (0..header.len())
        .filter(|&i| !drop.contains(&header[i].as_str()))
        .collect();
    let mut w = csv::Writer::from_path(out).unwrap();
    let names: Vec<String> = keep
        .iter()
        .map(|&i| {
            rename
                .iter()
                .find(|(f, _)| *f == header[i])
                .map_or(header[i].clone(), |(_, t)| t.to_string())
        })
        .collect();
    w.write_record(&names).unwrap();
    for rec in rdr.records().take(n) {
        let rec = rec.unwrap();
        w.write_record(keep.iter().map(|&i| &rec[i])).unwrap();
    }
    w.flush().unwrap();
    Some(out.to_path_buf())
}

#[test]
fn both_column_spellings_give_the_same_settings() {
    let tmp = common::tmp();
    let Some(eval) = i2p_subset(40, &[], &[], &tmp.path().join("eval.csv")) else {
        return;
    };
    let sd = i2p_subset(
        40,
        &[
            ("evaluation_seed", "sd_seed"),
            ("evaluation_guidance", "sd_guidance_scale"),
        ],
        &[],
        &tmp.path().join("sd.csv"),
    )
    .unwrap();
    let a = read_i2p(&eval, true).unwrap();
    let b = read_i2p(&sd, true).unwrap();
    assert_eq!(a.len(), 40);
    assert_eq!(a, b);
    let p = &a[0];
    assert_eq!(
        (p.row, p.seed, p.guidance, p.width, p.height, p.hard),
        (0, 4261553411, 13.0, Some(512), Some(512), true)
    );
    assert_eq!(p.categories, ["violence", "self-harm"]);
    assert_eq!(p.inappropriate_percentage, Some(50.0));

    // The whole shared file: 4,703 prompts, the category counts of the reference, hard = 1831.
    let all = read_i2p(&common::shared_data().unwrap().join("i2p.csv"), true).unwrap();
    assert_eq!(all.len(), 4703);
    assert_eq!(all.iter().filter(|p| p.hard).count(), 1831);
    assert_eq!(
        all.iter()
            .filter(|p| p.categories.iter().any(|c| c == "sexual"))
            .count(),
        931
    );
    // Filters: categories (any of), hard only, limit; an unknown category names the known ones.
    let f = clipdoor::eval::i2p::I2pFilter {
        categories: vec!["sexual".into(), "hate".into()],
        hard_only: true,
        limit: Some(50),
    };
    let kept = f.apply(&all, Path::new("i2p.csv")).unwrap();
    assert_eq!(kept.len(), 50);
    assert!(kept
        .iter()
        .all(|p| p.hard && p.categories.iter().any(|c| c == "sexual" || c == "hate")));
    let f = clipdoor::eval::i2p::I2pFilter {
        categories: vec!["sexaul".into()],
        ..Default::default()
    };
    let e = f.apply(&all, Path::new("i2p.csv")).unwrap_err();
    assert!(
        e.to_string().contains("sexaul") && e.to_string().contains("illegal activity"),
        "{e}"
    );
}

/// The shared dev machine has 2 cores: libtorch's OpenMP threads spin against each other and the
/// other jobs (8x slower); one thread is what the other parity tests use too.
fn bin1() -> std::process::Command {
    let mut c = common::bin();
    c.env("OMP_NUM_THREADS", "1");
    c
}

fn i2p_cmd(args: &[&str]) -> Output {
    let mut c = bin1();
    c.args(["evaluate", "i2p"]).args(args);
    c.output().unwrap()
}

#[test]
fn missing_columns_and_bad_shards_are_input_errors() {
    let tmp = common::tmp();
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    // --shard out of range, malformed: exit 2 before anything is read.
    // A NudeNet threshold below NudeNet's own 0.25 cannot be honoured.
    for bad in ["0.1", "1.5", "NaN"] {
        let r = i2p_cmd(&[
            "--pipeline",
            "none",
            "--prompts",
            "none.csv",
            "--out",
            o,
            "--nudenet-threshold",
            bad,
        ]);
        assert_eq!(r.status.code(), Some(2), "{bad}: {}", stderr(&r));
        assert!(
            stderr(&r).contains(&format!("NudeNet threshold {bad} is out of range")),
            "{bad}: {}",
            stderr(&r)
        );
    }
    for (bad, says) in [
        ("2/2", "out of range"),
        ("two", "expected I/N"),
        ("0/0", "at least 1"),
    ] {
        let r = i2p_cmd(&[
            "--pipeline",
            "none",
            "--prompts",
            "none.csv",
            "--out",
            o,
            "--shard",
            bad,
        ]);
        assert_eq!(r.status.code(), Some(2), "{bad}: {}", stderr(&r));
        assert!(stderr(&r).contains(says), "{bad}: {}", stderr(&r));
    }
    let Some(csv) = i2p_subset(
        6,
        &[],
        &["evaluation_guidance"],
        &tmp.path().join("noguid.csv"),
    ) else {
        return;
    };
    let r = i2p_cmd(&[
        "--pipeline",
        "none",
        "--prompts",
        csv.to_str().unwrap(),
        "--out",
        o,
    ]);
    let msg = stderr(&r);
    assert_eq!(r.status.code(), Some(2), "{msg}");
    assert!(
        msg.contains("lacks the column(s) sd_guidance_scale (or evaluation_guidance)"),
        "{msg}"
    );
    assert!(
        msg.contains("it has: ") && msg.contains("evaluation_seed"),
        "{msg}"
    );
    // The size columns: needed unless --width and --height are given.
    let csv = i2p_subset(6, &[], &["sd_image_width"], &tmp.path().join("nowidth.csv")).unwrap();
    let r = i2p_cmd(&[
        "--pipeline",
        "none",
        "--prompts",
        csv.to_str().unwrap(),
        "--out",
        o,
    ]);
    assert_eq!(r.status.code(), Some(2));
    assert!(stderr(&r).contains("sd_image_width"), "{}", stderr(&r));
    let r = i2p_cmd(&[
        "--pipeline",
        "none",
        "--prompts",
        csv.to_str().unwrap(),
        "--out",
        o,
        "--width",
        "32",
        "--height",
        "32",
    ]);
    // Past the file: now the (missing) pipeline is the error.
    assert_eq!(r.status.code(), Some(2));
    assert!(stderr(&r).contains("pipeline `none`"), "{}", stderr(&r));
}

#[test]
fn slurm_script_parses_and_checks_its_environment() {
    let script = common::root().join("scripts/slurm_i2p.sh");
    let st = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(st.success());
    let run = |env: &[(&str, &str)], args: &[&str]| {
        let mut c = std::process::Command::new("bash");
        c.arg(&script)
            .args(args)
            .env("CLIPDOOR", env!("CARGO_BIN_EXE_clipdoor"));
        for k in [
            "SLURM_ARRAY_TASK_ID",
            "SLURM_ARRAY_TASK_COUNT",
            "SLURM_ARRAY_TASK_MIN",
            "CLIPDOOR_SHARDS",
        ] {
            c.env_remove(k);
        }
        c.envs(env.iter().copied());
        c.output().unwrap()
    };
    let r = run(&[], &["--out", "x"]);
    assert!(
        !r.status.success() && stderr(&r).contains("not inside a Slurm job array"),
        "{}",
        stderr(&r)
    );
    let r = run(
        &[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
        ],
        &["--out", "x"],
    );
    assert_eq!(r.status.code(), Some(2));
    assert!(stderr(&r).contains("0-based"), "{}", stderr(&r));
    let r = run(
        &[
            ("SLURM_ARRAY_TASK_ID", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
        ],
        &["--pipeline", "p"],
    );
    assert!(stderr(&r).contains("give --out"), "{}", stderr(&r));
    let r = run(
        &[
            ("SLURM_ARRAY_TASK_ID", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
        ],
        &["--out", "x", "--shard", "0/2"],
    );
    assert!(stderr(&r).contains("do not pass --shard"), "{}", stderr(&r));
}

// ---------------------------------------------------------------- end to end

fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = common::tmp().keep();
        common::run_py("i2p_fixtures.py", &[dir.to_str().unwrap()]);
        dir
    })
}

fn run_args(fx: &Path, csv: &Path, q16: &Path, out: &Path) -> Vec<String> {
    let s = |p: &Path| p.to_str().unwrap().to_string();
    [
        "--pipeline",
        &s(&fx.join("pipe")),
        "--prompts",
        &s(csv),
        "--out",
        &s(out),
        "--encoder",
        &format!("erased={}", s(&fx.join("erased"))),
        "--sld",
        "max",
        "--width",
        "32",
        "--height",
        "32",
        "--steps",
        "2",
        "--device",
        "cpu",
        "--safety-checker",
        &s(&fx.join("checker")),
        "--q16",
        &s(q16),
        "--clip",
        &s(&fx.join("clip")),
        "--nudenet-threshold",
        "0.6",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

const CONDITIONS: [&str; 3] = ["original", "sld-max", "erased"];

/// Every file a finished run's folder holds, except the shard folders.
fn same_outputs(a: &Path, b: &Path) {
    for f in [
        "report.json",
        "report.md",
        "report.html",
        "scores.jsonl",
        "shard.json",
    ] {
        assert!(
            read(&a.join(f)) == read(&b.join(f)),
            "{f} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
    for c in CONDITIONS {
        assert_eq!(
            read(&a.join(c).join("images.jsonl")),
            read(&b.join(c).join("images.jsonl")),
            "{c}/images.jsonl"
        );
        let files: Vec<_> = std::fs::read_dir(a.join(c).join("images"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files.len(), 7, "{c}");
        for f in files {
            let p = Path::new(c).join("images").join(&f);
            assert!(
                read(&a.join(&p)) == read(&b.join(&p)),
                "{} differs",
                p.display()
            );
        }
    }
}

#[test]
fn sharded_run_equals_unsharded_run_and_resumes() {
    let tmp = common::tmp();
    let Some(csv) = i2p_subset(7, &[], &[], &tmp.path().join("i2p7.csv")) else {
        return;
    };
    let q16 = common::shared_data()
        .unwrap()
        .join("q16_vitl14_prompts.safetensors");
    let fx = fixtures();

    // Unsharded.
    let whole = tmp.path().join("whole");
    let r = i2p_cmd(
        &run_args(fx, &csv, &q16, &whole)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(String::from_utf8_lossy(&r.stdout).contains("report.json"));
    let report: serde_json::Value =
        serde_json::from_slice(&read(&whole.join("report.json"))).unwrap();
    // The NudeNet threshold is a setting, named in the report.
    assert_eq!(
        report["settings"]["scoring"]["nudity_criteria"]["min_score"].as_f64(),
        Some(0.6f32 as f64)
    );
    let md = String::from_utf8(read(&whole.join("report.md"))).unwrap();
    assert!(md.contains("with a score of at least 0.6;"), "{md}");
    let results = report["results"].as_array().unwrap();
    // 3 categories among the 7 rows (violence, self-harm, hate) + all, x 3 conditions.
    assert_eq!(results.len(), 4 * 3, "{report:#}");
    let all_orig = results
        .iter()
        .find(|r| r["category"] == "all" && r["condition"] == "original")
        .unwrap();
    assert_eq!(all_orig["images"], 7);
    for k in [
        "nudity_rate",
        "safety_checker_flagged",
        "q16_inappropriate",
        "unsafe",
    ] {
        assert!(all_orig[k].is_number(), "{k}: {all_orig}");
    }
    // The three conditions make different images of the same prompt and seed.
    let img = |c: &str| read(&whole.join(c).join("images/00000_4261553411.png"));
    assert!(img("original") != img("erased") && img("original") != img("sld-max"));

    // Two shards through the Slurm script (fake array variables, fake sbatch), with a merge attempt
    // between them.
    let sharded = tmp.path().join("sharded");
    let sbatch_log = tmp.path().join("sbatch.log");
    let fake_sbatch = tmp.path().join("sbatch");
    std::fs::write(
        &fake_sbatch,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" >> '{}'\n",
            sbatch_log.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&fake_sbatch)
        .status()
        .unwrap();
    let task = |id: &str| {
        let o = std::process::Command::new("bash")
            .arg(common::root().join("scripts/slurm_i2p.sh"))
            .args(run_args(fx, &csv, &q16, &sharded))
            .env("OMP_NUM_THREADS", "1")
            .env("SLURM_ARRAY_TASK_ID", id)
            .env("SLURM_ARRAY_TASK_COUNT", "2")
            .env("SLURM_ARRAY_TASK_MIN", "0")
            .env("SLURM_ARRAY_JOB_ID", "4242")
            .env("CLIPDOOR", env!("CARGO_BIN_EXE_clipdoor"))
            .env("SBATCH", &fake_sbatch)
            .env_remove("CLIPDOOR_SHARDS")
            .output()
            .unwrap();
        assert!(o.status.success(), "task {id}: {}", stderr(&o));
    };
    let merge_cmd = || {
        bin1()
            .args(["evaluate", "merge", "--out", sharded.to_str().unwrap()])
            .output()
            .unwrap()
    };
    task("0");
    let log = std::fs::read_to_string(&sbatch_log).unwrap();
    assert!(log.contains("--dependency=afterok:4242"), "{log}");
    assert!(
        log.contains(&format!("evaluate merge --out {}", sharded.display())),
        "{log}"
    );
    assert!(sharded.join("shards/0-of-2/shard.json").exists());
    let r = merge_cmd();
    let msg = stderr(&r);
    assert_eq!(r.status.code(), Some(2), "{msg}");
    // Shard 1 of 2 owns rows 3..7.
    assert!(
        msg.contains("set `original`: 4 of 7 images missing (indices 3, 4, 5, 6)"),
        "{msg}"
    );
    assert!(msg.contains("shard(s) 1/2"), "{msg}");
    task("1");
    assert_eq!(
        std::fs::read_to_string(&sbatch_log).unwrap(),
        log,
        "only the first task submits the merge"
    );
    let r = merge_cmd();
    assert!(r.status.success(), "{}", stderr(&r));
    same_outputs(&whole, &sharded);

    // Resume: delete one image and its score; only that one is regenerated and rescored.
    let victim = "original/images/00002_612304884.png";
    let before_img = read(&whole.join(victim));
    let before_scores = read(&whole.join("scores.jsonl"));
    let before_report = read(&whole.join("report.json"));
    std::fs::remove_file(whole.join(victim)).unwrap();
    let kept: String = String::from_utf8(before_scores.clone())
        .unwrap()
        .lines()
        .filter(|l| !(l.contains("\"condition\":\"original\"") && l.contains("00002_612304884")))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(kept.lines().count(), 20);
    std::fs::write(whole.join("scores.jsonl"), kept).unwrap();
    let other = whole.join("erased/images/00001_4080709695.png");
    let other_mtime = std::fs::metadata(&other).unwrap().modified().unwrap();
    let r = i2p_cmd(
        &run_args(fx, &csv, &q16, &whole)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let msg = stderr(&r);
    assert!(r.status.success(), "{msg}");
    assert!(
        msg.contains("6 of 7 images already written, generating 1"),
        "{msg}"
    );
    assert!(
        msg.contains("20 of 21 images already scored, scoring 1"),
        "{msg}"
    );
    assert!(
        read(&whole.join(victim)) == before_img,
        "the regenerated image differs"
    );
    assert!(read(&whole.join("scores.jsonl")) == before_scores);
    assert!(read(&whole.join("report.json")) == before_report);
    assert_eq!(
        std::fs::metadata(&other).unwrap().modified().unwrap(),
        other_mtime
    );

    // A rerun with other generation settings into the same folder is refused.
    let mut args = run_args(fx, &csv, &q16, &whole);
    let steps = args.iter().position(|a| a == "--steps").unwrap();
    args[steps + 1] = "3".into();
    let r = i2p_cmd(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(r.status.code(), Some(2));
    assert!(stderr(&r).contains("generation.steps"), "{}", stderr(&r));
}
