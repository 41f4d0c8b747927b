//! JSON-lines files written by jobs that can be killed and resumed (score caches and the like), and
//! their union across shard folders.
use anyhow::Context;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::io::atomic::write_atomic;
use crate::{input_bail, input_err};

/// Lines of a JSON-lines file (none when the file does not exist). A torn last line (a job killed
/// mid-write) is dropped; any other unreadable line is an input error naming the file and line.
pub fn read_jsonl(path: &Path) -> Result<Vec<serde_json::Value>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(input_err!("cannot read {} ({e})", path.display())),
    };
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => &bytes[..=i],
        None => &bytes[..0],
    };
    let mut out = vec![];
    for (n, line) in String::from_utf8_lossy(complete).lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(line).map_err(|e| {
            input_err!(
                "{} line {}: not JSON ({e}): delete the line (it is recomputed) or the file",
                path.display(),
                n + 1
            )
        })?);
    }
    Ok(out)
}

/// Append lines to a JSON-lines file with one write, then sync: a kill leaves each line whole or
/// absent (a torn tail is dropped by [`read_jsonl`]). A torn tail already there is cut off first.
pub fn append_jsonl(path: &Path, values: &[serde_json::Value]) -> Result<()> {
    if values.is_empty() {
        return Ok(());
    }
    if let Ok(bytes) = std::fs::read(path) {
        if !bytes.is_empty() && bytes.last() != Some(&b'\n') {
            let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            write_atomic(path, &bytes[..keep])?;
        }
    }
    let mut buf = vec![];
    for v in values {
        buf.extend(serde_json::to_vec(v)?);
        buf.push(b'\n');
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(&buf)?;
    f.flush()?;
    f.sync_data()?;
    Ok(())
}

/// Union of the JSON-lines file `rel` of every shard folder, keyed by `key` (lines without a key are
/// skipped). Within one file a later line replaces an earlier one (caches append updates); two shards
/// with different values for one key are an input error.
pub fn union_jsonl(
    shard_dirs: &[PathBuf],
    rel: &str,
    key: impl Fn(&serde_json::Value) -> Option<String>,
) -> Result<BTreeMap<String, serde_json::Value>> {
    let mut out: BTreeMap<String, (serde_json::Value, PathBuf)> = BTreeMap::new();
    for d in shard_dirs {
        let path = d.join(rel);
        let mut mine: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        for v in read_jsonl(&path)? {
            if let Some(k) = key(&v) {
                mine.insert(k, v);
            }
        }
        for (k, v) in mine {
            if let Some((old, old_path)) = out.get(&k) {
                if *old != v {
                    input_bail!(
                        "shards disagree on `{k}`: {} and {} hold different lines for it; delete the line from the wrong shard and rerun that shard",
                        old_path.display(),
                        path.display()
                    );
                }
                continue;
            }
            out.insert(k, (v, path.clone()));
        }
    }
    Ok(out.into_iter().map(|(k, (v, _))| (k, v)).collect())
}
