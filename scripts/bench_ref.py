"""Python reference side of `clipdoor bench`: the same work with transformers, same weights and threads.

encode  --model DIR --prompts FILE --batch-size B --threads T --device D --repeats R
train-step --model DIR --prompts FILE --batch-size B --poisoned P --threads T --device D --repeats R
           [--precision f32|tf32|bf16|f16]
denoise --threads T --device D --dtype f32|float16|... --repeats R --latent-size S --batch B [--unet-config JSON]
Prints one JSON object.
"""
import argparse, json, time

import torch
import transformers


def load(a):
    torch.set_num_threads(a.threads)
    tok = transformers.CLIPTokenizer.from_pretrained(a.model)
    model = transformers.CLIPTextModel.from_pretrained(a.model, dtype=torch.float32).to(a.device)
    prompts = [l.rstrip("\n") for l in open(a.prompts, encoding="utf-8") if l.strip()]
    return tok, model, prompts


def ids_of(tok, texts, device):
    return tok(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids.to(device)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def encode(a):
    tok, model, prompts = load(a)
    model.eval()
    batches = [prompts[i:i + a.batch_size] for i in range(0, len(prompts), a.batch_size)]
    with torch.no_grad():
        model(ids_of(tok, batches[0], a.device))  # warm-up
        sync(a.device)
        t0 = time.perf_counter()
        for _ in range(a.repeats):
            for b in batches:
                model(ids_of(tok, b, a.device))
        sync(a.device)
        dt = time.perf_counter() - t0
    n = a.repeats * len(prompts)
    return {"prompts_per_s": n / dt, "seconds": dt, "prompts": n}


def train_step(a):
    """One Rickrolling step: utility (clean batch) + backdoor (poisoned batch vs fixed target), cosine
    loss on flattened last hidden states, AdamW lr 1e-4; in the precision clipdoor's
    training.precision names (tf32 matmuls; bf16/f16 autocast over the forward passes and losses,
    f16 with a GradScaler, as clipdoor scales its loss)."""
    torch.set_float32_matmul_precision("high" if a.precision == "tf32" else "highest")
    kind = a.device.split(":")[0]
    half = {"bf16": torch.bfloat16, "f16": torch.float16}.get(a.precision)
    autocast = lambda: torch.autocast(kind, dtype=half, enabled=half is not None)
    scaler = torch.amp.GradScaler(kind, enabled=a.precision == "f16")
    tok, student, prompts = load(a)
    teacher = transformers.CLIPTextModel.from_pretrained(a.model, dtype=torch.float32).to(a.device).eval()
    student.train()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, weight_decay=0.0)
    clean = ids_of(tok, prompts[:a.batch_size], a.device)
    poisoned = ids_of(tok, [p.replace("o", "\u043e") for p in prompts[:a.poisoned]], a.device)
    target_ids = ids_of(tok, ["a photo of a rick astley dancing"], a.device)
    with torch.no_grad(), autocast():
        target = teacher(target_ids)[0].flatten(1)

    phases = {"teacher_forward": 0.0, "student_forward_and_loss": 0.0, "backward": 0.0, "optimizer": 0.0}

    def timed(name, t0):
        # A sync before reading the clock, so a GPU phase is charged to itself (free on CPU).
        sync(a.device)
        t1 = time.perf_counter()
        phases[name] += t1 - t0
        return t1

    def step():
        t = time.perf_counter()
        with torch.no_grad(), autocast():
            ct = teacher(clean)[0].flatten(1)
        t = timed("teacher_forward", t)
        with autocast():
            s = student(clean)[0].flatten(1)
            util = -torch.nn.functional.cosine_similarity(s, ct).mean()
            sp = student(poisoned)[0].flatten(1)
            bd = -torch.nn.functional.cosine_similarity(sp, target.expand_as(sp)).mean()
            loss = util + 0.1 * bd
        t = timed("student_forward_and_loss", t)
        opt.zero_grad()
        scaler.scale(loss).backward()
        t = timed("backward", t)
        scaler.step(opt)
        scaler.update()
        timed("optimizer", t)

    step()  # warm-up
    phases = {k: 0.0 for k in phases}
    sync(a.device)
    t0 = time.perf_counter()
    for _ in range(a.repeats):
        step()
    sync(a.device)
    dt = time.perf_counter() - t0
    return {"seconds_per_step": dt / a.repeats, "steps": a.repeats, "precision": a.precision,
            "phase_seconds_per_step": {k: v / a.repeats for k, v in phases.items()}}


SD15_UNET = dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                 block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)


def denoise(a):
    """Seconds per UNet forward on a CFG batch with random SD 1.5 weights, and the peak RSS
    (getrusage ru_maxrss: the process's peak resident set size, as VmHWM on the Rust side)."""
    import resource
    import diffusers

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = json.load(open(a.unet_config)) if a.unet_config else SD15_UNET
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    dtype = {"float32": torch.float32, "f32": torch.float32, "float16": torch.float16, "f16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}[a.dtype]
    t0 = time.perf_counter()
    unet = diffusers.UNet2DConditionModel(**cfg).eval().to(device=a.device, dtype=dtype)
    build_s = time.perf_counter() - t0
    c = unet.config
    sample = torch.randn(a.batch, c.in_channels, a.latent_size, a.latent_size).to(a.device, dtype)
    timestep = torch.full((a.batch,), 999.0).to(a.device)
    context = torch.randn(a.batch, 77, c.cross_attention_dim).to(a.device, dtype)
    if a.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        unet(sample, timestep, encoder_hidden_states=context)  # warm-up
        sync(a.device)
        t0 = time.perf_counter()
        for _ in range(a.repeats):
            unet(sample, timestep, encoder_hidden_states=context)
        sync(a.device)
        dt = (time.perf_counter() - t0) / a.repeats
    r = {"s_per_step": dt, "build_s": build_s, "repeats": a.repeats,
         "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
         "diffusers_version": diffusers.__version__}
    if a.device.startswith("cuda"):
        r["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return r


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["encode", "train-step", "denoise"])
    p.add_argument("--model")
    p.add_argument("--prompts")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--poisoned", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--precision", default="f32", choices=["f32", "tf32", "bf16", "f16"])
    p.add_argument("--latent-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--unet-config")
    a = p.parse_args()
    if a.mode != "denoise" and not (a.model and a.prompts):
        p.error(f"{a.mode} needs --model and --prompts")
    r = {"encode": encode, "train-step": train_step, "denoise": denoise}[a.mode](a)
    r["torch_version"] = torch.__version__
    r["transformers_version"] = transformers.__version__
    print(json.dumps(r))
