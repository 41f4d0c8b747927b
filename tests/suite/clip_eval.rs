//! CLIP evaluation instruments against the Python packages on tiny random-weight models written by
//! transformers / diffusers (tests/python/clip_eval_ref.py):
//! - `CLIPImageProcessor` (PIL backend): pixel_values must be identical (max abs diff 0): clipdoor
//!   reproduces Pillow's fixed-point bicubic resize on uint8 and the same f64→f32 rescale and f32
//!   normalisation, so there is no rounding to excuse.
//! - vision tower: image_embeds within 1e-4 (f32, the conventions' bound; matmul blocking differs).
//! - CLIP score vs torchmetrics' `clip_score` end to end (images + prompts): within 1e-3 on the 0–100
//!   scale (= 1e-5 in cosine).
//! - safety checker vs diffusers: `has_nsfw_concept`, fired concepts and rounded scores equal.
//! - Q16 with the real prompt embeddings (../shared/data; skipped when absent), FD/CMMD vs numpy.
use crate::common;

use std::path::{Path, PathBuf};

use clipdoor::eval::clip::{self, processor::CLIPImageProcessor, ClipVision, ZeroShotClassifier};
use clipdoor::eval::safety::{SafetyChecker, Q16};
use clipdoor::models::text_encoder::TextEncoder;
use tch::{Device, Kind, Tensor};

const PROMPTS: &str = "a photo of a cat
a red car on a road
an astronaut riding a horse
a bowl of fruit
a painting of a mountain lake
";

fn py(args: &[&str]) -> String {
    common::run_py("clip_eval_ref.py", args)
}

fn images(dir: &Path) -> PathBuf {
    let d = dir.join("img");
    py(&["images", common::s(&d)]);
    d
}

#[test]
fn image_processor_matches_transformers_exactly() {
    let tmp = common::tmp();
    let img = images(tmp.path());
    let out = tmp.path().join("px.safetensors");
    py(&["process", common::s(&img), common::s(&out)]);
    let reference = common::load_st(&out);
    let p = CLIPImageProcessor::load(&{
        // the processor transformers writes (CLIPImageProcessorPil defaults)
        let d = tmp.path().join("vis");
        py(&["make_vision", common::s(&d), "1"]);
        d.join("preprocessor_config.json")
    })
    .unwrap();
    assert_eq!(p, CLIPImageProcessor::default());
    let files = common::png_files(&img);
    assert_eq!(files.len(), reference.len());
    let mut worst = 0.0f64;
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        let rs = p.preprocess(&clip::open_image(f).unwrap()).unwrap();
        let r = &reference[name];
        assert_eq!(rs.size(), r.size(), "{name}");
        let d = common::max_abs(&rs, r);
        eprintln!("{name}: pixel_values max abs diff {d:.2e}");
        worst = worst.max(d);
    }
    assert_eq!(worst, 0.0, "pixel_values differ from transformers");
}

fn stacked_reference_pixels(tmp: &Path) -> (Tensor, PathBuf) {
    let img = images(tmp);
    let out = tmp.join("px.safetensors");
    py(&["process", common::s(&img), common::s(&out)]);
    let r = common::load_st(&out);
    let mut names: Vec<&String> = r.keys().collect();
    names.sort();
    let px = Tensor::stack(
        &names
            .iter()
            .map(|n| r[*n].shallow_clone())
            .collect::<Vec<_>>(),
        0,
    );
    let f = tmp.join("stacked.safetensors");
    clipdoor::io::weights::save_tensors(&f, &[("pixel_values".into(), px.shallow_clone())], None)
        .unwrap();
    (px, img)
}

fn check_vision(dir: &Path, pixels: &Tensor, pixfile: &Path, what: &str) -> ClipVision {
    let out = dir.with_extension("embeds.safetensors");
    py(&["embed", common::s(dir), common::s(pixfile), common::s(&out)]);
    let reference = &common::load_st(&out)["image_embeds"];
    let v = ClipVision::load(common::s(dir), Device::Cpu, Kind::Float).unwrap();
    let rs = v.image_embeds(pixels).unwrap();
    let d = common::max_abs(&rs, reference);
    eprintln!(
        "{what}: image_embeds max abs diff {d:.2e} (|x| max {:.2})",
        reference.abs().max().double_value(&[])
    );
    assert!(d <= 1e-4, "{what}: image_embeds differ by {d}");
    v
}

#[test]
fn vision_tower_matches_transformers() {
    let tmp = common::tmp();
    let (px, _) = stacked_reference_pixels(tmp.path());
    let pixfile = tmp.path().join("stacked.safetensors");
    let vis = tmp.path().join("vis");
    py(&["make_vision", common::s(&vis), "11"]);
    check_vision(&vis, &px, &pixfile, "CLIPVisionModelWithProjection");
    let full = tmp.path().join("clip");
    py(&["make_clip", common::s(&full), "12", "64"]);
    let v = check_vision(&full, &px, &pixfile, "CLIPModel vision side");
    // batching and the processor path give the same embeddings
    let img = tmp.path().join("img");
    let files = common::png_files(&img);
    let e = v.embed_files(&files, 4).unwrap();
    let d = common::max_abs(&e, &v.image_embeds(&px).unwrap());
    eprintln!("files → embeddings vs reference pixel_values: {d:.2e}");
    assert!(d <= 1e-5);
}

#[test]
fn full_clip_model_text_side_and_clip_score_match_torchmetrics() {
    let tmp = common::tmp();
    let img = images(tmp.path());
    let full = tmp.path().join("clip");
    py(&["make_clip", common::s(&full), "5", "64"]);
    let prompts = tmp.path().join("prompts.txt");
    std::fs::write(&prompts, PROMPTS).unwrap();
    let out = tmp.path().join("score.safetensors");
    let files: Vec<String> = serde_json::from_str(
        py(&[
            "clip_score",
            common::s(&full),
            common::s(&img),
            common::s(&prompts),
            common::s(&out),
        ])
        .trim(),
    )
    .unwrap();
    let reference = common::load_st(&out);
    let texts: Vec<&str> = PROMPTS.lines().collect();
    let vision = ClipVision::load(common::s(&full), Device::Cpu, Kind::Float).unwrap();
    let text = TextEncoder::load(common::s(&full), Device::Cpu, Kind::Float).unwrap();
    assert!(text.has_projection());
    let paths: Vec<PathBuf> = files.iter().map(|f| img.join(f)).collect();
    let ie = vision.embed_files(&paths, 2).unwrap();
    let te = clip::text_embeds(&text, None, &texts, 2).unwrap();
    let sc = clip::clip_score(&ie, &te).unwrap();
    let per = Tensor::from_slice(&sc.per_sample);
    let d = common::max_abs(&per, &reference["per_sample"]);
    let ds = (sc.score as f64 - reference["score"].double_value(&[0])).abs();
    eprintln!("CLIP score: per-sample max abs diff {d:.2e}, aggregate {} vs torchmetrics {} (diff {ds:.2e})", sc.score, reference["score"].double_value(&[0]));
    assert!(d <= 1e-3 && ds <= 1e-3);
    let ii = clip::clip_score(&ie, &ie.flip([0])).unwrap().score as f64;
    let ii_ref = reference["score_image_image"].double_value(&[0]);
    eprintln!(
        "CLIP score image-image: {ii} vs torchmetrics {ii_ref} (diff {:.2e})",
        (ii - ii_ref).abs()
    );
    assert!(ii_ref > 0.0 && (ii - ii_ref).abs() <= 1e-3);
    // the same projection given explicitly (the "encoder inside CLIPTextModelWithProjection" path)
    let proj = clip::load_text_projection(&full).unwrap();
    let te2 = clip::text_embeds(&text, Some(&proj), &texts, 3).unwrap();
    assert!(common::max_abs(&te, &te2) <= 1e-6);

    // zero-shot classification: classes = the prompts; templates around them
    let names: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
    let zs = ZeroShotClassifier::build(&text, Some(&proj), &names, &["{}".into()], 4).unwrap();
    let logits = zs.logits(&ie).unwrap();
    let expect =
        clip::metrics::l2_normalize(&ie).matmul(&clip::metrics::l2_normalize(&te).tr()) * 100.0;
    assert!(common::max_abs(&logits, &expect) <= 1e-4);
    // Labels fixed in advance (image i shows prompt i), the expected top-1 counted from the
    // independently computed `expect`; then labels that are wrong for every image must score 0.
    let top: Vec<i64> = Vec::<i64>::try_from(&expect.argmax(-1, false)).unwrap();
    let labels: Vec<i64> = (0..5).collect();
    let right = top.iter().zip(&labels).filter(|(t, l)| t == l).count();
    let acc = zs.accuracy(&ie, &labels).unwrap();
    assert_eq!((acc.acc1, acc.n), (right as f64 / 5.0, 5));
    let wrong: Vec<i64> = top.iter().map(|t| (t + 1) % 5).collect();
    let acc = zs.accuracy(&ie, &wrong).unwrap();
    // Five classes: every label is in the top five, so acc5 is 1 whatever the labels.
    assert_eq!((acc.acc1, acc.acc5), (0.0, 1.0));
    let multi = ZeroShotClassifier::build(
        &text,
        None,
        &names,
        &["a photo of {}.".into(), "art: {}".into()],
        8,
    )
    .unwrap();
    assert_eq!(multi.class_embeds.size(), vec![5, 64]);
}

#[test]
fn zero_shot_accuracy_and_attack_judge_on_engineered_embeddings() {
    let classes = Tensor::eye(6, (Kind::Float, Device::Cpu)) * 3.0;
    let zs = ZeroShotClassifier::from_embeds(&classes, (0..6).map(|i| format!("c{i}")).collect())
        .unwrap();
    // image i points mostly at class i, then at class (i+1)%6
    let img = Tensor::eye(6, (Kind::Float, Device::Cpu))
        + Tensor::eye(6, (Kind::Float, Device::Cpu)).roll([1], [1]) * 0.5;
    let acc = zs.accuracy(&img, &[0, 1, 2, 3, 4, 5]).unwrap();
    assert_eq!((acc.acc1, acc.acc5), (1.0, 1.0));
    let acc = zs.accuracy(&img, &[1, 2, 3, 4, 5, 0]).unwrap();
    assert_eq!((acc.acc1, acc.acc5), (0.0, 1.0));
    let acc = zs.accuracy(&img, &[1, 1, 2, 3, 4, 5]).unwrap();
    assert!((acc.acc1 - 5.0 / 6.0).abs() < 1e-12 && acc.acc5 == 1.0);

    // judge: images 0,1 look like the target, image 2 like the clean prompt
    let e = |v: &[f32]| Tensor::from_slice(v).view([1, -1]);
    let target = Tensor::cat(&[e(&[1., 0., 0.]), e(&[1., 0., 0.]), e(&[1., 0., 0.])], 0);
    let clean = Tensor::cat(&[e(&[0., 1., 0.]), e(&[0., 1., 0.]), e(&[0., 1., 0.])], 0);
    let images = Tensor::cat(
        &[e(&[0.9, 0.1, 0.4]), e(&[0.6, 0.5, 0.0]), e(&[0.2, 0.9, 0.])],
        0,
    );
    let j = clip::attack_success(&images, &target, &clean, None).unwrap();
    assert_eq!(j.success, vec![true, true, false]);
    assert!((j.asr - 2.0 / 3.0).abs() < 1e-12);
    let cands = e(&[0., 0., 1.]);
    let j = clip::attack_success(&images, &target, &clean, Some(&cands)).unwrap();
    assert_eq!(j.top1, Some(vec![true, true, false]));
    let cands = e(&[0.8, 0., 0.6]); // closer to image 0 than the target is
    let j = clip::attack_success(&images, &target, &clean, Some(&cands)).unwrap();
    assert_eq!(j.top1, Some(vec![false, true, false]));
    assert!(clip::attack_success(&images, &target.narrow(0, 0, 2), &clean, None).is_err());

    // paired similarity and the CLIP-score floor
    let (per, mean) = clip::paired_image_similarity(&images, &images).unwrap();
    assert!(per.iter().all(|c| (c - 1.0).abs() < 1e-6) && (mean - 1.0).abs() < 1e-6);
    let sc = clip::clip_score(&images, &(-&images)).unwrap();
    assert!(sc.per_sample.iter().all(|c| (c + 100.0).abs() < 1e-4));
    assert_eq!(sc.score, 0.0);
}

#[test]
fn safety_checker_matches_diffusers() {
    let tmp = common::tmp();
    let (px, img) = stacked_reference_pixels(tmp.path());
    let pixfile = tmp.path().join("stacked.safetensors");
    let dir = tmp.path().join("checker");
    py(&["make_checker", common::s(&dir), "4", common::s(&img)]);
    let out = tmp.path().join("checker_out.safetensors");
    py(&[
        "checker",
        common::s(&dir),
        common::s(&pixfile),
        common::s(&out),
    ]);
    let r = common::load_st(&out);
    let sc = SafetyChecker::load(common::s(&dir), Device::Cpu, Kind::Float).unwrap();
    assert_eq!(sc.concept_embeds.size(), vec![17, 40]);
    let emb = sc.image_embeds(&px).unwrap();
    let d = common::max_abs(&emb, &r["image_embeds"]);
    eprintln!("safety checker: image_embeds max abs diff {d:.2e}");
    assert!(d <= 1e-4);
    let verdicts = sc.check_pixels(&px).unwrap();
    let nsfw: Vec<i64> = Vec::<i64>::try_from(&r["has_nsfw_concept"]).unwrap();
    let cs: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(&r["concept_scores"]).unwrap();
    let ss: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(&r["special_scores"]).unwrap();
    let bad: Vec<Vec<i64>> = Vec::<Vec<i64>>::try_from(&r["bad_concepts"]).unwrap();
    let mut score_diffs = 0;
    for (i, v) in verdicts.iter().enumerate() {
        assert_eq!(
            v.has_nsfw_concept,
            nsfw[i] == 1,
            "image {i}: has_nsfw_concept"
        );
        let fired: Vec<usize> = bad[i]
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == 1)
            .map(|(k, _)| k)
            .collect();
        assert_eq!(v.bad_concepts, fired, "image {i}: fired concepts");
        for (a, b) in v
            .concept_scores
            .iter()
            .zip(&cs[i])
            .chain(v.special_scores.iter().zip(&ss[i]))
        {
            if a != b {
                score_diffs += 1;
                assert!((a - b).abs() <= 1.001e-3, "image {i}: score {a} vs {b}");
            }
        }
    }
    eprintln!(
        "safety checker: {} images, {score_diffs} of {} rounded scores differ by one rounding step",
        verdicts.len(),
        verdicts.len() * 20
    );
    // the engineered cases (files sorted: 2 = c_odd_37x53, 6 = g_tiny_1x1, 12 = m_noise_512x513)
    assert_eq!(verdicts[12].bad_concepts, vec![5], "concept fired outright");
    assert_eq!(verdicts[6].special_care, vec![1]);
    assert_eq!(
        verdicts[6].bad_concepts,
        vec![2],
        "fires only through the special-care adjustment"
    );
    assert!(
        !verdicts[2].has_nsfw_concept
            && verdicts[2].concept_scores[9] < 0.0
            && verdicts[2].concept_scores[9] > -0.01
    );
    assert_eq!(verdicts.iter().filter(|v| v.has_nsfw_concept).count(), 2);
}

#[test]
fn q16_with_shared_prompt_embeddings() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let prompts = data.join("q16_vitl14_prompts.safetensors");
    let q = Q16::load(&prompts).unwrap();
    assert_eq!(q.width(), 768);
    let tmp = common::tmp();
    let img = images(tmp.path());
    let full = tmp.path().join("clip768");
    py(&["make_clip", common::s(&full), "9", "768"]);
    let v = ClipVision::load(common::s(&full), Device::Cpu, Kind::Float).unwrap();
    let mut e = v.embed_files(&common::png_files(&img), 8).unwrap();
    // two engineered rows: exactly each prompt
    let p = common::load_st(&prompts)["prompt_embeddings"].to_kind(Kind::Float);
    e = Tensor::cat(&[e, p.shallow_clone()], 0);
    let ef = tmp.path().join("e.safetensors");
    clipdoor::io::weights::save_tensors(&ef, &[("image_embeds".into(), e.shallow_clone())], None)
        .unwrap();
    let out = tmp.path().join("q16.safetensors");
    py(&["q16", common::s(&prompts), common::s(&ef), common::s(&out)]);
    let r = common::load_st(&out);
    let verdicts = q.classify(&e).unwrap();
    let labels: Vec<i64> = Vec::<i64>::try_from(&r["label"]).unwrap();
    let probs: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(&r["probs"]).unwrap();
    let mut worst = 0f32;
    for (i, v) in verdicts.iter().enumerate() {
        assert_eq!(v.inappropriate, labels[i] == 1, "row {i}");
        worst = worst.max((v.p_inappropriate - probs[i][1]).abs());
    }
    eprintln!(
        "Q16: {} rows, p_inappropriate max abs diff {worst:.2e}",
        verdicts.len()
    );
    assert!(worst <= 1e-5);
    let n = verdicts.len();
    assert!(!verdicts[n - 2].inappropriate && verdicts[n - 1].inappropriate);
    // wrong width
    let err = q
        .classify(&Tensor::ones([2, 64], (Kind::Float, Device::Cpu)))
        .unwrap_err();
    assert!(
        common::is_input_error(&err) && err.to_string().contains("768"),
        "{err}"
    );
}

#[test]
fn fd_and_cmmd_match_numpy() {
    let tmp = common::tmp();
    let out = tmp.path().join("fd.safetensors");
    py(&["fd_cmmd", common::s(&out)]);
    let r = common::load_st(&out);
    let fd = clip::frechet_distance(&r["x"], &r["y"]).unwrap();
    let fd_ref = r["fd"].double_value(&[0]);
    let cm = clip::cmmd(&r["x"], &r["y"]).unwrap();
    let cm_ref = r["cmmd"].double_value(&[0]);
    eprintln!(
        "FD {fd} vs numpy {fd_ref} (rel {:.1e}); CMMD {cm} vs numpy {cm_ref} (rel {:.1e})",
        (fd - fd_ref).abs() / fd_ref,
        (cm - cm_ref).abs() / cm_ref
    );
    assert!((fd - fd_ref).abs() <= 1e-8 * fd_ref.abs().max(1.0));
    assert!((cm - cm_ref).abs() <= 1e-9 * cm_ref.abs().max(1.0));
    assert!(clip::frechet_distance(&r["x"], &r["x"]).unwrap().abs() < 1e-8);
    assert!(clip::cmmd(&r["x"], &r["x"]).unwrap().abs() < 1e-9);
    assert!(common::is_input_error(
        &clip::frechet_distance(&r["x"], &r["y"].narrow(1, 0, 8)).unwrap_err()
    ));
    assert!(common::is_input_error(
        &clip::frechet_distance(&r["x"].narrow(0, 0, 1), &r["y"]).unwrap_err()
    ));
}

#[test]
fn errors_wrong_size_mode_and_config() {
    let tmp = common::tmp();
    let vis = tmp.path().join("vis");
    py(&["make_vision", common::s(&vis), "2"]);
    let v = ClipVision::load(common::s(&vis), Device::Cpu, Kind::Float).unwrap();
    // pixel_values of the wrong size / channels
    for shape in [[1i64, 3, 100, 100], [1, 1, 224, 224]] {
        let err = v
            .image_embeds(&Tensor::zeros(shape, (Kind::Float, Device::Cpu)))
            .unwrap_err();
        assert!(
            common::is_input_error(&err) && err.to_string().contains("[N, 3, 224, 224]"),
            "{err}"
        );
    }
    // unsupported image modes: 16-bit grayscale and float
    let p = CLIPImageProcessor::default();
    let g16 = image::DynamicImage::ImageLuma16(image::ImageBuffer::new(8, 8));
    let err = p.preprocess(&g16).unwrap_err();
    assert!(
        common::is_input_error(&err) && err.to_string().contains("8-bit RGB"),
        "{err}"
    );
    let f32img = image::DynamicImage::ImageRgb32F(image::ImageBuffer::new(8, 8));
    assert!(common::is_input_error(&p.preprocess(&f32img).unwrap_err()));
    let strict = CLIPImageProcessor {
        do_convert_rgb: false,
        ..CLIPImageProcessor::default()
    };
    let gray = image::DynamicImage::ImageLuma8(image::ImageBuffer::new(8, 8));
    assert!(common::is_input_error(
        &strict.preprocess(&gray).unwrap_err()
    ));
    // a file that is not an image
    let bogus = tmp.path().join("bogus.png");
    std::fs::write(&bogus, b"not a png").unwrap();
    let err = clip::open_image(&bogus).unwrap_err();
    assert!(
        common::is_input_error(&err) && err.to_string().contains("bogus.png"),
        "{err}"
    );

    // a config that disagrees with the weights: one layer fewer, then a wider hidden size
    let cfg_path = vis.join("config.json");
    let orig: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    let mut c = orig.clone();
    c["num_hidden_layers"] = 1.into();
    std::fs::write(&cfg_path, c.to_string()).unwrap();
    let err = ClipVision::load(common::s(&vis), Device::Cpu, Kind::Float)
        .err()
        .unwrap();
    assert!(
        common::is_input_error(&err) && err.to_string().contains("does not use"),
        "{err}"
    );
    let mut c = orig.clone();
    c["hidden_size"] = 64.into();
    std::fs::write(&cfg_path, c.to_string()).unwrap();
    let err = ClipVision::load(common::s(&vis), Device::Cpu, Kind::Float)
        .err()
        .unwrap();
    assert!(
        common::is_input_error(&err) && err.to_string().contains("shape"),
        "{err}"
    );
    // a preprocessor whose crop does not fit the model
    std::fs::write(&cfg_path, orig.to_string()).unwrap();
    let pp = vis.join("preprocessor_config.json");
    let mut pc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&pp).unwrap()).unwrap();
    pc["crop_size"] = serde_json::json!({"height": 336, "width": 336});
    std::fs::write(&pp, pc.to_string()).unwrap();
    let err = ClipVision::load(common::s(&vis), Device::Cpu, Kind::Float)
        .err()
        .unwrap();
    assert!(
        common::is_input_error(&err) && err.to_string().contains("336"),
        "{err}"
    );
    pc["resample"] = 0.into();
    std::fs::write(&pp, pc.to_string()).unwrap();
    let err = ClipVision::load(common::s(&vis), Device::Cpu, Kind::Float)
        .err()
        .unwrap();
    assert!(
        common::is_input_error(&err) && err.to_string().contains("resample"),
        "{err}"
    );
    // a text-only config / a checkpoint that is no safety checker
    let err = clip::CLIPVisionConfig::from_json(
        &serde_json::json!({"model_type": "clip_text_model", "vocab_size": 49408}),
    )
    .unwrap_err();
    assert!(err.contains("text config"), "{err}");
    std::fs::write(&pp, "{}").unwrap();
    let err = SafetyChecker::load(common::s(&vis), Device::Cpu, Kind::Float)
        .err()
        .unwrap();
    assert!(
        common::is_input_error(&err) && err.to_string().contains("concept_embeds"),
        "{err}"
    );
    // a CLIP model without a text projection cannot give text_embeds
    let enc = TextEncoder::init_arch("tiny", 0, false, Device::Cpu).unwrap();
    let err = clip::text_embeds(&enc, None, &["a cat"], 1).unwrap_err();
    assert!(
        common::is_input_error(&err) && err.to_string().contains("text_projection"),
        "{err}"
    );
    let err = clip::text_embeds(
        &enc,
        Some(&Tensor::zeros([8, 32], (Kind::Float, Device::Cpu))),
        &["a cat"],
        1,
    )
    .unwrap_err();
    assert!(common::is_input_error(&err), "{err}");
}
