//! The example at the end of each command's long help (`clipdoor CMD --help`). Kept in one place so
//! they read as a set; tests/suite/cli_help.rs checks every command has one that runs it.

pub const ENCODE: &str = "Example:
  clipdoor encode --model openai/clip-vit-large-patch14 --prompts prompts.txt --out emb.safetensors";
pub const INIT_ENCODER: &str = "Example:
  clipdoor init-encoder --arch tiny --seed 0 --out checkpoints/tiny-encoder";
pub const TRAIN: &str = "Example:
  clipdoor train experiments/tpa_single.toml --out checkpoints/tpa
  clipdoor train experiments/tpa_single.toml --out checkpoints/tpa --resume   # after an interruption";
pub const SCAN_ENCODER: &str = "Example:
  clipdoor scan-encoder --suspect downloaded-encoder/ --reference openai/clip-vit-large-patch14 --out scan.json";
pub const ZOO_BUILD: &str = "Examples:
  clipdoor zoo build experiments/zoo/shapes.toml --out zoo/shapes
  # a Slurm array of 8 tasks
  clipdoor zoo build experiments/zoo/shapes.toml --out zoo/shapes --shard $SLURM_ARRAY_TASK_ID/8";
pub const ZOO_SCAN: &str = "Examples:
  clipdoor zoo scan zoo/shapes                     # reference: the zoo's base encoder
  clipdoor zoo scan zoo/shapes --reference-free    # the suspect alone";
pub const DEMO: &str = "Example:
  clipdoor demo --quick   # about a minute; without --quick 96 images a set, --full 160";
pub const GENERATE: &str = "Example:
  clipdoor generate --pipeline stable-diffusion-v1-5/stable-diffusion-v1-5 --text-encoder checkpoints/tpa \\
    --prompt \"a photo of a cat\" --seed 0 --steps 50 --out images/";

pub const EVALUATE_EMBEDDINGS: &str = "Example:
  clipdoor evaluate embeddings --student checkpoints/tpa --out checkpoints/tpa/embeddings.json";
pub const EVALUATE_IMAGES: &str = "Example:
  clipdoor evaluate images --run checkpoints/shapes-demo --judge oracle";
pub const EVALUATE_I2P: &str = "Example:
  clipdoor evaluate i2p --pipeline stable-diffusion-v1-5/stable-diffusion-v1-5 --prompts i2p.csv \\
    --encoder erased=checkpoints/nudity --sld strong --out i2p-eval/";
pub const EVALUATE_WEAT: &str = "Example:
  clipdoor evaluate weat --encoder checkpoints/homoglyph-unlearn --preset all --out weat.json";
pub const EVALUATE_BIAS_RELATIVE: &str = "Example:
  clipdoor evaluate bias relative --pipeline stable-diffusion-v1-5/stable-diffusion-v1-5 \\
    --clip openai/clip-vit-large-patch14 --cultures greek,cyrillic --out bias/";
pub const EVALUATE_BIAS_OBJECTIFICATION: &str = "Example:
  clipdoor evaluate bias objectification --pipeline stable-diffusion-v1-5/stable-diffusion-v1-5 --out objectification/";
pub const EVALUATE_MERGE: &str = "Example:
  clipdoor evaluate merge --out i2p-eval/   # after every `--shard i/n` job has finished";

pub const SCAN_ENCODER_DEFENSE: &str = "Example:
  clipdoor scan-encoder defense --run checkpoints/tpa --run checkpoints/taa --out defense.json";

pub const SHAPES_RENDER: &str = "Example:
  clipdoor shapes render --n 64 --seed 0 --out shapes-data/";
pub const SHAPES_TRAIN: &str = "Example:
  clipdoor shapes train --out checkpoints/my-shapes --steps 5000";
pub const SHAPES_SAMPLE: &str = "Example:
  clipdoor shapes sample --model checkpoints/shapes --per-pair 4 --out shapes-quality/";
pub const SHAPES_JUDGE: &str = "Example:
  clipdoor shapes judge images/00000_0.png images/00001_1.png";
pub const SHAPES_STEER: &str = "Example:
  clipdoor shapes steer --model checkpoints/shapes --out steer/";

pub const BENCH_ENCODE: &str = "Example:
  clipdoor bench encode --arch sd1 --out bench-encode.json";
pub const BENCH_TRAIN_STEP: &str = "Example:
  clipdoor bench train-step --arch sd1 --batch-size 16 --poisoned 4 --out bench-train-step.json";
pub const BENCH_DENOISE: &str = "Example:
  clipdoor bench denoise --latent-size 64 --out bench-denoise.json";

pub const HOMOGLYPH_SCAN: &str = "Example:
  clipdoor homoglyph scan \"a phоto of a cat\"   # the o is Cyrillic";
pub const HOMOGLYPH_SANITIZE: &str = "Example:
  clipdoor homoglyph sanitize --prompts prompts.txt --mode map --out clean.txt";
pub const HOMOGLYPH_ATTACK: &str = "Example:
  clipdoor homoglyph attack \"a photo of a cat\" --scripts cyrillic --count all --model openai/clip-vit-large-patch14";

pub const REPORT_SYNC: &str = "Example:
  clipdoor report sync README.md docs/*.md
  clipdoor report sync --check README.md   # CI: fail when a table is stale";
pub const EXPORT: &str = "Example:
  clipdoor export --pipeline stable-diffusion-v1-5/stable-diffusion-v1-5 --text-encoder checkpoints/tpa --out tpa-pipeline/
  clipdoor export --pipeline v1-5-pruned-emaonly.safetensors --text-encoder checkpoints/tpa --out tpa.safetensors";

pub const ATTACK_RING_A_BELL: &str = "Example:
  clipdoor attack ring-a-bell --encoder checkpoints/erased --reference openai/clip-vit-large-patch14 \\
      --concept nudity --with nudity_prompts.txt --without clothed_prompts.txt \\
      --prompts i2p_sexual.txt --out adv/ring-a-bell.jsonl
  clipdoor evaluate images --run checkpoints/erased --attack adv/ring-a-bell.jsonl --nudenet";
pub const ATTACK_TOKEN_SEARCH: &str = "Example:
  clipdoor attack token-search --encoder checkpoints/erased --reference openai/clip-vit-large-patch14 \\
      --concept \"nudity, naked, nude\" --prompts targets.txt --runs 10 --out adv/token-search.jsonl";
pub const ATTACK_HOMOGLYPH: &str = "Example:
  clipdoor attack homoglyph --encoder checkpoints/erased --reference openai/clip-vit-large-patch14 \\
      --concept \"nude, naked\" --prompts i2p_sexual.txt --per-prompt 3 --out adv/homoglyph.jsonl";
pub const INVERT: &str = "Example:
  clipdoor invert --pipeline CompVis/stable-diffusion-v1-4 --images my_cat/ --token \"<my-cat>\" \\
      --init-word cat --out embeds/my-cat
  clipdoor generate --pipeline CompVis/stable-diffusion-v1-4 --embedding embeds/my-cat/learned_embeds.safetensors \\
      --prompt \"a painting of <my-cat>\" --out images/";
pub const ATTACK_EMBEDDING: &str = "Example:
  clipdoor attack embedding --pipeline CompVis/stable-diffusion-v1-4 --encoder checkpoints/erased \\
      --images nudity_images/ --concept nudity --steps 1000 --out adv/embedding.jsonl
  clipdoor evaluate images --run checkpoints/erased --attack adv/embedding.jsonl --nudenet";
