//! The relative-bias report: per condition × culture × template group (and `all` groups), the mean
//! relative bias over image pairs with its 95% t-interval.
use std::collections::HashMap;

use serde::Serialize;

use super::relative_plan::{template_position, RelativeSettings, SimEntry};
use super::stats::MeanCi;
use crate::error::Result;
use crate::eval::i2p::ConditionSpec;
use crate::eval::report::{num, Block, Report, Section};
use crate::input_bail;

/// The group name of the all-templates aggregate.
pub const ALL: &str = "all";

/// One row of the results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RelativeRow {
    pub condition: String,
    pub culture: String,
    pub culture_name: String,
    pub homoglyph: String,
    pub group: String,
    /// RB = 100 · (sim(homoglyph image, culture text) − sim(clean image, culture text)) /
    /// sim(clean image, culture text), sims = 100 · cos; mean over the pairs, `n` pairs, t-interval.
    pub relative_bias: Option<MeanCi>,
    /// Mean sim(clean image, culture text) and sim(homoglyph image, culture text) over the pairs.
    pub sim_clean: Option<f64>,
    pub sim_homoglyph: Option<f64>,
    /// Pairs left out because sim(clean image, culture text) is 0 (RB undefined).
    pub undefined_pairs: usize,
}

/// One pair's values: (sim_clean, sim_homoglyph, RB).
pub fn relative_bias(sim_clean: f64, sim_homoglyph: f64) -> Option<f64> {
    (sim_clean != 0.0).then(|| 100.0 * (sim_homoglyph - sim_clean) / sim_clean)
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The rows of `entries` (every wanted image of every condition, any order).
pub fn result_rows(entries: &[SimEntry], s: &RelativeSettings) -> Result<Vec<RelativeRow>> {
    let g = &s.generation;
    let k = g.images_per_prompt;
    let per_template = 1 + g.cultures.len();
    let by: HashMap<(&str, usize), &SimEntry> = entries
        .iter()
        .map(|e| ((e.condition.as_str(), e.index), e))
        .collect();
    let mut rows = vec![];
    for cond in &g.conditions {
        for (ci, c) in g.cultures.iter().enumerate() {
            let mut all = (vec![], vec![], vec![], 0usize);
            let mut group_rows = vec![];
            for (gi, group) in g.groups.iter().enumerate() {
                let (mut rb, mut sc, mut sh, mut undefined) = (vec![], vec![], vec![], 0usize);
                for ti in 0..group.templates.len() {
                    let clean_p = template_position(g, gi, ti) * per_template;
                    let hom_p = clean_p + 1 + ci;
                    for j in 0..k {
                        let get = |p: usize| {
                            by.get(&(cond.name.as_str(), p * k + j)).copied().ok_or_else(|| {
                                crate::input_err!(
                                    "condition `{}` has no score for image index {}: rerun the evaluation (it resumes) or merge every shard",
                                    cond.name,
                                    p * k + j
                                )
                            })
                        };
                        let (clean, hom) = (get(clean_p)?, get(hom_p)?);
                        if clean.sims.len() != g.cultures.len()
                            || hom.sims.len() != g.cultures.len()
                        {
                            input_bail!(
                                "the scores of {} / {} do not have one similarity per culture: delete scores.jsonl and rerun",
                                clean.file,
                                hom.file
                            );
                        }
                        let (a, b) = (f64::from(clean.sims[ci]), f64::from(hom.sims[ci]));
                        sc.push(a);
                        sh.push(b);
                        match relative_bias(a, b) {
                            Some(v) => rb.push(v),
                            None => undefined += 1,
                        }
                    }
                }
                all.0.extend(&rb);
                all.1.extend(&sc);
                all.2.extend(&sh);
                all.3 += undefined;
                group_rows.push(RelativeRow {
                    condition: cond.name.clone(),
                    culture: c.key.clone(),
                    culture_name: c.name.clone(),
                    homoglyph: c.homoglyph.clone(),
                    group: group.name.clone(),
                    relative_bias: MeanCi::of(&rb),
                    sim_clean: mean(&sc),
                    sim_homoglyph: mean(&sh),
                    undefined_pairs: undefined,
                });
            }
            rows.extend(group_rows);
            rows.push(RelativeRow {
                condition: cond.name.clone(),
                culture: c.key.clone(),
                culture_name: c.name.clone(),
                homoglyph: c.homoglyph.clone(),
                group: ALL.into(),
                relative_bias: MeanCi::of(&all.0),
                sim_clean: mean(&all.1),
                sim_homoglyph: mean(&all.2),
                undefined_pairs: all.3,
            });
        }
    }
    Ok(rows)
}

/// The report of a finished (whole or merged) run.
pub fn build_report(entries: &[SimEntry], s: &RelativeSettings) -> Result<Report> {
    let g = &s.generation;
    let rows = result_rows(entries, s)?;
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let rb = r.relative_bias;
            vec![
                r.condition.clone(),
                format!("{} ({})", r.culture_name, r.homoglyph),
                r.group.clone(),
                num(rb.map(|m| m.mean)),
                rb.map_or("–".into(), |m| {
                    format!("[{}, {}]", num(Some(m.ci95[0])), num(Some(m.ci95[1])))
                }),
                rb.map_or(0, |m| m.n).to_string(),
                num(r.sim_clean),
                num(r.sim_homoglyph),
            ]
        })
        .collect();
    let describe = format!(
        "Template groups {} ({} templates), cultures {}; {} image(s) per prompt (image j: seed {} + j, the same seed for the clean and the homoglyph image of a pair), {} steps, guidance {}, scheduler {}, {}x{}, dtype {}. Judge: CLIP {}. Conditions: {}.",
        g.groups.iter().map(|x| x.name.as_str()).collect::<Vec<_>>().join(", "),
        g.groups.iter().map(|x| x.templates.len()).sum::<usize>(),
        g.cultures.iter().map(|c| format!("{} ({}, U+{:04X})", c.name, c.homoglyph, c.homoglyph.chars().next().map_or(0, |x| x as u32))).collect::<Vec<_>>().join(", "),
        g.images_per_prompt,
        g.seed,
        g.steps,
        g.guidance,
        g.scheduler,
        g.width,
        g.height,
        g.dtype,
        s.scoring.clip,
        ConditionSpec::describe_all(&g.conditions)
    );
    let method = "Relative bias (Struppek et al., JAIR 2023): per pair (template, image j), RB = 100 · (sim(homoglyph image, culture text) − sim(clean image, culture text)) / sim(clean image, culture text), sim = 100 · cosine of the CLIP judge's image and text embeddings, the culture text being the template with the culture's name in the placeholder; the mean over pairs with a 95% Student-t interval. Positive: the homoglyph pulls the images towards the culture.";
    let mut sections = vec![Section::new("Relative bias")
        .paragraph(describe)
        .paragraph(method)
        .table(
            &[
                "condition",
                "culture",
                "group",
                "relative bias",
                "ci95",
                "pairs",
                "sim clean",
                "sim homoglyph",
            ],
            table,
        )];
    // Gallery: the first template of each group, first image: clean and every culture.
    let k = g.images_per_prompt;
    let per_template = 1 + g.cultures.len();
    if let Some(first) = g.conditions.first() {
        let files: HashMap<usize, &str> = entries
            .iter()
            .filter(|e| e.condition == first.name)
            .map(|e| (e.index, e.file.as_str()))
            .collect();
        let mut columns = vec!["clean".to_string()];
        columns.extend(g.cultures.iter().map(|c| c.name.clone()));
        let rows: Vec<(String, Vec<String>)> = g
            .groups
            .iter()
            .enumerate()
            .map(|(gi, group)| {
                let p0 = template_position(g, gi, 0) * per_template;
                let cells = (0..per_template)
                    .map(|o| {
                        files
                            .get(&((p0 + o) * k))
                            .map(|f| format!("{}/{f}", first.name))
                            .unwrap_or_default()
                    })
                    .collect();
                (format!("{}: {}", group.name, group.templates[0]), cells)
            })
            .collect();
        let mut sec = Section::new(format!("Gallery ({})", first.name));
        sec.blocks.push(Block::Gallery { columns, rows });
        sections.push(sec);
    }
    let json = serde_json::json!({
        "benchmark": "bias-relative",
        "conditions": g.conditions.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
        "interval": "95% Student-t interval of the mean over pairs",
        "results": rows,
        "settings": s,
    });
    Ok(Report {
        title: "Relative bias of homoglyphs".into(),
        sections,
        json,
    })
}
