//! Progress of long jobs, without a terminal in the library.
//!
//! Library code opens a [`Task`] with [`task`] and reports units done, and tells the user one-off
//! things (a warning, "resuming at step N") with [`note`]; what the user sees is decided by the
//! [`Reporter`] installed with [`set_reporter`]: the `clipdoor` binary installs one that draws
//! an indicatif bar on a terminal and prints a plain line every few seconds in a log (Slurm). With no
//! reporter installed (a library user, a test) progress is silent. This is the `log` crate's pattern:
//! one process-wide sink, so long functions need no extra parameter to report through.
use std::sync::{Arc, OnceLock, RwLock};

/// One running job: `total` units (0 while unknown), a position and a short message.
pub trait Task: Send + Sync {
    fn set_length(&self, total: u64);
    fn set_position(&self, pos: u64);
    fn inc(&self, n: u64);
    fn set_message(&self, msg: &str);
    /// The job ended normally: remove the bar (a log gets a final line).
    fn finish(&self);
    /// The job failed: leave what was shown as it is.
    fn abandon(&self);
}

/// Makes a [`Task`] for each long job and shows notes.
pub trait Reporter: Send + Sync {
    fn task(&self, what: &str, total: u64) -> Box<dyn Task>;
    /// A message outside any task: a warning, a resume notice, skipped work.
    fn note(&self, msg: &str);
}

/// The silent default.
struct Silent;

impl Task for Silent {
    fn set_length(&self, _: u64) {}
    fn set_position(&self, _: u64) {}
    fn inc(&self, _: u64) {}
    fn set_message(&self, _: &str) {}
    fn finish(&self) {}
    fn abandon(&self) {}
}

fn slot() -> &'static RwLock<Option<Arc<dyn Reporter>>> {
    static SLOT: OnceLock<RwLock<Option<Arc<dyn Reporter>>>> = OnceLock::new();
    SLOT.get_or_init(|| RwLock::new(None))
}

/// Install the process-wide reporter (the CLI does this once at start-up).
pub fn set_reporter(r: Arc<dyn Reporter>) {
    *slot().write().unwrap_or_else(|e| e.into_inner()) = Some(r);
}

/// Start a task of `total` units (0 when not known yet) named `what`.
pub fn task(what: &str, total: u64) -> Box<dyn Task> {
    match slot().read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        Some(r) => r.task(what, total),
        None => Box::new(Silent),
    }
}

/// Tell the user `msg` (a warning, a resume notice) through the installed reporter.
pub fn note(msg: &str) {
    if let Some(r) = slot().read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        r.note(msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    type Log = Arc<Mutex<Vec<String>>>;
    struct Recorder(Log);
    struct RecTask(Log, String);
    impl RecTask {
        fn push(&self, event: String) {
            self.0.lock().unwrap().push(format!("{}: {event}", self.1));
        }
    }
    impl Task for RecTask {
        fn set_length(&self, n: u64) {
            self.push(format!("len {n}"));
        }
        fn set_position(&self, n: u64) {
            self.push(format!("pos {n}"));
        }
        fn inc(&self, n: u64) {
            self.push(format!("inc {n}"));
        }
        fn set_message(&self, m: &str) {
            self.push(format!("msg {m}"));
        }
        fn finish(&self) {
            self.push("finish".into());
        }
        fn abandon(&self) {
            self.push("abandon".into());
        }
    }
    impl Reporter for Recorder {
        fn task(&self, what: &str, total: u64) -> Box<dyn Task> {
            let t = RecTask(self.0.clone(), what.to_string());
            t.push(format!("start {total}"));
            Box::new(t)
        }
        fn note(&self, msg: &str) {
            self.0.lock().unwrap().push(format!("note: {msg}"));
        }
    }

    #[test]
    fn tasks_reach_the_installed_reporter() {
        let log: Log = Arc::new(Mutex::new(vec![]));
        set_reporter(Arc::new(Recorder(log.clone())));
        let t = task("progress-test", 3);
        t.inc(2);
        t.set_message("loss 0.1");
        t.finish();
        note("progress-test: a note");
        // Other tests of this binary may report at the same time: keep this task's events.
        let mine: Vec<String> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.starts_with("progress-test: ") || e.starts_with("note: progress-test"))
            .cloned()
            .collect();
        assert_eq!(
            mine,
            [
                "progress-test: start 3",
                "progress-test: inc 2",
                "progress-test: msg loss 0.1",
                "progress-test: finish",
                "note: progress-test: a note"
            ]
        );
    }
}
