//! Semantic guidance (SEGA) demonstrated where it can be judged exactly: shapes-world prompts drawn
//! with and without an edit prompt that steers toward a shape or toward a colour, through the Stable
//! Diffusion pipeline with the same seeds, judged by the oracle. The edit settings are chosen on a
//! calibration seed range and the rates reported on a disjoint test range.
use image::RgbImage;
use serde::Serialize;

use super::judge::Expected;
use super::labels::{Color, Shape};
use super::oracle::judge;
use crate::diffusion::image::to_rgb8;
use crate::diffusion::pipeline::{
    EditPrompt, GenerateRequest, Seeds, SegaConfig, StableDiffusionPipeline,
};
use crate::error::Result;
use crate::eval::rates::{PairedDifference, Rate};
use crate::input_bail;
use crate::settings::SchedulerKind;

/// What the edit steers toward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SteerTarget {
    Shape(Shape),
    Colour(Color),
}

impl SteerTarget {
    /// `shape:circle`, `colour:blue` (or `color:blue`).
    pub fn parse(s: &str) -> Result<Self> {
        let (kind, word) = s.split_once(':').unwrap_or(("", s));
        let word = word.trim().to_lowercase();
        match (
            kind.trim().to_lowercase().as_str(),
            Shape::from_word(&word),
            Color::from_word(&word),
        ) {
            ("shape" | "", Some(sh), _) => Ok(Self::Shape(sh)),
            ("colour" | "color" | "", _, Some(c)) => Ok(Self::Colour(c)),
            _ => input_bail!(
                "--target `{s}`: use shape:WORD ({}) or colour:WORD ({})",
                Shape::ALL
                    .iter()
                    .map(|x| x.word())
                    .collect::<Vec<_>>()
                    .join(", "),
                Color::ALL
                    .iter()
                    .map(|x| x.word())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Self::Shape(s) => s.word(),
            Self::Colour(c) => c.word(),
        }
    }

    pub fn name(self) -> String {
        match self {
            Self::Shape(s) => format!("toward shape {}", s.word()),
            Self::Colour(c) => format!("toward colour {}", c.word()),
        }
    }

    /// `count` prompts "a COLOUR SHAPE" that do not already show the target, cycling through every
    /// other colour × shape pair (those sharing the word the edit replaces consecutively), each with
    /// what a steered image must show (the target in place of the prompt's own shape or colour, the
    /// rest kept) and that replaced word.
    pub fn prompts(self, count: usize) -> Vec<SteerPrompt> {
        let mut pairs = vec![];
        match self {
            Self::Shape(t) => {
                for &s in Shape::ALL.iter().filter(|&&s| s != t) {
                    for &c in Color::ALL {
                        pairs.push(SteerPrompt::new(c, s, c, t, s.word()));
                    }
                }
            }
            Self::Colour(t) => {
                for &c in Color::ALL.iter().filter(|&&c| c != t) {
                    for &s in Shape::ALL {
                        pairs.push(SteerPrompt::new(c, s, t, s, c.word()));
                    }
                }
            }
        }
        (0..count).map(|i| pairs[i % pairs.len()].clone()).collect()
    }
}

/// One prompt of a study.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SteerPrompt {
    pub prompt: String,
    /// What a steered image must show.
    pub steered: String,
    /// The prompt's own word the edit replaces (steered away from in `toward+away` settings).
    pub source: String,
}

impl SteerPrompt {
    fn new(c: Color, s: Shape, tc: Color, ts: Shape, source: &str) -> Self {
        Self {
            prompt: format!("a {} {}", c.word(), s.word()),
            steered: format!("a {} {}", tc.word(), ts.word()),
            source: source.to_string(),
        }
    }
}

/// One edit setting of the study: toward the target word, optionally also away from the prompt's own
/// word (SEGA's replacement recipe: one positive and one negative edit), both with the same scale,
/// warm-up and threshold.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SteerSetting {
    pub away_from_source: bool,
    pub guidance_scale: f64,
    pub warmup_steps: usize,
    pub threshold: f64,
}

impl SteerSetting {
    /// The SEGA config for prompts whose replaced word is `source`.
    pub fn config(&self, target: SteerTarget, source: &str) -> SegaConfig {
        let edit = |word: &str, reverse: bool| {
            let mut e = EditPrompt::new(word);
            e.reverse = reverse;
            e.guidance_scale = self.guidance_scale;
            e.warmup_steps = self.warmup_steps;
            e.threshold = self.threshold;
            e
        };
        let mut edits = vec![edit(target.word(), false)];
        if self.away_from_source {
            edits.push(edit(source, true));
        }
        SegaConfig::new(edits)
    }

    pub fn describe(&self) -> String {
        format!(
            "{}scale {}, warm-up {}, threshold {}",
            if self.away_from_source {
                "toward + away, "
            } else {
                "toward, "
            },
            self.guidance_scale,
            self.warmup_steps,
            self.threshold
        )
    }
}

/// How the images are drawn (the shapes world's calibrated sampler by default).
#[derive(Debug, Clone, Serialize)]
pub struct SteerOptions {
    pub steps: usize,
    pub guidance: f64,
    pub scheduler: SchedulerKind,
    pub batch_size: usize,
}

impl Default for SteerOptions {
    fn default() -> Self {
        Self {
            steps: 20,
            guidance: 2.5,
            scheduler: SchedulerKind::Ddim,
            batch_size: 32,
        }
    }
}

/// The oracle's verdicts on one condition's images.
#[derive(Debug, Clone, Serialize)]
pub struct Verdicts {
    /// The image shows the steered prompt (target in, rest kept).
    pub steered: Vec<Option<bool>>,
    /// The image shows the target word's attribute (the rest may have changed).
    pub target_reached: Vec<Option<bool>>,
}

/// Draw `prompts` (image `i` with seed `first_seed + i`) with the edit `setting` toward `target`
/// (or plainly) and judge them. Prompts sharing a replaced word are drawn together (one SEGA
/// config per call).
pub fn draw_and_judge(
    pipe: &StableDiffusionPipeline,
    prompts: &[SteerPrompt],
    first_seed: u64,
    edit: Option<(SteerTarget, &SteerSetting)>,
    o: &SteerOptions,
    on_batch: &mut dyn FnMut(usize),
) -> Result<(Verdicts, Vec<RgbImage>)> {
    let mut images = vec![];
    let mut start = 0;
    while start < prompts.len() {
        let mut end = start + 1;
        while end < prompts.len()
            && end - start < o.batch_size.max(1)
            && prompts[end].source == prompts[start].source
        {
            end += 1;
        }
        let chunk = &prompts[start..end];
        let seeds = (start..end).map(|i| first_seed + i as u64).collect();
        let mut r = GenerateRequest::new(
            chunk.iter().map(|p| p.prompt.clone()).collect(),
            Seeds::PerImage(seeds),
        );
        r.steps = o.steps;
        r.guidance = o.guidance;
        r.scheduler = Some(o.scheduler);
        r.sega = edit.map(|(t, s)| s.config(t, &chunk[0].source));
        images.extend(to_rgb8(&pipe.generate(&r)?)?);
        on_batch(chunk.len());
        start = end;
    }
    let (mut steered, mut target_reached) = (vec![], vec![]);
    for (p, img) in prompts.iter().zip(&images) {
        let j = judge(img);
        let want = Expected::of(&p.steered);
        steered.push(Some(want.shown_by(&j)));
        target_reached.push(Some(match Expected::of(&p.steered) {
            e if e.shape.is_some() && Expected::of(&p.prompt).shape != e.shape => {
                j.shape == e.shape
            }
            e => j.color == e.color,
        }));
    }
    Ok((
        Verdicts {
            steered,
            target_reached,
        },
        images,
    ))
}

/// One edit setting's outcome on a set of prompts.
#[derive(Debug, Clone, Serialize)]
pub struct SteerRow {
    pub setting: SteerSetting,
    /// Images that show the steered prompt with the edit (`asr`-like success of the steering).
    pub steered: Rate,
    /// The same prompts and seeds without the edit: how often the target shows by itself.
    pub steered_without_edit: Rate,
    /// With minus without, paired on prompt and seed.
    pub change: Option<PairedDifference>,
    /// Images that show the target word's attribute with the edit, whatever else changed.
    pub target_reached: Rate,
}

fn rate(v: &[Option<bool>]) -> Rate {
    Rate::of(v).unwrap_or_else(|| Rate::new(0, 0))
}

/// The outcome of `edit` against the plain images' verdicts.
pub fn row(setting: &SteerSetting, with: &Verdicts, without: &Verdicts) -> SteerRow {
    SteerRow {
        setting: setting.clone(),
        steered: rate(&with.steered),
        steered_without_edit: rate(&without.steered),
        change: PairedDifference::of(&without.steered, &with.steered),
        target_reached: rate(&with.target_reached),
    }
}

/// The edit settings tried on the calibration seeds: toward the target alone or also away from the
/// prompt's own word; SEGA's scale and threshold around diffusers' defaults (5, 0.9) and warm-ups
/// scaled to a 20-step sampler.
pub fn calibration_grid() -> Vec<SteerSetting> {
    let mut grid = vec![];
    for away_from_source in [false, true] {
        for guidance_scale in [4.0, 8.0] {
            for warmup_steps in [0, 3, 6] {
                for threshold in [0.5, 0.9] {
                    grid.push(SteerSetting {
                        away_from_source,
                        guidance_scale,
                        warmup_steps,
                        threshold,
                    });
                }
            }
        }
    }
    grid
}

/// A SEGA study: targets, image counts and seed ranges.
#[derive(Debug, Clone, Serialize)]
pub struct SteerStudy {
    pub targets: Vec<SteerTarget>,
    /// Images per target and edit setting on the calibration seeds.
    pub calibration_images: usize,
    /// Images per target on the test seeds.
    pub test_images: usize,
    /// First seed of the calibration images; the test images start at `test_seed`. The ranges must
    /// not overlap.
    pub calibration_seed: u64,
    pub test_seed: u64,
}

impl Default for SteerStudy {
    fn default() -> Self {
        Self {
            targets: vec![
                SteerTarget::Shape(Shape::Square),
                SteerTarget::Colour(Color::Blue),
            ],
            calibration_images: 36,
            test_images: 96,
            calibration_seed: 1_000_000,
            test_seed: 0,
        }
    }
}

/// One target's calibration and test.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    /// Every edit setting tried on the calibration seeds.
    pub calibration: Vec<SteerRow>,
    /// The setting with the most steered calibration images (ties: the earlier, simpler one).
    pub chosen: SteerSetting,
    /// The chosen setting on the test seeds.
    pub test: SteerRow,
}

#[derive(Debug, Clone, Serialize)]
pub struct SteerReport {
    pub options: SteerOptions,
    pub study: SteerStudy,
    /// By target name ("toward shape square", ...).
    pub targets: std::collections::BTreeMap<String, TargetResult>,
    pub seconds: f64,
}

/// Run the study; `on_images` is told how many images each batch drew (progress).
pub fn run_study(
    pipe: &StableDiffusionPipeline,
    study: &SteerStudy,
    o: &SteerOptions,
    on_images: &mut dyn FnMut(usize),
) -> Result<SteerReport> {
    let (cal_end, test_end) = (
        study.calibration_seed + study.calibration_images as u64,
        study.test_seed + study.test_images as u64,
    );
    if study.calibration_seed < test_end && study.test_seed < cal_end {
        input_bail!("the calibration seeds {}..{cal_end} overlap the test seeds {}..{test_end}: choose disjoint ranges", study.calibration_seed, study.test_seed);
    }
    if study.targets.is_empty() || study.calibration_images == 0 || study.test_images == 0 {
        input_bail!(
            "a SEGA study needs at least one target and one calibration and one test image"
        );
    }
    let started = std::time::Instant::now();
    let mut targets = std::collections::BTreeMap::new();
    for &target in &study.targets {
        let cal_prompts = target.prompts(study.calibration_images);
        let (plain, _) = draw_and_judge(
            pipe,
            &cal_prompts,
            study.calibration_seed,
            None,
            o,
            on_images,
        )?;
        let mut calibration = vec![];
        for setting in calibration_grid() {
            let (with, _) = draw_and_judge(
                pipe,
                &cal_prompts,
                study.calibration_seed,
                Some((target, &setting)),
                o,
                on_images,
            )?;
            calibration.push(row(&setting, &with, &plain));
        }
        let best = calibration
            .iter()
            .enumerate()
            .max_by_key(|(i, r)| (r.steered.successes, std::cmp::Reverse(*i)))
            .map(|(_, r)| r.setting.clone())
            .expect("the grid is not empty");
        let test_prompts = target.prompts(study.test_images);
        let (plain, _) = draw_and_judge(pipe, &test_prompts, study.test_seed, None, o, on_images)?;
        let (with, _) = draw_and_judge(
            pipe,
            &test_prompts,
            study.test_seed,
            Some((target, &best)),
            o,
            on_images,
        )?;
        targets.insert(
            target.name(),
            TargetResult {
                calibration,
                test: row(&best, &with, &plain),
                chosen: best,
            },
        );
    }
    Ok(SteerReport {
        options: o.clone(),
        study: study.clone(),
        targets,
        seconds: started.elapsed().as_secs_f64(),
    })
}

impl SteerReport {
    /// Images the study draws in all (for a progress bar).
    pub fn images_to_draw(study: &SteerStudy) -> usize {
        let per_target =
            study.calibration_images * (1 + calibration_grid().len()) + 2 * study.test_images;
        per_target * study.targets.len()
    }

    pub fn to_markdown(&self) -> String {
        use crate::eval::rates::{format_difference, format_rate};
        let mut md = format!(
            "# SEGA in the shapes world\n\n{} steps of {}, guidance {}. Edit settings chosen on {} calibration images per target (seeds from {}), rates on {} test images (seeds from {}); oracle judge.\n\n| target | chosen edit | steered, with edit | steered, without | change (paired) | target attribute reached, with edit |\n|---|---|---|---|---|---|\n",
            self.options.steps,
            self.options.scheduler.name(),
            self.options.guidance,
            self.study.calibration_images,
            self.study.calibration_seed,
            self.study.test_images,
            self.study.test_seed
        );
        for (name, t) in &self.targets {
            md.push_str(&format!(
                "| {name} | {} | {} | {} | {} | {} |\n",
                t.chosen.describe(),
                format_rate(Some(&t.test.steered)),
                format_rate(Some(&t.test.steered_without_edit)),
                format_difference(t.test.change.as_ref()),
                format_rate(Some(&t.test.target_reached)),
            ));
        }
        md
    }
}
