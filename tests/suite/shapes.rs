//! The shapes world: renderer, oracle, and a short training run.
use crate::common;
use clipdoor::shapes::dataset::{read_labels, sample, write_dataset};
use clipdoor::shapes::oracle::judge;
use clipdoor::shapes::render::render;
use clipdoor::shapes::{Background, Color, Position, Shape, ShapeLabel, Size};
use rand::{Rng, SeedableRng};

/// Share of no-object prompts the shipped model must draw as the empty picture on the asked background.
const NO_OBJECT_BAR: f64 = 0.9;

/// Fresh images: a seed no other test or the training default uses.
const FRESH_SEED: u64 = 9_001;

fn add_noise(img: &image::RgbImage, sigma: f32, seed: u64) -> image::RgbImage {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = img.clone();
    for p in out.pixels_mut() {
        for c in p.0.iter_mut() {
            // Box–Muller: one standard normal per channel.
            let (u1, u2): (f32, f32) = (rng.random::<f32>().max(1e-12), rng.random());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos();
            *c = (*c as f32 + z * sigma * 255.0).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// (colour accuracy, shape accuracy, both) of the oracle on items 0..n of `seed`.
fn oracle_accuracy(n: u64, seed: u64, sigma: f32) -> (f64, f64, f64) {
    oracle_accuracy_blurred(n, seed, sigma, 0.0)
}

fn oracle_accuracy_blurred(n: u64, seed: u64, sigma: f32, blur: f32) -> (f64, f64, f64) {
    let (mut color, mut shape, mut both) = (0, 0, 0);
    let mut misses = vec![];
    for i in 0..n {
        let s = sample(seed, i);
        let mut img = render(&s.label);
        if blur > 0.0 {
            img = image::imageops::blur(&img, blur);
        }
        if sigma > 0.0 {
            img = add_noise(&img, sigma, seed ^ i);
        }
        let j = judge(&img);
        let c = j.color == Some(s.label.color);
        let sh = j.shape == Some(s.label.shape);
        color += c as u32;
        shape += sh as u32;
        both += (c && sh) as u32;
        if !(c && sh) && misses.len() < 5 {
            misses.push(format!(
                "{:?} -> {:?} {:?} ({})",
                s.label, j.color, j.shape, j.confidence
            ));
        }
    }
    for m in &misses {
        eprintln!("miss (sigma {sigma}): {m}");
    }
    let f = |k: u32| k as f64 / n as f64;
    (f(color), f(shape), f(both))
}

#[test]
fn renderer_is_deterministic_and_labels_are_exact() {
    for i in 0..50 {
        let a = sample(7, i);
        assert_eq!(a, sample(7, i), "sample {i} differs between calls");
        a.label.validate().unwrap();
        let img = render(&a.label);
        assert_eq!(
            img.as_raw(),
            render(&a.label).as_raw(),
            "render {i} differs"
        );
        // The rendered coverage has the shape's exact area (to the sub-sampling error).
        let l = a.label;
        let cov = clipdoor::shapes::render::coverage(l.shape, (l.cx, l.cy, l.radius), (32, 32), 8);
        let exact = clipdoor::shapes::render::unit_area(l.shape) * l.radius * l.radius;
        let area: f32 = cov.iter().sum();
        assert!(
            (area - exact).abs() < 0.02 * exact,
            "{l:?}: area {area} vs {exact}"
        );
        // The caption says the colour and the shape; a no-object caption names no shape.
        if a.no_object {
            assert!(!a.caption.contains(a.label.shape.word()), "{}", a.caption);
            continue;
        }
        assert!(a.caption.contains(a.label.color.word()), "{}", a.caption);
        assert!(a.caption.contains(a.label.shape.word()), "{}", a.caption);
        // The pixel holding the centre is fully covered (every shape is at least 2 px wide around
        // its centre); the corner is background.
        let (cx, cy) = (a.label.cx as u32, a.label.cy as u32);
        let centre = img.get_pixel(cx, cy).0;
        assert_eq!(centre, a.label.color.rgb(), "centre of {:?}", a.label);
        assert_eq!(img.get_pixel(0, 31).0, a.label.background.rgb());
    }
    // Different items differ.
    assert_ne!(sample(7, 0), sample(7, 1));
    assert_ne!(sample(7, 0), sample(8, 0));
}

#[test]
fn render_command_writes_pngs_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let recs = write_dataset(dir.path(), 6, 3, || {}).unwrap();
    let back = read_labels(&dir.path().join("labels.jsonl")).unwrap();
    assert_eq!(recs, back);
    for r in &back {
        let png = image::open(dir.path().join(&r.file)).unwrap().to_rgb8();
        assert_eq!(
            png.as_raw(),
            clipdoor::shapes::dataset::render_sample(&r.sample).as_raw(),
            "{} differs from its label",
            r.file
        );
    }
}

#[test]
fn oracle_is_right_on_fresh_images() {
    let (color, shape, both) = oracle_accuracy(1000, FRESH_SEED, 0.0);
    eprintln!("oracle clean: colour {color:.4} shape {shape:.4} both {both:.4}");
    assert!(both >= 0.99, "oracle accuracy {both} < 0.99");
}

#[test]
fn oracle_is_robust_to_noise() {
    let (color, shape, both) = oracle_accuracy(1000, FRESH_SEED + 1, 0.05);
    eprintln!("oracle sigma=0.05: colour {color:.4} shape {shape:.4} both {both:.4}");
    assert!(both >= 0.95, "oracle accuracy with noise {both} < 0.95");
}

#[test]
fn oracle_is_robust_to_blur_and_noise() {
    // Generated images are soft: a Gaussian blur of 1 px plus the same noise.
    let (color, shape, both) = oracle_accuracy_blurred(300, FRESH_SEED + 2, 0.05, 1.0);
    eprintln!("oracle blur 1 px + sigma=0.05: colour {color:.4} shape {shape:.4} both {both:.4}");
    assert!(
        both >= 0.9,
        "oracle accuracy with blur and noise {both} < 0.9"
    );
}

#[test]
fn oracle_reports_position_size_and_background() {
    let label = ShapeLabel {
        color: Color::Orange,
        shape: Shape::Triangle,
        size: Size::Large,
        position: Position::TopLeft,
        background: Background::Gray,
        cx: 10.25,
        cy: 10.25,
        radius: 8.0,
    };
    let j = judge(&render(&label));
    assert_eq!(j.color, Some(Color::Orange));
    assert_eq!(j.shape, Some(Shape::Triangle));
    assert_eq!(j.background, Some(Background::Gray));
    assert_eq!(j.position(), Some(Position::TopLeft));
    assert_eq!(j.size(), Some(Size::Large));
    assert!(j.confidence > 0.1, "{j:?}");
}

#[test]
fn oracle_finds_nothing_in_a_blank_image() {
    let img = image::RgbImage::from_pixel(32, 32, image::Rgb([255, 255, 255]));
    let j = judge(&img);
    assert_eq!((j.color, j.shape, j.confidence), (None, None, 0.0));
    assert_eq!(j.background, Some(Background::White));
    // Degenerate sizes do not panic.
    judge(&image::RgbImage::new(0, 0));
    judge(&image::RgbImage::new(2, 7));
}

fn short_options(steps: u64) -> clipdoor::shapes::train::TrainOptions {
    clipdoor::shapes::train::TrainOptions {
        steps: Some(steps),
        minutes: None,
        seed: 3,
        batch_size: 4,
        lr: 2e-3,
        warmup_steps: 5,
        checkpoint_every: 10,
        text_stage: clipdoor::shapes::text_stage::TextStageOptions {
            steps: 5,
            batch_size: 8,
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn short_training_lowers_the_loss_and_writes_a_loadable_pipeline() {
    use clipdoor::models::text_encoder::TextEncoder;
    use clipdoor::models::unet::load_unet;
    // Oversubscribed libtorch threads spin-wait on the shared machine; one thread is faster there.
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    let opts = short_options(40);
    let report =
        clipdoor::shapes::train::train(&out, &opts, false, false, tch::Device::Cpu, |_| {})
            .unwrap();
    assert_eq!(report.steps, 40);
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    let (first, last) = (mean(&report.losses[..10]), mean(&report.losses[30..]));
    eprintln!("short training: loss {first:.4} (first 10 steps) -> {last:.4} (last 10)");
    assert!(last < first, "loss did not fall: {first} -> {last}");

    for f in [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/vocab.json",
        "scheduler/scheduler_config.json",
        "metrics.json",
        "DONE",
        "checkpoint/state.json",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let (_vs, unet) = load_unet(&out.join("unet"), tch::Device::Cpu, tch::Kind::Float).unwrap();
    let enc = TextEncoder::load(out.to_str().unwrap(), tch::Device::Cpu, tch::Kind::Float).unwrap();
    let ctx = enc
        .encode(&["a red circle"], false)
        .unwrap()
        .1
        .last_hidden_state;
    let x = tch::Tensor::zeros([1, 3, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
    let t = tch::Tensor::from_slice(&[10i64]);
    unet.check_inputs(&x, &t, &ctx).unwrap();
    assert_eq!(unet.forward(&x, &t, &ctx).size(), vec![1, 3, 32, 32]);
    // The saved encoder is the one the UNet was trained with: the fixed random encoder after its text
    // stage (token embeddings untouched, the rest trained), and the checkpoint holds the same.
    let fixed = clipdoor::shapes::model::ShapesModel::new(
        0,
        clipdoor::diffusion::schedulers::PredictionType::VPrediction,
        tch::Device::Cpu,
    )
    .unwrap();
    let saved =
        clipdoor::io::weights::SafetensorsFile::open(&out.join("text_encoder/model.safetensors"))
            .unwrap();
    let ckpt = clipdoor::io::weights::SafetensorsFile::open(
        &out.join("checkpoint/text_encoder.safetensors"),
    )
    .unwrap();
    let init = fixed.encoder.vs.variables();
    for (name, tensor) in &init {
        let (s, c) = (saved.tensor(name).unwrap(), ckpt.tensor(name).unwrap());
        assert!(
            s.equal(&c),
            "{name}: saved encoder differs from the checkpoint's"
        );
        let same = s.equal(tensor);
        assert_eq!(
            same,
            name.contains("token_embedding"),
            "{name}: trained by the text stage? {}",
            !same
        );
    }
    let diff = (fixed.encode(&["a red circle"]).unwrap() - &ctx)
        .abs()
        .max()
        .double_value(&[]);
    assert!(
        diff > 1e-3,
        "the text stage did not change the encoder's states"
    );
    // The reference sampler runs through the scheduler trait on the saved model.
    let model = clipdoor::shapes::model::ShapesModel::load(&out, tch::Device::Cpu).unwrap();
    assert_eq!(
        model.scheduler.prediction_type,
        clipdoor::diffusion::schedulers::PredictionType::VPrediction,
        "the saved scheduler must say what the UNet predicts"
    );
    let opts = clipdoor::shapes::sample::SampleOptions {
        steps: 3,
        ..Default::default()
    };
    let imgs =
        clipdoor::shapes::sample::sample_images(&model, &["a red circle".into()], &[1], &opts)
            .unwrap();
    assert_eq!(imgs[0].dimensions(), (32, 32));
    // Without its scheduler config a folder cannot say what its UNet predicts: an input error naming
    // the file, not a silent default.
    let scheduler = out.join("scheduler/scheduler_config.json");
    std::fs::remove_file(&scheduler).unwrap();
    let err = clipdoor::shapes::model::ShapesModel::load(&out, tch::Device::Cpu)
        .err()
        .expect("loaded a folder without its scheduler config");
    assert_eq!(clipdoor::error::exit_code(&err), 2);
    assert!(
        err.to_string().contains(&scheduler.display().to_string()),
        "{err}"
    );
}

#[test]
fn interrupted_training_resumes_where_it_stopped() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    let mut opts = short_options(4);
    opts.checkpoint_every = 2;
    opts.batch_size = 2;
    let first = clipdoor::shapes::train::train(&out, &opts, false, false, tch::Device::Cpu, |_| {})
        .unwrap();
    // A finished folder is refused without --force; an unfinished one without --resume.
    assert!(
        clipdoor::shapes::train::train(&out, &opts, true, false, tch::Device::Cpu, |_| {}).is_err()
    );
    std::fs::remove_file(out.join("DONE")).unwrap();
    assert!(
        clipdoor::shapes::train::train(&out, &opts, false, false, tch::Device::Cpu, |_| {})
            .is_err()
    );
    opts.steps = Some(6);
    let resumed =
        clipdoor::shapes::train::train(&out, &opts, true, false, tch::Device::Cpu, |_| {}).unwrap();
    assert_eq!(resumed.steps, 6);
    assert_eq!(
        resumed.losses[..4],
        first.losses[..],
        "resumed run lost its history"
    );
}

/// Issue #15's bar for the shipped model (`checkpoints/shapes`, or `CLIPDOOR_SHAPES_MODEL=DIR`), by
/// the oracle, on the sets of `clipdoor shapes sample --per-pair 4` (DDIM 20 steps, guidance 4):
/// colour and shape right in at least 97% of 96 "a {colour} {shape}" images; size, position and
/// background each right in at least 95% of 96 prompts that state every attribute; and the empty
/// picture on the asked background for captions without a shape word. Measured values:
/// docs/results/shapes_model/quality.json (docs/shapes-world.md).
#[test]
fn shipped_model_meets_the_quality_bar() {
    let dir = std::env::var("CLIPDOOR_SHAPES_MODEL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| common::root().join("checkpoints/shapes"));
    // One thread: every integration test shares this process (tests/suite.rs), and the thread count
    // libtorch keeps for MKL is process-wide, so two here would oversubscribe the tests that follow.
    tch::set_num_threads(1);
    let model = clipdoor::shapes::model::ShapesModel::load(&dir, tch::Device::Cpu).unwrap();
    let opts = clipdoor::shapes::sample::SampleOptions::default();
    let (q, judged, _) = clipdoor::shapes::sample::quality(&model, 4, 0, &opts).unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&q).unwrap());
    assert_eq!(judged.len(), 96);
    assert_eq!((q.pairs.both.n, q.attributes.all.n), (96, 96));
    assert!(
        q.pairs.both.value >= 0.97,
        "colour and shape: {:?}",
        q.pairs.both
    );
    for (name, r) in [
        ("size", q.attributes.size),
        ("position", q.attributes.position),
        ("background", q.attributes.background),
    ] {
        assert!(r.value >= 0.95, "{name}: {r:?}");
    }
    assert!(
        q.no_object.empty_picture.value >= NO_OBJECT_BAR,
        "no-object prompts: {:?}",
        q.no_object.empty_picture
    );
}

/// Where a training step's time goes (run by hand: `cargo test --test suite shapes::bench_step -- --ignored --nocapture`).
#[test]
#[ignore]
fn bench_step() {
    use clipdoor::shapes::model::ShapesModel;
    use clipdoor::shapes::noise::images_to_tensor;
    use std::time::Instant;
    for threads in [1, 2] {
        tch::set_num_threads(threads);
        let model = ShapesModel::new(
            0,
            clipdoor::diffusion::schedulers::PredictionType::VPrediction,
            tch::Device::Cpu,
        )
        .unwrap();
        for b in [8i64, 32] {
            let t0 = Instant::now();
            let items: Vec<_> = (0..b as u64).map(|i| sample(1, i)).collect();
            let imgs: Vec<_> = items.iter().map(|s| render(&s.label)).collect();
            let x = images_to_tensor(&imgs);
            let t1 = Instant::now();
            let caps: Vec<String> = items.iter().map(|s| s.caption.clone()).collect();
            let ctx = model.encode(&caps).unwrap();
            let t2 = Instant::now();
            let t = tch::Tensor::full([b], 500i64, (tch::Kind::Int64, tch::Device::Cpu));
            let y = model.unet.forward(&x, &t, &ctx);
            let loss = y.square().mean(tch::Kind::Float);
            let t3 = Instant::now();
            loss.backward();
            let t4 = Instant::now();
            eprintln!(
                "threads {threads} batch {b}: data {:?} encode {:?} forward {:?} backward {:?}",
                t1 - t0,
                t2 - t1,
                t3 - t2,
                t4 - t3
            );
        }
    }
}

/// `clipdoor shapes steer` on the shipped model, small: the report holds every calibration setting,
/// the chosen one is the calibration's best, the test rates agree with the library's own verdicts on
/// the same seeds, and bad targets or overlapping seed ranges exit 2.
#[test]
fn sega_study_reports_calibration_and_test_rates() {
    use clipdoor::diffusion::pipeline::StableDiffusionPipeline;
    use clipdoor::shapes::steer::{calibration_grid, draw_and_judge, SteerOptions, SteerTarget};
    let tmp = common::tmp();
    let out = tmp.path().join("steer");
    let model = common::root().join("checkpoints/shapes");
    let run = |extra: &[&str]| {
        common::bin()
            .args([
                "shapes",
                "steer",
                "--device",
                "cpu",
                "--threads",
                "1",
                "--model",
            ])
            .arg(&model)
            .arg("--out")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&[
        "--target",
        "shape:triangle",
        "--calibration-images",
        "2",
        "--test-images",
        "3",
        "--test-seed",
        "5",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let t = &report["targets"]["toward shape triangle"];
    let cal = t["calibration"].as_array().unwrap();
    assert_eq!(cal.len(), calibration_grid().len());
    let best = cal
        .iter()
        .map(|r| r["steered"]["successes"].as_u64().unwrap())
        .max()
        .unwrap();
    let first_best = cal
        .iter()
        .find(|r| r["steered"]["successes"].as_u64().unwrap() == best)
        .unwrap();
    assert_eq!(t["chosen"], first_best["setting"]);
    assert_eq!(t["test"]["steered"]["n"], 3);
    // The test row is the library's verdicts on the same prompts and seeds.
    tch::set_num_threads(1);
    let pipe = StableDiffusionPipeline::load(
        model.to_str().unwrap(),
        None,
        tch::Device::Cpu,
        tch::Kind::Float,
    )
    .unwrap();
    let target = SteerTarget::parse("shape:triangle").unwrap();
    let setting: clipdoor::shapes::steer::SteerSetting =
        serde_json::from_value(t["chosen"].clone()).unwrap();
    let (v, _) = draw_and_judge(
        &pipe,
        &target.prompts(3),
        5,
        Some((target, &setting)),
        &SteerOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let k = v.steered.iter().filter(|x| **x == Some(true)).count();
    assert_eq!(t["test"]["steered"]["successes"], k);
    assert!(std::fs::read_to_string(out.join("report.md"))
        .unwrap()
        .contains("toward shape triangle"));
    // A finished report is not replaced; bad targets and overlapping seeds are input errors.
    for (extra, needle) in [
        (&["--test-images", "3"][..], "--force"),
        (
            &["--force", "--target", "shape:hexagon"],
            "--target `shape:hexagon`",
        ),
        (
            &["--force", "--calibration-seed", "3", "--test-seed", "0"],
            "overlap",
        ),
    ] {
        let o = run(extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(needle), "{extra:?}: {err}");
    }
}
