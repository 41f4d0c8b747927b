"""Fixtures of tests/suite/evaluate_images.rs (`clipdoor evaluate images` end to end): tiny random models,
written by the Python packages, in the layouts the real ones ship in.

OUT/pipeline       the v1-style tiny Stable Diffusion pipeline of tests/python/diffusers_pipeline.py
                   (`StableDiffusionPipeline.save_pretrained`: UNet cross-attention width 32, VAE
                   factor 2 → 32×32 images, CLIP text encoder 32 wide, SD 1.4 PNDM config)
OUT/clip           a tiny random full CLIPModel (vision + text + projections, 64-d) + tokenizer +
                   preprocessor_config.json (tests/python/clip_eval_ref.py `make_clip`)
OUT/inception.safetensors   pytorch-fid's InceptionV3 with seeded random weights and calibrated
                   BatchNorm statistics, in the layout of pt_inception-2015-12-05-6726825d.pth
                   (tests/python/inception_reference.py `make_model`)

Usage: python eval_images_fixtures.py OUT [--no-inception]
"""
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clip_eval_ref  # noqa: E402
import diffusers_pipeline  # noqa: E402


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    diffusers_pipeline.make_pipeline(out, "pipeline", diffusers_pipeline.V1, 100)
    clip_eval_ref.make_clip(os.path.join(out, "clip"), 7, 64)
    if "--no-inception" not in sys.argv[2:]:
        import inception_reference
        tmp = os.path.join(out, "inception_tmp")
        inception_reference.make_model(0, tmp)
        shutil.move(os.path.join(tmp, "pth_layout.safetensors"), os.path.join(out, "inception.safetensors"))
        shutil.rmtree(tmp)
    print(out)


if __name__ == "__main__":
    main()
