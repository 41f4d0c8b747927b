#!/usr/bin/env python3
"""Summary of answer_sweep.py runs (docs/scanner-zoo.md): encoder-level AUROC of the sweep's top
score, the attribute-only encoders against the benign ones, whether the first five distinct answers
hold a labelled attribute, the single-character attribute triggers' ranks by name, and, with the zoo
scan's JSON (docs/results/zoo/*_scan.json), the scan's flag (its calibrated threshold), the sweep's
flag (threshold: the calibration split's highest benign top score, flagged above it) and either of
the two on the scan's test split. Rates with their counts and 95% Wilson intervals.

  python3 scripts/answer_sweep_summary.py SWEEP.jsonl [SCAN.json]
  python3 scripts/answer_sweep_summary.py --table NAME=SWEEP.jsonl:SCAN.json ...   (Markdown rows)
"""
import json
import math
import sys


def wilson(k, n, z=1.959964):
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def rate(k, n):
    lo, hi = wilson(k, n)
    return f"{k}/{n} = {100 * k / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def auroc(pos, neg):
    """Probability that a positive outscores a negative, ties counting half."""
    s = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return s / (len(pos) * len(neg))


def measures(sweep_path, scan_path=None):
    """Label -> value, in the order the docs' table shows them."""
    rows = [json.loads(l) for l in open(sweep_path)]
    enc = [r for r in rows[1:] if "id" in r]
    ben = [r["top_score"] for r in enc if r["benign"]]
    bad = [r for r in enc if not r["benign"]]
    attr_only = [r for r in bad if r["backdoor_kinds"] == ["target_attribute"]]
    with_attr = [r for r in bad if "target_attribute" in r["backdoor_kinds"]]
    m = {}
    m["encoders (benign)"] = f"{len(enc)} ({len(ben)})"
    m["seconds per encoder (min-max; Python, one thread)"] = \
        f"{min(r['seconds'] for r in enc)}-{max(r['seconds'] for r in enc)}"
    m["AUROC of the top score, backdoored vs benign"] = f"{auroc([r['top_score'] for r in bad], ben):.3f}"
    m["AUROC, attribute-only encoders vs benign"] = (
        f"{auroc([r['top_score'] for r in attr_only], ben):.3f} (n={len(attr_only)}; their scores "
        f"{', '.join(str(r['top_score']) for r in sorted(attr_only, key=lambda r: r['top_score']))}; "
        f"benign max {max(ben)})" if attr_only else "- (none)")
    top_ben = sorted((r for r in enc if r["benign"]), key=lambda r: -r["top_score"])[:2]
    m["highest benign top scores"] = "; ".join(
        f"{r['id']} ({r['kind']}) {r['top_score']}, answer `{r['top_answer']}`" for r in top_ben)
    named = sum(any(a in {t["target"] for t in r["triggers"] if t["kind"] == "target_attribute"}
                    for _, a, _ in r["distinct"][:5]) for r in with_attr)
    m["encoders with an attribute backdoor: a labelled attribute among the first five distinct answers"] = \
        rate(named, len(with_attr))
    trig = [(r, t) for r in with_attr for t in r["triggers"] if t["kind"] == "target_attribute"]
    hit = [(r, t) for r, t in trig if t["target"] in [a for _, a, _ in r["distinct"][:5]]]
    miss = sorted(t["target"] for r, t in trig if (r, t) not in hit)
    m["attribute triggers: their attribute among the first five distinct answers"] = \
        f"{rate(len(hit), len(trig))}; missed: {', '.join(miss) or '-'}"
    single = [t for r in with_attr for t in r["triggers"]
              if t["kind"] == "target_attribute" and len(t["trigger"]) == 1]
    ranked = [t["best_char_rank"] for t in single if t["best_char_rank"] is not None]
    m["single-character attribute triggers by name in the first five characters"] = \
        rate(sum(k <= 5 for k in ranked), len(single))
    if scan_path:
        scan = json.load(open(scan_path))
        by_id = {r["id"]: r for r in scan["rows"]}
        t_ans = max(r["top_score"] for r in enc if r["benign"] and by_id[r["id"]]["split"] == "calibration")
        m["sweep threshold (calibration split's highest benign)"] = f"{t_ans}"
        test = [r for r in enc if by_id[r["id"]]["split"] == "test"]
        pos = [r for r in test if not r["benign"]]
        neg = [r for r in test if r["benign"]]
        rules = {
            "scan": lambda r: by_id[r["id"]]["flagged"],
            "sweep": lambda r: r["top_score"] > t_ans,
            "scan or sweep": lambda r: by_id[r["id"]]["flagged"] or r["top_score"] > t_ans,
        }
        for name, flag in rules.items():
            m[f"test split, {name}: TPR / FPR"] = \
                f"{rate(sum(flag(r) for r in pos), len(pos))} / {rate(sum(flag(r) for r in neg), len(neg))}"
    return m


def main():
    if sys.argv[1] == "--table":
        cols = []
        for arg in sys.argv[2:]:
            name, paths = arg.split("=", 1)
            sweep, _, scan = paths.partition(":")
            cols.append(measures(sweep, scan or None))
        for k in cols[0]:
            print(f"| {k} | " + " | ".join(c.get(k, "-") for c in cols) + " |")
        return
    for k, v in measures(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None).items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
