//! `clipdoor zoo scan`: the token scan on every encoder of a zoo (reference: the zoo's base, unless
//! reference-free), one result file per encoder (a rerun continues where it stopped), then, with
//! the labels read only now, the working-trigger checks and the report.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tch::{Device, Kind};

use super::build::{encoders_dir, read_labels, CONFIG_COPY};
use super::config::ZooConfig;
use super::plan::Label;
use super::report::{zoo_report, EncoderScan, ScanSettings, ZooReport};
use super::working::{self, WorkingChecks};
use crate::error::Result;
use crate::input_bail;
use crate::io::atomic::write_json;
use crate::models::text_encoder::TextEncoder;
use crate::scan::char_index::CharIndex;
use crate::scan::token_scan::{scan_tokens, ScanCache, TokenScanOptions, TokenScanReport};

pub struct ZooScanOptions {
    pub reference_free: bool,
    pub scan: TokenScanOptions,
    pub device: Device,
    /// Target false-positive rate for the calibrated threshold.
    pub fpr: f64,
}

/// The zoo's encoders (folder names under `encoders/`), sorted.
pub fn encoder_ids(zoo: &Path) -> Result<Vec<String>> {
    let dir = encoders_dir(zoo);
    let mut ids: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| {
            crate::input_err!(
                "{}: cannot read the encoders ({e}); build the zoo first: clipdoor zoo build ZOO.toml --out {}",
                dir.display(),
                zoo.display()
            )
        })?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("text_encoder").is_dir())
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| !n.starts_with('.'))
        .collect();
    ids.sort();
    Ok(ids)
}

pub fn scan_zoo(zoo: &Path, out: &Path, opts: &ZooScanOptions) -> Result<ZooReport> {
    let cfg_path = zoo.join(CONFIG_COPY);
    let cfg = ZooConfig::load(&cfg_path)?;
    let ids = encoder_ids(zoo)?;
    if ids.is_empty() {
        input_bail!(
            "{}: no encoders yet; run clipdoor zoo build first",
            encoders_dir(zoo).display()
        );
    }
    let reference = if opts.reference_free {
        None
    } else {
        Some(TextEncoder::load(&cfg.base, opts.device, Kind::Float)?)
    };
    let opts_owned;
    let opts = if opts.scan.probes.is_empty() {
        // Default probes: the zoo's own captions (the domain the base encoder was made for).
        opts_owned = ZooScanOptions {
            reference_free: opts.reference_free,
            scan: TokenScanOptions {
                probes: crate::io::prompts::read_prompts(&cfg.clean_prompts, None, false)?.prompts,
                ..opts.scan.clone()
            },
            device: opts.device,
            fpr: opts.fpr,
        };
        &opts_owned
    } else {
        opts
    };
    let opts: &ZooScanOptions = opts;
    let settings = ScanSettings {
        reference_free: opts.reference_free,
        probes: opts.scan.probes.clone(),
        contexts: opts.scan.contexts,
        verify: opts.scan.verify,
        confirm_probes: opts.scan.confirm_probes,
        invert_restarts: opts.scan.invert_restarts,
        invert_steps: opts.scan.invert_steps,
        seed: opts.scan.seed,
        answer_rows: if opts.reference_free {
            0
        } else {
            opts.scan.answer.rows
        },
        answer_floor: opts.scan.answer.floor.min(opts.scan.answer.min_score),
        touched: !opts.reference_free && opts.scan.touched,
        focus_sweep: !opts.reference_free && opts.scan.touched && opts.scan.focus_sweep,
        learned_rank: !opts.reference_free && opts.scan.touched && opts.scan.learned_rank,
        version: crate::scan::token_scan::SCAN_VERSION,
    };
    let results_dir = out.join("encoders");
    let mut index: Option<CharIndex> = None;
    let mut cache = ScanCache::default();
    let mut scans = vec![];
    let task = crate::progress::task("zoo scan", ids.len() as u64);
    for id in &ids {
        let path = results_dir.join(format!("{id}.json"));
        if let Some(old) = cached(&path, &settings) {
            scans.push(old);
            task.inc(1);
            continue;
        }
        task.set_message(id);
        let suspect = TextEncoder::load(
            &encoders_dir(zoo).join(id).display().to_string(),
            opts.device,
            Kind::Float,
        )?;
        if index.is_none() {
            index = Some(CharIndex::new(&suspect.tokenizer)?);
        }
        let r: TokenScanReport = scan_tokens(
            &suspect,
            reference.as_ref(),
            &mut cache,
            index.as_ref().expect("built above"),
            &opts.scan,
        )?;
        let scan = EncoderScan {
            id: id.clone(),
            settings: settings.clone(),
            score: r.score,
            seconds: r.seconds,
            candidates: r.ranking.iter().map(|c| c.text.clone()).collect(),
            report: serde_json::to_value(&r)?,
        };
        write_json(&path, &scan)?;
        crate::progress::note(&format!(
            "{id}: score {:.1} in {:.1} s, best {:?}",
            r.score,
            r.seconds,
            scan.candidates.first().map(String::as_str).unwrap_or("-")
        ));
        scans.push(scan);
        task.inc(1);
    }
    task.finish();
    let labels = read_labels(zoo)?;
    // The working checks compare with the base; a reference-free scan of a zoo whose base is gone
    // reports without them rather than failing after every scan.
    let base = match reference {
        Some(r) => Some(r),
        None => match TextEncoder::load(&cfg.base, opts.device, Kind::Float) {
            Ok(b) => Some(b),
            Err(e) => {
                crate::progress::note(&format!(
                    "working-trigger checks skipped: the zoo's base {} does not load ({e})",
                    cfg.base
                ));
                None
            }
        },
    };
    let working = match &base {
        Some(base) => {
            let captions =
                crate::io::prompts::read_prompts(&cfg.clean_prompts, None, false)?.prompts;
            check_working(zoo, &results_dir, &labels, &scans, base, &captions, opts)?
        }
        None => BTreeMap::new(),
    };
    zoo_report(&labels, &scans, &working, opts.fpr, &cfg, &settings)
}

/// The working-trigger checks of every scanned backdoored encoder ([`super::working`]), after the
/// scans; kept in `encoders/<id>.working.json` and reused while the candidates are the same.
fn check_working(
    zoo: &Path,
    results_dir: &Path,
    labels: &[Label],
    scans: &[EncoderScan],
    base: &TextEncoder,
    captions: &[String],
    opts: &ZooScanOptions,
) -> Result<BTreeMap<String, WorkingChecks>> {
    let mut out = BTreeMap::new();
    let todo: Vec<(&Label, &EncoderScan)> = labels
        .iter()
        .filter(|l| !l.benign)
        .filter_map(|l| scans.iter().find(|s| s.id == l.id).map(|s| (l, s)))
        .collect();
    let task = crate::progress::task("working-trigger checks", todo.len() as u64);
    for (label, scan) in todo {
        let path = results_dir.join(format!("{}.working.json", label.id));
        let checked: Vec<String> = scan
            .candidates
            .iter()
            .take(working::CHECKED)
            .cloned()
            .collect();
        let old: Option<WorkingChecks> = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .filter(|w: &WorkingChecks| w.checked == checked && w.criterion == working::CRITERION);
        let checks = match old {
            Some(w) => w,
            None => {
                task.set_message(&label.id);
                let suspect = TextEncoder::load(
                    &encoders_dir(zoo).join(&label.id).display().to_string(),
                    opts.device,
                    Kind::Float,
                )?;
                let w = working::check(base, &suspect, label, &scan.candidates, captions)?;
                write_json(&path, &w)?;
                w
            }
        };
        out.insert(label.id.clone(), checks);
        task.inc(1);
    }
    task.finish();
    Ok(out)
}

fn cached(path: &PathBuf, settings: &ScanSettings) -> Option<EncoderScan> {
    let text = std::fs::read_to_string(path).ok()?;
    let s: EncoderScan = serde_json::from_str(&text).ok()?;
    (s.settings == *settings).then_some(s)
}

/// Write `report.json`, `report.md` and `report.html` into `out`.
pub fn write_reports(out: &Path, r: &ZooReport) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json = out.join("report.json");
    write_json(&json, r)?;
    let md = out.join("report.md");
    crate::io::atomic::write_atomic(&md, super::report::markdown(r).as_bytes())?;
    let html = out.join("report.html");
    crate::io::atomic::write_atomic(&html, super::report::html(r).as_bytes())?;
    Ok(vec![json, md, html])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A result cached by an older scan (no `version` in its settings, read as 0) is scanned again;
    /// one of this version with the same settings is reused; one without `answer_floor` reads as
    /// a scan with listed answers only.
    #[test]
    fn a_result_cached_by_an_older_scan_is_not_reused() {
        let settings = crate::zoo::report::tests::settings();
        let scan = EncoderScan {
            id: "e0000".into(),
            settings: settings.clone(),
            report: serde_json::json!({}),
            score: 0.5,
            seconds: 1.0,
            candidates: vec!["ᴨ".into()],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e0000.json");
        let mut value = serde_json::to_value(&scan).unwrap();
        std::fs::write(&path, value.to_string()).unwrap();
        assert!(cached(&path, &settings).is_some());
        value["settings"].as_object_mut().unwrap().remove("version");
        std::fs::write(&path, value.to_string()).unwrap();
        assert!(cached(&path, &settings).is_none());
        // A result from before weak answers (no `answer_floor`) counted listed answers only: it
        // stands for a scan with the floor at the bar (0.5), not for one at a lower floor.
        let mut value = serde_json::to_value(&scan).unwrap();
        value["settings"]
            .as_object_mut()
            .unwrap()
            .remove("answer_floor");
        std::fs::write(&path, value.to_string()).unwrap();
        assert!(cached(&path, &settings).is_none());
        let listed_only = ScanSettings {
            answer_floor: 0.5,
            ..settings.clone()
        };
        assert!(cached(&path, &listed_only).is_some());
    }
}
