#!/usr/bin/env python3
"""Recipe search for the shapes-world model (docs/shapes-world.md, "How the recipe was found").

A prototype of `clipdoor shapes train` in PyTorch + diffusers, same data distribution (labels,
captions and renderer of src/shapes), same UNet class, same frozen tiny CLIP encoder, with switches
for the ideas that were measured: prediction type and loss weighting, heads, the pooled-text time
embedding, clean attribute vectors instead of the encoder (`--oracle_text`), joint training of the
encoder (`--train_te`), a shorter context (`--ctx_len`), the encoder's own text stage
(`--te_pretrain`), and a UNet started from given weights (`--init`). Every `--eval_every` steps it
samples the 48 "a {colour} {shape}" prompts (DDIM 20 steps, guidance 4) and judges them with
`clipdoor shapes judge` (the Rust oracle), and judges one-step x0 estimates of rendered images.

  clipdoor init-encoder --arch tiny --seed 5 --out /tmp/tiny5     # the shapes world's random encoder
  .venv/bin/python scripts/shapes_prototype.py --encoder /tmp/tiny5 --out /tmp/proto_v \
      --pred v --addtext --te_pretrain 400 --steps 2000 --eval_every 1000 --threads 1

Not part of the product: clipdoor's trainer is the Rust one; this script is how its recipe was chosen.
"""
import argparse, json, math, os, subprocess, sys, time, random
import numpy as np, torch, torch.nn.functional as F
from transformers import CLIPTextModel, CLIPTokenizer
from diffusers import UNet2DConditionModel, DDIMScheduler

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("--pred", default="v", choices=["v", "epsilon", "sample"])
p.add_argument("--channels", default="16,32,64")
p.add_argument("--layers", type=int, default=1)
p.add_argument("--down", default="DownBlock2D,CrossAttnDownBlock2D,CrossAttnDownBlock2D")
p.add_argument("--heads", type=int, default=1)
p.add_argument("--groups", type=int, default=8)
p.add_argument("--addtext", action="store_true")
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--bs", type=int, default=32)
p.add_argument("--steps", type=int, default=2000)
p.add_argument("--minutes", type=float, default=1e9)
p.add_argument("--snr_gamma", type=float, default=5.0)
p.add_argument("--weighting", default="minsnr", choices=["minsnr", "x0", "p2", "trunc", "truncmin", "none"])
p.add_argument("--ema", type=float, default=0.995)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--eval_every", type=int, default=500)
p.add_argument("--per_pair", type=int, default=2)
p.add_argument("--guidance", type=float, default=4.0)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--oracle_text", action="store_true")
p.add_argument("--ctx_len", type=int, default=77)
p.add_argument("--te_pretrain", type=int, default=0)
p.add_argument("--init", default="")
p.add_argument("--train_te", default="")  # "", "layers", "all"
p.add_argument("--encoder", required=True, help="a folder from `clipdoor init-encoder --arch tiny --seed 5`")
p.add_argument("--clipdoor", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "clipdoor"))
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed); random.seed(a.seed); np.random.seed(a.seed)
os.makedirs(a.out, exist_ok=True)

COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
          "purple": (150, 60, 190), "orange": (250, 140, 30)}
SHAPES = ["circle", "square", "triangle", "cross"]
SIZES = {"small": (5.0, 6.0), "large": (7.5, 9.0)}
POS = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]
BGS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}
GRID = [10.25, 16.0, 21.75]
TEMPL = ["{c} {s}", "{z} {c} {s}", "{c} {s} on a {b} background", "{z} {c} {s} on a {b} background",
         "{c} {s} {p}", "{z} {c} {s} {p}", "{c} {s} {p} on a {b} background", "{c} {s}, {b} background",
         "{z} {c} {s} {p}, {b} background"]

def phrase(pos):
    if pos in ("top", "bottom"): return "at the " + pos
    if pos in ("left", "right"): return "on the " + pos
    return "in the " + pos

def art(w): return "an" if w[0] in "aeiou" else "a"

def draw(rng):
    c = rng.choice(list(COLORS)); s = rng.choice(SHAPES); z = rng.choice(list(SIZES)); pi = rng.randrange(9)
    b = rng.choice(list(BGS)); lo, hi = SIZES[z]
    cx = GRID[pi % 3] + rng.uniform(-0.75, 0.75); cy = GRID[pi // 3] + rng.uniform(-0.75, 0.75)
    r = rng.uniform(lo, hi)
    t = rng.choice(TEMPL)
    body = t.replace("{c}", c).replace("{s}", s).replace("{z}", z).replace("{p}", phrase(POS[pi])).replace("{b}", b)
    k = rng.randrange(6)
    cap = body if k == 0 else (f"a picture of {art(body)} {body}" if k == 1 else (f"a drawing of {art(body)} {body}" if k == 2 else f"{art(body)} {body}"))
    lab = dict(color=list(COLORS).index(c), shape=SHAPES.index(s),
               size=(list(SIZES).index(z) + 1) if "{z}" in t else 0,
               pos=(pi + 1) if "{p}" in t else 0, bg=(list(BGS).index(b) + 1) if "{b}" in t else 0)
    return dict(color=c, shape=s, cx=cx, cy=cy, r=r, bg=b, caption=cap, lab=lab)

SS = 8
_sub = (torch.arange(32 * SS, dtype=torch.float32) + 0.5) / SS
YY, XX = torch.meshgrid(_sub, _sub, indexing="ij")

def render(items):
    n = len(items)
    cx = torch.tensor([i["cx"] for i in items]).view(n, 1, 1); cy = torch.tensor([i["cy"] for i in items]).view(n, 1, 1)
    r = torch.tensor([i["r"] for i in items]).view(n, 1, 1)
    dx = XX[None] - cx; dy = YY[None] - cy
    sid = torch.tensor([SHAPES.index(i["shape"]) for i in items]).view(n, 1, 1)
    circ = dx * dx + dy * dy <= r * r
    sq = (dx.abs() <= 0.9 * r) & (dy.abs() <= 0.9 * r)
    tri = (dy <= r) & (dy >= -r) & (dx.abs() <= (dy + r) / 2)
    arm = 0.38 * r
    cro = ((dx.abs() <= r) & (dy.abs() <= arm)) | ((dy.abs() <= r) & (dx.abs() <= arm))
    m = torch.where(sid == 0, circ, torch.where(sid == 1, sq, torch.where(sid == 2, tri, cro))).float()
    alpha = F.avg_pool2d(m[:, None], SS)  # [n,1,32,32]
    fg = torch.tensor([COLORS[i["color"]] for i in items], dtype=torch.float32).view(n, 3, 1, 1)
    bg = torch.tensor([BGS[i["bg"]] for i in items], dtype=torch.float32).view(n, 3, 1, 1)
    img = torch.round(bg * (1 - alpha) + fg * alpha)
    return img / 127.5 - 1

tok = CLIPTokenizer.from_pretrained(a.encoder)
te = CLIPTextModel.from_pretrained(a.encoder).eval()
cache = {}
_g = torch.Generator().manual_seed(99)
ORT = {w: torch.randn(64, generator=_g) for w in list(COLORS) + SHAPES + list(SIZES) + list(BGS) + ["top", "bottom", "left", "right", "center"]}
def oracle_ctx(cap):
    ws = [w for w in cap.replace(",", " ").split() if w in ORT]
    v = torch.zeros(77, 64)
    for i, w in enumerate(ws): v[i] = ORT[w]
    return v
def encode_grad(caps):
    ids = tok(caps, padding="max_length", max_length=a.ctx_len, truncation=True, return_tensors="pt").input_ids
    return te(ids).last_hidden_state
@torch.no_grad()
def encode(caps):
    if a.train_te: return encode_grad(caps)
    if a.oracle_text: return torch.stack([oracle_ctx(c) for c in caps])
    miss = [c for c in set(caps) if c not in cache]
    if miss:
        ids = tok(miss, padding="max_length", max_length=a.ctx_len, truncation=True, return_tensors="pt").input_ids
        h = te(ids).last_hidden_state
        for c, v in zip(miss, h): cache[c] = v
    return torch.stack([cache[c] for c in caps])

def pretrain_te(n):
    """Teach the encoder to summarise the caption's attributes in every state from the EOS on."""
    heads = torch.nn.ModuleDict({k: torch.nn.Linear(64, m) for k, m in
                                 dict(color=6, shape=4, size=3, pos=10, bg=4).items()})
    tparams = [p_ for n_, p_ in te.named_parameters() if "token_embedding" not in n_]
    for p_ in te.parameters(): p_.requires_grad_(False)
    for p_ in tparams: p_.requires_grad_(True)
    o = torch.optim.AdamW(tparams + list(heads.parameters()), lr=3e-3, weight_decay=0.0)
    r = random.Random(12345); t0 = time.time()
    for i in range(n):
        items = [draw(r) for _ in range(128)]
        ids = tok([it["caption"] for it in items], padding="max_length", max_length=a.ctx_len, truncation=True, return_tensors="pt").input_ids
        h = te(ids).last_hidden_state  # [B, L, 64]
        eos = (ids == 49407).int().argmax(1)
        mask = (torch.arange(ids.shape[1])[None] >= eos[:, None]).float()  # EOS and pads
        loss = 0; accs = {}
        for k, head in heads.items():
            y = torch.tensor([it["lab"][k] for it in items])
            logits = head(h)  # [B, L, m]
            ce = F.cross_entropy(logits.transpose(1, 2), y[:, None].expand(-1, ids.shape[1]), reduction="none")
            loss = loss + (ce * mask).sum() / mask.sum()
            accs[k] = (logits.argmax(-1) == y[:, None]).float().mul(mask).sum().item() / mask.sum().item()
        o.zero_grad(); loss.backward(); o.step()
        if (i + 1) % 50 == 0:
            print(f"te pretrain {i+1}: loss {loss.item():.3f}", {k: round(v, 3) for k, v in accs.items()}, f"{time.time()-t0:.0f}s", flush=True)
    for p_ in te.parameters(): p_.requires_grad_(False)
    cache.clear()
if a.te_pretrain: pretrain_te(a.te_pretrain)

ch = [int(x) for x in a.channels.split(",")]
down = a.down.split(",")
up = [d.replace("Down", "Up") for d in reversed(down)]
cfg = dict(sample_size=32, in_channels=3, out_channels=3, down_block_types=down, mid_block_type="UNetMidBlock2DCrossAttn",
           up_block_types=up, block_out_channels=ch, layers_per_block=a.layers, norm_num_groups=a.groups,
           cross_attention_dim=64, attention_head_dim=a.heads, act_fn="silu", flip_sin_to_cos=True, freq_shift=0)
if a.addtext:
    cfg.update(addition_embed_type="text", addition_embed_type_num_heads=4)
unet = UNet2DConditionModel(**cfg)
if a.init:
    from safetensors.torch import load_file
    sd = load_file(a.init); missing = unet.load_state_dict(sd, strict=False); print("init from", a.init, missing, flush=True)
nparam = sum(p.numel() for p in unet.parameters())
print("params", nparam, flush=True)
ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
params = list(unet.parameters())
if a.train_te:
    te.train(False)
    te_params = [p_ for n_, p_ in te.named_parameters() if a.train_te == "all" or "token_embedding" not in n_]
    for p_ in te.parameters(): p_.requires_grad_(False)
    for p_ in te_params: p_.requires_grad_(True)
    params += te_params
    print("te params", sum(p_.numel() for p_ in te_params), flush=True)
opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=1e-2)
betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
acp = torch.cumprod(1 - betas, 0)

sched_cfg = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 prediction_type={"v": "v_prediction"}.get(a.pred, a.pred), clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="trailing")

def judge_files(files):
    res = subprocess.run([a.clipdoor, "shapes", "judge", *files], capture_output=True, text=True)
    return [json.loads(l)["judgement"] for l in res.stdout.splitlines()]

def save_imgs(x, d):
    from PIL import Image
    os.makedirs(d, exist_ok=True)
    imgs = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    files = []
    for i, im in enumerate(imgs):
        f = os.path.join(d, f"{i:03d}.png"); Image.fromarray(im).save(f); files.append(f)
    return files

def onestep_eval(ev, step):
    r = random.Random(777); items = [draw(r) for _ in range(64)]
    x0 = render(items); caps = [f"{art(i['color'])} {i['color']} {i['shape']}" for i in items]
    ctx = encode(caps); g = torch.Generator().manual_seed(5); eps = torch.randn(x0.shape, generator=g)
    out = []
    for t in [200, 400, 600, 750]:
        ac = acp[t]; xt = ac.sqrt() * x0 + (1 - ac).sqrt() * eps
        with torch.no_grad(): o = ev(xt, torch.full((64,), t), ctx).sample
        x0h = {"v": ac.sqrt() * xt - (1 - ac).sqrt() * o, "epsilon": (xt - (1 - ac).sqrt() * o) / ac.sqrt(), "sample": o}[a.pred]
        js = judge_files(save_imgs(x0h, os.path.join(a.out, f"one{step}_{t}")))
        out.append(f"t{t}:{sum(j['shape'] == i['shape'] for j, i in zip(js, items)) / 64:.2f}")
    print("  onestep shape", " ".join(out), flush=True)

def sample_eval(step):
    ev = UNet2DConditionModel(**cfg); ev.load_state_dict(ema); ev.eval()
    onestep_eval(ev, step)
    sch = DDIMScheduler(**sched_cfg); sch.set_timesteps(20)
    prompts, want = [], []
    for c in COLORS:
        for s in SHAPES:
            for _ in range(a.per_pair):
                prompts.append(f"{art(c)} {c} {s}"); want.append((c, s))
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(len(prompts), 3, 32, 32, generator=g)
    ctx = torch.cat([encode([""] * len(prompts)), encode(prompts)])
    with torch.no_grad():
        for t in sch.timesteps:
            o = ev(torch.cat([x, x]), t, ctx).sample
            u, c_ = o.chunk(2)
            x = sch.step(u + a.guidance * (c_ - u), t, x).prev_sample
    imgs = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    d = os.path.join(a.out, f"s{step}"); os.makedirs(d, exist_ok=True)
    from PIL import Image
    files = []
    for i, im in enumerate(imgs):
        f = os.path.join(d, f"{i:03d}.png"); Image.fromarray(im).save(f); files.append(f)
    grid = np.concatenate([np.concatenate(list(imgs[r * 8:(r + 1) * 8]), 1) for r in range(len(imgs) // 8)], 0)
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(os.path.join(a.out, f"grid{step}.png"))
    res = subprocess.run([a.clipdoor, "shapes", "judge", *files], capture_output=True, text=True)
    col = sha = both = 0
    confusion = {}
    for line, (c, s) in zip(res.stdout.splitlines(), want):
        j = json.loads(line)["judgement"]
        ok_c = j["color"] == c; ok_s = j["shape"] == s
        col += ok_c; sha += ok_s; both += ok_c and ok_s
        confusion[(s, j["shape"])] = confusion.get((s, j["shape"]), 0) + 1
    n = len(want)
    print(f"EVAL step {step}: colour {col/n:.3f} shape {sha/n:.3f} both {both/n:.3f}", flush=True)
    print("  confusion", {f"{k[0]}->{k[1]}": v for k, v in sorted(confusion.items(), key=str)}, flush=True)

def weight(ac):
    """Per-item loss weight in the units of the chosen parametrisation, from a weight on the x0 error."""
    snr = ac / (1 - ac)
    if a.weighting == "none": return torch.ones_like(snr)
    base = {"epsilon": snr, "v": snr + 1, "sample": torch.ones_like(snr)}[a.pred]  # param-MSE = base * x0-MSE
    w_x0 = {"minsnr": torch.clamp(snr, max=a.snr_gamma), "x0": torch.ones_like(snr),
            "p2": snr / (1 + snr), "trunc": torch.clamp(snr, min=1.0), "truncmin": torch.clamp(snr, min=1.0, max=a.snr_gamma)}[a.weighting]
    return w_x0 / base

rng = random.Random(a.seed)
start = time.time(); losses = []
for step in range(a.steps):
    if time.time() - start > a.minutes * 60: break
    prog = step / a.steps
    lr = a.lr * (step + 1) / 100 if step < 100 else a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog)))
    for gp in opt.param_groups: gp["lr"] = lr
    items = [draw(rng) for _ in range(a.bs)]
    x0 = render(items)
    caps = ["" if rng.random() < 0.1 else i["caption"] for i in items]
    ctx = encode_grad(caps) if a.train_te else encode(caps)
    t = torch.randint(0, 1000, (a.bs,))
    ac = acp[t].view(-1, 1, 1, 1)
    eps = torch.randn_like(x0)
    xt = ac.sqrt() * x0 + (1 - ac).sqrt() * eps
    out = unet(xt, t, ctx).sample
    target = {"v": ac.sqrt() * eps - (1 - ac).sqrt() * x0, "epsilon": eps, "sample": x0}[a.pred]
    err = ((out - target) ** 2).mean((1, 2, 3))
    w = weight(ac.view(-1))
    loss = (err * w).mean()
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step()
    decay = min(a.ema, (1 + step) / (10 + step))
    with torch.no_grad():
        for k, v in unet.state_dict().items():
            ema[k].lerp_(v, 1 - decay) if v.dtype.is_floating_point else ema[k].copy_(v)
    losses.append(loss.item())
    if step < 100 and step % 5 == 0: print("loss", step, round(loss.item(), 3), flush=True)
    if (step + 1) % 100 == 0:
        print(f"step {step+1} loss {np.mean(losses[-100:]):.4f} {(time.time()-start)/(step+1):.3f}s/step", flush=True)
    if (step + 1) % a.eval_every == 0:
        sample_eval(step + 1)
torch.save(ema, os.path.join(a.out, "ema.pt")); torch.save(te.state_dict(), os.path.join(a.out, "te.pt"))
json.dump(cfg, open(os.path.join(a.out, "cfg.json"), "w"))
print("done", time.time() - start, flush=True)
