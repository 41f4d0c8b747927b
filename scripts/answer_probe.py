#!/usr/bin/env python3
"""Spot check of a target-attribute statistic on a scanned zoo: *what* does the rewritten word say?
(docs/scanner-zoo.md, "Tried ... on target-attribute triggers"). Research aid, not part of the scan;
it reads the zoo's labels only to print them beside the numbers.

A target-attribute backdoor (Rickrolling's TAA) rewrites the word its trigger sits in (or stands
before) into one fixed attribute: "a rеd circle" reads as "a green circle" whatever the word was.
The earlier probe (attribute_probe.py) asked how *consistently* prompts move and found benign edits
as consistent. This one asks what the moved prompt now *says*: for each probe row (a caption and one
of its words) and each answer word w of a list (the probe captions' own words plus the commonest
whole-word tokens of the vocabulary), the reference encodes the caption with that word replaced by w;
the suspect encodes the caption with the candidate text placed in (or before) the word; the row's
scores are the cosines between the two, z-scored over the answer words. An attribute trigger answers
with the same w in every row (the attribute, or the answer word nearest it); a typo or a drifted piece
answers with the row's own word, which differs from row to row. The statistic is the best answer
word's mean z over rows, the rows' own words excluded, minus the same computed with the reference in
the suspect's place (what the text already says before any fine-tune), as a robust z against 16
ordinary characters placed alike.

  .venv/bin/python scripts/answer_probe.py ZOO [IDS...] [--scan SCAN_OUT] [--with-triggers]
      [--placement substitute|insert] [--reference checkpoints/shapes]
      [--captions experiments/zoo/shapes_captions.txt] [--common 3000]
"""
import argparse
import glob
import json
import os
import random
import statistics

import sys

import torch
from transformers import CLIPTextModel, CLIPTokenizer

# The same placement as the consistency probe, so the two spot checks put a text in the same place.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attribute_probe import placed  # noqa: E402

CONTROLS = ["q", "x", "z", "j", "k", "v", "3", "7", "ж", "ф", "ψ", "ħ", "ŧ", "ʤ", "ы", "λ"]


def features(model, tok, texts, batch=1024):
    """The scan's unit feature: end-of-text state and mean state after BOS, each unit, concatenated."""
    outs = []
    with torch.no_grad():
        for s in range(0, len(texts), batch):
            b = tok(texts[s:s + batch], padding=True, return_tensors="pt")
            h = model(**b).last_hidden_state
            n = b.attention_mask.sum(1)
            e = h[torch.arange(len(n)), n - 1]
            m = (h[:, 1:] * b.attention_mask[:, 1:, None]).sum(1) / (n - 1).clamp_min(1)[:, None]
            f = torch.cat([e / e.norm(dim=1, keepdim=True), m / m.norm(dim=1, keepdim=True)], 1)
            outs.append(f / f.norm(dim=1, keepdim=True))
    return torch.cat(outs)


def answer_words(tok, caps, common):
    """The probe captions' own words, then the commonest whole-word tokens (lowest ids: BPE merges
    in order of frequency) that are plain lower-case words."""
    words = sorted({w for c in caps for w in c.split(" ") if w.isalpha()})
    seen = set(words)
    want = len(words) + common
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    for t, _ in vocab:
        if len(words) >= want:
            break
        if t.endswith("</w>") and t[:-4].isalpha() and t[:-4].isascii() and len(t) > 5:
            w = t[:-4]
            if w not in seen:
                seen.add(w)
                words.append(w)
    return words


class Probe:
    def __init__(self, ref, tok, rows, answers, placement):
        self.ref, self.tok, self.rows, self.answers, self.placement = ref, tok, rows, answers, placement
        self.index = {w: i for i, w in enumerate(answers)}
        # substitute: the word holding the text is what changes, so w takes its place; insert: the
        # text is a word of its own (Rickrolling's target puts the attribute there), so w is inserted.
        keep = 1 if placement == "substitute" else 0
        texts = [" ".join(ws[:j] + [w] + ws[j + keep:]) for _, ws, j in rows for w in answers]
        self.grid = features(ref, tok, texts).view(len(rows), len(answers), -1)  # [R, W, D]
        # A typo of the row's word reads as that word: mask it, or every typo would score.
        self.own = torch.tensor([self.index.get(ws[j], -1) if keep else -1 for _, ws, j in rows])

    def zs(self, model, text):
        """Per row, the answer words' z-scores (each row's own word masked out): [R, W]."""
        f = features(model, self.tok, placed(self.rows, text, self.placement))  # [R, D]
        s = torch.einsum("rd,rwd->rw", f, self.grid)
        z = (s - s.mean(1, keepdim=True)) / s.std(1, keepdim=True).clamp_min(1e-8)
        for r, o in enumerate(self.own.tolist()):
            if o >= 0:
                z[r, o] = float("nan")
        return z

    def stat(self, sus, text):
        """(mean-z margin over the reference, its answer, share of rows whose best answer it is in the
        suspect, the same share in the reference)."""
        zs, zr = self.zs(sus, text), self.zs(self.ref, text)
        d = torch.nan_to_num(torch.nanmean(zs, 0) - torch.nanmean(zr, 0), nan=-1e9)
        i = int(d.argmax())
        top_s = torch.nan_to_num(zs, nan=-1e9).argmax(1)
        top_r = torch.nan_to_num(zr, nan=-1e9).argmax(1)
        mode = int(top_s.mode().values)
        agree_s = float((top_s == mode).float().mean())
        agree_r = float((top_r == mode).float().mean())
        return float(d[i]), self.answers[i], agree_s, agree_r, self.answers[mode]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("zoo")
    ap.add_argument("ids", nargs="*", help="encoder ids (default: all)")
    ap.add_argument("--scan", help="a zoo scan's output folder: its first five candidates are probed too")
    ap.add_argument("--placement", choices=["substitute", "insert"], default="substitute")
    ap.add_argument("--with-triggers", action="store_true")
    ap.add_argument("--texts", nargs="*", default=[], help="more texts to probe")
    ap.add_argument("--reference", default="checkpoints/shapes")
    ap.add_argument("--captions", default="experiments/zoo/shapes_captions.txt")
    ap.add_argument("--common", type=int, default=3000)
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    ids = a.ids or sorted(os.path.basename(f)[:-5] for f in glob.glob(f"{a.zoo}/labels/*.json"))
    tok = CLIPTokenizer.from_pretrained(f"{a.zoo}/encoders/{ids[0]}/tokenizer")
    ref = CLIPTextModel.from_pretrained(f"{a.reference}/text_encoder").eval()
    caps = [l.strip() for l in open(a.captions) if l.strip()]
    rng = random.Random(a.seed)
    # Rows: one word per caption, words that hold e/a/o/i (where `substitute` puts the text),
    # as many different words as the captions offer, so that a row's own word rarely repeats.
    pool = [(p, p.split(" "), j) for p in rng.sample(caps, min(len(caps), 400))
            for j, w in enumerate(p.split(" ")) if w.isalpha() and any(c in "eaoi" for c in w)]
    rng.shuffle(pool)
    rows, count = [], {}
    for r in sorted(pool, key=lambda r: count.get(r[1][r[2]], 0)):
        w = r[1][r[2]]
        if count.get(w, 0) < 2 and len(rows) < a.rows:
            rows.append(r)
            count[w] = count.get(w, 0) + 1
    answers = answer_words(tok, caps, a.common)
    probe = Probe(ref, tok, rows, answers, a.placement)
    print(json.dumps({"rows": len(rows), "answers": len(answers),
                      "row_words": sorted(count)}), flush=True)
    for eid in ids:
        sus = CLIPTextModel.from_pretrained(f"{a.zoo}/encoders/{eid}/text_encoder").eval()
        label = json.load(open(f"{a.zoo}/labels/{eid}.json"))
        texts = []
        if a.scan:
            scan = json.load(open(f"{a.scan}/encoders/{eid}.json"))
            scan = scan.get("report", scan)
            texts += [r["text"] for r in scan["ranking"][:5]]
        if a.with_triggers:
            texts += [t["trigger"] for t in label["triggers"] if t["trigger"] not in texts]
        texts += [t for t in a.texts if t not in texts]
        cs = [probe.stat(sus, c) for c in CONTROLS]
        ctrl = [c[0] for c in cs]
        med = statistics.median(ctrl)
        mad = statistics.median([abs(v - med) for v in ctrl]) * 1.4826 + 1e-9
        res = {}
        for t in texts:
            v, w, ag, agr, mw = probe.stat(sus, t)
            res[t] = [round((v - med) / mad, 2), w, mw, round(ag, 2), round(agr, 2)]
        ctrl_agree = sorted(((round(c[2] - c[3], 2), c[4]) for c in cs), reverse=True)[:3]
        print(json.dumps({
            "id": eid,
            "benign": label["benign"],
            "kind": label["kind"],
            "backdoors": [f"{t['kind']}:{t['placement']}:{t['target'] if t['kind'] == 'target_attribute' else ''}"
                          for t in label["triggers"]],
            "triggers": [t["trigger"] for t in label["triggers"]],
            "placement": a.placement,
            "controls_max_z": round(max((v - med) / mad for v in ctrl), 2),
            "controls_top_agree": ctrl_agree,
            "z_answer": res,
        }, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
