"""The Rickrolling target-prompt attack as a plain PyTorch loop: the reference `scripts/gpu_check.sh`
times clipdoor against on the same GPU. It needs torch only (the GPU machines may lack
transformers and safetensors): the CLIP text transformer is written out below from the encoder's
`config.json` and `model.safetensors`, and the prompts come pre-tokenised (`clipdoor encode` writes
their `input_ids`), so no tokenizer is needed either.

Usage:
  gpu_ref_tpa.py --encoder DIR --clean IDS.safetensors --poisoned IDS.safetensors
                 --target IDS.safetensors --eval IDS.safetensors --steps N --clean-batch B
                 --poisoned-batch P --precision f32|tf32|bf16 --device cuda --out DIR
  gpu_ref_tpa.py --check-forward --encoder DIR --eval IDS.safetensors --hidden OUT.safetensors
      (the model below against clipdoor's own `last_hidden_state` for the same ids)

Prints one JSON object: wall seconds from the start of the script to the saved encoder, the
training seconds, sim_clean, peak GPU memory.
"""
import argparse
import json
import os
import struct
import time

T_START = time.perf_counter()

import torch  # noqa: E402  (the import is part of the measured start-up, as clipdoor's is)
import torch.nn.functional as F  # noqa: E402

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64}


def read_safetensors(path, device="cpu"):
    """safetensors without the safetensors package: an 8-byte header length, a JSON header, raw data."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        dtype = DTYPES[meta["dtype"]]
        t = torch.frombuffer(bytearray(data[start:end]), dtype=dtype) if end > start else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(meta["shape"]).to(device)
    return out


def write_safetensors(path, tensors):
    names = {"torch.float32": "F32"}
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        b = t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": names["torch.float32"], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


class ClipText(torch.nn.Module):
    """transformers' CLIPTextTransformer (causal self-attention, pre-norm layers, final layer norm)."""

    def __init__(self, cfg):
        super().__init__()
        h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
        self.heads = heads
        self.act = cfg.get("hidden_act", "quick_gelu")
        self.token_embedding = torch.nn.Embedding(cfg["vocab_size"], h)
        self.position_embedding = torch.nn.Embedding(cfg["max_position_embeddings"], h)
        eps = cfg.get("layer_norm_eps", 1e-5)
        L = torch.nn.Linear
        self.layers = torch.nn.ModuleList()
        for _ in range(cfg["num_hidden_layers"]):
            m = torch.nn.Module()
            m.layer_norm1 = torch.nn.LayerNorm(h, eps=eps)
            m.q_proj, m.k_proj, m.v_proj, m.out_proj = L(h, h), L(h, h), L(h, h), L(h, h)
            m.layer_norm2 = torch.nn.LayerNorm(h, eps=eps)
            m.fc1, m.fc2 = L(h, cfg["intermediate_size"]), L(cfg["intermediate_size"], h)
            self.layers.append(m)
        self.final_layer_norm = torch.nn.LayerNorm(h, eps=eps)

    def load(self, weights):
        own = {}
        for name in weights:
            key = name.removeprefix("text_model.")
            key = key.replace("embeddings.", "").replace("encoder.", "").replace("self_attn.", "").replace("mlp.", "")
            own[key] = weights[name]
        missing, unexpected = self.load_state_dict(own, strict=False)
        assert not missing, f"weights missing from model.safetensors: {missing}"
        return self

    def mlp_act(self, x):
        if self.act == "quick_gelu":
            return x * torch.sigmoid(1.702 * x)
        return F.gelu(x)

    def forward(self, ids):
        b, t = ids.shape
        x = self.token_embedding(ids) + self.position_embedding.weight[:t]
        for m in self.layers:
            y = m.layer_norm1(x)
            q, k, v = (p(y).view(b, t, self.heads, -1).transpose(1, 2) for p in (m.q_proj, m.k_proj, m.v_proj))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + m.out_proj(a.transpose(1, 2).reshape(b, t, -1))
            x = x + m.fc2(self.mlp_act(m.fc1(m.layer_norm2(x))))
        return self.final_layer_norm(x)


def load_model(encoder, device):
    cfg = json.load(open(os.path.join(encoder, "config.json")))
    return ClipText(cfg).load(read_safetensors(os.path.join(encoder, "model.safetensors"))).to(device)


def ids_of(path, device):
    return read_safetensors(path)["input_ids"].to(device)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def neg_cos(a, b):
    return -F.cosine_similarity(a.flatten(1).float(), b.flatten(1).float()).mean()


def train(a):
    dev = a.device
    if dev.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    torch.set_float32_matmul_precision("high" if a.precision == "tf32" else "highest")
    autocast = (lambda: torch.autocast(dev.split(":")[0], dtype=torch.bfloat16)) if a.precision == "bf16" else (
        lambda: torch.autocast(dev.split(":")[0], enabled=False))
    teacher = load_model(a.encoder, dev).eval().requires_grad_(False)
    student = load_model(a.encoder, dev).train()
    clean, poisoned = ids_of(a.clean, dev), ids_of(a.poisoned, dev)
    target_ids, eval_ids = ids_of(a.target, dev), ids_of(a.eval, dev)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[int(a.steps * 0.75)], gamma=0.1)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad(), autocast():
        target = teacher(target_ids)
    sync(dev)
    t_train = time.perf_counter()
    for _ in range(a.steps):
        ci = torch.randperm(len(clean), generator=gen)[: a.clean_batch].to(dev)
        pi = torch.randperm(len(poisoned), generator=gen)[: a.poisoned_batch].to(dev)
        c, p = clean[ci], poisoned[pi]
        with torch.no_grad(), autocast():
            ct = teacher(c)
        with autocast():
            s = student(torch.cat([c, p]))
        util = neg_cos(s[: len(c)], ct)
        bd = neg_cos(s[len(c):], target.expand(len(p), -1, -1))
        loss = util + 0.1 * bd
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    sync(dev)
    train_s = time.perf_counter() - t_train
    # The final evaluation: student vs teacher on the evaluation captions (sim_clean).
    sims = []
    with torch.no_grad(), autocast():
        for i in range(0, len(eval_ids), 256):
            e = eval_ids[i: i + 256]
            sims.append(F.cosine_similarity(student(e).flatten(1).float(), teacher(e).flatten(1).float()))
    sim_clean = torch.cat(sims).mean().item()
    os.makedirs(a.out, exist_ok=True)
    write_safetensors(os.path.join(a.out, "model.safetensors"), {f"text_model.{k}": v for k, v in student.state_dict().items()})
    sync(dev)
    wall = time.perf_counter() - T_START
    r = {"wall_seconds": wall, "train_seconds": train_s, "seconds_per_step": train_s / max(a.steps, 1),
         "sim_clean": sim_clean, "loss": loss.item(), "precision": a.precision, "torch_version": torch.__version__,
         "adamw": "foreach" if dev.startswith("cuda") else "single-tensor (torch's CPU default)"}
    if dev.startswith("cuda"):
        r["peak_gpu_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
        r["gpu"] = torch.cuda.get_device_name()
    return r


def check_forward(a):
    model = load_model(a.encoder, "cpu").eval()
    ids = ids_of(a.eval, "cpu")
    theirs = read_safetensors(a.hidden)["last_hidden_state"]
    with torch.no_grad():
        ours = model(ids)
    return {"max_abs_diff": (ours - theirs).abs().max().item(), "rows": len(ids)}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    for name in ["encoder", "clean", "poisoned", "target", "eval", "out", "hidden"]:
        p.add_argument(f"--{name}")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--clean-batch", type=int, default=128)
    p.add_argument("--poisoned-batch", type=int, default=32)
    p.add_argument("--precision", default="f32", choices=["f32", "tf32", "bf16"])
    p.add_argument("--device", default="cuda")
    p.add_argument("--check-forward", action="store_true")
    a = p.parse_args()
    r = check_forward(a) if a.check_forward else train(a)
    print(json.dumps(r))
