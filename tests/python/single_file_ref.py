"""Reference side of tests/suite/single_file.rs: diffusers' own single-file loader judges the files clipdoor writes.

  python single_file_ref.py make OUT
      OUT/v1, OUT/v2: the tiny random pipelines of diffusers_pipeline.py (SD 1.x: CLIP text; SD 2.x:
      OpenCLIP-style gelu text, linear projections, v-prediction), saved with save_pretrained;
      OUT/v1_alt, OUT/v2_alt: other random text encoders of the same architectures (save_pretrained).
  python single_file_ref.py check FILE CONFIG_DIR [ENCODER_DIR]
      StableDiffusionPipeline.from_single_file(FILE, config=CONFIG_DIR) offline, and every component's
      state dict compared with the pipeline folder CONFIG_DIR (the text encoder with ENCODER_DIR when
      given). Prints JSON: per component the tensor count, and the names that are missing, extra or
      different; plus both scheduler prediction types.
"""
import json
import os
import sys

import torch
import transformers
from diffusers import StableDiffusionPipeline

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from diffusers_pipeline import V1, V2, make_pipeline, text_encoder  # noqa: E402

torch.set_num_threads(1)


def make(out):
    os.makedirs(out, exist_ok=True)
    make_pipeline(out, "v1", V1, 100)
    make_pipeline(out, "v2", V2, 200)
    text_encoder(V1["text"], 500).save_pretrained(os.path.join(out, "v1_alt"))
    text_encoder(V2["text"], 600).save_pretrained(os.path.join(out, "v2_alt"))
    print(out)


def compare(got, want):
    g, w = got.state_dict(), want.state_dict()
    return {
        "n": len(w),
        "missing": sorted(set(w) - set(g)),
        "extra": sorted(set(g) - set(w)),
        "different": sorted(k for k in set(g) & set(w) if not torch.equal(g[k], w[k])),
    }


def check(file, config, encoder=None):
    single = StableDiffusionPipeline.from_single_file(
        file, config=config, local_files_only=True, safety_checker=None, requires_safety_checker=False)
    folder = StableDiffusionPipeline.from_pretrained(config, safety_checker=None, requires_safety_checker=False)
    want_text = transformers.CLIPTextModel.from_pretrained(encoder) if encoder else folder.text_encoder
    report = {
        "unet": compare(single.unet, folder.unet),
        "vae": compare(single.vae, folder.vae),
        "text_encoder": compare(single.text_encoder, want_text),
        "prediction_type": [single.scheduler.config.prediction_type, folder.scheduler.config.prediction_type],
    }
    print(json.dumps(report))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    else:
        check(*sys.argv[2:])
