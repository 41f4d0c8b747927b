//! Scheduler and noise parity with diffusers 0.42.1 (tests/python/diffusers_schedulers.py runs the
//! reference loops), plus the error paths.
//!
//! Tolerances: timesteps, sigmas and seeded noise must be bit-identical (same libtorch, same numpy
//! recipes); sampled latents within 1e-5 max abs (f32, |latents| up to ~15 for Euler's initial sigma),
//! which leaves room for a last-bit difference in a libm call (log/exp/pow) carried through the loop.
use crate::common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clipdoor::diffusion::rng::DiffusersGenerator;
use clipdoor::diffusion::schedulers::{scheduler_by_name, SchedulerConfig};
use clipdoor::settings::SchedulerKind;
use serde_json::Value;
use tch::{Device, Kind, Tensor};

const LATENT_TOLERANCE: f64 = 1e-5;

/// The reference folder, written once per test run.
fn reference() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = common::tmp();
        common::run_py("diffusers_schedulers.py", &[dir.path().to_str().unwrap()]);
        dir
    })
    .path()
}

fn manifest() -> Value {
    serde_json::from_str(&std::fs::read_to_string(reference().join("cases.json")).unwrap()).unwrap()
}

fn config_path(name: &str) -> PathBuf {
    reference().join("configs").join(format!("{name}.json"))
}

fn generator_of(case: &Value) -> DiffusersGenerator {
    match case.get("seeds") {
        Some(seeds) => {
            let seeds: Vec<u64> = seeds
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_u64().unwrap())
                .collect();
            DiffusersGenerator::per_image(&seeds).unwrap()
        }
        None => DiffusersGenerator::single(case["seed"].as_u64().unwrap()),
    }
}

fn f64s(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

/// Run one reference case in Rust; returns (max abs diff after the first step, at the end).
fn run_case(case: &Value, fixed: &Tensor, shape: &[i64]) -> (f64, f64) {
    let id = case["id"].as_str().unwrap();
    let expected = common::load_st(&reference().join(format!("{id}.safetensors")));
    let cfg = SchedulerConfig::load(&config_path(case["config"].as_str().unwrap())).unwrap();
    let kind = case["scheduler"]
        .as_str()
        .map(|n| n.parse::<SchedulerKind>().unwrap());
    let mut scheduler = scheduler_by_name(kind, &cfg).unwrap();
    scheduler
        .set_timesteps(case["steps"].as_u64().unwrap() as usize)
        .unwrap();

    assert_eq!(
        scheduler.timesteps(),
        f64s(&expected["timesteps"]).as_slice(),
        "{id}: timesteps"
    );
    if let Some(sigmas) = expected.get("sigmas") {
        let expected_sigmas: Vec<f32> = Vec::try_from(sigmas).unwrap();
        assert_eq!(
            scheduler.sigmas().unwrap(),
            expected_sigmas.as_slice(),
            "{id}: sigmas"
        );
    }
    assert_eq!(
        scheduler.init_noise_sigma(),
        f64s(&expected["init_noise_sigma"])[0],
        "{id}: init_noise_sigma"
    );

    let mut generator = generator_of(case);
    let init = generator.randn(shape, Kind::Float, Device::Cpu).unwrap();
    assert_eq!(
        common::max_abs(&init, &expected["init_latents"]),
        0.0,
        "{id}: initial latents"
    );
    let mut latents = &init * scheduler.init_noise_sigma();
    let mut first_diff = None;
    for t in scheduler.timesteps().to_vec() {
        let input = scheduler.scale_model_input(&latents, t).unwrap();
        let model_output = &input * 0.1 + fixed * (t / 100.0).sin();
        let noise = scheduler.needs_noise().then(|| {
            generator
                .randn_like(&model_output, scheduler.noise_kind(model_output.kind()))
                .unwrap()
        });
        latents = scheduler
            .step(&model_output, t, &latents, noise.as_ref())
            .unwrap();
        first_diff.get_or_insert_with(|| common::max_abs(&latents, &expected["after_first"]));
    }
    (
        first_diff.unwrap(),
        common::max_abs(&latents, &expected["final"]),
    )
}

/// Every reference case of one scheduler (`None`: the config's own class) within tolerance.
fn check_scheduler(name: Option<&str>) {
    let manifest = manifest();
    let fixed = common::load_st(&reference().join("fixed.safetensors"))
        .remove("fixed")
        .unwrap();
    let shape: Vec<i64> = manifest["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_i64().unwrap())
        .collect();
    let mut ran = 0;
    for case in manifest["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["scheduler"].as_str() == name)
    {
        let (first, last) = run_case(case, &fixed, &shape);
        println!(
            "{:<40} first step {first:.3e}  final {last:.3e}",
            case["id"].as_str().unwrap()
        );
        assert!(
            first <= LATENT_TOLERANCE && last <= LATENT_TOLERANCE,
            "{}: max abs diff {last:e}",
            case["id"]
        );
        ran += 1;
    }
    assert!(ran > 0, "no reference cases for {name:?}");
}

#[test]
fn ddim_matches_diffusers() {
    check_scheduler(Some("ddim"));
}

#[test]
fn pndm_matches_diffusers() {
    check_scheduler(Some("pndm"));
}

#[test]
fn euler_matches_diffusers() {
    check_scheduler(Some("euler"));
}

#[test]
fn euler_ancestral_matches_diffusers() {
    check_scheduler(Some("euler-a"));
}

#[test]
fn dpm_solver_matches_diffusers() {
    check_scheduler(Some("dpm++"));
}

#[test]
fn default_scheduler_is_the_configs_class() {
    check_scheduler(None);
    let cfg = SchedulerConfig::load(&config_path("sd1")).unwrap();
    assert_eq!(scheduler_by_name(None, &cfg).unwrap().name(), "pndm");
}

#[test]
fn noise_matches_randn_tensor() {
    for case in manifest()["rng"].as_array().unwrap() {
        let id = case["id"].as_str().unwrap();
        let expected = common::load_st(&reference().join(format!("{id}.safetensors")));
        let shape: Vec<i64> = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_i64().unwrap())
            .collect();
        let kind = if case["dtype"] == "float16" {
            Kind::Half
        } else {
            Kind::Float
        };
        let mut generator = generator_of(case);
        // Two draws: the second continues each generator's stream, as ancestral step noise does.
        for draw in ["first", "second"] {
            let ours = generator.randn(&shape, kind, Device::Cpu).unwrap();
            assert_eq!(ours.kind(), expected[draw].kind(), "{id} {draw}: dtype");
            assert!(
                ours.equal(&expected[draw]),
                "{id} {draw}: max abs diff {}",
                common::max_abs(&ours, &expected[draw])
            );
        }
    }
}

#[test]
fn generator_list_must_match_batch() {
    let mut generator = DiffusersGenerator::per_image(&[1, 2]).unwrap();
    let err = generator
        .randn(&[3, 4, 8, 8], Kind::Float, Device::Cpu)
        .unwrap_err();
    assert_eq!(clipdoor::error::exit_code(&err), 2);
    assert!(err.to_string().contains("one seed per image"), "{err}");
}

#[test]
fn unknown_scheduler_name_is_an_input_error() {
    // Names are parsed once, where they enter: an experiment file's `evaluation.scheduler` ...
    let exp = "[model]\nteacher = \"random:tiny:0\"\n[data]\nclean_prompts = \"p.txt\"\n\
               [evaluation]\nscheduler = \"lms\"\n";
    let err = clipdoor::experiment::Experiment::from_toml(exp, std::path::Path::new("."))
        .err()
        .expect("lms is unknown");
    assert_eq!(clipdoor::error::exit_code(&err), 2);
    let msg = err.to_string();
    assert!(msg.contains("unknown scheduler `lms`"), "{msg}");
    for name in ["ddim", "pndm", "euler", "euler-a", "dpm++"] {
        assert!(msg.contains(name), "{msg}");
    }
    // ... in any case, as before.
    let upper = exp.replace("lms", "DDIM");
    let ok =
        clipdoor::experiment::Experiment::from_toml(&upper, std::path::Path::new(".")).unwrap();
    assert_eq!(ok.evaluation.unwrap().scheduler, Some(SchedulerKind::Ddim));
    let cfg = SchedulerConfig::parse(r#"{"_class_name": "LMSDiscreteScheduler"}"#).unwrap();
    let err = scheduler_by_name(None, &cfg)
        .err()
        .expect("LMS is not implemented");
    assert_eq!(clipdoor::error::exit_code(&err), 2);
    assert!(
        err.to_string().contains("LMSDiscreteScheduler") && err.to_string().contains("--scheduler"),
        "{err}"
    );
}

#[test]
fn malformed_config_is_an_input_error() {
    let dir = common::tmp();
    let cases = [
        ("not_json.json", "{\"beta_start\": 0.1,"),
        ("not_object.json", "[1, 2]"),
        ("bad_schedule.json", r#"{"beta_schedule": "quadratic"}"#),
        ("bad_type.json", r#"{"num_train_timesteps": "many"}"#),
    ];
    for (file, text) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        let err = SchedulerConfig::load(&path).unwrap_err();
        assert_eq!(clipdoor::error::exit_code(&err), 2, "{file}");
        assert!(err.to_string().contains(file), "{file}: {err}");
    }
    let missing = dir.path().join("scheduler_config.json");
    let err = SchedulerConfig::load(&missing).unwrap_err();
    assert_eq!(clipdoor::error::exit_code(&err), 2);
    assert!(err.to_string().contains("scheduler_config.json"), "{err}");
}

#[test]
fn unsupported_options_and_step_counts_are_input_errors() {
    let cfg = SchedulerConfig::parse(r#"{"use_exponential_sigmas": true}"#).unwrap();
    let err = scheduler_by_name(Some(SchedulerKind::Euler), &cfg)
        .err()
        .unwrap();
    assert_eq!(clipdoor::error::exit_code(&err), 2);
    let cfg = SchedulerConfig::parse(r#"{"algorithm_type": "dpmsolver"}"#).unwrap();
    assert_eq!(
        clipdoor::error::exit_code(
            &scheduler_by_name(Some(SchedulerKind::DpmPlusPlus), &cfg)
                .err()
                .unwrap()
        ),
        2
    );
    let mut ddim =
        scheduler_by_name(Some(SchedulerKind::Ddim), &SchedulerConfig::default()).unwrap();
    assert_eq!(
        clipdoor::error::exit_code(&ddim.set_timesteps(0).unwrap_err()),
        2
    );
    assert_eq!(
        clipdoor::error::exit_code(&ddim.set_timesteps(1001).unwrap_err()),
        2
    );
}

#[test]
fn ancestral_step_without_noise_fails() {
    let mut scheduler = scheduler_by_name(
        Some(SchedulerKind::EulerAncestral),
        &SchedulerConfig::default(),
    )
    .unwrap();
    scheduler.set_timesteps(5).unwrap();
    let t = scheduler.timesteps()[0];
    let x = Tensor::zeros([1, 4, 2, 2], (Kind::Float, Device::Cpu));
    assert!(scheduler.step(&x, t, &x, None).is_err());
}

/// `alphas_cumprod`, `add_noise` and (DDIM) `get_velocity` against diffusers, for every scheduler and
/// config, before `set_timesteps` (as training uses them) and after it (the sigma schedulers look the
/// timesteps up in their current schedule). ᾱ must be bit-identical; the noised samples and
/// velocities are the same f32 ops as upstream's, so they are compared exactly too.
#[test]
fn add_noise_and_velocity_match_diffusers() {
    let manifest = manifest();
    let cases = manifest["noise"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let id = case["id"].as_str().unwrap();
        let expected = common::load_st(&reference().join(format!("{id}.safetensors")));
        let cfg = SchedulerConfig::load(&config_path(case["config"].as_str().unwrap())).unwrap();
        let mut scheduler =
            scheduler_by_name(case["scheduler"].as_str().map(|n| n.parse().unwrap()), &cfg)
                .unwrap();
        if let Some(steps) = case["steps"].as_u64() {
            scheduler.set_timesteps(steps as usize).unwrap();
        }
        let expected_acp: Vec<f32> = Vec::try_from(&expected["alphas_cumprod"]).unwrap();
        assert_eq!(
            scheduler.alphas_cumprod(),
            expected_acp.as_slice(),
            "{id}: alphas_cumprod"
        );
        // Integer timesteps where upstream indexes ᾱ with them, the schedule's own values otherwise.
        let t = &expected["timesteps"];
        let timesteps = if ["ddim", "pndm"].contains(&case["scheduler"].as_str().unwrap()) {
            t.to_kind(Kind::Int64)
        } else {
            t.shallow_clone()
        };
        let (original, noise) = (&expected["original"], &expected["noise"]);
        let noisy = scheduler.add_noise(original, noise, &timesteps).unwrap();
        let diff = common::max_abs(&noisy, &expected["noisy"]);
        println!("{id:<32} add_noise {diff:.3e}");
        assert_eq!(diff, 0.0, "{id}: add_noise differs by {diff:e}");
        if let Some(velocity) = expected.get("velocity") {
            let ours = scheduler.get_velocity(original, noise, &timesteps).unwrap();
            let diff = common::max_abs(&ours, velocity);
            assert_eq!(diff, 0.0, "{id}: get_velocity differs by {diff:e}");
        }
    }
}

#[test]
fn add_noise_rejects_bad_timesteps_and_shapes() {
    let x = Tensor::zeros([2, 3, 4, 4], (Kind::Float, Device::Cpu));
    let ddim = scheduler_by_name(Some(SchedulerKind::Ddim), &SchedulerConfig::default()).unwrap();
    // Out of the training range, fractional, or not one per item.
    for t in [[0.0f64, 1000.0], [0.5, 1.0]] {
        assert!(ddim.add_noise(&x, &x, &Tensor::from_slice(&t)).is_err());
    }
    let err = ddim
        .add_noise(&x, &x, &Tensor::from_slice(&[1i64]))
        .unwrap_err();
    assert_eq!(clipdoor::error::exit_code(&err), 2, "{err}");
    let y = Tensor::zeros([2, 3, 4, 5], (Kind::Float, Device::Cpu));
    assert!(ddim
        .add_noise(&x, &y, &Tensor::from_slice(&[1i64, 2]))
        .is_err());
    // The sigma schedulers only know the timesteps of their schedule.
    let mut euler =
        scheduler_by_name(Some(SchedulerKind::Euler), &SchedulerConfig::default()).unwrap();
    euler.set_timesteps(10).unwrap();
    assert!(euler
        .add_noise(&x, &x, &Tensor::from_slice(&[3.5f64, 3.5]))
        .is_err());
}

/// libtorch has one process-wide CPU generator, and seeded noise is drawn by seeding it and
/// replaying. Building a random-weight encoder or loading one from files on another thread while
/// noise was drawn used to change the noise (a CI run once saw a SEGA image 0.85 off diffusers'):
/// loading now draws nothing, and seeded inits take the noise's lock. Both directions are checked:
/// the noise equals the single-threaded draws, and the seeded encoder equals its first build.
#[test]
fn noise_stays_seeded_while_other_threads_build_and_load_encoders() {
    use clipdoor::models::text_encoder::TextEncoder;
    let tmp = common::tmp();
    let saved = tmp.path().join("encoder");
    let token_weights = |e: &TextEncoder| {
        e.vs.variables()["text_model.embeddings.token_embedding.weight"].shallow_clone()
    };
    let first = TextEncoder::init_arch("tiny", 2, false, Device::Cpu).unwrap();
    first.save_with_tokenizer(&saved, None).unwrap();
    let first = token_weights(&first);

    let shape = [1i64, 4, 16, 16];
    let draws = |seed: u64| {
        let mut g = DiffusersGenerator::single(seed);
        (0..12)
            .map(|_| g.randn(&shape, Kind::Float, Device::Cpu).unwrap())
            .collect::<Vec<_>>()
    };
    let expected = draws(7);
    std::thread::scope(|s| {
        // Tensors are Send, not Sync: the builder owns its copies.
        let (saved, first) = (saved.clone(), first.copy());
        let builder = s.spawn(move || {
            for _ in 0..40 {
                let loaded =
                    TextEncoder::load(saved.to_str().unwrap(), Device::Cpu, Kind::Float).unwrap();
                assert!(token_weights(&loaded).equal(&first), "load changed");
                let built = TextEncoder::init_arch("tiny", 2, false, Device::Cpu).unwrap();
                assert!(
                    token_weights(&built).equal(&first),
                    "a seeded encoder built beside noise draws differs from its first build"
                );
            }
        });
        let mut rounds = 0;
        while rounds < 5 || !builder.is_finished() {
            for (i, (got, want)) in draws(7).iter().zip(&expected).enumerate() {
                assert!(
                    got.equal(want),
                    "round {rounds}, draw {i}: noise changed while another thread built encoders"
                );
            }
            rounds += 1;
        }
    });
}
