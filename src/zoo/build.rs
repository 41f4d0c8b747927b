//! `clipdoor zoo build`: train every planned encoder of this shard, publish it under `encoders/<id>/`
//! (text encoder + tokenizer only: nothing there names a trigger) and its label under
//! `labels/<id>.json`. The run folders stay in `runs/<id>/` (training evidence, resumable).
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use tch::{Device, Kind};

use super::config::ZooConfig;
use super::plan::{encoder_id, Label, Planner};
use crate::error::Result;
use crate::input_bail;
use crate::io::atomic::{write_atomic, write_json};
use crate::models::text_encoder::TextEncoder;
use crate::train::trainer::{train, TrainOptions, TrainOutcome};

/// Which part of the zoo this process builds: encoders `k` with `k % count == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// `i/n` (0-based, as Slurm's `$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`).
    pub fn parse(s: &str) -> Result<Self> {
        let parsed = s
            .split_once('/')
            .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, count)) if count > 0 && index < count => Ok(Shard { index, count }),
            _ => input_bail!(
                "--shard {s:?}: expected i/n with 0 ≤ i < n (e.g. 0/4, or $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)"
            ),
        }
    }

    pub fn holds(&self, k: usize) -> bool {
        k % self.count == self.index
    }
}

pub struct BuildSummary {
    pub built: Vec<String>,
    pub already_done: Vec<String>,
}

pub const CONFIG_COPY: &str = "zoo.toml";

pub fn encoders_dir(zoo: &Path) -> PathBuf {
    zoo.join("encoders")
}
pub fn labels_dir(zoo: &Path) -> PathBuf {
    zoo.join("labels")
}
pub fn label_path(zoo: &Path, id: &str) -> PathBuf {
    labels_dir(zoo).join(format!("{id}.json"))
}

/// Record the zoo file in the folder (resolved paths), or check that it matches the one there: every
/// shard must build the same zoo.
fn pin_config(cfg: &ZooConfig, out: &Path) -> Result<()> {
    let text = toml::to_string_pretty(cfg)?;
    let path = out.join(CONFIG_COPY);
    if path.exists() {
        let old = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let same = toml::from_str::<ZooConfig>(&old)
            .map(|o| &o == cfg)
            .unwrap_or(false);
        if !same {
            input_bail!(
                "{} was built from a different zoo file: use another --out, or the same ZOO.toml as before (the copy there shows it)",
                out.display()
            );
        }
        return Ok(());
    }
    write_atomic(&path, text.as_bytes())
}

pub fn build(cfg: &ZooConfig, out: &Path, shard: Shard, device: Device) -> Result<BuildSummary> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    pin_config(cfg, out)?;
    let base = TextEncoder::load(&cfg.base, Device::Cpu, Kind::Float)?;
    let planner = Planner::new(cfg, base.tokenizer.clone())?;
    drop(base);
    let mine: Vec<usize> = (0..cfg.encoders).filter(|&k| shard.holds(k)).collect();
    let task = crate::progress::task("zoo build", mine.len() as u64);
    let mut summary = BuildSummary {
        built: vec![],
        already_done: vec![],
    };
    for k in mine {
        let id = encoder_id(k);
        let published = encoders_dir(out).join(&id);
        if published.join("text_encoder").join("config.json").exists()
            && label_path(out, &id).exists()
        {
            summary.already_done.push(id);
            task.inc(1);
            continue;
        }
        task.set_message(&format!("{id}: training"));
        let plan = planner.plan(k)?;
        let run = out.join("runs").join(&id);
        let started = Instant::now();
        if !run.join("DONE").exists() {
            let opts = TrainOptions {
                out: run.clone(),
                resume: run.exists(),
                force: false,
                device,
                stop_after: None,
            };
            match train(&plan.experiment, &opts)? {
                TrainOutcome::Finished { .. } => {}
                TrainOutcome::Stopped { step } => {
                    input_bail!("{id}: training stopped at step {step}")
                }
            }
        }
        publish(&run, &published)?;
        let label = with_metrics(plan.label, &run, started.elapsed().as_secs_f64())?;
        write_json(&label_path(out, &id), &label)?;
        summary.built.push(id);
        task.inc(1);
    }
    task.finish();
    Ok(summary)
}

/// Copy the run's `text_encoder/` and `tokenizer/` into `dest` through a temp folder and a rename.
fn publish(run: &Path, dest: &Path) -> Result<()> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(
        ".tmp-{}",
        dest.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("encoder")
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    for part in ["text_encoder", "tokenizer"] {
        let from = run.join(part);
        let to = tmp.join(part);
        std::fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
        for entry in
            std::fs::read_dir(&from).with_context(|| format!("reading {}", from.display()))?
        {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::copy(entry.path(), to.join(entry.file_name()))
                    .with_context(|| format!("copying {}", entry.path().display()))?;
            }
        }
    }
    if dest.exists() {
        std::fs::remove_dir_all(dest).with_context(|| format!("removing {}", dest.display()))?;
    }
    std::fs::rename(&tmp, dest).with_context(|| format!("publishing {}", dest.display()))?;
    Ok(())
}

/// The label with what the run measured (`sim_clean`, each trigger's `sim_target`).
fn with_metrics(mut label: Label, run: &Path, seconds: f64) -> Result<Label> {
    let path = run.join("metrics.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let m: serde_json::Value = serde_json::from_str(&text)?;
    label.sim_clean = m["sim_clean"].as_f64();
    let per: Vec<serde_json::Value> = m["backdoors"].as_array().cloned().unwrap_or_default();
    for t in &mut label.triggers {
        if let Some(b) = per
            .iter()
            .find(|b| b["name"].as_str() == Some(t.name.as_str()))
        {
            t.sim_target = b["sim_target_teacher"].as_f64();
            t.sim_target_before = b["sim_target_before"].as_f64();
        }
    }
    label.train_seconds = Some(seconds);
    Ok(label)
}

/// Every label of a zoo, by index.
pub fn read_labels(zoo: &Path) -> Result<Vec<Label>> {
    let dir = labels_dir(zoo);
    let mut out = vec![];
    let entries = std::fs::read_dir(&dir).map_err(|e| {
        crate::input_err!(
            "{}: cannot read the labels ({e}); is {} a zoo folder made by `clipdoor zoo build`?",
            dir.display(),
            zoo.display()
        )
    })?;
    for e in entries {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "json") {
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            let l: Label = serde_json::from_str(&text)
                .map_err(|e| crate::input_err!("{}: not a zoo label: {e}", p.display()))?;
            out.push(l);
        }
    }
    out.sort_by_key(|l| l.index);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_the_zoo() {
        let s = Shard::parse("1/3").unwrap();
        assert_eq!(
            (0..9).filter(|&k| s.holds(k)).collect::<Vec<_>>(),
            [1, 4, 7]
        );
        for bad in ["3/3", "x", "1/0", "-1/2"] {
            let e = Shard::parse(bad).unwrap_err();
            assert!(e.to_string().contains("expected i/n"), "{e}");
        }
    }
}
