"""Reference sampling loops with diffusers' schedulers, for tests/suite/schedulers.rs.

usage: diffusers_schedulers.py OUT_DIR

Writes OUT_DIR/configs/*.json (scheduler configs), OUT_DIR/fixed.safetensors (the synthetic model's
fixed tensor), one OUT_DIR/<case>.safetensors per case (timesteps, sigmas, init_latents, after_first,
final), OUT_DIR/rng_*.safetensors (randn_tensor draws), OUT_DIR/noise_*.safetensors (add_noise,
alphas_cumprod and get_velocity where the class has it) and OUT_DIR/cases.json describing all of it.

The "model" is deterministic: model_output = 0.1 * model_input + sin(t / 100) * fixed. The loop is the
StableDiffusionPipeline one: latents = randn_tensor(...) * init_noise_sigma; for t: scale_model_input,
model, step(..., generator=the same generator(s)).
"""
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
)
from diffusers.utils.torch_utils import randn_tensor

CLASSES = {
    "ddim": DDIMScheduler,
    "pndm": PNDMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler-a": EulerAncestralDiscreteScheduler,
    "dpm++": DPMSolverMultistepScheduler,
}

# CompVis/stable-diffusion-v1-4 scheduler/scheduler_config.json, verbatim.
SD1 = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.7.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}
# stabilityai/stable-diffusion-2-1 (768, v-prediction), verbatim.
SD2 = {
    "_class_name": "DDIMScheduler",
    "_diffusers_version": "0.8.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
CONFIGS = {
    "sd1": SD1,
    "sd2": SD2,
    "sd2_trailing": {**SD2, "timestep_spacing": "trailing"},
    "sd2_zero_snr": {**SD2, "timestep_spacing": "trailing", "rescale_betas_zero_snr": True},
    "cosine": {"_class_name": "DDIMScheduler", "beta_schedule": "squaredcos_cap_v2", "clip_sample": False},
    "sd1_karras": {**SD1, "use_karras_sigmas": True},
    "sd2_karras": {**SD2, "use_karras_sigmas": True},
    "sd1_dpm3": {**SD1, "solver_order": 3},
    "sd1_dpm_heun": {**SD1, "solver_type": "heun"},
    "sd1_sde_dpm": {**SD1, "algorithm_type": "sde-dpmsolver++"},
    "sd1_prk": {**SD1, "skip_prk_steps": False},
    "sd1_threshold": {**SD1, "thresholding": True, "sample_max_value": 1.5, "dynamic_thresholding_ratio": 0.9},
    "sd1_clip": {**SD1, "clip_sample": True, "clip_sample_range": 1.2},
}

SHAPE = (2, 4, 8, 8)


def cases():
    out = []
    for name in CLASSES:
        for cfg in ["sd1", "sd2", "sd2_trailing", "sd2_zero_snr", "cosine"]:
            if name == "pndm" and cfg == "sd2_zero_snr":
                continue  # PNDM has no zero-SNR option, so the config means nothing different
            out.append(dict(scheduler=name, config=cfg, steps=10, seed=42))
    out += [
        dict(scheduler="pndm", config="sd1", steps=25, seed=1),
        dict(scheduler="pndm", config="sd1_prk", steps=10, seed=1),
        dict(scheduler="ddim", config="sd1_threshold", steps=10, seed=2),
        dict(scheduler="ddim", config="sd1_clip", steps=10, seed=2),
        dict(scheduler="euler", config="sd1_karras", steps=12, seed=3),
        dict(scheduler="euler", config="sd2_karras", steps=12, seed=3),
        dict(scheduler="euler-a", config="sd1", steps=20, seeds=[5, 6]),
        dict(scheduler="dpm++", config="sd1", steps=20, seed=4),
        dict(scheduler="dpm++", config="sd1_karras", steps=12, seed=4),
        dict(scheduler="dpm++", config="sd1_karras", steps=25, seed=4),
        dict(scheduler="dpm++", config="sd2_karras", steps=12, seed=4),
        dict(scheduler="dpm++", config="sd1_dpm3", steps=20, seed=4),
        dict(scheduler="dpm++", config="sd1_dpm_heun", steps=10, seed=4),
        dict(scheduler="dpm++", config="sd1_sde_dpm", steps=10, seeds=[7, 8]),
        dict(scheduler="dpm++", config="sd1_sde_dpm", steps=10, seed=7),
        dict(scheduler="dpm++", config="saved_dpm", steps=10, seed=9),
        dict(scheduler=None, config="sd1", steps=10, seed=10),
    ]
    for i, c in enumerate(out):
        c["id"] = f"case{i:02d}_{c['scheduler'] or 'default'}_{c['config']}_{c['steps']}"
    return out


def make_generator(case):
    if "seeds" in case:
        return [torch.Generator("cpu").manual_seed(s) for s in case["seeds"]]
    return torch.Generator("cpu").manual_seed(case["seed"])


def run_case(case, config, fixed):
    cls = CLASSES[case["scheduler"] or {v.__name__: k for k, v in CLASSES.items()}[config["_class_name"]]]
    scheduler = cls.from_config(config)
    scheduler.set_timesteps(case["steps"])
    generator = make_generator(case)
    init = randn_tensor(SHAPE, generator=generator, device=torch.device("cpu"), dtype=torch.float32)
    latents = init * scheduler.init_noise_sigma
    after_first = None
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(latents, t)
        model_output = 0.1 * model_input + math.sin(float(t) / 100.0) * fixed
        kwargs = {}
        if "generator" in scheduler.step.__code__.co_varnames:
            kwargs["generator"] = generator
        latents = scheduler.step(model_output, t, latents, **kwargs).prev_sample
        if after_first is None:
            after_first = latents.clone()
    tensors = {
        "timesteps": scheduler.timesteps.to(torch.float64),
        "init_latents": init.contiguous(),
        "after_first": after_first.contiguous(),
        "final": latents.contiguous(),
    }
    if hasattr(scheduler, "sigmas") and isinstance(scheduler.sigmas, torch.Tensor):
        tensors["sigmas"] = scheduler.sigmas.to(torch.float32).contiguous()
    tensors["init_noise_sigma"] = torch.tensor([float(scheduler.init_noise_sigma)], dtype=torch.float64)
    return tensors


RNG_CASES = [
    dict(id="rng_single", shape=[2, 4, 8, 8], seed=42, dtype="float32"),
    dict(id="rng_list", shape=[3, 4, 5, 7], seeds=[1, 2, 3], dtype="float32"),
    dict(id="rng_sd", shape=[1, 4, 64, 64], seed=0, dtype="float32"),
    dict(id="rng_small", shape=[1, 3], seed=1234, dtype="float32"),
    dict(id="rng_half", shape=[1, 4, 8, 8], seed=7, dtype="float16"),
    dict(id="rng_big_seed", shape=[1, 4, 8, 8], seed=2**40 + 17, dtype="float32"),
]


NOISE_SHAPE = (5, 3, 4, 4)


def noise_cases():
    """add_noise as training uses it (no set_timesteps: every training timestep) and after
    set_timesteps(10) (the sigma schedulers look timesteps up in the current schedule)."""
    out = []
    for name in CLASSES:
        for cfg in ["sd1", "sd2", "sd2_zero_snr", "cosine"]:
            if name == "pndm" and cfg == "sd2_zero_snr":
                continue
            for steps in [None, 10]:
                out.append(dict(id=f"noise_{name}_{cfg}_{steps or 'train'}", scheduler=name, config=cfg, steps=steps))
    return out


def run_noise_case(case, config):
    scheduler = CLASSES[case["scheduler"]].from_config(config)
    if case["steps"]:
        scheduler.set_timesteps(case["steps"])
        timesteps = scheduler.timesteps[[0, 2, 4, 6, 9]]
    else:
        timesteps = torch.tensor([0, 1, 250, 500, 999], dtype=torch.int64)
    original = torch.cos(torch.arange(math.prod(NOISE_SHAPE), dtype=torch.float32) * 0.21).reshape(NOISE_SHAPE)
    noise = torch.randn(NOISE_SHAPE, generator=torch.Generator("cpu").manual_seed(11))
    tensors = {
        "timesteps": timesteps.to(torch.float64).contiguous(),
        "original": original,
        "noise": noise,
        "alphas_cumprod": scheduler.alphas_cumprod.to(torch.float32).contiguous(),
        "noisy": scheduler.add_noise(original, noise, timesteps).contiguous(),
    }
    # Only DDPM/DDIM define get_velocity on training timesteps (Euler's refuses integer ones).
    if case["scheduler"] == "ddim":
        tensors["velocity"] = scheduler.get_velocity(original, noise, timesteps).contiguous()
    return tensors


def main():
    out_dir = sys.argv[1]
    os.makedirs(os.path.join(out_dir, "configs"), exist_ok=True)
    for name, cfg in CONFIGS.items():
        with open(os.path.join(out_dir, "configs", f"{name}.json"), "w") as f:
            json.dump(cfg, f, indent=2)
    # A config as diffusers' save_pretrained writes it (with `lambda_min_clipped: -Infinity`).
    DPMSolverMultistepScheduler.from_config(SD1).save_config(os.path.join(out_dir, "configs", "saved"))
    os.replace(
        os.path.join(out_dir, "configs", "saved", "scheduler_config.json"),
        os.path.join(out_dir, "configs", "saved_dpm.json"),
    )
    configs = {**CONFIGS, "saved_dpm": json.load(open(os.path.join(out_dir, "configs", "saved_dpm.json")))}

    fixed = torch.sin(torch.arange(math.prod(SHAPE), dtype=torch.float32) * 0.37).reshape(SHAPE)
    save_file({"fixed": fixed}, os.path.join(out_dir, "fixed.safetensors"))

    all_cases = cases()
    for case in all_cases:
        tensors = run_case(case, configs[case["config"]], fixed)
        save_file(tensors, os.path.join(out_dir, case["id"] + ".safetensors"))

    all_noise_cases = noise_cases()
    for case in all_noise_cases:
        save_file(run_noise_case(case, configs[case["config"]]), os.path.join(out_dir, case["id"] + ".safetensors"))

    for rc in RNG_CASES:
        dtype = getattr(torch, rc["dtype"])
        gen = make_generator(rc)
        first = randn_tensor(tuple(rc["shape"]), generator=gen, device=torch.device("cpu"), dtype=dtype)
        second = randn_tensor(tuple(rc["shape"]), generator=gen, device=torch.device("cpu"), dtype=dtype)
        save_file({"first": first.contiguous(), "second": second.contiguous()}, os.path.join(out_dir, rc["id"] + ".safetensors"))
    # The claim the Rust recipe rests on: a fresh seeded generator is the seeded default generator.
    torch.manual_seed(42)
    default = torch.randn(2, 4, 8, 8)
    assert torch.equal(default, torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(42)))

    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        json.dump({"shape": SHAPE, "cases": all_cases, "rng": RNG_CASES, "noise": all_noise_cases}, f, indent=1)


if __name__ == "__main__":
    main()
