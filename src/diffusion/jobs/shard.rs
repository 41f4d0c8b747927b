//! Sharding an image evaluation over several jobs (`--shard i/n`), then merging the shards back.
//!
//! An evaluation stage builds, for each of its image sets (one folder per condition), the full list of
//! [`ImageRecord`]s it wants. Shard `i/n` owns a **contiguous block** of positions of every such list:
//! positions `floor(i·N/n) .. floor((i+1)·N/n)` of a list of N records, so the blocks are in order, do
//! not overlap, cover the list, and differ in size by at most one ([`Shard::range`]). A shard writes
//! its part into `<out>/shards/<i>-of-<n>/<set>/` (an ordinary resumable [`ImageSet`] folder) plus a
//! `shard.json` ([`ShardManifest`]): the stage, `i` and `n`, the settings and their hash, and for every
//! set its size and the `index` of each wanted record, so that any one shard knows the whole set.
//!
//! [`merge`] unions the shards' `images.jsonl` records, checks that every wanted index of every set is
//! there (an input error names the missing indices, the missing shard folders and the incomplete
//! shards), that all shards were run with the same settings (same hash; the error names the settings
//! that differ) and that no two shards disagree on a record, then hard-links (or copies) the images
//! into `<out>/<set>/images/`, writes `<out>/<set>/images.jsonl` in the wanted order and
//! `<out>/shard.json` (shard `0/1`). Every file is written atomically. A merged folder is laid out
//! exactly like the folder of an unsharded run (which also carries a `0/1` manifest).
//!
//! ```no_run
//! use clipdoor::diffusion::jobs::{Shard, ShardManifest, merge};
//! # fn wanted() -> Vec<clipdoor::diffusion::image_set::ImageRecord> { vec![] }
//! # fn main() -> clipdoor::Result<()> {
//! let shard = Shard::parse("1/4")?;
//! let all = wanted();                        // the whole set, same on every shard
//! let mine = shard.take(&all);               // this job's block
//! let dir = shard.dir(std::path::Path::new("out"));  // out/shards/1-of-4
//! let manifest = ShardManifest::new("images", shard, serde_json::json!({"steps": 50}), &[("original", &all)])?;
//! manifest.claim(&dir, &[])?;                // writes shard.json (or checks a resumed one)
//! // ... ImageSet::open(&dir.join("original")) / pending(mine) / generate ...
//! # let _ = mine;
//! let merged = merge(&clipdoor::diffusion::jobs::find_shard_dirs(std::path::Path::new("out"))?, std::path::Path::new("out"))?;
//! # let _ = merged; Ok(()) }
//! ```
use anyhow::Context;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::diffusion::image_set::{read_records, ImageRecord};
use crate::error::Result;
use crate::io::atomic::{write_atomic, write_json};
use crate::{input_bail, input_err};

/// File name of the manifest in a shard folder (and in a merged or unsharded output folder).
pub const MANIFEST: &str = "shard.json";
/// Folder under the output folder that holds the shard folders.
pub const SHARDS_DIR: &str = "shards";

/// Shard `index` of `count` (0-based: `0 <= index < count`). Written `i/n` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "ShardFields")]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// A shard as a manifest writes it, checked into a [`Shard`] (a hand-edited `count: 0` would divide
/// by zero in [`Shard::range`]).
#[derive(Deserialize)]
struct ShardFields {
    index: usize,
    count: usize,
}

impl TryFrom<ShardFields> for Shard {
    type Error = String;
    fn try_from(f: ShardFields) -> std::result::Result<Self, String> {
        if f.count == 0 || f.index >= f.count {
            return Err(format!(
                "shard {}/{} is not a shard: the index counts from 0 and must be below the count",
                f.index, f.count
            ));
        }
        Ok(Self {
            index: f.index,
            count: f.count,
        })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl Shard {
    /// The whole set as one shard (`0/1`): what an unsharded run and a merged folder record.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Parse `i/n` (0-based `i < n`, `n >= 1`); anything else is an input error saying what is valid.
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim();
        let parsed = t.split_once('/').and_then(|(i, n)| {
            Some((
                i.trim().parse::<usize>().ok()?,
                n.trim().parse::<usize>().ok()?,
            ))
        });
        let Some((index, count)) = parsed else {
            input_bail!(
                "--shard `{s}`: expected I/N with whole numbers, e.g. 0/4 for the first of four shards (I counts from 0)"
            );
        };
        if count == 0 {
            input_bail!("--shard `{s}`: the number of shards must be at least 1");
        }
        if index >= count {
            input_bail!(
                "--shard `{s}`: shard index {index} is out of range for {count} shard(s); shards count from 0, so use 0/{count} .. {}/{count}",
                count - 1
            );
        }
        Ok(Self { index, count })
    }

    pub fn is_whole(&self) -> bool {
        self.count == 1
    }

    /// The positions `[floor(i·n/count), floor((i+1)·n/count))` of a list of `n` items this shard owns:
    /// contiguous, in order, disjoint across shards, covering `0..n`, sizes differing by at most one.
    pub fn range(&self, n: usize) -> Range<usize> {
        let at = |i: usize| ((i as u128 * n as u128) / self.count as u128) as usize;
        at(self.index)..at(self.index + 1)
    }

    /// Whether position `position` of a list of `n` items belongs to this shard.
    pub fn owns(&self, position: usize, n: usize) -> bool {
        self.range(n).contains(&position)
    }

    /// This shard's block of `items`.
    pub fn take<'a, T>(&self, items: &'a [T]) -> &'a [T] {
        &items[self.range(items.len())]
    }

    /// `<i>-of-<n>`.
    pub fn dir_name(&self) -> String {
        format!("{}-of-{}", self.index, self.count)
    }

    /// Inverse of [`Shard::dir_name`].
    pub fn from_dir_name(name: &str) -> Option<Self> {
        let (i, n) = name.split_once("-of-")?;
        let s = Self {
            index: i.parse().ok()?,
            count: n.parse().ok()?,
        };
        (s.count > 0 && s.index < s.count).then_some(s)
    }

    /// Where this shard writes: `<out>/shards/<i>-of-<n>`; the whole set (`0/1`) writes into `out` itself.
    pub fn dir(&self, out: &Path) -> PathBuf {
        if self.is_whole() {
            out.to_path_buf()
        } else {
            out.join(SHARDS_DIR).join(self.dir_name())
        }
    }
}

/// One image set of a manifest: the whole set's size and the `index` of every wanted record, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetPlan {
    pub size: usize,
    pub indices: Vec<usize>,
}

/// `shard.json`: what a shard (or an unsharded run, or a merge) was asked to produce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardManifest {
    /// The stage that wrote the folder (`i2p`, `images`, ...): `clipdoor evaluate merge` hands the
    /// merged folder back to it.
    pub stage: String,
    pub shard: Shard,
    /// [`settings_hash`] of `settings`.
    pub settings_hash: String,
    /// Everything that decides the images and their scores (stage-defined JSON).
    pub settings: serde_json::Value,
    /// Image sets by folder name (relative to the shard folder; `.` for the folder itself).
    pub sets: BTreeMap<String, SetPlan>,
}

/// FNV-1a (64 bit) of the compact JSON of `v`, as 16 hex digits. serde_json orders object keys, so
/// equal settings hash equally whatever order they were built in.
pub fn settings_hash(v: &serde_json::Value) -> String {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Dotted paths of the values that differ between two settings documents (objects are compared key
/// by key, anything else as a whole).
pub fn settings_diff(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    fn walk(a: &serde_json::Value, b: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    let null = serde_json::Value::Null;
                    walk(
                        x.get(k).unwrap_or(&null),
                        y.get(k).unwrap_or(&null),
                        &p,
                        out,
                    );
                }
            }
            _ if a != b => out.push(format!("{path} ({a} vs {b})")),
            _ => {}
        }
    }
    let mut out = vec![];
    walk(a, b, "", &mut out);
    out
}

fn short_list(items: &[String], max: usize) -> String {
    let mut s = items
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > max {
        s += &format!(", … ({} more)", items.len() - max);
    }
    s
}

impl ShardManifest {
    /// The manifest of shard `shard` of a stage whose image sets want `sets` (set name → the whole
    /// set's records, the same list on every shard). Record indices must be unique within a set.
    pub fn new(
        stage: &str,
        shard: Shard,
        settings: serde_json::Value,
        sets: &[(&str, &[ImageRecord])],
    ) -> Result<Self> {
        let mut plans = BTreeMap::new();
        for (name, records) in sets {
            let mut seen = BTreeSet::new();
            for r in records.iter() {
                anyhow::ensure!(
                    seen.insert(r.index),
                    "image set `{name}` wants index {} twice: indices must be unique within a set",
                    r.index
                );
            }
            plans.insert(
                name.to_string(),
                SetPlan {
                    size: records.len(),
                    indices: records.iter().map(|r| r.index).collect(),
                },
            );
        }
        Ok(Self {
            stage: stage.to_string(),
            shard,
            settings_hash: settings_hash(&settings),
            settings,
            sets: plans,
        })
    }

    /// The same plan as one whole set (`0/1`): what a merge writes.
    pub fn whole(&self) -> Self {
        Self {
            shard: Shard::WHOLE,
            ..self.clone()
        }
    }

    /// Read `<dir>/shard.json`; `None` when there is none.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(MANIFEST);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(input_err!("cannot read {} ({e})", path.display())),
        };
        let m: Self = serde_json::from_str(&text).map_err(|e| {
            input_err!(
                "{} is not a clipdoor shard manifest ({e}): delete it if the folder is yours, or use another --out",
                path.display()
            )
        })?;
        Ok(Some(m))
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        write_json(&dir.join(MANIFEST), self)
    }

    /// Take `dir` for this manifest: a fresh folder gets `shard.json`; a folder that already has one
    /// (a resumed run) must be of the same stage, shard and image sets, with the same settings except
    /// the top-level setting keys named in `may_change` (the manifest is then rewritten).
    pub fn claim(&self, dir: &Path, may_change: &[&str]) -> Result<()> {
        if let Some(old) = Self::read(dir)? {
            let path = dir.join(MANIFEST);
            if old.stage != self.stage || old.shard != self.shard {
                input_bail!(
                    "{} belongs to a `{}` run, shard {}, not to this `{}` run, shard {}: use another --out (or delete the folder to start over)",
                    path.display(),
                    old.stage,
                    old.shard,
                    self.stage,
                    self.shard
                );
            }
            let strip = |v: &serde_json::Value| {
                let mut v = v.clone();
                if let Some(o) = v.as_object_mut() {
                    for k in may_change {
                        o.remove(*k);
                    }
                }
                v
            };
            let diff = settings_diff(&strip(&old.settings), &strip(&self.settings));
            if !diff.is_empty() || old.sets != self.sets {
                let what = if diff.is_empty() {
                    "the image sets differ".to_string()
                } else {
                    format!("settings differ: {}", short_list(&diff, 4))
                };
                input_bail!(
                    "{} was written by a run with other settings ({what}): rerun with the same arguments to resume, or use another --out (or delete the folder to start over)",
                    path.display()
                );
            }
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        self.write(dir)
    }
}

/// The shard folders under `<out>/shards/` (names `<i>-of-<n>`), ordered by shard.
pub fn find_shard_dirs(out: &Path) -> Result<Vec<PathBuf>> {
    let root = out.join(SHARDS_DIR);
    let rd = std::fs::read_dir(&root).map_err(|e| {
        input_err!(
            "no shard folders: cannot read {} ({e}); run `--shard I/N` jobs with --out {} first, or name the shard folders explicitly",
            root.display(),
            out.display()
        )
    })?;
    let mut found = vec![];
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(s) = Shard::from_dir_name(&name) {
            if e.path().is_dir() {
                found.push((s, e.path()));
            }
        }
    }
    if found.is_empty() {
        input_bail!(
            "{} holds no shard folders (<i>-of-<n>): run the `--shard I/N` jobs with --out {} first",
            root.display(),
            out.display()
        );
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// The result of [`merge`]: the merged (whole) manifest, and per set the merged records in wanted order.
#[derive(Debug, Clone)]
pub struct Merged {
    pub manifest: ShardManifest,
    pub sets: BTreeMap<String, Vec<ImageRecord>>,
    /// The shard folders merged, with their manifests, in shard order.
    pub shards: Vec<(PathBuf, ShardManifest)>,
}

/// A relative path of plain names only (no root, no `..`, no `.`, no empty part): joined to a folder,
/// it stays inside it.
pub fn is_inner_path(p: &str) -> bool {
    use std::path::Component;
    !p.is_empty()
        && !p.contains('\\')
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        && !p
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
}

fn same_file_bytes(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) if x.len() == y.len() => {
            matches!((std::fs::read(a), std::fs::read(b)), (Ok(p), Ok(q)) if p == q)
        }
        _ => false,
    }
}

/// Put `src` at `dst` atomically: hard link (copy when linking fails, e.g. across file systems) to a
/// temp name beside `dst`, then rename. An identical `dst` is left alone.
pub fn link_or_copy(src: &Path, dst: &Path) -> Result<()> {
    if same_file_bytes(src, dst) {
        return Ok(());
    }
    let dir = dst.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".tmp-merge-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(src, &tmp).is_err() {
        std::fs::copy(src, &tmp)
            .with_context(|| format!("copying {} to {}", src.display(), tmp.display()))?;
    }
    std::fs::rename(&tmp, dst)
        .with_context(|| format!("renaming {} onto {}", tmp.display(), dst.display()))?;
    Ok(())
}

/// Merge shard folders into `out` (see the module docs). Input errors: a folder without `shard.json`,
/// shards of different stages, counts or settings, a shard given twice, two shards disagreeing on a
/// record, and shards that do not cover every wanted index of every set.
pub fn merge(shard_dirs: &[PathBuf], out: &Path) -> Result<Merged> {
    if shard_dirs.is_empty() {
        input_bail!("no shard folders to merge into {}", out.display());
    }
    let mut shards: Vec<(PathBuf, ShardManifest)> = vec![];
    for d in shard_dirs {
        let m = ShardManifest::read(d)?.ok_or_else(|| {
            input_err!(
                "{} has no {MANIFEST}: it is not the folder of a `--shard I/N` run (those are <out>/shards/<i>-of-<n>)",
                d.display()
            )
        })?;
        shards.push((d.clone(), m));
    }
    shards.sort_by_key(|(_, m)| m.shard);
    let (first_dir, first) = shards[0].clone();
    let mut seen: HashMap<Shard, &PathBuf> = HashMap::new();
    for (d, m) in &shards {
        if m.stage != first.stage || m.shard.count != first.shard.count {
            input_bail!(
                "{} is shard {} of a `{}` run but {} is shard {} of a `{}` run: merge the folders of one sharded run only (same stage, same N)",
                d.display(),
                m.shard,
                m.stage,
                first_dir.display(),
                first.shard,
                first.stage
            );
        }
        if m.settings_hash != first.settings_hash || m.sets != first.sets {
            let diff = settings_diff(&first.settings, &m.settings);
            let what = if diff.is_empty() {
                "their image sets differ".to_string()
            } else {
                format!("differing settings: {}", short_list(&diff, 4))
            };
            input_bail!(
                "shards {} ({}) and {} ({}) were run with different settings ({what}): rerun the odd one with the same arguments as the others",
                first.shard,
                first_dir.display(),
                m.shard,
                d.display()
            );
        }
        if let Some(other) = seen.insert(m.shard, d) {
            input_bail!(
                "shard {} is given twice ({} and {}): keep one of them",
                m.shard,
                other.display(),
                d.display()
            );
        }
    }
    // Set names and image files come from the shards' own files: they must stay inside the folders.
    for name in first.sets.keys() {
        // "." is the shard folder itself (the one set of `generate`).
        if name != "." && !is_inner_path(name) {
            input_bail!(
                "{} names image set {name:?}, which is not a relative path inside the folder: the manifest is damaged or was not written by clipdoor; delete that shard folder and rerun the shard",
                first_dir.join(MANIFEST).display()
            );
        }
    }
    let count = first.shard.count;
    let absent: Vec<Shard> = (0..count)
        .map(|index| Shard { index, count })
        .filter(|s| !seen.contains_key(s))
        .collect();

    // Union of the records, per set, keyed by index.
    let mut union: BTreeMap<String, HashMap<usize, (ImageRecord, PathBuf)>> = BTreeMap::new();
    let mut incomplete: BTreeSet<Shard> = BTreeSet::new();
    let mut missing_report = vec![];
    for (name, plan) in &first.sets {
        let wanted: BTreeSet<usize> = plan.indices.iter().copied().collect();
        let recs = union.entry(name.clone()).or_default();
        for (d, m) in &shards {
            let set_dir = d.join(name);
            for (_, r) in read_records(&set_dir.join("images.jsonl"))? {
                if !is_inner_path(&r.file) {
                    input_bail!(
                        "{} records image file {:?}, which is not a relative path inside the set folder: the file is damaged or was not written by clipdoor; delete that shard folder and rerun the shard",
                        set_dir.join("images.jsonl").display(),
                        r.file
                    );
                }
                let src = set_dir.join(&r.file);
                if !src.exists() {
                    continue; // recorded, but the image is gone: counts as missing
                }
                if !wanted.contains(&r.index) {
                    input_bail!(
                        "{} records index {} ({}), which set `{name}` of shard {} does not want: the folder was written by another run; delete it and rerun that shard",
                        set_dir.join("images.jsonl").display(),
                        r.index,
                        r.file,
                        m.shard
                    );
                }
                if let Some((old, old_dir)) = recs.get(&r.index) {
                    if *old != r {
                        input_bail!(
                            "shards disagree on image {} of set `{name}`: {} records {:?} but {} records {:?}; delete the wrong shard folder's image and rerun that shard",
                            r.index,
                            old_dir.join(name).join("images.jsonl").display(),
                            old,
                            set_dir.join("images.jsonl").display(),
                            r
                        );
                    }
                    continue;
                }
                recs.insert(r.index, (r, src));
            }
        }
        let missing: Vec<usize> = plan
            .indices
            .iter()
            .copied()
            .filter(|i| !recs.contains_key(i))
            .collect();
        if !missing.is_empty() {
            for (pos, idx) in plan.indices.iter().enumerate() {
                if !recs.contains_key(idx) {
                    let owner = (0..count)
                        .map(|index| Shard { index, count })
                        .find(|s| s.owns(pos, plan.size))
                        .expect("every position has an owner");
                    if seen.contains_key(&owner) {
                        incomplete.insert(owner);
                    }
                }
            }
            let list: Vec<String> = missing.iter().map(|i| i.to_string()).collect();
            missing_report.push(format!(
                "set `{name}`: {} of {} images missing (indices {})",
                missing.len(),
                plan.size,
                short_list(&list, 8)
            ));
        }
    }
    if !missing_report.is_empty() {
        let mut fixes = vec![];
        if !absent.is_empty() {
            let names: Vec<String> = absent.iter().map(|s| s.to_string()).collect();
            let base = first_dir.parent().unwrap_or(Path::new("."));
            fixes.push(format!(
                "no folder for shard(s) {} (expected {}): run each with the other shards' arguments and `--shard <i>/{count}`",
                short_list(&names, 8),
                short_list(
                    &absent
                        .iter()
                        .map(|s| base.join(s.dir_name()).display().to_string())
                        .collect::<Vec<_>>(),
                    3
                )
            ));
        }
        if !incomplete.is_empty() {
            let names: Vec<String> = incomplete.iter().map(|s| s.to_string()).collect();
            fixes.push(format!(
                "shard(s) {} did not finish: rerun them with the same arguments (they resume)",
                names.join(", ")
            ));
        }
        input_bail!(
            "the shards do not cover the whole set: {}; {}",
            missing_report.join("; "),
            fixes.join("; ")
        );
    }

    // The output folder must not hold another run.
    let manifest = first.whole();
    if let Some(old) = ShardManifest::read(out)? {
        if old.stage != manifest.stage || old.settings_hash != manifest.settings_hash {
            let diff = settings_diff(&old.settings, &manifest.settings);
            input_bail!(
                "{} belongs to another run ({}): merge into another --out, or delete that file and the image folders beside it",
                out.join(MANIFEST).display(),
                if diff.is_empty() {
                    format!("stage `{}`", old.stage)
                } else {
                    short_list(&diff, 4)
                }
            );
        }
    }
    let mut sets = BTreeMap::new();
    for (name, plan) in &manifest.sets {
        let recs = &union[name];
        let set_out = out.join(name);
        std::fs::create_dir_all(set_out.join("images"))
            .with_context(|| format!("creating {}", set_out.display()))?;
        let mut ordered = vec![];
        let mut jsonl = vec![];
        for idx in &plan.indices {
            let (r, src) = &recs[idx];
            link_or_copy(src, &set_out.join(&r.file))?;
            jsonl.extend(serde_json::to_vec(r)?);
            jsonl.push(b'\n');
            ordered.push(r.clone());
        }
        write_atomic(&set_out.join("images.jsonl"), &jsonl)?;
        sets.insert(name.clone(), ordered);
    }
    manifest.write(out)?;
    Ok(Merged {
        manifest,
        sets,
        shards,
    })
}
