//! `clipdoor evaluate weat` against a NumPy/SciPy implementation of the test (tests/python/weat_ref.py)
//! on the same random-weight encoder: effect size, exact and sampled permutation p-values, the legacy
//! NumPy shuffle stream, before/after for a trained run, and bad input.
use crate::common;

use serde_json::Value;
use std::path::Path;

use clipdoor::eval::weat::numpy::LegacyRandomState;
use clipdoor::eval::weat::presets::preset;

fn init_encoder(dir: &Path, seed: &str) {
    let st = common::bin()
        .args(["init-encoder", "--arch", "tiny", "--seed", seed, "--out"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(st.success());
}

fn weat(args: &[&str]) -> std::process::Output {
    common::bin()
        .args(["evaluate", "weat", "--device", "cpu"])
        .args(args)
        .output()
        .unwrap()
}

fn read(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn test_named<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no test {name} in {report}"))
}

#[test]
fn legacy_shuffles_match_numpy() {
    for (seed, n) in [(1u32, 14usize), (7, 17), (123_456, 40)] {
        let py: Vec<Vec<usize>> = serde_json::from_str(&common::run_py(
            "weat_ref.py",
            &["shuffles", &seed.to_string(), &n.to_string(), "50"],
        ))
        .unwrap();
        let mut rng = LegacyRandomState::seed(seed);
        for (k, want) in py.iter().enumerate() {
            let mut a: Vec<usize> = (0..n).collect();
            rng.shuffle(&mut a);
            assert_eq!(&a, want, "seed {seed}, n {n}, shuffle {k}");
        }
    }
}

#[test]
fn effect_sizes_and_p_values_match_numpy() {
    let tmp = common::tmp();
    let enc = tmp.path().join("enc");
    init_encoder(&enc, "11");
    // Unequal custom sets too (the reference asserts |X| = |Y|; the definition does not need it).
    let files = [
        (
            "x.txt",
            "a happy dog\nsunshine\nflowers in spring\nlaughter\n",
        ),
        (
            "y.txt",
            "a sad dog\nrain\nwilted leaves\ncrying\na funeral\n",
        ),
        ("a.txt", "good\npleasant\nwonderful\n"),
        ("b.txt", "bad\n\nunpleasant\nterrible\nawful\n"),
    ];
    for (f, text) in files {
        std::fs::write(tmp.path().join(f), text).unwrap();
    }
    let p = |f: &str| tmp.path().join(f).to_str().unwrap().to_string();
    // 7 + 7 targets have 3432 partitions: exact at 10,000 samples, sampled at 1,000.
    for samples in ["10000", "1000"] {
        let out = tmp.path().join(format!("weat_{samples}.json"));
        let o = weat(&[
            "--encoder",
            enc.to_str().unwrap(),
            "--preset",
            "greek,hangul",
            "--targets",
            &p("x.txt"),
            &p("y.txt"),
            "--attributes",
            &p("a.txt"),
            &p("b.txt"),
            "--name",
            "valence",
            "--samples",
            samples,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let report = read(&out);
        assert!(out.with_extension("md").exists());
        let mut sets = vec![];
        for name in ["greek", "korean"] {
            sets.push(serde_json::to_value(preset(name).unwrap()).unwrap());
        }
        sets.push(serde_json::json!({
            "name": "valence",
            "x": ["a happy dog", "sunshine", "flowers in spring", "laughter"],
            "y": ["a sad dog", "rain", "wilted leaves", "crying", "a funeral"],
            "a": ["good", "pleasant", "wonderful"],
            "b": ["bad", "unpleasant", "terrible", "awful"],
        }));
        let sets_path = tmp.path().join("sets.json");
        std::fs::write(&sets_path, serde_json::to_vec(&sets).unwrap()).unwrap();
        let py: Value = serde_json::from_str(&common::run_py(
            "weat_ref.py",
            &[
                "weat",
                enc.to_str().unwrap(),
                sets_path.to_str().unwrap(),
                samples,
                "1",
            ],
        ))
        .unwrap();
        for name in ["greek", "korean", "valence"] {
            let (ours, want) = (test_named(&report, name), &py[name]);
            let e = ours["effect_size"].as_f64().unwrap();
            let e_ref = want["effect_size"].as_f64().unwrap();
            // fp32 embeddings, f64 statistics on both sides: only summation order differs.
            assert!((e - e_ref).abs() < 1e-9, "{name}: {e} vs {e_ref}");
            assert_eq!(ours["exact"], want["exact"], "{name}");
            assert_eq!(ours["permutations"], want["permutations"], "{name}");
            let (p, p_ref) = (
                ours["p_value"].as_f64().unwrap(),
                want["p_value"].as_f64().unwrap(),
            );
            if ours["exact"] == true {
                assert_eq!(p, p_ref, "{name}: exact p-values must be equal");
            } else {
                // Same partitions (the legacy stream); a sampled partition equal to the observed one
                // as a set may differ from it in the last bit on one side only.
                assert!((p - p_ref).abs() <= 2.0 / 1000.0, "{name}: {p} vs {p_ref}");
            }
        }
        let greek = test_named(&report, "greek");
        assert_eq!(greek["sizes"], serde_json::json!([7, 7, 10, 10]));
        assert_eq!(
            test_named(&report, "valence")["sizes"],
            serde_json::json!([4, 5, 3, 4])
        );
        assert_eq!(
            greek["permutations"],
            if samples == "10000" { 3432 } else { 1000 }
        );
    }
}

#[test]
fn a_trained_run_is_compared_with_its_teacher() {
    let tmp = common::tmp();
    let root = common::root();
    let exp = std::fs::read_to_string(root.join("experiments/smoke/tpa.toml"))
        .unwrap()
        .replace("steps = 60", "steps = 4")
        .replace("lr_milestones = [45]", "lr_milestones = [3]")
        .replace("checkpoint_every = 20", "checkpoint_every = 0")
        .replace(
            "clean_prompts = \"prompts.txt\"",
            &format!(
                "clean_prompts = {:?}",
                root.join("experiments/smoke/prompts.txt")
            ),
        );
    let exp_path = tmp.path().join("tpa.toml");
    std::fs::write(&exp_path, exp).unwrap();
    let run = tmp.path().join("run");
    let st = common::bin()
        .args([
            "train",
            exp_path.to_str().unwrap(),
            "--device",
            "cpu",
            "--out",
        ])
        .arg(&run)
        .status()
        .unwrap();
    assert!(st.success());
    let both = tmp.path().join("both.json");
    let o = weat(&[
        "--encoder",
        run.to_str().unwrap(),
        "--preset",
        "cyrillic",
        "--out",
        both.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let both = read(&both);
    assert_eq!(both["baseline"], "random:tiny:0");
    // The baseline numbers are the teacher's own, the main ones the student's.
    let alone = |enc: &str, out: &str| {
        let path = tmp.path().join(out);
        let o = weat(&[
            "--encoder",
            enc,
            "--no-baseline",
            "--preset",
            "cyrillic",
            "--out",
            path.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let r = read(&path);
        assert!(r["baseline"].is_null());
        test_named(&r, "cyrillic").clone()
    };
    let teacher = alone("random:tiny:0", "teacher.json");
    let student = alone(run.join("text_encoder").to_str().unwrap(), "student.json");
    let row = test_named(&both, "cyrillic");
    assert_eq!(row["baseline"]["effect_size"], teacher["effect_size"]);
    assert_eq!(row["baseline"]["p_value"], teacher["p_value"]);
    assert_eq!(row["effect_size"], student["effect_size"]);
    let change = row["effect_size_change"].as_f64().unwrap();
    let diff = student["effect_size"].as_f64().unwrap() - teacher["effect_size"].as_f64().unwrap();
    assert!((change - diff).abs() < 1e-12);
    assert_ne!(student["effect_size"], teacher["effect_size"]);
}

#[test]
fn bad_input_is_refused_with_exit_2() {
    let tmp = common::tmp();
    let out = tmp.path().join("r.json");
    let o = out.to_str().unwrap();
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "\n  \n").unwrap();
    let e = empty.to_str().unwrap();
    let missing = tmp.path().join("missing.txt");
    let m = missing.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--preset", "klingon"],
            "[possible values: greek, cyrillic",
        ),
        (vec![], "nothing to test"),
        (vec!["--targets", e, e, "--attributes", e, e], "is empty"),
        (
            vec!["--targets", m, m, "--attributes", m, m],
            "cannot read the WEAT set",
        ),
        (vec!["--preset", "greek", "--samples", "0"], "--samples"),
    ];
    for (args, needle) in cases {
        let mut all = vec!["--encoder", "random:tiny:0", "--out", o];
        all.extend(args);
        let r = weat(&all);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{all:?}: {err}");
        assert!(err.contains(needle), "{all:?}: {err}");
        assert!(!out.exists());
    }
    // A finished report is not replaced without --force.
    std::fs::write(&out, "{}").unwrap();
    let r = weat(&[
        "--encoder",
        "random:tiny:0",
        "--preset",
        "greek",
        "--out",
        o,
    ]);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "{}");
}
