//! Fault injection for the crash-safety tests (docs/reliability.md): named points on the paths where a
//! crash or failure could damage outputs. A point does nothing unless `CLIPDOOR_FAULT` names it, so a
//! user never meets one; the tests set it to make a real process fail exactly there.
//!
//! `CLIPDOOR_FAULT=<point>:<action>[@<hit>]`: at the `<hit>`-th time (default 1st) the process passes
//! `<point>`, do `<action>`:
//! - `abort`: end the process at once (SIGABRT, no cleanup, no unwinding), as a `kill -9` would;
//! - `panic`: panic (what a libtorch error inside a tch call does);
//! - `error`: [`point`] returns an error (e.g. an out-of-memory message) that the caller propagates;
//! - `alloc`: a real libtorch out-of-memory: allocate a 1 PiB tensor with tch's non-fallible
//!   `Tensor::empty`, so libtorch's CPU allocator throws ("DefaultCPUAllocator: can't allocate
//!   memory ...") and tch panics, exactly as a step or batch that outgrows memory does;
//! - `torch-error`: another real libtorch error, a matmul of mismatched shapes (2x3 by 4x5).
//!
//! Points: `checkpoint-swap` (between the two renames that replace a training checkpoint),
//! `atomic-write` (after half of an output file's bytes reached its temp file), `image-written` (after an
//! image of a set is saved, before its record line), `train-step` (at the start of each training step,
//! inside the step's libtorch-error guard: the n-th hit is the n-th step this process runs),
//! `generate-batch` (before each batch of images is drawn, inside the batch's guard: the n-th hit is
//! the n-th batch this process draws; batches already on disk are skipped without a hit),
//! `attack-step` (after each step of an attack's search, once its state may have been saved).
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
        "alloc" => {
            // 2^48 floats: beyond any machine's memory (and x86-64's address space).
            let t = tch::Tensor::empty([1i64 << 48], (tch::Kind::Float, tch::Device::Cpu));
            anyhow::bail!("injected fault at {name}: libtorch allocated {:?} without failing", t.size())
        }
        "torch-error" => {
            let a = tch::Tensor::zeros([2, 3], (tch::Kind::Float, tch::Device::Cpu));
            let t = a.matmul(&tch::Tensor::zeros([4, 5], (tch::Kind::Float, tch::Device::Cpu)));
            anyhow::bail!("injected fault at {name}: libtorch multiplied 2x3 by 4x5 into {:?}", t.size())
        }
        _ => anyhow::bail!(
            "injected fault at {name} (CLIPDOOR_FAULT): CUDA out of memory. Tried to allocate 2.00 GiB"
        ),
    }
}
