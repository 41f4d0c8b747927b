"""diffusers reads a clipdoor learned word: `load_textual_inversion` on a pipeline, then the prompts
through its tokenizer and text encoder. Writes input_ids and last_hidden_state (safetensors) for
tests/suite/invert.rs to compare with `clipdoor encode --embedding`.

    python invert_roundtrip.py PIPELINE LEARNED_EMBEDS PROMPTS.txt OUT.safetensors
"""
import sys

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import save_file

pipeline, embeds, prompts_file, out = sys.argv[1:5]
pipe = StableDiffusionPipeline.from_pretrained(pipeline, safety_checker=None, requires_safety_checker=False)
pipe.load_textual_inversion(embeds)
prompts = open(prompts_file, encoding="utf-8").read().splitlines()
ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids
with torch.no_grad():
    hidden = pipe.text_encoder(ids).last_hidden_state
save_file({"input_ids": ids.to(torch.int64).contiguous(), "last_hidden_state": hidden.float().contiguous()}, out)
print(len(pipe.tokenizer), ids.tolist()[0][:8])
