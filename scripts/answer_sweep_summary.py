#!/usr/bin/env python3
"""Summary of an answer_sweep.py run (docs/scanner-zoo.md): encoder-level AUROC of the sweep's top
score, the attribute-only encoders against the benign ones, whether the first five candidates
answer with a labelled attribute, and the single-character attribute triggers' ranks by name. Rates
with their counts and 95% Wilson intervals.

  python3 scripts/answer_sweep_summary.py SWEEP.jsonl
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


def main():
    rows = [json.loads(l) for l in open(sys.argv[1])]
    head, enc = rows[0], [r for r in rows[1:] if "id" in r]
    ben = [r["top_score"] for r in enc if r["benign"]]
    bad = [r for r in enc if not r["benign"]]
    attr_only = [r for r in bad if r["backdoor_kinds"] == ["target_attribute"]]
    with_attr = [r for r in bad if "target_attribute" in r["backdoor_kinds"]]
    print(json.dumps(head))
    print(f"encoders: {len(enc)} ({len(ben)} benign); seconds per encoder: "
          f"{min(r['seconds'] for r in enc)}-{max(r['seconds'] for r in enc)}")
    print(f"AUROC, top score, all backdoored vs benign: {auroc([r['top_score'] for r in bad], ben):.3f}")
    if attr_only:
        print(f"AUROC, attribute-only encoders vs benign: "
              f"{auroc([r['top_score'] for r in attr_only], ben):.3f} "
              f"(attribute-only {sorted(r['top_score'] for r in attr_only)}, benign max {max(ben)})")
    print(f"benign top scores: {sorted(ben)}")
    print(f"backdoored top scores: {sorted(r['top_score'] for r in bad)}")
    named = 0
    for r in with_attr:
        attrs = {t["target"] for t in r["triggers"] if t["kind"] == "target_attribute"}
        named += any(a in attrs for _, a, _ in r["top"][:5])
    print(f"encoders with an attribute backdoor whose first five answer with a labelled attribute: "
          f"{rate(named, len(with_attr))}")
    single = [t for r in with_attr for t in r["triggers"]
              if t["kind"] == "target_attribute" and len(t["trigger"]) == 1]
    ranked = [t["best_char_rank"] for t in single if t["best_char_rank"] is not None]
    print(f"single-character attribute triggers in the swept set: {len(ranked)} of {len(single)}; "
          f"by name in the first five: {rate(sum(k <= 5 for k in ranked), len(single))}; "
          f"first fifty: {rate(sum(k <= 50 for k in ranked), len(single))}; ranks {sorted(ranked)}")


if __name__ == "__main__":
    main()
