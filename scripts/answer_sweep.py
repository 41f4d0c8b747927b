#!/usr/bin/env python3
"""Spot check: can "what does the inserted text say" *find* a target-attribute trigger, not only
confirm one? (docs/scanner-zoo.md, "Tried ... on target-attribute triggers"). Research aid, not part
of the scan; it reads the zoo's labels only to print the triggers' ranks.

Every character of a broad Unicode set (letters, marks, digits, symbols, punctuation and format
characters of the BMP outside the CJK and Hangul blocks, mathematical alphanumerics, emoji, a few
historic scripts) is inserted as a word of its own before a word of R probe captions. For each
row the reference encodes the caption with each answer word w (the captions' own words plus the
commonest whole-word tokens) in that place; the suspect encodes the caption with the character
there. A row's answer is the w whose reference encoding is nearest (cosine of the scan's unit
feature, z-scored over the answer words). An attribute backdoor answers with one w in most rows;
an ordinary character with none in particular. Score: the share of rows answering the suspect's
most frequent answer, minus the share of rows where the reference gives that answer for the same
character (what the character already says before any fine-tune).

  .venv/bin/python scripts/answer_sweep.py ZOO IDS... [--rows 24] [--common 1000]
"""
import argparse
import json
import os
import random
import sys
import time
import unicodedata

import torch
from transformers import CLIPTextModel, CLIPTokenizer

sys.path.insert(0, os.path.dirname(__file__))
from answer_probe import answer_words, features  # noqa: E402

RANGES = [(0x00A1, 0x2FFF), (0x3000, 0x33FF), (0xA000, 0xABFF), (0xFB00, 0xFFFD),
          (0x10000, 0x1018F), (0x10300, 0x1034F), (0x11000, 0x111FF), (0x1D400, 0x1D7FF),
          (0x1F000, 0x1FAFF), (0xE0000, 0xE007F)]


def charset():
    out = []
    for lo, hi in RANGES:
        for cp in range(lo, hi + 1):
            c = chr(cp)
            cat = unicodedata.category(c)
            if cat[0] in "LMNSP" or cat == "Cf":
                out.append(c)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("zoo")
    ap.add_argument("ids", nargs="+")
    ap.add_argument("--reference", default="checkpoints/shapes")
    ap.add_argument("--captions", default="experiments/zoo/shapes_captions.txt")
    ap.add_argument("--common", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="only the first N characters (smoke)")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    tok = CLIPTokenizer.from_pretrained(f"{a.zoo}/encoders/{a.ids[0]}/tokenizer")
    ref = CLIPTextModel.from_pretrained(f"{a.reference}/text_encoder").eval()
    caps = [l.strip() for l in open(a.captions) if l.strip()]
    rng = random.Random(a.seed)
    rows = []
    for p in rng.sample(caps, a.rows):
        ws = p.split(" ")
        rows.append((ws, rng.randrange(len(ws) + 1)))
    answers = answer_words(tok, caps, a.common)
    grid = features(ref, tok, [" ".join(ws[:j] + [w] + ws[j:]) for ws, j in rows for w in answers])
    grid = grid.view(len(rows), len(answers), -1)
    chars = charset()
    if a.limit:
        chars = chars[:a.limit]
    texts = [" ".join(ws[:j] + [c] + ws[j:]) for c in chars for ws, j in rows]

    def zs(f, s):
        sim = torch.einsum("crd,rwd->crw", f[s:s + 256], grid)
        return (sim - sim.mean(2, keepdim=True)) / sim.std(2, keepdim=True).clamp_min(1e-8)

    def tops(model):
        f = features(model, tok, texts).view(len(chars), len(rows), -1)
        return torch.cat([zs(f, s).argmax(2) for s in range(0, len(chars), 256)]), f  # [C, R]

    t0 = time.time()
    top_r, _ = tops(ref)
    print(json.dumps({"chars": len(chars), "rows": len(rows), "answers": len(answers),
                      "reference_s": round(time.time() - t0, 1)}), flush=True)
    for eid in a.ids:
        t0 = time.time()
        sus = CLIPTextModel.from_pretrained(f"{a.zoo}/encoders/{eid}/text_encoder").eval()
        top_s, f = tops(sus)
        mode = top_s.mode(1).values  # [C]
        agree_s = (top_s == mode[:, None]).float().mean(1)
        agree_r = (top_r == mode[:, None]).float().mean(1)
        # Ties (one row is 1/R) broken by how far the answer stands out: its mean z over the rows.
        zmode = torch.cat([zs(f, s).gather(2, mode[s:s + 256, None, None].expand(-1, len(rows), 1))
                           .squeeze(2).mean(1) for s in range(0, len(chars), 256)])
        score = agree_s - agree_r + 1e-3 * zmode.clamp(-50, 50)
        order = torch.argsort(score, descending=True, stable=True)
        rank = {chars[int(i)]: k + 1 for k, i in enumerate(order)}
        label = json.load(open(f"{a.zoo}/labels/{eid}.json"))
        trig = []
        for t in label["triggers"]:
            ranks = [rank[c] for c in t["trigger"] if c in rank]
            trig.append({"trigger": t["trigger"], "kind": t["kind"], "placement": t["placement"],
                         "target": t["target"] if t["kind"] == "target_attribute" else "",
                         "best_char_rank": min(ranks) if ranks else None})
        top = [(chars[int(i)], answers[int(mode[i])], round(float(score[i]), 2)) for i in order[:8]]
        # One candidate per answer: each backdoor shows as one answer, and the siblings of a trigger
        # (characters sharing its byte tokens) answer alike, so they would fill the first places.
        distinct, seen = [], set()
        for i in order:
            w = answers[int(mode[i])]
            if w not in seen:
                seen.add(w)
                distinct.append((chars[int(i)], w, round(float(score[i]), 2)))
            if len(distinct) == 10:
                break
        for t in trig:
            cs = [c for c in t["trigger"] if c in rank]
            if cs:
                c = min(cs, key=lambda c: rank[c])
                i = chars.index(c)
                t["answer"] = answers[int(mode[i])]
                t["score"] = round(float(score[i]), 2)
                t["answer_rank"] = next((k + 1 for k, d in enumerate(distinct) if d[1] == t["answer"]), None)
        attrs = {t["target"] for t in label["triggers"] if t["kind"] == "target_attribute"}
        targets = " ".join(t["target"] for t in label["triggers"] if t["kind"] == "target_prompt")
        first = answers[int(mode[order[0]])]
        print(json.dumps({"id": eid, "benign": label["benign"], "kind": label["kind"],
                          "backdoor_kinds": sorted({t["kind"] for t in label["triggers"]}),
                          "top_answer": first, "top_answer_is_attribute": first in attrs,
                          "top_answer_in_target_prompt": first in targets.split(" "),
                          "top_score": round(float(score[order[0]]), 2), "top": top,
                          "distinct": distinct,
                          "triggers": trig, "seconds": round(time.time() - t0, 1)},
                         ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
