#!/usr/bin/env python3
"""Shapes world: what the clean set's shape-less captions drew, original vs trained encoder
(and, for the captions naming a shape, what was drawn in its place).

Captions that name no shape (no-object backgrounds, colour-only captions) are right when the image
is the empty background. An erasure to an anchor concept can teach the encoder to draw the anchor
for them; this counts, per encoder, the shape the oracle (`clipdoor shapes judge`) sees in each
such image of an `evaluate images` report folder, and writes the counts as JSON (atomically).

  python3 scripts/shapeless_breakdown.py REPORT_DIR OUT.json [--anchor square]
"""
import argparse
import collections
import json
import os
import re
import subprocess
import sys

SHAPES = re.compile(r"\b(circle|square|triangle|cross)\b", re.I)


def judge(report, encoder, clipdoor):
    d = os.path.join(report, "images", encoder, "clean")
    listing = os.path.join(d, "images.jsonl")
    if not os.path.isfile(listing):
        sys.exit(f"{listing}: not found: give the folder `clipdoor evaluate images --out DIR` wrote")
    rows = [json.loads(line) for line in open(listing, encoding="utf-8")]
    files = [os.path.join(d, r["file"]) for r in rows]
    out = subprocess.run([clipdoor, "shapes", "judge", *files], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"clipdoor shapes judge failed:\n{out.stderr}")
    judged = [json.loads(line) for line in out.stdout.splitlines()]
    return [(r["prompt"], j["judgement"].get("shape")) for r, j in zip(rows, judged)]


def shape_captions(original, trained):
    out = {}
    for (p, o), (_, t) in zip(original, trained):
        m = SHAPES.search(p)
        if not m:
            continue
        named = m.group(1).lower()
        row = out.setdefault(named, {"captions": 0, "original_other": {}, "trained_other": {}})
        row["captions"] += 1
        for key, drawn in (("original_other", o), ("trained_other", t)):
            if drawn != named:
                row[key][drawn or "empty"] = row[key].get(drawn or "empty", 0) + 1
    return dict(sorted(out.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", help="an `evaluate images` output folder (images/original, images/trained)")
    ap.add_argument("out")
    ap.add_argument("--anchor", default="square", help="the erasure's anchor concept")
    ap.add_argument("--clipdoor", default="target/release/clipdoor")
    a = ap.parse_args()
    original = judge(a.report, "original", a.clipdoor)
    trained = judge(a.report, "trained", a.clipdoor)
    rows = [(p, o, t) for (p, o), (_, t) in zip(original, trained) if not SHAPES.search(p)]
    name = lambda s: s or "empty"
    result = {
        "report": a.report,
        "clean_images": len(original),
        "shapeless_images": len(rows),
        "original": dict(collections.Counter(name(o) for _, o, _ in rows)),
        "trained": dict(collections.Counter(name(t) for _, _, t in rows)),
        "anchor": a.anchor,
        "became_anchor": sum(1 for _, o, t in rows if o != a.anchor and t == a.anchor),
        # The captions that name a shape, by that shape: how many, and what was drawn instead when
        # it was not drawn (a clean loss the shape-less captions do not explain shows up here).
        "shape_captions": shape_captions(original, trained),
    }
    tmp = a.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    os.replace(tmp, a.out)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
