use clap::Parser;

fn main() {
    install_panic_hook();
    let cli = clipdoor::cli::Cli::parse();
    if let Err(err) = clipdoor::cli::run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(clipdoor::error::exit_code(&err));
    }
}

/// Any panic left (a libtorch error inside a tch call outside a step or batch guard, a bug) becomes one clear line and exit code 1,
/// not Rust's raw panic text and exit code 101. Outputs are written atomically, so whatever was
/// finished before stays intact. `RUST_BACKTRACE=1` adds the backtrace for a bug report.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        // A libtorch error inside `torch_error::catch` (a training step, a batch of images) unwinds
        // to it and becomes an error that says what failed and what to lower.
        if clipdoor::torch_error::hook_stays_silent(info) {
            return;
        }
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        // libtorch errors carry a C++ backtrace after the first line.
        let first = msg.lines().next().unwrap_or("").trim();
        let at = info
            .location()
            .map(|l| format!(" (at {}:{})", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: internal failure: {first}{at}. Finished outputs are intact; rerun the same command to resume where it supports resuming. If this repeats, report it with the command line (RUST_BACKTRACE=1 shows where it happened)."
        );
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            eprintln!("{}", std::backtrace::Backtrace::force_capture());
        }
        std::process::exit(1);
    }));
}
