use clap::{Args, Subcommand};
use std::path::PathBuf;

use crate::error::Result;
use crate::experiment::build_backdoors;
use crate::experiment::Experiment;
use crate::models::text_encoder::TextEncoder;
use crate::train::metrics::evaluate;
use crate::train::trainer::write_metrics;

#[derive(Args, Debug)]
pub struct EvaluateArgs {
    #[command(subcommand)]
    pub what: EvaluateKind,
}

#[derive(Subcommand, Debug)]
pub enum EvaluateKind {
    /// sim_clean, sim_target and z_score per backdoor of a trained run against its teacher.
    #[command(after_long_help = super::examples::EVALUATE_EMBEDDINGS)]
    Embeddings {
        /// The clean encoder (default: the run's experiment teacher).
        #[arg(long)]
        teacher: Option<String>,
        /// A training run folder (experiment.toml + text_encoder/).
        #[arg(long)]
        student: PathBuf,
        /// Captions (default: the experiment's evaluation captions).
        #[arg(long)]
        prompts: Option<PathBuf>,
        /// Captions used at most (the first N of the file).
        #[arg(long, default_value_t = 1000)]
        max_prompts: usize,
        #[command(flatten)]
        embed: super::args::EmbedArgs,
        /// Write the metrics JSON here (default: stdout only).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Generate clean, triggered and concept prompt sets with the original and the trained encoder
    /// (same seeds) and score them; writes report.json/md/html with image grids.
    #[command(after_long_help = super::examples::EVALUATE_IMAGES)]
    Images(super::evaluate_images::ImagesArgs),
    /// The I2P benchmark: each prompt with its own seed/guidance/size, scored with NudeNet, the
    /// safety checker and Q16, per category, for several encoders (and SLD).
    #[command(after_long_help = super::examples::EVALUATE_I2P)]
    I2p(super::evaluate_i2p::I2pArgs),
    /// The Word Embedding Association Test on the encoder's pooled output (homoglyph presets or
    /// your own sets), before/after for a trained run: effect_size and p_value.
    #[command(after_long_help = super::examples::EVALUATE_WEAT)]
    Weat(super::evaluate_weat::WeatArgs),
    /// Bias on generated images: `relative` (homoglyphs × cultures, CLIP judge) and
    /// `objectification` (age × gender prompts, NudeNet and the safety checker).
    Bias(super::evaluate_bias::BiasArgs),
    /// Merge the shard folders of a `--shard i/n` evaluation into one and check they cover the set.
    #[command(after_long_help = super::examples::EVALUATE_MERGE)]
    Merge(super::evaluate_i2p::MergeArgs),
}

pub fn run(a: EvaluateArgs) -> Result<()> {
    match a.what {
        EvaluateKind::Images(a) => return super::evaluate_images::run(a),
        EvaluateKind::I2p(a) => return super::evaluate_i2p::run(a),
        EvaluateKind::Bias(a) => return super::evaluate_bias::run(a),
        EvaluateKind::Merge(a) => return super::evaluate_i2p::merge(a),
        EvaluateKind::Weat(a) => return super::evaluate_weat::run(a),
        EvaluateKind::Embeddings {
            teacher,
            student,
            prompts,
            max_prompts,
            embed,
            out,
        } => {
            let batch_size = embed.batch_size;
            let exp_path = student.join("experiment.toml");
            let exp = Experiment::load(&exp_path)?;
            let device = embed.device.device();
            let teacher = TextEncoder::load(
                teacher.as_deref().unwrap_or(&exp.model.teacher),
                device,
                tch::Kind::Float,
            )?;
            let student_enc = TextEncoder::load(
                student.to_str().unwrap_or_default(),
                device,
                tch::Kind::Float,
            )?;
            let captions = match prompts {
                Some(p) => crate::io::prompts::read_prompt_lines(&p, None, false)?.prompts,
                None => {
                    let backdoors = build_backdoors(&exp);
                    let pools = crate::experiment::pools::PromptPools::build(&exp, &backdoors)?;
                    crate::experiment::eval_captions(&exp, &pools)?
                }
            };
            let captions: Vec<String> = captions.into_iter().take(max_prompts).collect();
            let m = evaluate(
                &teacher,
                &student_enc,
                &build_backdoors(&exp),
                &captions,
                batch_size,
                exp.seed,
            )?;
            let json = serde_json::json!({"sim_clean": m.sim_clean, "captions": m.captions, "backdoors": m.backdoors});
            if let Some(o) = out {
                write_metrics(&o, &m, None)?;
                println!("{}", o.display());
            } else {
                println!("{}", serde_json::to_string_pretty(&json)?);
            }
        }
    }
    Ok(())
}
