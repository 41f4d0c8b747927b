//! FID/KID on Inception features against pytorch-fid and torchmetrics (tests/python/inception_reference.py).
//!
//! - Features: pytorch-fid's own `InceptionV3([3])` construction (FIDInceptionA/C/E_1/E_2 patched into
//!   torchvision's Inception3) with seeded random weights and calibrated BatchNorm statistics, run by
//!   pytorch-fid's `get_activations` on PNGs of three sizes (64×64, 97×61, 320×240). Tolerance: max abs
//!   difference ≤ 1e-4 × max |feature| (f32 through ~95 conv + BN layers; the conventions' fp32 bound,
//!   made relative because pool3 features are not unit-scaled). Both sides call the same libtorch
//!   kernels, so the measured difference is far below that.
//! - FID: vs pytorch-fid's `calculate_frechet_distance` (scipy `sqrtm` of Σ₁Σ₂) and torchmetrics'
//!   `_compute_fid` (eigenvalues of Σ₁Σ₂) on full-rank 64-d sets, relative 1e-8 (f64, different
//!   matrix-square-root algorithms).
//! - KID: torchmetrics `KernelInceptionDistance.compute` in f64 with the permutations it drew, replayed
//!   through `kid_on_subsets`: relative 1e-9 (same sums in f64, different summation order).
use crate::common;

use std::path::{Path, PathBuf};

use clipdoor::eval::inception::{self, FidInception, KidOptions, KidSubset, Layout};
use clipdoor::io::weights::save_tensors;
use tch::{Device, Kind, Tensor};

fn py(args: &[&str]) -> String {
    common::run_py("inception_reference.py", args)
}

fn load_images(dir: &Path) -> Vec<image::RgbImage> {
    common::png_files(dir)
        .iter()
        .map(|f| image::open(f).unwrap().to_rgb8())
        .collect()
}

fn save_features(path: &Path, t: &Tensor) {
    save_tensors(path, &[("features".into(), t.shallow_clone())], None).unwrap();
}

struct Reference {
    fid_pytorch_fid: Option<f64>,
    fid_torchmetrics: Option<f64>,
    poly_mmd_first: f64,
    kid_mean: f64,
    kid_std: f64,
    subsets: Vec<KidSubset>,
}

/// pytorch-fid / torchmetrics numbers on the feature sets `a`, `b`.
fn reference(dir: &Path, a: &Tensor, b: &Tensor, subsets: usize, size: usize) -> Reference {
    let (fa, fb, out) = (
        dir.join("fa.st"),
        dir.join("fb.st"),
        dir.join("fid_kid.json"),
    );
    save_features(&fa, a);
    save_features(&fb, b);
    py(&[
        "fid_kid",
        common::s(&fa),
        common::s(&fb),
        &subsets.to_string(),
        &size.to_string(),
        common::s(&out),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let idx = |x: &serde_json::Value| -> Vec<i64> {
        x.as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_i64().unwrap())
            .collect()
    };
    Reference {
        fid_pytorch_fid: v["fid_pytorch_fid"].as_f64(),
        fid_torchmetrics: v["fid_torchmetrics"].as_f64(),
        poly_mmd_first: v["poly_mmd_first"].as_f64().unwrap(),
        kid_mean: v["kid_mean"].as_f64().unwrap(),
        kid_std: v["kid_std"].as_f64().unwrap(),
        subsets: v["subsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (idx(&p[0]), idx(&p[1])))
            .collect(),
    }
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

/// KID (and poly_mmd on the first `size` rows) against torchmetrics; returns the reference.
fn check_kid(
    dir: &Path,
    a: &Tensor,
    b: &Tensor,
    subsets: usize,
    size: usize,
    what: &str,
) -> Reference {
    let r = reference(dir, a, b, subsets, size);
    let opts = KidOptions::default();
    let (mean, std) = inception::kid_on_subsets(a, b, &r.subsets, &opts).unwrap();
    let first = |t: &Tensor| t.narrow(0, 0, size as i64);
    let mmd = inception::poly_mmd(&first(a), &first(b), &opts).unwrap();
    eprintln!(
        "{what}: KID mean {mean:.10e} vs torchmetrics {:.10e} (rel {:.1e}); std {std:.3e} vs {:.3e}; \
         poly_mmd {mmd:.10e} vs {:.10e} (rel {:.1e})",
        r.kid_mean,
        rel(mean, r.kid_mean),
        r.kid_std,
        r.poly_mmd_first,
        rel(mmd, r.poly_mmd_first)
    );
    assert!(rel(mean, r.kid_mean) <= 1e-9, "{what}: KID mean");
    assert!(
        (std - r.kid_std).abs() <= 1e-9 * r.kid_mean.abs().max(r.kid_std),
        "{what}: KID std"
    );
    assert!(rel(mmd, r.poly_mmd_first) <= 1e-9, "{what}: poly_mmd");
    r
}

#[test]
fn features_match_pytorch_fid() {
    let tmp = common::tmp();
    let (m, img, refp) = (
        tmp.path().join("m"),
        tmp.path().join("img"),
        tmp.path().join("f.st"),
    );
    py(&["make_model", "0", common::s(&m)]);
    py(&["images", common::s(&img)]);
    let pth_layout = m.join("pth_layout.safetensors");
    py(&[
        "features",
        common::s(&pth_layout),
        common::s(&img),
        common::s(&refp),
    ]);
    let reference = &common::load_st(&refp)["features"];
    let images = load_images(&img);
    assert_eq!(images.len(), 6);

    let net = FidInception::load(&pth_layout, Device::Cpu).unwrap();
    assert_eq!(net.layout(), Layout::Inception3);
    let feats = net.features(&images, 4).unwrap();
    assert_eq!(feats.size(), [6, 2048]);
    assert_eq!(feats.kind(), Kind::Float);
    let scale = reference.abs().max().double_value(&[]);
    let d = common::max_abs(&feats, reference);
    eprintln!(
        "features vs pytorch-fid: max abs diff {d:.3e}, max |feature| {scale:.3}, relative {:.3e}",
        d / scale
    );
    assert!(d <= 1e-4 * scale, "features differ from pytorch-fid by {d}");

    // The same weights in pytorch-fid's own state-dict layout; one image per batch.
    let blocks = FidInception::load(&m.join("blocks_layout.safetensors"), Device::Cpu).unwrap();
    assert_eq!(blocks.layout(), Layout::PytorchFid);
    let f1 = blocks.features(&images, 1).unwrap();
    let d1 = common::max_abs(&f1, &feats);
    eprintln!("blocks layout, batch 1 vs pth layout, batch 4: max abs diff {d1:.3e}");
    assert!(d1 <= 1e-4 * scale);

    // Pickled .pth files are refused (no pickle is ever read); the error says how to convert them.
    for name in ["zip.pth", "legacy.pth"] {
        let e = FidInception::load(&m.join(name), Device::Cpu)
            .err()
            .expect("a pickle was read");
        let msg = format!("{e:#}");
        assert!(common::is_input_error(&e), "{msg}");
        assert!(
            msg.contains(name) && msg.contains("pickle") && msg.contains("save_file"),
            "{msg}"
        );
    }

    // KID on real Inception features (3 vs 3, subsets of 2 and 3).
    let (a, b) = (reference.narrow(0, 0, 3), reference.narrow(0, 3, 3));
    check_kid(tmp.path(), &a, &b, 4, 3, "Inception features, subsets of 3");
    check_kid(tmp.path(), &a, &b, 5, 2, "Inception features, subsets of 2");
}

#[test]
fn fid_and_kid_match_pytorch_fid_and_torchmetrics() {
    let tmp = common::tmp();
    let r = tmp.path().join("r.st");
    py(&["random_features", common::s(&r)]);
    let t = common::load_st(&r);
    let (a, b) = (&t["a"], &t["b"]);
    let rf = check_kid(
        tmp.path(),
        a,
        b,
        10,
        50,
        "random 64-d features, 10 subsets of 50",
    );
    let fid = inception::fid(a, b).unwrap();
    let (pf, tm) = (rf.fid_pytorch_fid.unwrap(), rf.fid_torchmetrics.unwrap());
    eprintln!(
        "FID {fid:.12} vs pytorch-fid {pf:.12} (rel {:.1e}) vs torchmetrics {tm:.12} (rel {:.1e})",
        rel(fid, pf),
        rel(fid, tm)
    );
    assert!(rel(fid, pf) <= 1e-8 && rel(fid, tm) <= 1e-8);
    // f32 features give the same FID to f32 precision (computed in f64 either way).
    let fid32 = inception::fid(&a.to_kind(Kind::Float), &b.to_kind(Kind::Float)).unwrap();
    assert!(rel(fid32, pf) <= 1e-5, "{fid32} vs {pf}");

    // Seeded subsets: reproducible, seed-dependent, statistically close to torchmetrics' draw.
    let opts = KidOptions {
        subsets: 10,
        subset_size: 50,
        seed: 1,
        ..Default::default()
    };
    let k1 = inception::kid(a, b, &opts).unwrap();
    assert_eq!(k1, inception::kid(a, b, &opts).unwrap());
    let k2 = inception::kid(
        a,
        b,
        &KidOptions {
            seed: 2,
            ..opts.clone()
        },
    )
    .unwrap();
    assert_ne!(k1, k2);
    let subsets = inception::kid_subsets(300, 280, &opts).unwrap();
    assert_eq!(subsets.len(), 10);
    for (ia, ib) in &subsets {
        let mut u = ia.clone();
        u.sort();
        u.dedup();
        assert_eq!((u.len(), ib.len()), (50, 50));
        assert!(ia.iter().all(|&i| i < 300) && ib.iter().all(|&i| i < 280));
    }
    eprintln!(
        "seeded KID (seed 1) {:.6} ± {:.6}; torchmetrics' draw {:.6} ± {:.6}",
        k1.0, k1.1, rf.kid_mean, rf.kid_std
    );
    assert!((k1.0 - rf.kid_mean).abs() <= 3.0 * (k1.1 + rf.kid_std));
}

#[test]
fn metric_input_errors() {
    let a = Tensor::randn([10, 8], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([12, 8], (Kind::Float, Device::Cpu));
    let too_big = KidOptions {
        subset_size: 11,
        ..Default::default()
    };
    for e in [
        inception::kid(&a, &b, &too_big).unwrap_err(),
        inception::kid(
            &a,
            &b,
            &KidOptions {
                subset_size: 1,
                ..Default::default()
            },
        )
        .unwrap_err(),
        inception::kid(
            &a,
            &b.narrow(1, 0, 4),
            &KidOptions {
                subset_size: 5,
                ..Default::default()
            },
        )
        .unwrap_err(),
        inception::fid(&a, &b.narrow(1, 0, 4)).unwrap_err(),
        inception::fid(&a.narrow(0, 0, 1), &b).unwrap_err(),
    ] {
        assert!(common::is_input_error(&e), "{e:#}");
    }
    let msg = format!("{:#}", inception::kid(&a, &b, &too_big).unwrap_err());
    assert!(msg.contains("at most 10"), "{msg}");
}

/// A random-weight model written by clipdoor itself in pytorch-fid's layout, plus its tensors.
fn random_weights(dir: &Path) -> (PathBuf, Vec<(String, Tensor)>) {
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let _net = inception::FIDInceptionV3::new(vs.root());
    let path = dir.join("ok.safetensors");
    clipdoor::io::weights::save_var_store(&path, &vs, None).unwrap();
    let mut t: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    t.sort_by(|x, y| x.0.cmp(&y.0));
    (path, t)
}

fn load_err(path: &Path) -> String {
    let e = FidInception::load(path, Device::Cpu).unwrap_err();
    let msg = format!("{e:#}");
    assert!(common::is_input_error(&e), "not an input error: {msg}");
    assert!(
        msg.contains(common::s(path)),
        "error does not name the file: {msg}"
    );
    msg
}

#[test]
fn weight_file_errors_are_input_errors() {
    let tmp = common::tmp();
    let dir = tmp.path();

    let missing = dir.join("pt_inception-2015-12-05-6726825d.safetensors");
    let msg = load_err(&missing);
    assert!(
        msg.contains("not found") && msg.contains(inception::FID_WEIGHTS_URL),
        "{msg}"
    );

    let (ok, tensors) = random_weights(dir);
    let net = FidInception::load(&ok, Device::Cpu).unwrap();
    assert_eq!(net.layout(), Layout::PytorchFid);
    let one = image::RgbImage::from_pixel(5, 7, image::Rgb([10, 200, 30]));
    assert_eq!(
        net.features(&[one.clone(), one], 2).unwrap().size(),
        [2, 2048]
    );
    assert_eq!(net.features(&[], 2).unwrap().size(), [0, 2048]);
    assert!(common::is_input_error(
        &net.features(&[image::RgbImage::new(0, 3)], 1).unwrap_err()
    ));

    let write = |name: &str, t: Vec<(String, Tensor)>| {
        let p = dir.join(name);
        save_tensors(&p, &t, None).unwrap();
        p
    };
    let target = "blocks.2.0.branch1x1.conv.weight";
    let reshaped = tensors
        .iter()
        .map(|(n, t)| {
            let t = if n == target {
                t.narrow(0, 0, 32)
            } else {
                t.shallow_clone()
            };
            (n.clone(), t)
        })
        .collect();
    let msg = load_err(&write("wrong_shape.safetensors", reshaped));
    assert!(
        msg.contains(target) && msg.contains("[32, 192, 1, 1]"),
        "{msg}"
    );

    let fewer = tensors
        .iter()
        .filter(|(n, _)| n != target)
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    assert!(load_err(&write("missing.safetensors", fewer)).contains(target));

    let mut extra: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    extra.push((
        "blocks.4.0.conv.weight".into(),
        Tensor::zeros([1], (Kind::Float, Device::Cpu)),
    ));
    assert!(load_err(&write("extra.safetensors", extra)).contains("blocks.4.0.conv.weight"));

    // torchvision's ImageNet Inception v3 (Inception3 names, 1000 classes): refused by name.
    let mut tv: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (Layout::Inception3.file_name(n), t.shallow_clone()))
        .collect();
    tv.push((
        "fc.weight".into(),
        Tensor::zeros([1000, 2048], (Kind::Float, Device::Cpu)),
    ));
    tv.push((
        "fc.bias".into(),
        Tensor::zeros([1000], (Kind::Float, Device::Cpu)),
    ));
    assert!(load_err(&write("torchvision.safetensors", tv)).contains("torchvision"));

    let other = write(
        "other.safetensors",
        vec![(
            "weight".into(),
            Tensor::zeros([3], (Kind::Float, Device::Cpu)),
        )],
    );
    assert!(load_err(&other).contains("no Inception v3 weights"));

    let garbage = dir.join("garbage.pth");
    std::fs::write(&garbage, b"not a pickle").unwrap();
    assert!(load_err(&garbage).contains("save_file"));
    let npz = dir.join("weights.npz");
    std::fs::write(&npz, b"x").unwrap();
    assert!(load_err(&npz).contains("safetensors"));
}

/// On a CUDA device the features agree with the CPU ones. libtorch lets cuDNN convolutions use TF32
/// (10-bit mantissa) by default, so the bound is 1e-2 × max |feature| rather than the f32 one.
#[cfg(feature = "cuda-tests")]
#[test]
fn cuda_features_match_cpu() {
    let tmp = common::tmp();
    let (ok, _) = random_weights(tmp.path());
    let imgs: Vec<image::RgbImage> = (0..3)
        .map(|k| {
            image::RgbImage::from_fn(64 + k * 13, 48, |x, y| {
                image::Rgb([(x * 3) as u8, (y * 5) as u8, (k * 70) as u8])
            })
        })
        .collect();
    let cpu = FidInception::load(&ok, Device::Cpu)
        .unwrap()
        .features(&imgs, 2)
        .unwrap();
    let gpu = FidInception::load(&ok, Device::Cuda(0))
        .unwrap()
        .features(&imgs, 2)
        .unwrap();
    let scale = cpu.abs().max().double_value(&[]);
    let d = common::max_abs(&cpu, &gpu);
    eprintln!("cuda vs cpu features: max abs diff {d:.3e} (max |feature| {scale:.3})");
    assert!(d <= 1e-2 * scale);
}
