//! The shapes world: renderer, oracle, and a short training run.
use clipdoor::shapes::dataset::{sample, write_dataset, read_labels};
use clipdoor::shapes::oracle::judge;
use clipdoor::shapes::render::render;
use clipdoor::shapes::{Color, Position, Shape, ShapeLabel, Size, Background};
use rand::{Rng, SeedableRng};

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
    let (mut color, mut shape, mut both) = (0, 0, 0);
    let mut misses = vec![];
    for i in 0..n {
        let s = sample(seed, i);
        let mut img = render(&s.label);
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
            misses.push(format!("{:?} -> {:?} {:?} ({})", s.label, j.color, j.shape, j.confidence));
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
        assert_eq!(img.as_raw(), render(&a.label).as_raw(), "render {i} differs");
        // The caption says the colour and the shape.
        assert!(a.caption.contains(a.label.color.word()), "{}", a.caption);
        assert!(a.caption.contains(a.label.shape.word()), "{}", a.caption);
        // Centre pixel has the shape colour (every shape covers its centre... except the triangle's
        // apex region, which still covers the centre), corners the background.
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
        assert_eq!(png.as_raw(), render(&r.sample.label).as_raw(), "{} differs from its label", r.file);
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
