"""Fixtures of tests/suite/i2p.rs: a tiny random Stable Diffusion pipeline (the v1 layout of
diffusers_pipeline.py, 32x32 images), an "erased" text encoder as a clipdoor run folder, a tiny random
StableDiffusionSafetyChecker (one concept with threshold 0 so that it fires on some images) and a tiny
CLIPVisionModelWithProjection whose projection is 768 wide, so the real Q16 prompt embeddings apply.

Usage: python i2p_fixtures.py OUT   (writes OUT/pipe, OUT/erased, OUT/checker, OUT/clip)
"""
import os
import sys

import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from diffusers_pipeline import V1, make_pipeline, perturb, text_encoder, tokenizer  # noqa: E402

VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              image_size=224, patch_size=32, hidden_act="quick_gelu")
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407, pad_token_id=1)


def processor():
    return transformers.CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    make_pipeline(out, "pipe", V1, 100)
    erased = text_encoder(V1["text"], 300)
    erased.save_pretrained(os.path.join(out, "erased", "text_encoder"))
    tokenizer(V1["pad"]).save_pretrained(os.path.join(out, "erased", "tokenizer"))

    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    torch.manual_seed(500)
    sc = StableDiffusionSafetyChecker(transformers.CLIPConfig(text_config=TEXT, vision_config=VISION,
                                                              projection_dim=40)).eval()
    perturb(sc)
    with torch.no_grad():
        sc.concept_embeds.copy_(torch.randn(17, 40))
        sc.special_care_embeds.copy_(torch.randn(3, 40))
        sc.concept_embeds_weights.fill_(1.0)
        sc.special_care_embeds_weights.fill_(1.0)
        sc.concept_embeds_weights[3] = 0.0  # fires where cos > 0
    sc.save_pretrained(os.path.join(out, "checker"))
    processor().save_pretrained(os.path.join(out, "checker"))

    torch.manual_seed(600)
    clip = perturb(transformers.CLIPVisionModelWithProjection(
        transformers.CLIPVisionConfig(projection_dim=768, **VISION)))
    clip.save_pretrained(os.path.join(out, "clip"))
    processor().save_pretrained(os.path.join(out, "clip"))
    print(out)


if __name__ == "__main__":
    main()
