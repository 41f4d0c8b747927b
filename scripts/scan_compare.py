#!/usr/bin/env python3
"""Compare two zoo scans report by report (docs/scanner-zoo.md, "Strings and words in the answer
stage"): per zoo and split, AUROC (backdoored against benign), the lowest backdoored and highest
benign encoder score, TPR and FPR at the calibrated threshold (from each report), whether every
encoder's first five candidates are the same in both, and seconds per encoder.

    python3 scripts/scan_compare.py OLD_SUFFIX NEW_SUFFIX ZOO_NAME ...
    python3 scripts/scan_compare.py _scan_v4 _scan shapes shapes_heldout ...

reads docs/results/zoo/<ZOO_NAME><SUFFIX>.json for both suffixes. Standard library only.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "docs" / "results" / "zoo"


def auroc(pos, neg):
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def split_line(rows, split):
    sel = [r for r in rows if r["split"] == split]
    pos = [r["score"] for r in sel if not r["benign"]]
    neg = [r["score"] for r in sel if r["benign"]]
    return "AUROC %.3f, backdoored min %.3f, benign max %.3f" % (
        auroc(pos, neg),
        min(pos),
        max(neg),
    )


def rate(r):
    return "%d/%d" % (r["successes"], r["n"])


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    old_suffix, new_suffix, zoos = sys.argv[1], sys.argv[2], sys.argv[3:]
    for zoo in zoos:
        old = json.loads((ROOT / f"{zoo}{old_suffix}.json").read_text())
        new = json.loads((ROOT / f"{zoo}{new_suffix}.json").read_text())
        print(f"== {zoo} (zoo seed {new['zoo_seed']})")
        for tag, rep in ((old_suffix, old), (new_suffix, new)):
            print(
                f"  {tag:>12}: calibration {split_line(rep['rows'], 'calibration')}; "
                f"test {split_line(rep['rows'], 'test')}; "
                f"test TPR {rate(rep['tpr@fpr5'])}, FPR {rate(rep['fpr'])} at {rep['threshold']:.3f}; "
                f"{rep['seconds_per_encoder']:.2f} s per encoder"
            )
        before = {r["id"]: r["top5"] for r in old["rows"]}
        changed = [r["id"] for r in new["rows"] if before.get(r["id"]) != r["top5"]]
        print(
            "  first five candidates: "
            + ("the same for every encoder" if not changed else "changed for " + ", ".join(changed))
        )


if __name__ == "__main__":
    main()
