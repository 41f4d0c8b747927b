//! Model arguments that name a Hugging Face hub repo, resolved the way Python's `huggingface_hub` does.
//!
//! - The cache is Python's (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`), read
//!   in its own layout (`models--owner--name/{refs/<revision>, snapshots/<commit>/...}`), so files that
//!   Python downloaded are used as they are and files clipdoor downloads are usable by Python.
//! - Missing files are downloaded with hf-hub from `HF_ENDPOINT`, with the token Python would send
//!   (`HF_TOKEN`, else the file `HF_TOKEN_PATH`, else `HF_HOME/token`, which `huggingface-cli login`
//!   writes), unless `HF_HUB_OFFLINE=1`. The server's answer (401, 404, no network) is in the error.
//! - A revision (branch, tag or commit) comes from `owner/name@revision` or `--revision`; a weight
//!   variant (`fp16`: `model.fp16.safetensors`) from `--variant` ([`set_options`]).
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use crate::error::Result;
use crate::input_err;

/// What `--revision` and `--variant` chose for this process (the CLI sets it once, before loading).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HubOptions {
    /// Branch, tag or commit for hub ids that do not carry `@revision` themselves (default `main`).
    pub revision: Option<String>,
    /// Weight-file variant: `fp16` picks `model.fp16.safetensors` over `model.safetensors`.
    pub variant: Option<String>,
}

static OPTIONS: RwLock<HubOptions> = RwLock::new(HubOptions {
    revision: None,
    variant: None,
});

/// Set the process-wide revision and variant (the `log` crate's pattern: one setting every loader
/// reads, so no loading function needs two more parameters).
pub fn set_options(o: HubOptions) {
    *OPTIONS.write().unwrap_or_else(|e| e.into_inner()) = o;
}

pub fn options() -> HubOptions {
    OPTIONS.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The weight variant asked for with `--variant`, if any.
pub fn variant() -> Option<String> {
    options().variant
}

/// A weight file's name in the chosen variant: `model.safetensors` → `model.fp16.safetensors` with
/// `--variant fp16` (diffusers' naming); unchanged without a variant.
pub fn variant_file(file: &str) -> String {
    match (variant(), file.strip_suffix(".safetensors")) {
        (Some(v), Some(stem)) => format!("{stem}.{v}.safetensors"),
        _ => file.to_string(),
    }
}

/// The environment Python's `huggingface_hub` reads, read the same way.
#[derive(Debug, Clone)]
pub struct HubEnv {
    pub cache_dir: PathBuf,
    pub endpoint: String,
    pub token: Option<String>,
    pub offline: bool,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn hf_home() -> PathBuf {
    env("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
        env("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env("HOME").unwrap_or_else(|| ".".into())).join(".cache")
            })
            .join("huggingface")
    })
}

impl HubEnv {
    pub fn from_env() -> Self {
        let cache_dir = env("HF_HUB_CACHE")
            .or_else(|| env("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home().join("hub"));
        let endpoint = env("HF_ENDPOINT")
            .unwrap_or_else(|| "https://huggingface.co".into())
            .trim_end_matches('/')
            .to_string();
        let token_file = env("HF_TOKEN_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home().join("token"));
        let token = env("HF_TOKEN")
            .or_else(|| env("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| std::fs::read_to_string(token_file).ok())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        HubEnv {
            cache_dir,
            endpoint,
            token,
            offline: offline(),
        }
    }
}

/// The hub cache folder as huggingface_hub computes it.
pub fn hub_cache_dir() -> PathBuf {
    HubEnv::from_env().cache_dir
}

pub fn offline() -> bool {
    matches!(
        std::env::var("HF_HUB_OFFLINE")
            .unwrap_or_default()
            .to_ascii_lowercase()
            .as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// A hub repo and the revision to read it at.
#[derive(Debug, Clone, PartialEq)]
pub struct HubRef {
    pub id: String,
    /// From `owner/name@revision`, else `--revision`, else `main`.
    pub revision: String,
}

fn valid_part(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('.')
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl HubRef {
    /// `owner/name` or `owner/name@revision`; `None` when `s` is not of that shape or names a path
    /// that exists.
    pub fn parse(s: &str) -> Option<HubRef> {
        if Path::new(s).exists() {
            return None;
        }
        let (id, rev) = match s.split_once('@') {
            Some((id, rev)) if !rev.is_empty() && !rev.contains(char::is_whitespace) => {
                (id, Some(rev.to_string()))
            }
            Some(_) => return None,
            None => (s, None),
        };
        let parts: Vec<&str> = id.split('/').collect();
        if parts.len() != 2 || !parts.iter().all(|p| valid_part(p)) {
            return None;
        }
        let revision = rev
            .or_else(|| options().revision)
            .unwrap_or_else(|| "main".into());
        Some(HubRef {
            id: id.to_string(),
            revision,
        })
    }

    fn repo_dir(&self, cache: &Path) -> PathBuf {
        cache.join(format!("models--{}", self.id.replace('/', "--")))
    }

    /// The commit a revision names in the cache: `refs/<revision>` (a branch or tag), or the
    /// revision itself when it is a commit with a snapshot folder, as huggingface_hub resolves it.
    fn cached_commit(&self, cache: &Path) -> Option<String> {
        let repo = self.repo_dir(cache);
        if let Ok(c) = std::fs::read_to_string(repo.join("refs").join(&self.revision)) {
            return Some(c.trim().to_string());
        }
        let is_commit =
            self.revision.len() == 40 && self.revision.chars().all(|c| c.is_ascii_hexdigit());
        (is_commit && repo.join("snapshots").join(&self.revision).is_dir())
            .then(|| self.revision.clone())
    }

    /// A file of the repo at this revision in the cache (`None` when missing or a dangling link).
    pub fn cached_file(&self, cache: &Path, file: &str) -> Option<PathBuf> {
        let commit = self.cached_commit(cache)?;
        let p = self
            .repo_dir(cache)
            .join("snapshots")
            .join(commit)
            .join(file);
        p.is_file().then_some(p)
    }
}

/// Looks like `owner/name` (or `owner/name@revision`) rather than a path on disk.
pub fn is_hub_id(s: &str) -> bool {
    HubRef::parse(s).is_some()
}

/// Reports a download through the crate's progress sink (a bar on a terminal, lines in a log).
/// hf-hub calls `init` again when it resumes a download, so the task is opened once.
struct DownloadProgress {
    task: Option<Box<dyn crate::progress::Task>>,
    what: String,
}

impl hf_hub::api::Progress for DownloadProgress {
    fn init(&mut self, size: usize, _filename: &str) {
        match &self.task {
            Some(t) => {
                t.set_length(size as u64);
                t.set_position(0);
            }
            None => self.task = Some(crate::progress::task(&self.what, size as u64)),
        }
    }
    fn update(&mut self, size: usize) {
        if let Some(t) = &self.task {
            t.inc(size as u64);
        }
    }
    fn finish(&mut self) {
        if let Some(t) = self.task.take() {
            t.finish();
        }
    }
}

/// What to do about a failed download, from the server's answer.
fn download_hint(err: &str, env: &HubEnv) -> &'static str {
    if err.contains("401") || err.contains("403") {
        if env.token.is_some() {
            "the token was sent but refused: check it has access to this repo (accept the licence of a gated repo on its page)"
        } else {
            "the repo is gated or private: set HF_TOKEN or run `huggingface-cli login` (it writes HF_HOME/token), after accepting its licence on the repo page"
        }
    } else if err.contains("404") {
        "no such repo, file or revision: check the id, --revision and --variant"
    } else {
        "check the network and HF_ENDPOINT, or fill the cache elsewhere and set HF_HUB_OFFLINE=1"
    }
}

fn download(r: &HubRef, env: &HubEnv, file: &str) -> std::result::Result<PathBuf, String> {
    let api = hf_hub::api::sync::ApiBuilder::new()
        .with_cache_dir(env.cache_dir.clone())
        .with_endpoint(env.endpoint.clone())
        .with_token(env.token.clone())
        .with_progress(false)
        .build()
        .map_err(|e| e.to_string())?;
    let repo =
        hf_hub::Repo::with_revision(r.id.clone(), hf_hub::RepoType::Model, r.revision.clone());
    let what = format!("downloading {}/{file} from {}", r.id, env.endpoint);
    api.repo(repo)
        .download_with_progress(file, DownloadProgress { task: None, what })
        .map_err(|e| e.to_string())
}

/// Get `files` (paths inside the repo, e.g. `text_encoder/config.json`) of the hub repo `spec`
/// (`owner/name[@revision]`), returning the snapshot folder that holds them. Files come from the cache;
/// missing ones are downloaded unless offline. The error says what the server answered and what to do.
pub fn resolve_repo_files(spec: &str, files: &[&str]) -> Result<PathBuf> {
    let r = HubRef::parse(spec).ok_or_else(|| {
        input_err!("`{spec}` is not a hub id (owner/name or owner/name@revision)")
    })?;
    let env = HubEnv::from_env();
    let mut snapshot: Option<PathBuf> = None;
    let mut missing = vec![];
    for f in files {
        match r.cached_file(&env.cache_dir, f) {
            Some(p) => {
                snapshot.get_or_insert_with(|| snapshot_root(&p, f));
            }
            None => missing.push(*f),
        }
    }
    let mut failure: Option<String> = None;
    if !missing.is_empty() && !env.offline {
        let mut still = vec![];
        for f in missing {
            if failure.is_some() {
                still.push(f);
                continue;
            }
            match download(&r, &env, f) {
                Ok(p) => {
                    snapshot.get_or_insert_with(|| snapshot_root(&p, f));
                }
                Err(e) => {
                    failure = Some(e);
                    still.push(f);
                }
            }
        }
        missing = still;
    }
    if missing.is_empty() {
        return Ok(snapshot.expect("at least one file resolved"));
    }
    let slug = format!("models--{}", r.id.replace('/', "--"));
    let place = format!(
        "Put the files under {}/{slug}/snapshots/<commit>/ with refs/{} naming the commit (e.g. `huggingface-cli download {} --revision {}` on a machine with network, then copy the cache), or pass a local folder instead",
        env.cache_dir.display(),
        r.revision,
        r.id,
        r.revision
    );
    let why = match (&failure, env.offline) {
        (_, true) => "HF_HUB_OFFLINE is set, so nothing is downloaded".to_string(),
        (Some(e), false) => format!(
            "downloading from {} failed: {e} ({})",
            env.endpoint,
            download_hint(e, &env)
        ),
        (None, false) => "they could not be downloaded".to_string(),
    };
    Err(input_err!(
        "model `{}` at revision `{}` is not in the Hugging Face cache: missing {}; {why}. {place}",
        r.id,
        r.revision,
        missing.join(", ")
    ))
}

fn snapshot_root(file: &Path, rel: &str) -> PathBuf {
    let depth = Path::new(rel).components().count();
    let mut p = file.to_path_buf();
    for _ in 0..depth {
        p.pop();
    }
    p
}
