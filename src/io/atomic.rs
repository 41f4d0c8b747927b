//! Atomic file output: write to a temp file in the same folder, fsync, then rename over the target,
//! so a crash never leaves a half-written file where a finished one is expected.
use anyhow::Context;
use std::io::Write;
use std::path::Path;

use crate::error::Result;

/// Write `bytes` to `path` atomically (temp file in the same directory + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes).map_err(Into::into))
}

/// Write through a callback into a temp file, then rename it to `path`.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<&mut std::fs::File>) -> Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating folder {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        fill(&mut w).with_context(|| format!("writing {}", path.display()))?;
        w.flush()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    crate::fault::point_with("atomic-write", || {
        let len = tmp.as_file().metadata().map(|m| m.len()).unwrap_or(0);
        let _ = tmp.as_file().set_len(len / 2);
    })?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {} to disk", path.display()))?;
    // tempfile creates 0600; outputs are ordinary shareable files.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("setting the permissions of {}", path.display()))?;
    }
    tmp.persist(path)
        .with_context(|| format!("renaming temp file onto {}", path.display()))?;
    Ok(())
}

/// Serialise `value` as pretty JSON into `path`, atomically.
pub fn write_json<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}
