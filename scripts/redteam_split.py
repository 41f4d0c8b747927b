#!/usr/bin/env python3
"""The red team's test split: prompts no recipe was chosen on.

The robust-erasure recipes of docs/attacks.md were compared on the 16 prompts of
experiments/redteam/circle_*.txt (the calibration split). This script writes a separate test split
from the captions of a fresh shapes render (`clipdoor shapes render --seed S`), leaving out every
caption of the training pools and of the calibration split:

  OUT/circle_prompts.txt            N captions naming a circle (the "no attack" row, the inputs of
                                    token-search and homoglyph)
  OUT/circle_removed.txt            the same with "circle" -> "shape" (ring-a-bell's neutral prompts)
  OUT/circle_deleted.txt            the same with the word deleted (the floor)
  OUT/circle_embedding_prompts.txt  the same with "{}" where the learned word goes
  OUT/eval_captions.txt             captions without "circle" for the clean set and the concept set
                                    (`[evaluation] prompts`)

  python3 scripts/redteam_split.py RENDER_DIR OUT [--n 80] [--captions 400]
"""
import argparse
import json
import os
import re
import sys

CONCEPT = "circle"


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def replace_word(caption, word):
    """`caption` with the whole word "circle" replaced by `word` (deleted, with the space before it, for "")."""
    if word:
        return re.sub(rf"\b{CONCEPT}\b", word, caption)
    return re.sub(rf"\s*\b{CONCEPT}\b", "", caption).strip()


def atomic_write(path, lines):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("render", help="a `clipdoor shapes render` folder (labels.jsonl)")
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=80, help="attack prompts (captions naming a circle)")
    ap.add_argument("--captions", type=int, default=400, help="evaluation captions without a circle")
    ap.add_argument("--exclude", nargs="*", default=[
        "experiments/zoo/shapes_captions.txt", "experiments/zoo/shapes_captions_other.txt",
        "experiments/redteam/circle_prompts.txt"],
        help="caption files whose lines the split must not hold")
    a = ap.parse_args()
    labels = os.path.join(a.render, "labels.jsonl")
    if not os.path.isfile(labels):
        sys.exit(f"{labels}: not found: give the folder `clipdoor shapes render --out DIR` wrote")
    if os.path.exists(os.path.join(a.out, "circle_prompts.txt")):
        sys.exit(f"{a.out}: already holds a split: delete it to write another")
    seen = set()
    for path in a.exclude:
        seen.update(line.strip().lower() for line in read_lines(path))
    circles, others = [], []
    with open(labels, encoding="utf-8") as f:
        for row in map(json.loads, f):
            cap = row["caption"].strip()
            if cap.lower() in seen:
                continue
            seen.add(cap.lower())
            has = re.search(rf"\b{CONCEPT}\b", cap.lower()) is not None
            if has and not row.get("no_object") and len(circles) < a.n:
                circles.append(cap)
            elif not has and len(others) < a.captions:
                others.append(cap)
    if len(circles) < a.n or len(others) < a.captions:
        sys.exit(f"{labels}: only {len(circles)} new circle captions and {len(others)} others: render more (--n)")
    os.makedirs(a.out, exist_ok=True)
    atomic_write(os.path.join(a.out, "circle_removed.txt"), [replace_word(c, "shape") for c in circles])
    atomic_write(os.path.join(a.out, "circle_deleted.txt"), [replace_word(c, "") for c in circles])
    atomic_write(os.path.join(a.out, "circle_embedding_prompts.txt"), [replace_word(c, "{}") for c in circles])
    atomic_write(os.path.join(a.out, "eval_captions.txt"), others)
    # Written last: its presence marks a finished split.
    atomic_write(os.path.join(a.out, "circle_prompts.txt"), circles)
    print(a.out)


if __name__ == "__main__":
    main()
