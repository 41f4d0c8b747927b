#!/usr/bin/env python3
"""Choose the answer stage's floor for weak answers (`--answer-floor`, docs/scanner-zoo.md, "Weak
answers") on zoo scans' calibration splits, and print what each floor gives on every split.

A weak answer is an answer-stage reading under the listing bar (0.5): not ranked, but it counts
toward the encoder's score, which is the largest of the confirmed collapse and the answers' scores
(answers of look-alikes that read as their letter left out). Every floor's encoder scores are
read from one scan made with a low floor: the score at floor f is the larger of the score without
weak answers (collapse, listed answers) and the best weak answer scoring f or more. That is a lower
bound, not the scan at f: per answer word the scan reports the character reading it most strongly
among those at its floor, so a scan at a higher floor can report a higher-scoring character for a
word (seed-22 e0037: `tiny` 0.167 at floor 0.1, 0.292 at 0.25). The default scans at the kept
floor are the numbers to quote; this table is how the floor was chosen. The floor kept is
the lowest of the grid above every benign calibration encoder's best weak answer (of the zoos
given): no benign encoder of a calibration split gains score from weak answers, as the zoo's
threshold is the calibration split's highest benign score. AUROC (backdoored against benign) is
printed per split for every floor of the grid.

    clipdoor zoo scan ZOO --answer-floor 0.1 --out ZOO/scan-floor0.1        # each zoo
    python3 scripts/answer_floor.py --scan scan-floor0.1 zoo/shapes zoo/shapes_heldout ...

Reads labels (`ZOO/labels/`) and each zoo's split (`report.json` of the scan). Standard library only.
"""
import json
import sys
from pathlib import Path

FLOORS = [0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]


def load(zoo, scan):
    zoo = Path(zoo)
    report = json.loads((zoo / scan / "report.json").read_text())
    split = {r["id"]: r["split"] for r in report["rows"]}
    out = []
    for f in sorted((zoo / scan / "encoders").glob("e*.json")):
        if f.name.endswith(".working.json"):
            continue
        d = json.loads(f.read_text())
        r = d["report"]
        label = json.loads((zoo / "labels" / f.name).read_text())
        collapse = max(
            (c["raw"][1] for c in r.get("confirmed", []) if c["raw"][1] is not None),
            default=float("-inf"),
        )
        listed = [a["score"] for a in r.get("answers", []) if not a["reads_as_letter"]]
        weak = [a for a in r.get("weak_answers", []) if not a["reads_as_letter"]]
        base = max([collapse] + listed)
        if weak and max(a["score"] for a in weak) > r["score"] + 1e-9:
            raise SystemExit(f"{f}: a weak answer above the encoder's score: not a weak-answer scan")
        out.append(
            {
                "id": d["id"],
                "split": split[d["id"]],
                "benign": label["benign"],
                "base": base,
                "weak": weak,
                "score": r["score"],
                "triggers": [t["trigger"] for t in label["triggers"]],
            }
        )
    return out


def score_at(e, floor):
    return max([e["base"]] + [a["score"] for a in e["weak"] if a["score"] >= floor])


def pairs(encoders, floor, part):
    pos = [score_at(e, floor) for e in encoders if not e["benign"] and e["split"] == part]
    neg = [score_at(e, floor) for e in encoders if e["benign"] and e["split"] == part]
    won = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return won, len(pos) * len(neg)


def main(argv):
    scan = "scan-floor0.1"
    if argv[:1] == ["--scan"]:
        scan, argv = argv[1], argv[2:]
    if not argv:
        raise SystemExit(__doc__)
    zoos = {z: load(z, scan) for z in argv}
    lowest = min(min((a["score"] for a in e["weak"]), default=1) for es in zoos.values() for e in es)
    print(f"scans: {scan}; lowest weak answer read: {lowest:.3f}")
    print("(scores at each floor are read from these scans: a lower bound on a scan at that floor)")
    print("AUROC per split (pairs won / pairs), floor by floor:")
    benign_weak = max(
        (a["score"] for es in zoos.values() for e in es if e["benign"] and e["split"] == "calibration" for a in e["weak"]),
        default=float("-inf"),
    )
    kept = min(f for f in FLOORS if f > benign_weak)
    for floor in FLOORS:
        line, won_all, n_all = [], 0, 0
        for z, es in zoos.items():
            cw, cn = pairs(es, floor, "calibration")
            tw, tn = pairs(es, floor, "test")
            won_all, n_all = won_all + cw, n_all + cn
            line.append(f"{Path(z).name} cal {cw / cn:.3f} test {tw / tn:.3f}")
        pooled = won_all / n_all
        print(f"  floor {floor:.2f}: pooled calibration {pooled:.4f} | " + " | ".join(line))
    print(f"best weak answer of a benign calibration encoder: {benign_weak:.3f}")
    print(f"kept: floor {kept:.2f} (the lowest of the grid above it)")
    best = (kept,)
    print("encoders with a weak answer at the kept floor (best one):")
    for z, es in zoos.items():
        for e in es:
            weak = [a for a in e["weak"] if a["score"] >= best[0]]
            if weak:
                a = max(weak, key=lambda a: a["score"])
                kind = "benign" if e["benign"] else f"backdoored {e['triggers']}"
                print(
                    f"  {Path(z).name} {e['id']} {e['split']}: {kind}; without weak answers "
                    f"{e['base']:.3f}, weak {a['text']!r} -> {a['answer']} {a['score']:.3f}"
                )


if __name__ == "__main__":
    main(sys.argv[1:])
