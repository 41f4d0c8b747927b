//! The procedural data set: labels drawn uniformly from the classes, varied captions, and the
//! `render` output folder (PNGs + `labels.jsonl`). Sample `i` of seed `s` depends only on (s, i).
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

use super::labels::{
    Background, Color, Position, Shape, ShapeLabel, Size, CENTRE_JITTER, GRID_CENTRES, IMAGE_SIZE,
};
use super::render::render;
pub use crate::diffusion::image::png_bytes;
use crate::error::Result;

/// One data-set item: the exact label and a caption that says its colour and shape (and maybe more),
/// or, for a "no object" item, a caption without a shape word and an image of the bare background.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapeSample {
    pub caption: String,
    #[serde(flatten)]
    pub label: ShapeLabel,
    /// The image is the label's background alone (the label's shape is not drawn and the caption
    /// names no shape).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_object: bool,
}

/// Share of items without an object. Captions without a shape word are part of the training
/// distribution so that they have one defined look, the bare background: a concept erased from the
/// encoder ("a red circle" embedding as "a red") then has something well-defined to become.
pub const NO_OBJECT_SHARE: f64 = 0.125;
/// Stream of the no-object draw, apart from the label's, so every item with an object keeps the
/// label and caption it had before no-object items existed.
const NO_OBJECT_STREAM: u64 = 0x0b1e_c7_0000;
/// Captions of an empty picture that name neither colour nor shape; `{b}` is the background.
const EMPTY_TEMPLATES: &[&str] = &[
    "an empty {b} background",
    "a plain {b} background",
    "nothing on a {b} background",
    "a blank {b} picture",
];

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

/// Which attributes a caption states (an object's caption always states colour and shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mentions {
    pub color: bool,
    pub shape: bool,
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
        color: true,
        shape: true,
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

/// A caption for the bare background of `label`: half of the time an object caption with the shape
/// word deleted (what a concept removal's target prompt looks like: "a large red on a white
/// background"), otherwise an empty-picture caption ("an empty white background").
pub fn no_object_caption(label: &ShapeLabel, rng: &mut impl Rng) -> (String, Mentions) {
    if rng.random_bool(0.5) {
        let (text, m) = caption_and_mentions(label, rng);
        let text = without_word(&text, label.shape.word());
        (text, Mentions { shape: false, ..m })
    } else {
        let t = EMPTY_TEMPLATES[rng.random_range(0..EMPTY_TEMPLATES.len())];
        let m = Mentions {
            background: true,
            ..Mentions::default()
        };
        (t.replace("{b}", label.background.word()), m)
    }
}

/// `text` with every whole-word `word` deleted (and the space before it).
pub fn without_word(text: &str, word: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, w) in text.split(' ').enumerate() {
        let bare = w.trim_end_matches(|c: char| !c.is_alphanumeric());
        let kept = if bare == word { &w[bare.len()..] } else { w };
        if kept.is_empty() {
            continue;
        }
        if i > 0 && !(kept.starts_with(',') && bare == word) && !out.is_empty() {
            out.push(' ');
        }
        out.push_str(kept);
    }
    out
}

/// Item `index` of the data set with seed `seed`.
pub fn sample(seed: u64, index: u64) -> ShapeSample {
    sample_with_mentions(seed, index).0
}

/// [`sample`] and the attributes its caption states.
pub fn sample_with_mentions(seed: u64, index: u64) -> (ShapeSample, Mentions) {
    sample_with_share(seed, index, NO_OBJECT_SHARE)
}

/// [`sample_with_mentions`] with `no_object_share` of the items bare backgrounds instead of
/// [`NO_OBJECT_SHARE`] (a uniform draw below the share: a larger share turns more items into bare
/// backgrounds and leaves every other item as it was).
pub fn sample_with_share(seed: u64, index: u64, no_object_share: f64) -> (ShapeSample, Mentions) {
    let mut rng = ChaCha8Rng::seed_from_u64(item_seed(seed, index));
    let label = random_label(&mut rng);
    let draw: f64 = ChaCha8Rng::seed_from_u64(item_seed(seed ^ NO_OBJECT_STREAM, index)).random();
    let no_object = draw < no_object_share;
    let (caption, mentions) = if no_object {
        no_object_caption(&label, &mut rng)
    } else {
        caption_and_mentions(&label, &mut rng)
    };
    let sample = ShapeSample {
        caption,
        label,
        no_object,
    };
    (sample, mentions)
}

/// The image of a sample: its label rendered, or the bare background of a no-object item.
pub fn render_sample(s: &ShapeSample) -> image::RgbImage {
    if s.no_object {
        let [r, g, b] = s.label.background.rgb();
        image::RgbImage::from_pixel(IMAGE_SIZE, IMAGE_SIZE, image::Rgb([r, g, b]))
    } else {
        render(&s.label)
    }
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
        save_png(&render_sample(&s), &out.join(&file))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleting_the_shape_word_keeps_the_rest_of_the_caption() {
        assert_eq!(
            without_word("a large red circle on a white background", "circle"),
            "a large red on a white background"
        );
        assert_eq!(
            without_word("a picture of an orange cross, black background", "cross"),
            "a picture of an orange, black background"
        );
        assert_eq!(without_word("a blue square", "square"), "a blue");
        assert_eq!(
            without_word("a red circled circle", "circle"),
            "a red circled"
        );
    }

    #[test]
    fn no_object_items_are_bare_backgrounds_with_shapeless_captions() {
        let items: Vec<_> = (0..2000).map(|i| sample_with_mentions(3, i)).collect();
        let empty: Vec<_> = items.iter().filter(|(s, _)| s.no_object).collect();
        let share = empty.len() as f64 / items.len() as f64;
        assert!((share - NO_OBJECT_SHARE).abs() < 0.03, "{share}");
        for (s, m) in &empty {
            assert!(!m.shape);
            assert!(
                Shape::ALL.iter().all(|sh| !s
                    .caption
                    .split(' ')
                    .any(|w| w.trim_matches(',') == sh.word())),
                "{}",
                s.caption
            );
            let img = render_sample(s);
            assert!(img.pixels().all(|p| p.0 == s.label.background.rgb()));
            if m.background {
                assert!(
                    s.caption.contains(s.label.background.word()),
                    "{}",
                    s.caption
                );
            }
        }
        assert!(empty.iter().any(|(_, m)| m.color) && empty.iter().any(|(_, m)| !m.color));
        // Items with an object are what they were before no-object items existed.
        for (s, m) in items.iter().filter(|(s, _)| !s.no_object).take(50) {
            let mut rng = ChaCha8Rng::seed_from_u64(item_seed(3, s_index(&items, s)));
            let label = random_label(&mut rng);
            assert_eq!(label, s.label);
            assert_eq!(
                caption_and_mentions(&label, &mut rng),
                (s.caption.clone(), *m)
            );
        }
    }

    fn s_index(items: &[(ShapeSample, Mentions)], s: &ShapeSample) -> u64 {
        items.iter().position(|(x, _)| x == s).unwrap() as u64
    }
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
