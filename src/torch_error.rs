//! libtorch failures as errors. tch's non-fallible calls (`matmul`, `backward`, ...) panic when libtorch
//! throws, and libtorch throws for an out-of-memory as for any other failure. [`catch`] runs a closure
//! (one training step, one batch of images) and turns such a panic into a [`TorchError`] the caller
//! can explain: what ran out, at which step, what to lower.
//!
//! The binary's panic hook prints one `internal failure` line and exits at once, before any unwinding;
//! while [`catch`] runs, [`hook_stays_silent`] tells it to stay silent and let the panic unwind to
//! `catch_unwind` instead. The flag is per thread: a panic on another thread is still a bug report.
use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    /// How many [`catch`] calls are running on this thread (they may nest).
    static CATCHING: Cell<u32> = const { Cell::new(0) };
    /// Where the last caught panic was raised (`file:line`), for a panic that is a bug, not libtorch.
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// What kind of libtorch failure it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorchErrorKind {
    /// The GPU's memory ran out (CUDA's caching allocator, cuBLAS or cuDNN workspaces).
    OutOfDeviceMemory,
    /// The host's memory ran out (libtorch's CPU allocator).
    OutOfHostMemory,
    /// Any other libtorch error (a shape mismatch, a CUDA launch failure, ...).
    Other,
}

/// A libtorch error: its kind and the first line of libtorch's message (the lines after it are a C++
/// backtrace, of no use to a user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorchError {
    pub kind: TorchErrorKind,
    pub message: String,
}

impl TorchError {
    /// Classify libtorch's full message (`what()`), keeping its first non-empty line.
    pub fn from_libtorch(text: &str) -> Self {
        let message = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("(libtorch gave no message)");
        let message = without_enforce_prefix(message).to_string();
        Self {
            kind: classify(text),
            message,
        }
    }

    pub fn is_out_of_memory(&self) -> bool {
        self.kind != TorchErrorKind::Other
    }

    /// "device memory" / "host memory", for messages; `None` for other errors.
    pub fn memory(&self) -> Option<&'static str> {
        match self.kind {
            TorchErrorKind::OutOfDeviceMemory => Some("device (GPU) memory"),
            TorchErrorKind::OutOfHostMemory => Some("host memory (RAM)"),
            TorchErrorKind::Other => None,
        }
    }
}

impl fmt::Display for TorchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.memory() {
            Some(m) => write!(f, "out of {m}: {}", self.message),
            None => write!(f, "libtorch error: {}", self.message),
        }
    }
}

impl std::error::Error for TorchError {}

/// `[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: ...` → `DefaultCPUAllocator: ...`:
/// the source line and the failed condition of a `CAFFE_ENFORCE` say nothing to a user.
fn without_enforce_prefix(line: &str) -> &str {
    if !line.starts_with("[enforce fail at ") {
        return line;
    }
    line.split_once("] ")
        .and_then(|(_, rest)| rest.split_once(". "))
        .map(|(_, message)| message.trim())
        .filter(|m| !m.is_empty())
        .unwrap_or(line)
}

/// Out of memory, and where, from libtorch's message.
fn classify(text: &str) -> TorchErrorKind {
    const DEVICE: &[&str] = &[
        "CUDA out of memory",
        "CUDA error: out of memory",
        "CUBLAS_STATUS_ALLOC_FAILED",
        "CUDNN_STATUS_ALLOC_FAILED",
        "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE",
    ];
    const HOST: &[&str] = &[
        "DefaultCPUAllocator: can't allocate memory",
        "DefaultCPUAllocator: not enough memory",
        "not enough memory",
        "std::bad_alloc",
    ];
    if DEVICE.iter().any(|p| text.contains(p)) {
        TorchErrorKind::OutOfDeviceMemory
    } else if HOST.iter().any(|p| text.contains(p)) {
        TorchErrorKind::OutOfHostMemory
    } else {
        TorchErrorKind::Other
    }
}

/// Run `f`; a libtorch error that a tch call raised as a panic inside it comes back as an error
/// holding a [`TorchError`] (so does one a fallible `f_` call returned). Any other panic (a bug) comes
/// back as an `internal failure` error naming where it happened. The process's panic hook stays
/// silent meanwhile (see [`hook_stays_silent`]).
///
/// What `f` had changed before the panic may be half done (a step's optimiser update, a batch): the
/// caller treats its state as lost and stops, keeping only what was committed to disk.
pub fn catch<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            CATCHING.with(|c| c.set(c.get().saturating_sub(1)));
        }
    }
    CATCHING.with(|c| c.set(c.get() + 1));
    let _leave = Leave;
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".into());
            Err(match libtorch_text(&text) {
                Some(torch) => anyhow::Error::new(TorchError::from_libtorch(&torch)),
                None => {
                    let first = text.lines().next().unwrap_or("").trim().to_string();
                    let at = LOCATION
                        .with(|l| l.borrow_mut().take())
                        .map(|l| format!(" (at {l})"))
                        .unwrap_or_default();
                    anyhow::anyhow!("internal failure: {first}{at}. If this repeats, report it with the command line")
                }
            })
        }
    }
}

/// The libtorch error in `err`'s chain: a [`TorchError`] from [`catch`], or tch's own
/// `TchError::Torch` from a fallible `f_` call.
pub fn find(err: &anyhow::Error) -> Option<TorchError> {
    err.chain().find_map(|c| {
        if let Some(te) = c.downcast_ref::<TorchError>() {
            return Some(te.clone());
        }
        match c.downcast_ref::<tch::TchError>() {
            Some(tch::TchError::Torch(text)) => Some(TorchError::from_libtorch(text)),
            _ => None,
        }
    })
}

/// For the binary's panic hook: true while [`catch`] runs on the panicking thread, and then the hook
/// must print nothing and return, so the panic unwinds to [`catch`]. Notes where the panic was raised.
pub fn hook_stays_silent(info: &std::panic::PanicHookInfo) -> bool {
    let catching = CATCHING.with(|c| c.get() > 0);
    if catching {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()));
        LOCATION.with(|l| *l.borrow_mut() = at);
    }
    catching
}

/// libtorch's text inside a tch panic: tch unwraps `Err(TchError::Torch(text))`, so the panic reads
/// ``called `Result::unwrap()` on an `Err` value: Torch("<text, Debug-escaped>")``.
fn libtorch_text(panic: &str) -> Option<String> {
    const OPEN: &str = "Torch(\"";
    let start = panic.find(OPEN)? + OPEN.len();
    let mut out = String::new();
    let mut chars = panic[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0' => out.push('\0'),
                'u' => {
                    // `\u{hex}`
                    let hex: String = chars.by_ref().skip(1).take_while(|&c| c != '}').collect();
                    out.push(
                        u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .unwrap_or('\u{fffd}'),
                    );
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    // No closing quote: the text was cut; what there is still says what failed.
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn a_real_allocation_failure_is_host_out_of_memory_with_its_first_line() {
        let e = catch(|| Ok(Tensor::empty([1i64 << 48], (Kind::Float, Device::Cpu)))).unwrap_err();
        let te = e.downcast_ref::<TorchError>().expect("a TorchError");
        assert_eq!(te.kind, TorchErrorKind::OutOfHostMemory, "{te:?}");
        assert!(
            te.message
                .starts_with("DefaultCPUAllocator: can't allocate memory"),
            "{te:?}"
        );
        assert!(
            !te.message.contains('\n') && !te.message.contains("frame #"),
            "{te:?}"
        );
    }

    #[test]
    fn a_shape_mismatch_is_another_libtorch_error() {
        let e = catch(|| {
            let a = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
            Ok(a.matmul(&Tensor::zeros([4, 5], (Kind::Float, Device::Cpu))))
        })
        .unwrap_err();
        let te = find(&e).unwrap();
        assert_eq!(te.kind, TorchErrorKind::Other);
        assert!(
            te.message.contains("2x3") && te.message.contains("4x5"),
            "{te:?}"
        );
        assert!(!te.message.contains("Exception raised"), "{te:?}");
        // A fallible call's error is found and classified the same way.
        let f = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu))
            .f_matmul(&Tensor::zeros([4, 5], (Kind::Float, Device::Cpu)))
            .unwrap_err();
        assert_eq!(find(&anyhow::Error::new(f)).unwrap(), te);
    }

    #[test]
    fn other_panics_are_internal_failures_and_values_pass_through() {
        let e = catch::<()>(|| panic!("a bug")).unwrap_err();
        assert!(e.to_string().starts_with("internal failure: a bug"), "{e}");
        assert!(find(&e).is_none());
        assert_eq!(catch(|| Ok(7)).unwrap(), 7);
        assert_eq!(CATCHING.with(|c| c.get()), 0, "the flag is cleared");
    }

    #[test]
    fn cuda_messages_are_device_out_of_memory() {
        let text = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.1 GiB\nException raised from malloc at CUDACachingAllocator.cpp:1\nframe #0: c10::Error";
        let te = TorchError::from_libtorch(text);
        assert_eq!(te.kind, TorchErrorKind::OutOfDeviceMemory);
        assert!(te.message.ends_with("79.1 GiB"), "{te:?}");
        let cublas = "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`";
        assert!(TorchError::from_libtorch(cublas).is_out_of_memory());
        let panic = format!("called `Result::unwrap()` on an `Err` value: Torch({text:?})");
        assert_eq!(libtorch_text(&panic).unwrap(), text);
        assert_eq!(
            libtorch_text("Torch(\"caf\\u{e9} \\\"x\\\"\")").unwrap(),
            "café \"x\""
        );
    }
}
