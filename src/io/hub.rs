//! Resolving a model argument: a local folder, or a hub id looked up in the Python-compatible
//! Hugging Face cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`), fetched
//! through hf-hub when online. `HF_HUB_OFFLINE=1` never touches the network.
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::input_err;

/// The hub cache folder as huggingface_hub computes it.
pub fn hub_cache_dir() -> PathBuf {
    if let Ok(p) = std::env::var("HF_HUB_CACHE") {
        return PathBuf::from(p);
    }
    if let Ok(p) = std::env::var("HUGGINGFACE_HUB_CACHE") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HF_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let xdg = std::env::var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|_| {
                    PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| ".".into()))
                        .join(".cache")
                });
            xdg.join("huggingface")
        });
    home.join("hub")
}

pub fn offline() -> bool {
    matches!(
        std::env::var("HF_HUB_OFFLINE").as_deref(),
        Ok("1") | Ok("true") | Ok("TRUE") | Ok("yes") | Ok("ON") | Ok("on")
    )
}

/// Looks like `owner/name` rather than a path on disk.
pub fn is_hub_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    !Path::new(s).exists()
        && parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
        && !s.starts_with('.')
}

/// Get `files` (paths inside the repo, e.g. `text_encoder/config.json`) of hub repo `id`, returning the
/// snapshot folder that holds them. Files are taken from the cache; missing ones are downloaded unless
/// offline. The error lists exactly what to put where.
pub fn resolve_repo_files(id: &str, files: &[&str]) -> Result<PathBuf> {
    let cache_dir = hub_cache_dir();
    let cache = hf_hub::Cache::new(cache_dir.clone());
    let repo = cache.model(id.to_string());
    let mut snapshot: Option<PathBuf> = None;
    let mut missing = vec![];
    for f in files {
        match repo.get(f) {
            Some(p) => {
                if snapshot.is_none() {
                    snapshot = Some(snapshot_root(&p, f));
                }
            }
            None => missing.push(*f),
        }
    }
    if !missing.is_empty() && !offline() {
        if let Ok(api) = hf_hub::api::sync::ApiBuilder::new()
            .with_cache_dir(cache_dir.clone())
            .with_progress(false)
            .build()
        {
            let r = api.model(id.to_string());
            missing.retain(|f| match r.get(f) {
                Ok(p) => {
                    snapshot.get_or_insert_with(|| snapshot_root(&p, f));
                    false
                }
                Err(_) => true,
            });
        }
    }
    if !missing.is_empty() {
        let slug = format!("models--{}", id.replace('/', "--"));
        return Err(input_err!(
            "model `{id}` is not in the Hugging Face cache{}: missing {}. Put the files under {}/{slug}/snapshots/<revision>/ (with refs/main naming the revision), e.g. by running `huggingface-cli download {id}` on a machine with network and copying the cache, or pass a local folder instead",
            if offline() { " and HF_HUB_OFFLINE is set" } else { " and could not be downloaded" },
            missing.join(", "),
            cache_dir.display()
        ));
    }
    Ok(snapshot.expect("at least one file resolved"))
}

fn snapshot_root(file: &Path, rel: &str) -> PathBuf {
    let depth = Path::new(rel).components().count();
    let mut p = file.to_path_buf();
    for _ in 0..depth {
        p.pop();
    }
    p
}
