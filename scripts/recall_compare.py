#!/usr/bin/env python3
"""Compare two zoo scans' first fives trigger by trigger (docs/scanner-zoo.md, "One place per
byte block, tried"): per zoo and split, recall@5 by name (the zoo report's rule: the same text, or a part
of a trigger of several characters) for single-character and for multi-character and word
triggers, in both scans, with counts and 95% Wilson intervals, the triggers gained and lost, and
the exact McNemar p of that split; then the same pooled over the zoos given.

    python3 scripts/recall_compare.py OLD_SUFFIX NEW_SUFFIX ZOO_NAME ...
    python3 scripts/recall_compare.py _scan _scan_byte_block shapes

reads docs/results/zoo/<ZOO_NAME><SUFFIX>.json for both suffixes. Standard library only.
"""
import json
import sys
from pathlib import Path

from zoo_stats import mcnemar, names, wilson

ROOT = Path(__file__).resolve().parent.parent / "docs" / "results" / "zoo"


def hits(report):
    """(zoo, encoder, trigger) -> (split, group, named in the first five)."""
    out = {}
    for row in report["rows"]:
        if row["benign"]:
            continue
        for t in row["triggers"]:
            group = "single" if len(t) == 1 else "multi"
            named = any(names(c, t) for c in row["top5"])
            out[(report["zoo_seed"], row["id"], t)] = (row["split"], group, named)
    return out


def line(label, old, new, keys):
    o = sum(old[k][2] for k in keys)
    n = sum(new[k][2] for k in keys)
    gained = sum(new[k][2] and not old[k][2] for k in keys)
    lost = sum(old[k][2] and not new[k][2] for k in keys)
    print(f"{label:40s} {wilson(o, len(keys)):28s} -> {wilson(n, len(keys)):28s}"
          f" +{gained} -{lost} McNemar p {mcnemar(gained, lost):.3f}")


def main(old_suffix, new_suffix, zoos):
    old_all, new_all = {}, {}
    for zoo in zoos:
        old = hits(json.loads((ROOT / f"{zoo}{old_suffix}.json").read_text()))
        new = hits(json.loads((ROOT / f"{zoo}{new_suffix}.json").read_text()))
        if old.keys() != new.keys():
            sys.exit(f"{zoo}: the two scans do not hold the same encoders and triggers")
        old_all.update(old)
        new_all.update(new)
        for split in ["calibration", "test"]:
            for group in ["single", "multi"]:
                keys = [k for k, v in old.items() if v[0] == split and v[1] == group]
                line(f"{zoo} {split} {group}", old, new, keys)
    for split in ["calibration", "test"]:
        for group in ["single", "multi"]:
            keys = [k for k, v in old_all.items() if v[0] == split and v[1] == group]
            line(f"all given, {split} {group}", old_all, new_all, keys)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
