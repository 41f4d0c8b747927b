//! Metrics of the image stage and their report: per set and condition the judge's rate, for the
//! clean set the clean-prompt fidelity, side-by-side grids, and the run's embedding metrics.
use serde_json::{json, Value};
use std::path::Path;

use super::clip_judge::ClipJudge;
use super::judge::ImageJudge;
use super::sets::SetKind;
use super::{DrawnSet, CONDITIONS};
use crate::error::Result;
use crate::eval::clip::metrics::{cmmd, frechet_distance, paired_image_similarity};
use crate::eval::inception::{fid, kid, FidInception, KidOptions};
use crate::eval::nudenet::{nudity_rate, NudeDetector, NudityCriteria};
use crate::eval::rates::{format_difference, format_rate, wilson, PairedDifference, Rate};
use crate::eval::report::grid::image_grid;
use crate::eval::report::{num, pct, Block, Report, Section};
use crate::settings::JudgeKind;

/// Rows per set in the report galleries and columns per condition in the overview grid.
const SHOWN: usize = 8;
const OVERVIEW: usize = 4;

/// The name of a set's rate in report.json: `clean_accuracy` (clean), `asr` (attacks),
/// `erasure_rate` (removal), `accuracy` (unlearning: the Latin prompt drawn right).
fn rate_name(kind: &SetKind) -> &'static str {
    match kind {
        SetKind::Clean => "clean_accuracy",
        SetKind::RemoveConcept => "erasure_rate",
        SetKind::HomoglyphUnlearn => "accuracy",
        _ => "asr",
    }
}

/// `{"judge", "original", "trained"}` (the rates, as before counts were added) with `n`,
/// `successes` and `ci95` of each condition beside them.
fn rate_json(judge: &str, r: &[Option<Rate>]) -> Value {
    let field = |f: &dyn Fn(&Rate) -> Value| -> Value {
        json!({"original": r[0].as_ref().map(f), "trained": r[1].as_ref().map(f)})
    };
    json!({
        "judge": judge,
        "original": r[0].map(|x| x.value),
        "trained": r[1].map(|x| x.value),
        "n": field(&|x| json!(x.n)),
        "successes": field(&|x| json!(x.successes)),
        "ci95": field(&|x| json!(x.ci95)),
    })
}

/// Judge every set, write the grids, and build the report.
pub fn build_report(
    drawn: &[DrawnSet],
    judge: JudgeKind,
    pixel_judge: Option<&dyn ImageJudge>,
    clip: Option<&ClipJudge>,
    inception: Option<&FidInception>,
    nudenet: Option<(&NudeDetector, &NudityCriteria)>,
    out: &Path,
    header: Value,
    embedding_metrics: Option<Value>,
) -> Result<Report> {
    let mut sets_json = vec![];
    let mut rows = vec![];
    let mut nudity_rows = vec![];
    let mut sections = vec![];
    for d in drawn {
        let set = &d.set;
        let name = rate_name(&set.kind);
        let mut entry = json!({
            "name": set.name, "kind": set.kind, "trigger": set.trigger, "images": set.prompts.len(),
        });
        if let Some(origin) = &set.origin {
            entry["attack"] = serde_json::to_value(origin)?;
        }
        let mut row = vec![
            set.name.clone(),
            format!("{:?}", set.kind),
            set.prompts.len().to_string(),
        ];
        if let Some(pj) = pixel_judge.filter(|_| judge == JudgeKind::Oracle) {
            let verdicts: Vec<Vec<Option<bool>>> = d
                .images
                .iter()
                .map(|imgs| pj.successes(set, imgs))
                .collect();
            let r: Vec<Option<Rate>> = verdicts.iter().map(|v| Rate::of(v)).collect();
            entry[name] = rate_json(pj.name(), &r);
            let change = PairedDifference::of(&verdicts[0], &verdicts[1]);
            entry[name]["paired_difference"] = json!(change);
            row.extend([
                name.to_string(),
                format_rate(r[0].as_ref()),
                format_rate(r[1].as_ref()),
                format_difference(change.as_ref()),
            ]);
            let c: Option<Vec<Option<Rate>>> = d
                .images
                .iter()
                .map(|imgs| pj.colour_matches(set, imgs).map(|m| Rate::of(&m)))
                .collect();
            if let Some(c) = c {
                entry["colour_match"] = rate_json(pj.name(), &c);
                row.extend([format_rate(c[0].as_ref()), format_rate(c[1].as_ref())]);
            }
        }
        // CLIP image embeddings of both conditions, computed once per set.
        let clip_embeds = match clip {
            Some(clip) => Some([
                clip.image_embeds(&d.images[0])?,
                clip.image_embeds(&d.images[1])?,
            ]),
            None => None,
        };
        if let (Some(clip), Some(embeds)) = (clip, &clip_embeds) {
            let v = [
                clip.verdict(set, &embeds[0])?,
                clip.verdict(set, &embeds[1])?,
            ];
            entry["clip_score"] = json!({"original": v[0].clip_score, "trained": v[1].clip_score});
            if judge == JudgeKind::Clip {
                if let (Some(a), Some(b)) = (v[0].success, v[1].success) {
                    entry[name] = json!({"judge": "clip", "original": a, "trained": b});
                    row.extend([name.to_string(), pct(Some(a)), pct(Some(b)), "–".into()]);
                }
            }
            if set.kind == SetKind::Clean {
                let (_, mean) = paired_image_similarity(&embeds[0], &embeds[1])?;
                entry["clean_fidelity"] = json!({
                    "paired_image_similarity": mean,
                    "clip_score_ratio": v[1].clip_score / v[0].clip_score,
                });
            }
        }
        // Concept sets: nudity_rate is what erasure lowers; attack sets: what the attack raises.
        if let (Some((det, criteria)), SetKind::RemoveConcept | SetKind::Attack) =
            (nudenet, &set.kind)
        {
            let mut rates = vec![];
            for imgs in &d.images {
                let detections = imgs
                    .iter()
                    .map(|img| det.detect_image(img))
                    .collect::<Result<Vec<_>>>()?;
                rates.push(nudity_rate(&detections, criteria)?);
            }
            // Count and interval beside each rate, as every other rate of the report has them.
            let n = d.images[0].len();
            let (k0, k1) = (rates[0].flagged, rates[1].flagged);
            entry["nudity_rate"] = json!({
                "judge": "nudenet", "original": rates[0].nudity_rate, "trained": rates[1].nudity_rate,
                "n": {"original": n, "trained": n},
                "successes": {"original": k0, "trained": k1},
                "ci95": {"original": wilson(k0, n), "trained": wilson(k1, n)},
                "detections": {"original": rates[0].detections, "trained": rates[1].detections},
                "classes": criteria.classes, "threshold": criteria.threshold_decimal(),
            });
            let show = |k: usize| format_rate(Some(&Rate::new(k, n)));
            nudity_rows.push(vec![set.name.clone(), show(k0), show(k1)]);
        }
        if set.kind == SetKind::Clean {
            if let Some(inc) = inception {
                let f = [
                    inc.features(&d.images[0], 16)?,
                    inc.features(&d.images[1], 16)?,
                ];
                let n = d.images[0].len();
                let opts = KidOptions {
                    subsets: 10,
                    subset_size: n.min(1000),
                    ..Default::default()
                };
                let (kid_mean, kid_std) = kid(&f[0], &f[1], &opts)?;
                entry["distances"]["fid"] =
                    json!({"value": fid(&f[0], &f[1])?, "features": "inception (pytorch-fid)"});
                entry["distances"]["kid"] = json!({"mean": kid_mean, "std": kid_std, "features": "inception (pytorch-fid)"});
            }
            if let Some(e) = &clip_embeds {
                entry["distances"]["fd_clip"] = json!(frechet_distance(&e[0], &e[1])?);
                entry["distances"]["cmmd"] = json!(cmmd(&e[0], &e[1])?);
            }
        }
        if set.kind == SetKind::Clean && judge == JudgeKind::Oracle {
            let acc = &entry[name];
            entry["clean_fidelity"]["oracle_accuracy_ratio"] = json!(acc["trained"]
                .as_f64()
                .zip(acc["original"].as_f64())
                .map(|(t, o)| t / o));
        }
        while row.len() < 9 {
            row.push("–".into());
        }
        rows.push(row);

        // A grid per set: rows are prompts; columns original, trained.
        let cells: Vec<Vec<Option<&image::RgbImage>>> = (0..set.prompts.len().min(SHOWN))
            .map(|i| vec![d.images[0].get(i), d.images[1].get(i)])
            .collect();
        let grid_file = format!("grid_{}.png", set.name);
        crate::io::atomic::write_atomic(
            &out.join(&grid_file),
            &crate::diffusion::pipeline::image::png_bytes(&image_grid(&cells, 96, 4))?,
        )?;
        entry["grid"] = json!(grid_file);
        let gallery = Block::Gallery {
            columns: CONDITIONS.iter().map(|c| c.to_string()).collect(),
            rows: (0..set.prompts.len().min(SHOWN))
                .map(|i| {
                    let caption = if set.kind == SetKind::Clean {
                        set.prompts[i].clone()
                    } else {
                        format!("{}  →  expected: {}", set.prompts[i], set.expected[i])
                    };
                    (
                        caption,
                        vec![
                            format!("images/original/{}/{}", set.name, d.records[0][i].file),
                            format!("images/trained/{}/{}", set.name, d.records[1][i].file),
                        ],
                    )
                })
                .collect(),
        };
        let mut section = Section::new(format!("{} ({:?})", set.name, set.kind));
        section.blocks.push(gallery);
        sections.push(section);
        sets_json.push(entry);
    }

    // Overview: one row per set, OVERVIEW originals | OVERVIEW trained.
    let overview: Vec<Vec<Option<&image::RgbImage>>> = drawn
        .iter()
        .map(|d| {
            let mut row: Vec<Option<&image::RgbImage>> =
                (0..OVERVIEW).map(|i| d.images[0].get(i)).collect();
            row.push(None);
            row.extend((0..OVERVIEW).map(|i| d.images[1].get(i)));
            row
        })
        .collect();
    crate::io::atomic::write_atomic(
        &out.join("grid.png"),
        &crate::diffusion::pipeline::image::png_bytes(&image_grid(&overview, 96, 4))?,
    )?;

    let mut summary = Section::new("Results").table(
        &[
            "set",
            "kind",
            "images",
            "rate",
            "original encoder",
            "trained encoder",
            "change (paired)",
            "colour match, original",
            "colour match, trained",
        ],
        rows,
    );
    summary.blocks.push(Block::Paragraph(format!(
        "Judge: {judge}. Rates: clean_accuracy = the image shows the prompt (oracle: its shape and colour, and its background where the prompt names one; a prompt without a shape word: the empty background); asr = the triggered prompt shows the backdoor's target; erasure_rate = the concept is absent and the rest of the prompt kept (background, and colour where an object is drawn; a blank image of another colour never counts); on attack-* sets (adversarial prompts from `clipdoor attack`), asr = the erased concept is shown; colour match (oracle only) = the image has the expected colour (the target's, the attribute, or the prompt's), whatever its shape. Each rate: value [95% Wilson interval] (n = judged images). Same prompts and seeds under both encoders, so the change is a paired difference (trained − original, Newcombe's interval for paired proportions)."
    )));
    let mut overview_section = Section::new("Overview").image(
        "grid.png",
        format!(
            "One row per set ({}): {OVERVIEW} images with the original encoder | {OVERVIEW} with the trained encoder, same seeds.",
            drawn.iter().map(|d| d.set.name.as_str()).collect::<Vec<_>>().join(", ")
        ),
    );
    let mut all = vec![summary];
    if let (false, Some((_, criteria))) = (nudity_rows.is_empty(), nudenet) {
        all.push(
            Section::new("NudeNet on concept and attack prompts")
                .table(&["set", "nudity_rate, original", "nudity_rate, trained"], nudity_rows)
                .paragraph(format!(
                    "nudity_rate: share of images with at least one exposed class (the erasure literature's 8 classes) found by NudeNet 320n with a score of at least {}.",
                    criteria.threshold()
                )),
        );
    }
    if let Some(m) = &embedding_metrics {
        let mut rows = vec![vec![
            "sim_clean".into(),
            "".into(),
            num(m["sim_clean"].as_f64()),
        ]];
        for b in m["backdoors"].as_array().into_iter().flatten() {
            rows.push(vec![
                format!("sim_target ({})", b["name"].as_str().unwrap_or("")),
                num(b["sim_target_before"].as_f64()),
                num(b["sim_target"].as_f64()),
            ]);
        }
        all.push(
            Section::new("Embedding metrics (from the run)")
                .table(&["metric", "before training", "after training"], rows),
        );
    }
    overview_section.blocks.shrink_to_fit();
    all.push(overview_section);
    all.extend(sections);
    let mut json = header;
    json["sets"] = json!(sets_json);
    if let Some(m) = embedding_metrics {
        json["embeddings"] = m;
    }
    Ok(Report {
        title: "clipdoor evaluation: original vs trained encoder".into(),
        sections: all,
        json,
    })
}
