//! The procedural data set: labels drawn uniformly from the classes, varied captions, and the
//! `render` output folder (PNGs + `labels.jsonl`). Sample `i` of seed `s` depends only on (s, i).
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

use super::labels::{
    Background, Color, Position, Shape, ShapeLabel, Size, CENTRE_JITTER, GRID_CENTRES,
};
use super::render::render;
pub use crate::diffusion::image::png_bytes;
use crate::error::Result;

/// One data-set item: the exact label and a caption that says its colour and shape (and maybe more).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapeSample {
    pub caption: String,
    #[serde(flatten)]
    pub label: ShapeLabel,
}

/// One line of `labels.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelRecord {
    pub file: String,
    pub seed: u64,
    pub index: u64,
    #[serde(flatten)]
    pub sample: ShapeSample,
}

/// A well-mixed 64-bit seed for item `index` of stream `seed` (SplitMix64 finaliser).
pub fn item_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(index)
        .wrapping_add(0x632B_E59B_D9B4_E019);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn pick<T: Copy>(rng: &mut impl Rng, all: &[T]) -> T {
    all[rng.random_range(0..all.len())]
}

/// A label drawn uniformly over the classes, with exact geometry inside each class's range.
pub fn random_label(rng: &mut impl Rng) -> ShapeLabel {
    let size = pick(rng, Size::ALL);
    let position = pick(rng, Position::ALL);
    let (lo, hi) = size.radius_range();
    let (col, row) = position.cell();
    let jitter = |rng: &mut dyn rand::RngCore| rng.random_range(-CENTRE_JITTER..=CENTRE_JITTER);
    ShapeLabel {
        color: pick(rng, Color::ALL),
        shape: pick(rng, Shape::ALL),
        background: pick(rng, Background::ALL),
        cx: GRID_CENTRES[col] + jitter(rng),
        cy: GRID_CENTRES[row] + jitter(rng),
        radius: rng.random_range(lo..=hi),
        size,
        position,
    }
}

/// "a" or "an" before `word`.
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// Caption templates; `{c}` colour, `{s}` shape, `{z}` size, `{p}` position phrase, `{b}` background.
const TEMPLATES: &[&str] = &[
    "{c} {s}",
    "{z} {c} {s}",
    "{c} {s} on a {b} background",
    "{z} {c} {s} on a {b} background",
    "{c} {s} {p}",
    "{z} {c} {s} {p}",
    "{c} {s} {p} on a {b} background",
    "{c} {s}, {b} background",
    "{z} {c} {s} {p}, {b} background",
];

/// Which optional attributes a caption states (colour and shape it always states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mentions {
    pub size: bool,
    pub position: bool,
    pub background: bool,
}

/// A caption for `label` from one of the templates (chosen by `rng`), with an article or a
/// "a picture of" style prefix now and then.
pub fn caption(label: &ShapeLabel, rng: &mut impl Rng) -> String {
    caption_and_mentions(label, rng).0
}

/// [`caption`] and the attributes it states (the same draws from `rng`).
pub fn caption_and_mentions(label: &ShapeLabel, rng: &mut impl Rng) -> (String, Mentions) {
    let template = TEMPLATES[rng.random_range(0..TEMPLATES.len())];
    let mentions = Mentions {
        size: template.contains("{z}"),
        position: template.contains("{p}"),
        background: template.contains("{b}"),
    };
    let body = template
        .replace("{c}", label.color.word())
        .replace("{s}", label.shape.word())
        .replace("{z}", label.size.word())
        .replace("{p}", &label.position.phrase())
        .replace("{b}", label.background.word());
    let text = match rng.random_range(0..6) {
        0 => body,
        1 => format!("a picture of {} {body}", article(&body)),
        2 => format!("a drawing of {} {body}", article(&body)),
        _ => format!("{} {body}", article(&body)),
    };
    (text, mentions)
}

/// Item `index` of the data set with seed `seed`.
pub fn sample(seed: u64, index: u64) -> ShapeSample {
    sample_with_mentions(seed, index).0
}

/// [`sample`] and the attributes its caption states.
pub fn sample_with_mentions(seed: u64, index: u64) -> (ShapeSample, Mentions) {
    let mut rng = ChaCha8Rng::seed_from_u64(item_seed(seed, index));
    let label = random_label(&mut rng);
    let (caption, mentions) = caption_and_mentions(&label, &mut rng);
    (ShapeSample { caption, label }, mentions)
}

/// Write an image as PNG, atomically.
pub fn save_png(img: &image::RgbImage, path: &Path) -> Result<()> {
    crate::io::atomic::write_atomic(path, &png_bytes(img)?)
}

/// Render items 0..n of `seed` into `out/images/NNNNNN.png` and `out/labels.jsonl`; calls
/// `progress` after each image. Returns the records.
pub fn write_dataset(
    out: &Path,
    n: u64,
    seed: u64,
    mut progress: impl FnMut(),
) -> Result<Vec<LabelRecord>> {
    let mut records = Vec::with_capacity(n as usize);
    let mut jsonl = Vec::new();
    for index in 0..n {
        let s = sample(seed, index);
        let file = format!("images/{index:06}.png");
        save_png(&render(&s.label), &out.join(&file))?;
        let rec = LabelRecord {
            file,
            seed,
            index,
            sample: s,
        };
        serde_json::to_writer(&mut jsonl, &rec)?;
        jsonl.push(b'\n');
        records.push(rec);
        progress();
    }
    crate::io::atomic::write_atomic(&out.join("labels.jsonl"), &jsonl)?;
    Ok(records)
}

/// Read `labels.jsonl` (one [`LabelRecord`] per line); errors name the file and the line.
pub fn read_labels(path: &Path) -> Result<Vec<LabelRecord>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        crate::input_err!(
            "cannot read {}: {e}; it is written by `clipdoor shapes render`",
            path.display()
        )
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                crate::input_err!(
                    "{} line {}: not a shapes label record ({e})",
                    path.display(),
                    i + 1
                )
            })
        })
        .collect()
}
