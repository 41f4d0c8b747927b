#!/usr/bin/env python3
"""The learned-word attack's images: the first N circles of SIZE from a shapes render, copied into OUT.

The red team's `embedding` attack (CCE) learns its word from a few images of the concept; the
scripts take them from a render the attacks never saw (`clipdoor shapes render --seed S`), so a
render seed picks another word. scripts/word_attack.sh (the red team scripts' word attack) uses this.

  python3 scripts/word_images.py RENDER_DIR OUT [--n 4] [--size large]
"""
import argparse
import json
import os
import shutil
import sys

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("render")
ap.add_argument("out")
ap.add_argument("--n", type=int, default=4)
ap.add_argument("--size", default="large")
a = ap.parse_args()
labels = os.path.join(a.render, "labels.jsonl")
if not os.path.isfile(labels):
    sys.exit(f"{labels}: not found: give the folder `clipdoor shapes render --out DIR` wrote")
rows = [r for r in map(json.loads, open(labels))
        if not r.get("no_object") and r["shape"] == "circle" and r["size"] == a.size][: a.n]
if len(rows) < a.n:
    sys.exit(f"{a.render}: only {len(rows)} {a.size} circles: render more images (--n)")
os.makedirs(a.out, exist_ok=True)
for r in rows:
    shutil.copy(os.path.join(a.render, r["file"]), a.out)
