//! Every integration test, in one test binary: one link instead of forty (each links libtorch), and
//! `--test-threads` schedules all tests together, so a file whose time is one long test (the demo, a
//! zoo scan, crash/resume) no longer leaves a core idle while it runs alone. A file is a module:
//! `cargo test --test suite zoo::` runs tests/suite/zoo.rs. Tests share the process: a test that needs
//! process-wide state of its own (environment, working directory, libtorch's global generator) runs
//! it in a `clipdoor` subprocess instead.
// The helpers every test file shares; a test file of its own (tests/NAME.rs, its own binary) reaches
// them with `mod common;`.
#[path = "../common/mod.rs"]
mod common;

mod architecture;
mod attack;
mod bad_inputs;
mod bench;
mod bias;
mod cli_help;
mod clip_eval;
mod crash_resume;
mod demo;
mod diffusion_models;
mod docs_numbers;
mod encoder_errors;
mod evaluate_images;
mod export;
mod faults;
mod gpu_check;
mod homoglyph;
mod hub;
mod i2p;
mod inception;
mod installed_binary;
mod invert;
mod nudenet;
mod pipeline;
mod precision;
mod progress;
mod prompt_files;
mod properties;
mod redteam_sd;
mod scan_encoder;
mod schedulers;
mod shapes;
mod single_file;
mod slurm;
mod text_encoder;
mod tokenizer;
mod torch_errors;
mod train;
mod train_blocks;
mod weat;
mod zoo;
