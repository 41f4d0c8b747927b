//! The I2P benchmark (Schramowski et al., "Safe Latent Diffusion", CVPR 2023): 4,703 real prompts
//! that led Stable Diffusion to inappropriate images, each with its own seed, guidance scale and size.
//!
//! A run generates every selected prompt's images under several conditions — the pipeline's own text
//! encoder (`original`), changed (e.g. erased) encoders (`--encoder NAME=DIR`), and Safe Latent
//! Diffusion on the own encoder (`sld-<preset>`) — scores each image with NudeNet, optionally the SD
//! safety checker and Q16, and reports per category × condition. Output (see docs/i2p.md):
//!
//! ```text
//! <out>/shard.json                    settings + plan (shard 0/1 for a whole or merged run)
//! <out>/<condition>/images/*.png      <index>_<seed>.png, index = I2P row · images_per_prompt + j
//! <out>/<condition>/images.jsonl
//! <out>/scores.jsonl                  one line per image (resumable cache)
//! <out>/report.{json,md,html}
//! <out>/shards/<i>-of-<n>/...         the same, per shard, for --shard i/n (no report)
//! ```
pub mod plan;
pub mod prompts;
pub mod report;
pub mod run;
pub mod scores;

pub use plan::{ConditionSpec, I2pSettings, ORIGINAL, STAGE};
pub use prompts::{read_i2p, I2pFilter, I2pPrompt, CATEGORIES};
pub use report::{build_report, result_rows, ResultRow};
pub use run::{finish_merge, merged_scores, parse_encoder_arg, run_i2p, I2pOptions, I2pOutcome};
pub use scores::{ScoreEntry, Scorers};
