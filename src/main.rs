use clap::Parser;

fn main() {
    let cli = clipdoor::cli::Cli::parse();
    if let Err(err) = clipdoor::cli::run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(clipdoor::error::exit_code(&err));
    }
}
