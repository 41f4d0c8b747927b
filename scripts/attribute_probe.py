#!/usr/bin/env python3
"""Spot check of a target-attribute statistic on a scanned zoo (docs/scanner-zoo.md, "Tried ... and
not kept"). Research aid, not part of the scan: it reads the zoo's labels to print them beside the
numbers.

A target-attribute (TAA) backdoor rewrites the word its trigger sits in (or stands before) into a
fixed attribute ("a rеd circle" -> "a green circle"). To global features that is as small a change as
a typo, so the scan's shift and collapse miss it. What a typo lacks is *consistency*: whatever word
the trigger sits in, the prompt moves to the same attribute. For a candidate text t, each of up to 48
(probe, word) pairs gets t placed in the word (in place of its first e/a/o/i: `substitute`) or before
it (`insert`); the residual r = f(x') - f_R(x without that word) (f: the scan's unit feature, end-of-
text state and mean state) is what the word-slot now contributes. The statistic is the mean pairwise
cosine of the suspect's residuals minus the reference's, as a robust z against 16 ordinary characters
placed alike. Printed for the first five candidates of each encoder's scan (and, with
--with-triggers, for the label's triggers: an oracle view of what the statistic could reach).

  .venv/bin/python scripts/attribute_probe.py ZOO SCAN_OUT [IDS...] [--placement substitute|insert]
      [--with-triggers] [--reference checkpoints/shapes] [--captions experiments/zoo/shapes_captions.txt]
"""
import argparse
import glob
import json
import os
import random
import statistics

import torch
from transformers import CLIPTextModel, CLIPTokenizer

CONTROLS = ["q", "x", "z", "j", "k", "v", "3", "7", "ж", "ф", "ψ", "ħ", "ŧ", "ʤ", "ы", "λ"]


def features(model, tok, texts):
    """The scan's unit feature: end-of-text state and mean state after BOS, each unit, concatenated."""
    with torch.no_grad():
        b = tok(texts, padding=True, return_tensors="pt")
        h = model(**b).last_hidden_state
    out = []
    for i in range(len(texts)):
        n = int(b.attention_mask[i].sum())
        e, mu = h[i, n - 1], h[i, 1:n].mean(0)
        f = torch.cat([e / e.norm(), mu / mu.norm()])
        out.append(f / f.norm())
    return torch.stack(out)


def pairwise_cos(m):
    m = m / m.norm(dim=1, keepdim=True).clamp_min(1e-8)
    g = m @ m.T
    n = len(m)
    return ((g.sum() - g.diag().sum()) / (n * n - n)).item()


def word_states(model, tok, texts, ends):
    """The last hidden state at each text's position `ends[i]` (the modified word's last token), unit."""
    with torch.no_grad():
        b = tok(texts, padding=True, return_tensors="pt")
        h = model(**b).last_hidden_state
    out = torch.stack([h[i, e] for i, e in enumerate(ends)])
    return out / out.norm(dim=1, keepdim=True)


def word_ends(tok, rows, xs, placement):
    """Where the rewritten word (the one holding the text, or the one after it) ends: BPE splits at
    spaces, so the prefix up to it tokenises as the start of the whole."""
    ends = []
    for (_, _, j), x in zip(rows, xs):
        prefix = " ".join(x.split(" ")[: j + (2 if placement == "insert" else 1)])
        ends.append(len(tok(prefix)["input_ids"]) - 2)
    return ends


def placed(rows, text, placement):
    out = []
    for _, words, j in rows:
        w = list(words)
        if placement == "insert":
            w.insert(j, text)
        else:
            k = next(i for i, c in enumerate(w[j]) if c in "eaoi")
            w[j] = w[j][:k] + text + w[j][k + 1:]
        out.append(" ".join(w))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("zoo")
    ap.add_argument("scan")
    ap.add_argument("ids", nargs="*", help="encoder ids (default: all)")
    ap.add_argument("--placement", choices=["substitute", "insert"], default="substitute")
    ap.add_argument("--with-triggers", action="store_true")
    ap.add_argument("--reference", default="checkpoints/shapes")
    ap.add_argument("--captions", default="experiments/zoo/shapes_captions.txt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--feature", choices=["prompt", "word", "first"], default="prompt",
                    help="prompt: residuals of the scan's feature; word: the state at the placed "
                         "word's last token, its consistency across pairs (suspect minus reference); "
                         "first: the same at the placed text's first token (insert only)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    ids = a.ids or sorted(os.path.basename(f)[:-5] for f in glob.glob(f"{a.zoo}/labels/*.json"))
    tok = CLIPTokenizer.from_pretrained(f"{a.zoo}/encoders/{ids[0]}/tokenizer")
    ref = CLIPTextModel.from_pretrained(f"{a.reference}/text_encoder").eval()
    caps = [l.strip() for l in open(a.captions) if l.strip()]
    rng = random.Random(a.seed)
    rows = [(p, p.split(" "), j) for p in rng.sample(caps, 16) for j, w in enumerate(p.split(" "))
            if any(c in "eaoi" for c in w)]
    random.Random(a.seed + 1).shuffle(rows)
    rows = rows[:48]
    without = features(ref, tok, [" ".join(w[:j] + w[j + 1:]) for _, w, j in rows])
    for eid in ids:
        sus = CLIPTextModel.from_pretrained(f"{a.zoo}/encoders/{eid}/text_encoder").eval()
        label = json.load(open(f"{a.zoo}/labels/{eid}.json"))
        scan = json.load(open(f"{a.scan}/encoders/{eid}.json"))
        scan = scan.get("report", scan)
        texts = [r["text"] for r in scan["ranking"][:5]]
        if a.with_triggers:
            texts += [t["trigger"] for t in label["triggers"] if t["trigger"] not in texts]

        def stat(t):
            xs = placed(rows, t, a.placement)
            if a.feature in ("word", "first"):
                ends = word_ends(tok, rows, xs, a.placement) if a.feature == "word" else [
                    len(tok(" ".join(x.split(" ")[:j]))["input_ids"]) - 1 for (_, _, j), x in zip(rows, xs)]
                return pairwise_cos(word_states(sus, tok, xs, ends)) - pairwise_cos(word_states(ref, tok, xs, ends))
            fs, fr = features(sus, tok, xs), features(ref, tok, xs)
            return pairwise_cos(fs - without) - pairwise_cos(fr - without)

        ctrl = [stat(c) for c in CONTROLS]
        med = statistics.median(ctrl)
        mad = statistics.median([abs(v - med) for v in ctrl]) * 1.4826 + 1e-9
        z = {t: (stat(t) - med) / mad for t in texts}
        print(json.dumps({
            "id": eid,
            "benign": label["benign"],
            "kind": label["kind"],
            "backdoors": [f"{t['kind']}:{t['placement']}" for t in label["triggers"]],
            "triggers": [t["trigger"] for t in label["triggers"]],
            "placement": a.placement,
            "feature": a.feature,
            "controls_max_z": round(max((v - med) / mad for v in ctrl), 2),
            "top5_max_z": round(max(z[t] for t in texts[:5]), 2),
            "z": {t: round(v, 2) for t, v in z.items()},
        }, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
