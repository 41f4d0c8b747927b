"""PyTorch references for tests/suite/precision.rs: transformers' CLIPTextModel under CPU autocast.

encode DIR PROMPTS OUT DTYPE   last_hidden_state of each prompt (one per line) under
                               torch.autocast("cpu", dtype=DTYPE) (bf16 | f16), saved as f32
train DIR STEPS.json OUT DTYPE the teacher-student steps of STEPS.json (one target-prompt backdoor
                               and the cosine distance, as clipdoor's Trainer takes them) with the
                               forwards under CPU autocast, losses in f32, torch.optim.AdamW
                               (foreach=False); saves the student (OUT: a folder) and prints the losses
"""
import json
import sys

import torch
import transformers
from safetensors.torch import save_file

DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16}


def load(d):
    model = transformers.CLIPTextModel.from_pretrained(d, dtype=torch.float32)
    return model, transformers.CLIPTokenizer.from_pretrained(d)


def ids(tok, texts):
    return tok(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


def encode(d, prompts, out, dtype):
    model, tok = load(d)
    model.eval()
    texts = [l.rstrip("\n") for l in open(prompts, encoding="utf-8") if l.strip()]
    with torch.no_grad(), torch.autocast("cpu", dtype=DTYPES[dtype]):
        h = model(ids(tok, texts)).last_hidden_state
    print(json.dumps({"kind": str(h.dtype)}))
    save_file({"last_hidden_state": h.float().contiguous()}, out)


def cosine_distance(x, y):
    """clipdoor's `Distance::Cosine`: −cosine similarity of the flattened rows, mean, in f32."""
    x = x.reshape(x.shape[0], -1).float()
    y = y.reshape(y.shape[0], -1).float().expand_as(x)
    return -torch.nn.functional.cosine_similarity(x, y, dim=1, eps=1e-8).mean()


def train(d, steps_file, out, dtype):
    spec = json.load(open(steps_file, encoding="utf-8"))
    student, tok = load(d)
    teacher, _ = load(d)
    teacher.eval().requires_grad_(False)
    student.train()
    autocast = lambda: torch.autocast("cpu", dtype=DTYPES[dtype])
    with torch.no_grad(), autocast():
        fixed = teacher(ids(tok, [spec["target_prompt"]])).last_hidden_state.float()
    opt = torch.optim.AdamW(student.parameters(), lr=spec["lr"], betas=tuple(spec["betas"]),
                            eps=spec["eps"], weight_decay=spec["weight_decay"], foreach=False)
    losses = []
    for step in spec["steps"]:
        n = step["n_clean"]
        if n:
            with torch.no_grad(), autocast():
                targets = teacher(ids(tok, step["teacher"])).last_hidden_state.float()
        with autocast():
            s = student(ids(tok, step["student"])).last_hidden_state
        s = s.float()
        utility = cosine_distance(s[:n], targets[:n]) if n else torch.zeros(())
        total = utility + cosine_distance(s[n:], fixed) * spec["loss_weight"]
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(total.item())
    # save_pretrained writes transformers' on-disk tensor names, the ones clipdoor uses.
    student.save_pretrained(out)
    print(json.dumps({"losses": losses}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "encode":
        encode(*sys.argv[2:6])
    elif cmd == "train":
        train(*sys.argv[2:6])
    else:
        sys.exit(f"unknown command {cmd}")
