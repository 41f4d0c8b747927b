//! Fault injection for the crash-safety tests (docs/reliability.md): named points on the paths where a
//! crash or failure could damage outputs. A point does nothing unless `CLIPDOOR_FAULT` names it, so a
//! user never meets one; the tests set it to make a real process fail exactly there.
//!
//! `CLIPDOOR_FAULT=<point>:<action>[@<hit>]`: at the `<hit>`-th time (default 1st) the process passes
//! `<point>`, do `<action>`:
//! - `abort`: end the process at once (SIGABRT, no cleanup, no unwinding), as a `kill -9` would;
//! - `panic`: panic (what a libtorch error inside a tch call does);
//! - `error`: [`point`] returns an error (e.g. an out-of-memory message) that the caller propagates.
//!
//! Points: `checkpoint-swap` (between the two renames that replace a training checkpoint),
//! `atomic-write` (after half of an output file's bytes reached its temp file), `image-written` (after an
//! image of a set is saved, before its record line).
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

static HITS: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());
static ARMED: AtomicU64 = AtomicU64::new(u64::MAX);

/// The fault this process was told to inject, if any: (point, action, hit).
fn configured() -> Option<(String, String, u64)> {
    let spec = std::env::var("CLIPDOOR_FAULT").ok()?;
    let (point, rest) = spec.split_once(':')?;
    let (action, hit) = match rest.split_once('@') {
        Some((a, h)) => (a, h.parse().ok()?),
        None => (rest, 1),
    };
    Some((point.to_string(), action.to_string(), hit))
}

/// Pass fault point `name`: normally nothing. With `CLIPDOOR_FAULT` naming it, abort, panic or return
/// an error on the configured hit.
pub fn point(name: &str) -> anyhow::Result<()> {
    point_with(name, || {})
}

/// [`point`], calling `before` first when the fault fires (e.g. to cut a temp file in half before the
/// process dies, as a crash in the middle of a write leaves it).
pub fn point_with(name: &str, before: impl FnOnce()) -> anyhow::Result<()> {
    if ARMED.load(Ordering::Relaxed) == 0 {
        return Ok(());
    }
    let Some((point, action, hit)) = configured() else {
        ARMED.store(0, Ordering::Relaxed);
        return Ok(());
    };
    if point != name {
        return Ok(());
    }
    let n = {
        let mut hits = HITS.lock().unwrap_or_else(|p| p.into_inner());
        match hits.iter_mut().find(|(p, _)| p == name) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                hits.push((name.to_string(), 1));
                1
            }
        }
    };
    if n != hit {
        return Ok(());
    }
    before();
    match action.as_str() {
        "abort" => std::process::abort(),
        "panic" => panic!("injected fault at {name} (CLIPDOOR_FAULT)"),
        _ => anyhow::bail!(
            "injected fault at {name} (CLIPDOOR_FAULT): CUDA out of memory. Tried to allocate 2.00 GiB"
        ),
    }
}
