//! The terminal side of [`crate::progress`]: an indicatif bar on stderr when it is a terminal, else
//! (a Slurm or CI log) one plain line per task every few seconds and a last line when it ends.
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::progress::{Reporter, Task};

/// Seconds between plain progress lines; `CLIPDOOR_PROGRESS_SECONDS` overrides the default 10.
fn log_interval() -> Duration {
    let s = std::env::var("CLIPDOOR_PROGRESS_SECONDS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .unwrap_or(10.0);
    Duration::from_secs_f64(s)
}

/// Installs itself as the process-wide reporter.
pub struct CliReporter {
    terminal: bool,
    interval: Duration,
}

impl CliReporter {
    pub fn install() {
        crate::progress::set_reporter(Arc::new(CliReporter {
            terminal: std::io::stderr().is_terminal(),
            interval: log_interval(),
        }));
    }
}

impl Reporter for CliReporter {
    fn note(&self, msg: &str) {
        let _ = writeln!(std::io::stderr(), "{msg}");
    }

    fn task(&self, what: &str, total: u64) -> Box<dyn Task> {
        if self.terminal {
            Box::new(Bar(bar(total, what)))
        } else {
            Box::new(LogLines {
                what: what.to_string(),
                interval: self.interval,
                started: Instant::now(),
                state: Mutex::new(LogState {
                    total,
                    pos: 0,
                    msg: String::new(),
                    last_line: None,
                }),
            })
        }
    }
}

/// A progress bar on stderr.
pub fn bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

struct Bar(indicatif::ProgressBar);

impl Task for Bar {
    fn set_length(&self, total: u64) {
        self.0.set_length(total);
    }
    fn set_position(&self, pos: u64) {
        self.0.set_position(pos);
    }
    fn inc(&self, n: u64) {
        self.0.inc(n);
    }
    fn set_message(&self, msg: &str) {
        self.0.set_message(msg.to_string());
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
    fn abandon(&self) {
        self.0.abandon();
    }
}

struct LogState {
    total: u64,
    pos: u64,
    msg: String,
    last_line: Option<Instant>,
}

/// Plain lines for logs: `[progress] train 120/400 (30.0%) 2.1/s ETA 133 s | loss 0.1234`.
struct LogLines {
    what: String,
    interval: Duration,
    started: Instant,
    state: Mutex<LogState>,
}

impl LogLines {
    fn line(&self, s: &LogState, last: bool) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { s.pos as f64 / secs } else { 0.0 };
        let mut out = format!("[progress] {} {}", self.what, s.pos);
        if s.total > 0 {
            out += &format!(
                "/{} ({:.1}%)",
                s.total,
                100.0 * s.pos as f64 / s.total as f64
            );
        }
        out += &format!(" {rate:.2}/s elapsed {secs:.0} s");
        if !last && s.total > s.pos && rate > 0.0 {
            out += &format!(" ETA {:.0} s", (s.total - s.pos) as f64 / rate);
        }
        if last {
            out += " done";
        }
        if !s.msg.is_empty() {
            out += &format!(" | {}", s.msg);
        }
        out
    }

    /// Print when the interval has passed since the last line (the first update prints at once).
    fn maybe_print(&self, s: &mut LogState) {
        let due = s.last_line.is_none_or(|t| t.elapsed() >= self.interval);
        if due {
            s.last_line = Some(Instant::now());
            let line = self.line(s, false);
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    }

    fn update(&self, f: impl FnOnce(&mut LogState)) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s);
        self.maybe_print(&mut s);
    }
}

impl Task for LogLines {
    fn set_length(&self, total: u64) {
        self.update(|s| s.total = total);
    }
    fn set_position(&self, pos: u64) {
        self.update(|s| s.pos = pos);
    }
    fn inc(&self, n: u64) {
        self.update(|s| s.pos += n);
    }
    fn set_message(&self, msg: &str) {
        // A message alone does not print: it rides on the next timed line.
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.msg = msg.to_string();
    }
    fn finish(&self) {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let line = self.line(&s, true);
        let _ = writeln!(std::io::stderr(), "{line}");
    }
    fn abandon(&self) {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let line = self.line(&s, false) + " (stopped)";
        let _ = writeln!(std::io::stderr(), "{line}");
    }
}
