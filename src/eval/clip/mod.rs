//! CLIP-based evaluation instruments: the vision tower (`CLIPVisionModelWithProjection`, HF layout),
//! `CLIPImageProcessor` with Pillow-exact bicubic resizing, and the metrics on top (CLIP score,
//! zero-shot classification, paired image similarity, the zero-shot attack-success judge, `fd_clip`,
//! `cmmd`). See docs/evaluation-instruments.md.
pub mod metrics;
pub mod processor;
pub mod vision;
pub mod vision_config;

pub use metrics::{
    attack_success, clip_score, cmmd, frechet_distance, load_text_projection,
    paired_image_similarity, text_embeds, AttackJudgement, ClipScore, ZeroShotAccuracy,
    ZeroShotClassifier,
};
pub use processor::{open_image, CLIPImageProcessor};
pub use vision::{CLIPVisionModelWithProjection, CLIPVisionOutput, ClipVision};
pub use vision_config::CLIPVisionConfig;
