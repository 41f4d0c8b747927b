"""Reference side of tests/suite/pipeline.rs: tiny random Stable Diffusion pipelines written by diffusers'
`StableDiffusionPipeline.save_pretrained`, and the images diffusers makes with them.

Writes OUT/v1 (SD 1.x layout: conv projections, PNDM config of SD 1.4, quick_gelu CLIP, pad
<|endoftext|>), OUT/v2 (SD 2.x layout: linear projections, per-block heads, upcast attention,
v-prediction DDIM config of SD 2.1, gelu CLIP, pad "!"), OUT/v2_encoder (a v2-width run folder, for the
width-mismatch error), OUT/alt_run (a clipdoor-style run folder with another v1-width text encoder and
its tokenizer), OUT/cases.json (every case's settings) and OUT/reference.safetensors (diffusers' images,
`output_type="np"`, stored as [N, 3, H, W] float32 under the case name).

Usage: python diffusers_pipeline.py OUT
"""
import json
import os
import sys
import tempfile

import torch
import transformers
from diffusers import (AutoencoderKL, DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, PNDMScheduler, StableDiffusionPipeline, StableDiffusionPipelineSafe,
                       SemanticStableDiffusionPipeline,
                       UNet2DConditionModel)
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clip_text_ref import write_tokenizer  # noqa: E402

torch.use_deterministic_algorithms(True)
# Tiny models: one thread is fastest, and the dev machine is shared.
torch.set_num_threads(1)

SCHEDULERS = {
    "ddim": DDIMScheduler,
    "pndm": PNDMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler-a": EulerAncestralDiscreteScheduler,
    "dpm++": DPMSolverMultistepScheduler,
}

# The scheduler configs the real pipelines ship (CompVis/stable-diffusion-v1-4, stabilityai/stable-diffusion-2-1).
SD14_SCHEDULER = {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                  "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": False,
                  "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None, "clip_sample": False}
SD21_SCHEDULER = {"_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                  "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000,
                  "prediction_type": "v_prediction", "set_alpha_to_one": False, "skip_prk_steps": True,
                  "steps_offset": 1, "trained_betas": None}

V1 = dict(
    unet=dict(sample_size=16, block_out_channels=(32, 64), layers_per_block=1,
              down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
              cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32),
    text=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, hidden_act="quick_gelu"),
    pad="<|endoftext|>", scheduler=SD14_SCHEDULER,
)
V2 = dict(
    unet=dict(sample_size=16, block_out_channels=(32, 64, 64), layers_per_block=2,
              down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
              up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
              cross_attention_dim=48, attention_head_dim=[2, 4, 4], use_linear_projection=True, upcast_attention=True,
              norm_num_groups=32),
    text=dict(hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, hidden_act="gelu"),
    pad="!", scheduler=SD21_SCHEDULER,
)
VAE = dict(down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"), up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
           block_out_channels=(32, 64), latent_channels=4, layers_per_block=1, norm_num_groups=32, sample_size=32,
           scaling_factor=0.18215)


def perturb(model, scale=0.1):
    """Move norms off 1/0 so that a swapped tensor would show."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(scale * torch.randn_like(p))
    return model.eval()


def text_encoder(cfg, seed):
    torch.manual_seed(seed)
    c = transformers.CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406,
                                    eos_token_id=49407, pad_token_id=1, **cfg)
    return perturb(transformers.CLIPTextModel(c))


def tokenizer(pad):
    """The real CLIP vocabulary, built offline from assets/bpe_simple_vocab_16e6.txt.gz."""
    with tempfile.TemporaryDirectory() as d:
        write_tokenizer(d, pad)
        return transformers.CLIPTokenizer.from_pretrained(d, model_max_length=77)


def make_pipeline(out, name, spec, seed):
    torch.manual_seed(seed)
    unet = perturb(UNet2DConditionModel(**spec["unet"]))
    torch.manual_seed(seed + 1)
    vae = perturb(AutoencoderKL(**VAE))
    enc = text_encoder(spec["text"], seed + 2)
    tok = tokenizer(spec["pad"])
    sched = PNDMScheduler.from_config(spec["scheduler"]) if spec["scheduler"]["_class_name"] == "PNDMScheduler" \
        else DDIMScheduler.from_config(spec["scheduler"])
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=enc, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    path = os.path.join(out, name)
    pipe.save_pretrained(path)
    # Keep the shipped config's extra keys (clip_sample: false) as the real files have them.
    with open(os.path.join(path, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(spec["scheduler"], f)
    return StableDiffusionPipeline.from_pretrained(path, safety_checker=None, requires_safety_checker=False)


def run_case(pipes, case):
    """A fresh pipeline object per case: the loaded ones are never mutated."""
    base = pipes[case["pipeline"]]
    components = dict(base.components)
    if case.get("alt_encoder"):
        components["text_encoder"] = pipes["alt_encoder"]
    cls = SCHEDULERS[case["scheduler"]] if case["scheduler"] is not None else type(base.scheduler)
    components["scheduler"] = cls.from_config(base.scheduler.config)
    if "sld" in case:
        components.pop("image_encoder", None)
        pipe = StableDiffusionPipelineSafe(**components, requires_safety_checker=False)
    elif "sega" in case:
        components.pop("image_encoder", None)
        pipe = SemanticStableDiffusionPipeline(**components, requires_safety_checker=False)
    else:
        pipe = StableDiffusionPipeline(**components, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    seeds = case["seeds"]
    gens = [torch.Generator("cpu").manual_seed(s) for s in seeds] if case["per_image"] \
        else torch.Generator("cpu").manual_seed(seeds[0])
    kwargs = dict(prompt=case["prompts"], num_images_per_prompt=case["images_per_prompt"], generator=gens,
                  num_inference_steps=case["steps"], guidance_scale=case["guidance"], height=case["height"],
                  width=case["width"], output_type="np")
    if case["negative_prompts"] is not None:
        kwargs["negative_prompt"] = case["negative_prompts"]
    if "sld" in case:
        s = case["sld"]
        kwargs.update(sld_guidance_scale=s["guidance_scale"], sld_warmup_steps=s["warmup_steps"],
                      sld_threshold=s["threshold"], sld_momentum_scale=s["momentum_scale"], sld_mom_beta=s["mom_beta"])
    if "sega" in case:
        kwargs.update(sega_kwargs(case["sega"]))
    with torch.no_grad():
        images = pipe(**kwargs).images
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().float()


def sega_kwargs(sega):
    """clipdoor's SegaConfig (one record per edit) as the semantic pipeline's per-concept lists."""
    edits = sega["edits"]
    col = lambda k: [e[k] for e in edits]
    return dict(editing_prompt=col("prompt"), reverse_editing_direction=col("reverse"),
                edit_guidance_scale=col("guidance_scale"), edit_warmup_steps=col("warmup_steps"),
                # diffusers takes None for every edit or a number per edit: "never" is a number past the end.
                edit_cooldown_steps=None if all(c is None for c in col("cooldown_steps"))
                else [10**9 if c is None else c for c in col("cooldown_steps")],
                edit_threshold=col("threshold"), edit_weights=col("weight"),
                edit_momentum_scale=sega["momentum_scale"], edit_mom_beta=sega["mom_beta"])


def edit(prompt, reverse=False, guidance_scale=5.0, warmup_steps=10, cooldown_steps=None, threshold=0.9, weight=1.0):
    return dict(prompt=prompt, reverse=reverse, guidance_scale=guidance_scale, warmup_steps=warmup_steps,
                cooldown_steps=cooldown_steps, threshold=threshold, weight=weight)


def case(name, pipeline, scheduler, prompts, seeds, per_image=True, k=1, negative=None, steps=4, guidance=7.5,
         height=32, width=32, **extra):
    return dict(name=name, pipeline=pipeline, scheduler=scheduler, prompts=prompts, seeds=seeds, per_image=per_image,
                images_per_prompt=k, negative_prompts=negative, steps=steps, guidance=guidance, height=height,
                width=width, **extra)


MEDIUM = dict(guidance_scale=1000.0, warmup_steps=10, threshold=0.01, momentum_scale=0.3, mom_beta=0.4)


def cases():
    prompt = ["a photo of an astronaut riding a horse on mars"]
    out = []
    for pipeline in ["v1", "v2"]:
        for s in SCHEDULERS:
            out.append(case(f"{pipeline}.{s}", pipeline, s, prompt, [1234]))
    # Negative prompts, two prompts x two images, per-image generators through ancestral noise, non-square.
    out.append(case("v1.negative_multi", "v1", "euler-a", ["a red cube", "a blue sphere on green grass"], [10, 11, 12, 13],
                    k=2, negative=["blurry", "low quality, jpeg artifacts"], height=32, width=48))
    # One generator for a batch of three (diffusers' usual call), v-prediction DPM-Solver++.
    out.append(case("v2.single_generator", "v2", "dpm++", ["a castle on a foggy mountain"], [7], per_image=False, k=3,
                    negative=["ugly"], steps=6, guidance=5.0, height=48, width=32))
    out.append(case("v2.euler_a_single_generator", "v2", "euler-a", ["a lighthouse"], [8], per_image=False, k=2))
    out.append(case("v1.no_guidance", "v1", "ddim", prompt, [3], guidance=1.0))
    out.append(case("v1.default_scheduler", "v1", None, prompt, [5]))
    out.append(case("v1.alt_encoder", "v1", "ddim", prompt, [1234], alt_encoder=True))
    # SLD: the medium preset past its 10 warm-up steps, and an aggressive custom one with several images.
    out.append(case("v1.sld_medium", "v1", "pndm", ["a naked person covered in blood"], [21], steps=12, sld=MEDIUM))
    out.append(case("v2.sld_custom", "v2", "euler-a", ["a violent fight"], [22, 23], k=2, steps=5,
                    sld=dict(guidance_scale=2000.0, warmup_steps=1, threshold=0.025, momentum_scale=0.5, mom_beta=0.7)))
    out.append(case("v1.sld_dpm_multi", "v1", "dpm++", ["a bloody knife", "a gun"], [31, 32], steps=6, negative=["text", "text"],
                    sld=dict(guidance_scale=5000.0, warmup_steps=0, threshold=1.0, momentum_scale=0.5, mom_beta=0.7)))
    # SEGA: one edit past its warm-up (PNDM's 13 iterations for 12 steps); two edits, one reversed, warming
    # up at different iterations (the partly-warm branch), one cooling down, weights and momentum set, two
    # prompts x two images with negative prompts; a prompt longer than the context (cut, not truncated).
    out.append(case("v1.sega_one", "v1", "pndm", ["a photo of a cat"], [41], steps=12,
                    sega=dict(edits=[edit("wearing sunglasses", warmup_steps=2)], momentum_scale=0.1, mom_beta=0.4)))
    out.append(case("v2.sega_multi", "v2", "euler-a", ["a red car", "a house"], [42, 43, 44, 45], k=2, steps=6,
                    negative=["blurry", "ugly"],
                    sega=dict(edits=[edit("smiling", guidance_scale=7.0, warmup_steps=1, cooldown_steps=4, threshold=0.8),
                                     edit("at night", reverse=True, guidance_scale=3.0, warmup_steps=3, threshold=0.95,
                                          weight=2.0)],
                              momentum_scale=0.3, mom_beta=0.6)))
    long_prompt = " ".join(["a very detailed painting of a quiet harbour with boats"] * 8)
    out.append(case("v1.sega_long_prompt", "v1", "ddim", [long_prompt], [46], steps=5,
                    sega=dict(edits=[edit(long_prompt + " in winter", warmup_steps=0, threshold=0.5)],
                              momentum_scale=0.1, mom_beta=0.4)))
    return out


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    pipes = {"v1": make_pipeline(out, "v1", V1, 100), "v2": make_pipeline(out, "v2", V2, 200)}
    # A run folder with another v1-width encoder and its own tokenizer (what `clipdoor train` writes).
    alt = text_encoder(V1["text"], 300)
    alt.save_pretrained(os.path.join(out, "alt_run", "text_encoder"))
    tokenizer(V1["pad"]).save_pretrained(os.path.join(out, "alt_run", "tokenizer"))
    pipes["alt_encoder"] = alt
    text_encoder(V2["text"], 400).save_pretrained(os.path.join(out, "v2_encoder"))
    all_cases = cases()
    ref = {c["name"]: run_case(pipes, c) for c in all_cases}
    save_file(ref, os.path.join(out, "reference.safetensors"))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(all_cases, f, indent=1)
    print(out)


if __name__ == "__main__":
    main()
