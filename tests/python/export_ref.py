"""Reference side of tests/suite/export.rs (`clipdoor export`, `clipdoor train --save-pipeline`).

  make OUT      OUT/base: the v1-style tiny random pipeline of diffusers_pipeline.py
                (StableDiffusionPipeline.save_pretrained); OUT/alt_run: a clipdoor-style run folder
                with another random v1-width (32) text encoder and its tokenizer; OUT/v2_encoder: a
                48-wide encoder (the width-mismatch case).
  check EXPORTED BASE ENCODER PROMPT SEED STEPS RESULT
                StableDiffusionPipeline.from_pretrained(EXPORTED) must load; its text encoder's
                state_dict must equal CLIPTextModel.from_pretrained(ENCODER)'s and its UNet's and VAE's
                the base's (exactly); its tokenizer must tokenise PROMPT as the base's does. Then one
                image for PROMPT (own generator seeded SEED, STEPS steps, guidance 7.5, the pipeline's
                own scheduler) as [1, 3, H, W] float32 under `image` in RESULT (a safetensors file).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import diffusers_pipeline as dp  # noqa: E402

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)


def make(out):
    os.makedirs(out, exist_ok=True)
    dp.make_pipeline(out, "base", dp.V1, 100)
    alt = dp.text_encoder(dp.V1["text"], 300)
    alt.save_pretrained(os.path.join(out, "alt_run", "text_encoder"))
    dp.tokenizer(dp.V1["pad"]).save_pretrained(os.path.join(out, "alt_run", "tokenizer"))
    dp.text_encoder(dp.V2["text"], 400).save_pretrained(os.path.join(out, "v2_encoder"))


def same_state(a, b, what):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys(), f"{what}: tensor names differ: {set(sa) ^ set(sb)}"
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{what}: {k} differs"
    print(f"{what}: {len(sa)} tensors equal")


def check(exported, base, encoder, prompt, seed, steps, result):
    import transformers
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    pipe = StableDiffusionPipeline.from_pretrained(exported, safety_checker=None, requires_safety_checker=False)
    ref = StableDiffusionPipeline.from_pretrained(base, safety_checker=None, requires_safety_checker=False)
    same_state(pipe.text_encoder, transformers.CLIPTextModel.from_pretrained(encoder), "text_encoder")
    same_state(pipe.unet, ref.unet, "unet")
    same_state(pipe.vae, ref.vae, "vae")
    assert type(pipe.scheduler) is type(ref.scheduler), (type(pipe.scheduler), type(ref.scheduler))
    assert dict(pipe.scheduler.config) == dict(ref.scheduler.config)
    ids = pipe.tokenizer(prompt, padding="max_length", max_length=77).input_ids
    assert ids == ref.tokenizer(prompt, padding="max_length", max_length=77).input_ids, "tokenizers differ"
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        image = pipe(prompt, generator=[torch.Generator("cpu").manual_seed(int(seed))], num_inference_steps=int(steps),
                     guidance_scale=7.5, output_type="np").images
    save_file({"image": torch.from_numpy(image).permute(0, 3, 1, 2).contiguous().float()}, result)
    print(result)


def main():
    if sys.argv[1] == "make":
        make(sys.argv[2])
    elif sys.argv[1] == "check":
        check(*sys.argv[2:9])
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")


if __name__ == "__main__":
    main()
