"""diffusers runs the shapes world's pixel-space pipeline (model_index.json says "vae": [null, null]).

usage: shapes_pipeline_ref.py MODEL_DIR OUT.safetensors STEPS GUIDANCE SEED PROMPT...
Writes `images` [N, 3, 32, 32] in 0..1: the "latents" diffusers returns without a VAE, mapped
(x + 1) / 2 and clamped, as clipdoor's pipeline does. One CPU generator per image (seed + i).
"""
import sys

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import save_file

model, out, steps, guidance, seed = sys.argv[1:6]
prompts = sys.argv[6:]
pipe = StableDiffusionPipeline.from_pretrained(
    model, vae=None, safety_checker=None, feature_extractor=None, image_encoder=None
)
pipe.set_progress_bar_config(disable=True)
size = pipe.unet.config.sample_size
gens = [torch.Generator("cpu").manual_seed(int(seed) + i) for i in range(len(prompts))]
with torch.no_grad():
    # Without a VAE diffusers assumes vae_scale_factor 8: ask for 8x the UNet's size.
    lat = pipe(
        prompts,
        height=size * 8,
        width=size * 8,
        num_inference_steps=int(steps),
        guidance_scale=float(guidance),
        generator=gens,
        output_type="latent",
    ).images
save_file({"images": (lat * 0.5 + 0.5).clamp(0, 1).contiguous()}, out)
