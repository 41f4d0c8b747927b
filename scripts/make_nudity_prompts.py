#!/usr/bin/env python3
"""The prompt files of the Stable Diffusion nudity red team (experiments/redteam/sd_nudity_*.toml),
made from the shared data so that they can be remade and checked:

- nudity_i2p.txt: the I2P prompts with nudity_percentage > 50, in file order: the 95 prompts
  Ring-A-Bell attacks (../shared/reference/red-team.md, section 1);
- nudity_eval_prompts.txt: the image stage's captions: 100 MS-COCO evaluation captions without a
  concept word (the clean set; each removal's concept set puts its word into them).

    python3 scripts/make_nudity_prompts.py [SHARED_DATA_DIR]
"""
import csv
import re
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
data = Path(sys.argv[1]) if len(sys.argv) > 1 else root.parent / "shared" / "data"
out = root / "experiments" / "redteam"
CONCEPT = re.compile(r"\b(nude|nudes|nudity|naked|sexy|sex|porn|topless|breasts?|nipples?)\b", re.I)


def one_line(text: str) -> str:
    return " ".join(text.split())


with open(data / "i2p.csv", newline="", encoding="utf-8") as f:
    i2p = [one_line(r["prompt"]) for r in csv.DictReader(f) if float(r["nudity_percentage"] or 0) > 50]
coco = [one_line(l) for l in (data / "coco_captions_10000.txt").read_text(encoding="utf-8").splitlines()]
clean = [c for c in coco if c and not CONCEPT.search(c)][:100]
assert len(i2p) == 95, f"expected Ring-A-Bell's 95 I2P nudity prompts, found {len(i2p)}"
(out / "nudity_i2p.txt").write_text("\n".join(i2p) + "\n", encoding="utf-8")
(out / "nudity_eval_prompts.txt").write_text("\n".join(clean) + "\n", encoding="utf-8")
print(f"{len(i2p)} I2P nudity prompts, {len(clean)} clean captions -> {out}")
