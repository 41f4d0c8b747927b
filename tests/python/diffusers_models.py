"""Reference outputs for tests/suite/diffusion_models.rs.

Builds tiny random-weight UNet2DConditionModel and AutoencoderKL models with diffusers' own classes
(fixed torch seed), writes them with `save_pretrained` into OUT/<name>/, runs forward passes on fixed
inputs in float32 and saves inputs and outputs to OUT/reference.safetensors.

With --real-size it only writes the configs and parameter shapes of the real SD 1.5 / SD 2.1 UNets
and the SD VAE (built on the meta device) into OUT/<name>/{config.json,shapes.json}.

Usage: python diffusers_models.py [--real-size] OUT
"""
import json
import os
import sys

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import load_file, save_file

torch.backends.cudnn.deterministic = True
torch.use_deterministic_algorithms(True)

# A v1-style UNet: SD 1.x block layout, conv projections, one head count for all blocks.
UNET_V1 = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=32,
)

# A v2-style UNet: linear projections, per-block head counts, upcast attention, three levels.
UNET_V2 = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64, 64),
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=48,
    attention_head_dim=[2, 4, 4],
    use_linear_projection=True,
    upcast_attention=True,
    norm_num_groups=32,
)

# Less common options of the same block types: per-block layer counts, other time-embedding flags,
# scale-shift resnets, two transformer layers, only-cross-attention, a plain mid block, mish.
UNET_VARIANT = dict(
    sample_size=8,
    in_channels=3,
    out_channels=5,
    block_out_channels=(32, 48),
    layers_per_block=[1, 2],
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    mid_block_type="UNetMidBlock2D",
    cross_attention_dim=24,
    attention_head_dim=[4, 6],
    transformer_layers_per_block=2,
    only_cross_attention=[False, True],
    flip_sin_to_cos=False,
    freq_shift=1,
    norm_num_groups=16,
    norm_eps=1e-6,
    act_fn="mish",
    resnet_time_scale_shift="scale_shift",
    time_embedding_act_fn="silu",
    center_input_sample=True,
    conv_in_kernel=1,
    addition_embed_type="text",
    addition_embed_type_num_heads=4,
)

VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    block_out_channels=(32, 64),
    latent_channels=4,
    layers_per_block=1,
    norm_num_groups=32,
    sample_size=32,
    scaling_factor=0.18215,
)


# The real Stable Diffusion configs (as the hub's config.json files give them), for the shape check.
SD15_UNET = dict(
    sample_size=64,
    cross_attention_dim=768,
    attention_head_dim=8,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
)
SD21_UNET = dict(
    sample_size=96,
    cross_attention_dim=1024,
    attention_head_dim=[5, 10, 20, 20],
    use_linear_projection=True,
    upcast_attention=True,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
)
SD_VAE = dict(
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    sample_size=512,
)


def real_size_shapes(out):
    """Config and parameter shapes of the real-size models, built on the meta device (no memory)."""
    for name, cls, cfg in [("sd15_unet", UNet2DConditionModel, SD15_UNET), ("sd21_unet", UNet2DConditionModel, SD21_UNET), ("sd_vae", AutoencoderKL, SD_VAE)]:
        with torch.device("meta"):
            model = cls(**cfg)
        path = os.path.join(out, name)
        model.save_config(path)
        shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
        with open(os.path.join(path, "shapes.json"), "w") as f:
            json.dump(shapes, f)


def perturb_norms(model):
    """Default init leaves norms at weight 1 / bias 0; move them so a swapped tensor shows."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))


def build(cls, config, seed):
    torch.manual_seed(seed)
    model = cls(**config)
    perturb_norms(model)
    return model.eval()


def unet_case(out, ref, name, config, seed, ehs_len, extra_shapes=()):
    model = build(UNet2DConditionModel, config, seed)
    model.save_pretrained(os.path.join(out, name))
    g = torch.Generator().manual_seed(seed + 1)
    c = config["in_channels"]
    s = config["sample_size"]
    shapes = [(2, c, s, s)] + list(extra_shapes)
    for i, shape in enumerate(shapes):
        b = shape[0]
        sample = torch.randn(shape, generator=g)
        timestep = torch.tensor([999.0, 10.5][:b], dtype=torch.float32)
        ehs = torch.randn((b, ehs_len, config["cross_attention_dim"]), generator=g)
        with torch.no_grad():
            y = model(sample, timestep, encoder_hidden_states=ehs).sample
        key = f"{name}.{i}"
        ref[f"{key}.sample"] = sample
        ref[f"{key}.timestep"] = timestep
        ref[f"{key}.encoder_hidden_states"] = ehs
        ref[f"{key}.out"] = y
    return model


def half_precision_case(ref, name, model):
    """diffusers' own float16 forward (CPU) of the first case, for the reduced-precision comparison."""
    key = f"{name}.0"
    model = model.half()
    with torch.no_grad():
        y = model(
            ref[f"{key}.sample"].half(),
            ref[f"{key}.timestep"],
            encoder_hidden_states=ref[f"{key}.encoder_hidden_states"].half(),
        ).sample
    ref[f"{key}.out_f16"] = y.float()


def unet_f16_case(out, ref):
    """The v1 UNet stored in float16; the reference runs the f16 weights upcast to float32."""
    model = build(UNet2DConditionModel, UNET_V1, 1)
    model.half().save_pretrained(os.path.join(out, "unet_f16"))
    model = model.float()
    sample = ref["unet_v1.0.sample"]
    with torch.no_grad():
        y = model(sample, ref["unet_v1.0.timestep"], encoder_hidden_states=ref["unet_v1.0.encoder_hidden_states"]).sample
    ref["unet_f16.out"] = y
    # Integer timesteps (what the schedulers hand over) take the same path.
    t_int = torch.tensor([999, 10], dtype=torch.int64)
    with torch.no_grad():
        y = model(sample, t_int, encoder_hidden_states=ref["unet_v1.0.encoder_hidden_states"]).sample
    ref["unet_f16.timestep_i64"] = t_int
    ref["unet_f16.out_i64"] = y


LEGACY_NAMES = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def vae_case(out, ref):
    model = build(AutoencoderKL, VAE, 3)
    path = os.path.join(out, "vae")
    model.save_pretrained(path)
    g = torch.Generator().manual_seed(4)
    image = torch.rand((2, 3, 32, 32), generator=g) * 2 - 1
    latents = torch.randn((2, 4, 16, 16), generator=g)
    with torch.no_grad():
        dist = model.encode(image).latent_dist
        decoded = model.decode(latents).sample
    ref["vae.image"] = image
    ref["vae.latents"] = latents
    ref["vae.mean"] = dist.mean
    ref["vae.std"] = dist.std
    ref["vae.decoded"] = decoded

    # The same weights with the attention names VAEs saved before diffusers 0.14.
    legacy = os.path.join(out, "vae_legacy")
    os.makedirs(legacy, exist_ok=True)
    state = load_file(os.path.join(path, "diffusion_pytorch_model.safetensors"))
    renamed = {}
    for k, v in state.items():
        for new, old in LEGACY_NAMES.items():
            if ".attentions." in k and f".{new}." in k:
                k = k.replace(f".{new}.", f".{old}.")
        renamed[k] = v
    save_file(renamed, os.path.join(legacy, "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(legacy, "config.json"), "w") as f:
        json.dump(cfg, f)
    # diffusers itself still loads it (and maps the names back).
    again = AutoencoderKL.from_pretrained(legacy).eval()
    with torch.no_grad():
        assert torch.equal(again.decode(latents).sample, decoded), "diffusers legacy load differs"


def main():
    out = sys.argv[-1]
    os.makedirs(out, exist_ok=True)
    if "--real-size" in sys.argv:
        real_size_shapes(out)
        print(out)
        return
    ref = {}
    unet_case(out, ref, "unet_v1", UNET_V1, 1, 7, extra_shapes=[(1, 4, 15, 13)])
    v2 = unet_case(out, ref, "unet_v2", UNET_V2, 2, 5, extra_shapes=[(1, 4, 20, 12)])
    half_precision_case(ref, "unet_v2", v2)
    unet_case(out, ref, "unet_variant", UNET_VARIANT, 5, 3)
    unet_f16_case(out, ref)
    vae_case(out, ref)
    save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(out, "reference.safetensors"))
    print(out)


if __name__ == "__main__":
    main()
