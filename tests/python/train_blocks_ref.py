"""PyTorch / TensorBoard references for tests/suite/train_blocks.rs.

Usage:
  train_blocks_ref.py adamw OUT_DIR      AdamW on a small MLP with fixed gradients and a MultiStepLR
  train_blocks_ref.py adamw_fused OUT_DIR  the same with AdamW(fused=True) (runs on CPU too), and runs
                                         that switch implementation after RESUME_AT steps
  train_blocks_ref.py clip OUT_DIR       clip_grad_norm_ (foreach=False) on fixed gradients
  train_blocks_ref.py lr OUT_DIR         learning-rate sequences of torch/transformers schedulers
  train_blocks_ref.py tb LOGDIR          what TensorBoard's own readers see in LOGDIR (JSON on stdout)
"""
import glob
import json
import os
import sys

import torch
from safetensors.torch import save_file

STEPS = 12
RESUME_AT = 5


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(7, 16), torch.nn.GELU(), torch.nn.Linear(16, 5)
    )


def named(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def make_grads(params):
    gen = torch.Generator().manual_seed(1)
    # Gradients of mixed scale, so that bias correction and eps both matter.
    return {
        f"{s}.{n}": torch.randn(p.shape, generator=gen) * (10.0 ** (s % 3 - 2))
        for s in range(STEPS)
        for n, p in params.items()
    }


def make_opt(params, fused):
    kind = {"fused": True} if fused else {"foreach": False}
    return torch.optim.AdamW(
        params.values(), lr=3e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, **kind
    )


def run(opt, sched, params, grads, steps, lrs=None):
    for s in steps:
        for n, p in params.items():
            p.grad = grads[f"{s}.{n}"].clone()
        if lrs is not None:
            lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()


def schedule(opt):
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[4, 8, 8], gamma=0.5)


def save_state(opt, params, path):
    state = {}
    for n, p in params.items():
        st = opt.state[p]
        state[f"exp_avg.{n}"] = st["exp_avg"]
        state[f"exp_avg_sq.{n}"] = st["exp_avg_sq"]
    save_file(state, path)


def adamw(out, fused=False):
    model = mlp()
    params = dict(model.named_parameters())
    save_file(named(model), f"{out}/init.safetensors")
    grads = make_grads(params)
    save_file(grads, f"{out}/grads.safetensors")
    opt = make_opt(params, fused)
    sched = schedule(opt)
    lrs = []
    run(opt, sched, params, grads, range(STEPS), lrs)
    save_file(named(model), f"{out}/final.safetensors")
    save_state(opt, params, f"{out}/state.safetensors")
    save_file({"lrs": torch.tensor(lrs, dtype=torch.float64)}, f"{out}/lrs.safetensors")


def adamw_fused(out):
    adamw(out, fused=True)
    # RESUME_AT steps with one implementation, then a fresh optimiser of the other one takes over the
    # moments and steps (as clipdoor's state file holds them: the step as a number) and finishes.
    for first, second in [("single", "fused"), ("fused", "single")]:
        model = mlp()
        params = dict(model.named_parameters())
        grads = make_grads(params)
        opt = make_opt(params, first == "fused")
        sched = schedule(opt)
        run(opt, sched, params, grads, range(RESUME_AT))
        taken = make_opt(params, second == "fused")
        for p in params.values():
            st = opt.state[p]
            taken.state[p] = {
                "step": torch.tensor(float(st["step"]), dtype=torch.float32),
                "exp_avg": st["exp_avg"].clone(),
                "exp_avg_sq": st["exp_avg_sq"].clone(),
            }
        # The scheduler continues where the first one was.
        taken.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
        sched2 = schedule(taken)
        sched2.load_state_dict(sched.state_dict())
        run(taken, sched2, params, grads, range(RESUME_AT, STEPS))
        save_file(named(model), f"{out}/switch_{first}_{second}.safetensors")


def clip(out):
    gen = torch.Generator().manual_seed(2)
    shapes = {"a": (16, 7), "b": (16,), "c": (5, 16), "d": ()}
    grads = {n: torch.randn(s, generator=gen) for n, s in shapes.items()}
    result = {}
    for label, max_norm in [("clipped", 1.0), ("unclipped", 1e3)]:
        params = [torch.zeros(s, requires_grad=True) for s in shapes.values()]
        for p, g in zip(params, grads.values()):
            p.grad = g.clone()
        total = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False)
        result[f"{label}.total"] = total.reshape(1)
        for n, p in zip(shapes, params):
            result[f"{label}.{n}"] = p.grad
    save_file({**{f"grad.{n}": g for n, g in grads.items()}, **result}, f"{out}/clip.safetensors")


def lr(out):
    from transformers.optimization import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_cosine_with_min_lr_schedule_with_warmup,
    )

    def run(make, steps):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-4)
        sched = make(opt)
        lrs = []
        for _ in range(steps):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return torch.tensor(lrs, dtype=torch.float64)

    ms = torch.optim.lr_scheduler.MultiStepLR
    seqs = {
        "rickrolling_tpa": run(lambda o: ms(o, milestones=[75], gamma=0.1), 100),
        "multistep_repeated": run(lambda o: ms(o, milestones=[3, 7, 7, 20], gamma=0.3), 30),
        "warmup_cosine": run(lambda o: get_cosine_schedule_with_warmup(o, 10, 100), 110),
        "warmup_cosine_min": run(
            lambda o: get_cosine_with_min_lr_schedule_with_warmup(o, 7, 50, min_lr_rate=0.1), 50
        ),
        "warmup_constant": run(lambda o: get_constant_schedule_with_warmup(o, 5), 20),
    }
    save_file(seqs, f"{out}/lrs.safetensors")


def tb(logdir):
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2

    legacy = ea.EventAccumulator(logdir, size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    legacy.Reload()
    tags = legacy.Tags()
    scalars = {t: [[e.step, e.value] for e in legacy.Scalars(t)] for t in tags["scalars"]}
    texts = {}
    for t in tags["tensors"]:
        texts[t] = [
            [e.step, [s.decode("utf-8") for s in e.tensor_proto.string_val]]
            for e in legacy.Tensors(t)
        ]

    # What the TensorBoard server itself uses (plugins find their tags through the metadata).
    server = pea.EventAccumulator(logdir, size_guidance={"tensors": 0})
    server.Reload()
    plugin_tags = {}
    for plugin in ("scalars", "text"):
        try:
            plugin_tags[plugin] = sorted(server.PluginTagToContent(plugin).keys())
        except KeyError:  # no tag of that plugin
            pass

    # Per file: how many records read cleanly, and whether each re-encodes to the same bytes
    # (our hand-written protobuf is canonical).
    files = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        records = list(RawEventFileLoader(path).Load())
        canonical = all(
            event_pb2.Event.FromString(r).SerializeToString() == r for r in records
        )
        first = event_pb2.Event.FromString(records[0]).file_version if records else None
        files[os.path.basename(path)] = {
            "records": len(records), "canonical": canonical, "file_version": first,
        }
    print(json.dumps({"scalars": scalars, "texts": texts, "plugin_tags": plugin_tags, "files": files}))


if __name__ == "__main__":
    mode, path = sys.argv[1], sys.argv[2]
    {"adamw": adamw, "adamw_fused": adamw_fused, "clip": clip, "lr": lr, "tb": tb}[mode](path)
