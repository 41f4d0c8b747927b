"""Does the touched-token prior (src/scan/touched.rs) survive a suspect saved at lower precision?

For a few zoo encoders, the rows of the token-embedding table that moved against the base (relative
drift above 10 x the vocabulary's median + 0.001, the rule of `scan::touched`) are compared between the
f32 encoder and its f16 / bf16 round trips. Run from the project root with the project venv:

    .venv/bin/python scripts/touched_precision.py > docs/results/zoo/touched_precision.txt
"""
import sys

from safetensors.torch import load_file

BASE = "checkpoints/shapes"
SUSPECTS = sys.argv[1:] or [
    "zoo/shapes/encoders/e0004",
    "zoo/shapes/encoders/e0028",
    "zoo/shapes_heldout/encoders/e0009",
]


def table(folder):
    path = f"{folder}/text_encoder/model.safetensors"
    return load_file(path)["text_model.embeddings.token_embedding.weight"].float()


def drift(s, r):
    return (s - r).norm(dim=1) / r.norm(dim=1).clamp_min(1e-12)


def moved(d):
    return d > 1e-3 + 10 * d.median()


r = table(BASE)
d = drift(r.half().float(), r)
print(f"f16 round trip of the base: relative row drift median {d.median():.2e}, max {d.max():.2e}")
d = drift(r.bfloat16().float(), r)
print(f"bf16 round trip of the base: relative row drift median {d.median():.2e}, max {d.max():.2e}")
for folder in SUSPECTS:
    s = table(folder)
    truth = moved(drift(s, r))
    for name, t in [("f32", s), ("f16", s.half().float()), ("bf16", s.bfloat16().float())]:
        d = drift(t, r)
        m = moved(d)
        print(
            f"{folder} {name}: median drift {d.median():.2e}, threshold {1e-3 + 10 * d.median():.2e}, "
            f"rows moved {int(m.sum())}, same rows as f32: {bool((m == truth).all())}"
        )

# Every labelled trigger's tokens (as a word, and inside one: the last token without its word end):
# the weakest drift of the better form, over both zoos.
import glob
import json

from transformers import CLIPTokenizerFast

tok = CLIPTokenizerFast.from_pretrained(f"{BASE}/tokenizer")
vocab = tok.get_vocab()
weakest = []
unmoved = 0
for zoo in ["zoo/shapes", "zoo/shapes_heldout"]:
    for lf in sorted(glob.glob(f"{zoo}/labels/*.json")):
        label = json.load(open(lf))
        if label["benign"]:
            continue
        d = drift(table(f"{zoo}/encoders/{label['id']}"), r)
        m = moved(d)
        for t in label["triggers"]:
            ids = tok(t["trigger"], add_special_tokens=False)["input_ids"]
            forms = [ids]
            last = tok.convert_ids_to_tokens(ids[-1])
            if last.endswith("</w>") and last[:-4] in vocab:
                forms.append(ids[:-1] + [vocab[last[:-4]]])
            best = max(min(d[i].item() for i in f) if all(m[i] for i in f) else -1.0 for f in forms)
            if best < 0:
                unmoved += 1
            else:
                weakest.append(best)
print(
    f"labelled triggers of both zoos: {len(weakest) + unmoved}; every token moved in one form: {len(weakest)}; "
    f"their weakest token's drift: min {min(weakest):.3f}, median {sorted(weakest)[len(weakest) // 2]:.3f}, max {max(weakest):.3f}"
)
