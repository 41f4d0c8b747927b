#!/usr/bin/env python3
"""Fit the token scan's learned order (src/scan/learned_rank.rs) on zoo scans' calibration splits.

Each scan (`clipdoor zoo scan ZOO`, scan version 4 or later) reports its `pool`: every text a stage
proposed, with the numbers that describe it (`learned_rank::FEATURES`). A text is a positive when
it names one of the encoder's labelled triggers (the zoo report's rule: the same text, or a part of
a trigger of several characters). A logistic model is fitted by gradient descent (from zero,
L2 0.01, 3,000 steps of size 1) on the calibration split's backdoored encoders of every zoo given,
its weights rounded to two decimals; then recall@5 per split and zoo is printed for the stages'
own order (`stage_place`) and for the fitted order, with 95% Wilson intervals and the paired count
(triggers gained and lost, exact McNemar p), so the fit can be checked against the scans.

    .venv/bin/python scripts/fit_ranker.py zoo/shapes zoo/shapes_heldout zoo/shapes_fresh zoo/shapes_fresh2

`--scan NAME` reads ZOO/NAME instead of ZOO/scan (a `zoo scan --out` folder inside each zoo).
`--shipped` fits nothing: it measures the weights in src/scan/learned_rank.rs on every encoder of
the zoos given (for a zoo none of whose encoders the weights were fitted on).

Only numpy; the pools do not depend on the weights (they are described before the order is
taken), so a scan with any weights refits to the same model.
"""
import json
import sys
from pathlib import Path

import numpy as np

from zoo_stats import mcnemar, names, wilson

L2, STEPS, STEP_SIZE = 0.01, 3000, 1.0


def load(zoo, scan="scan"):
    zoo = Path(zoo)
    report = json.loads((zoo / scan / "report.json").read_text())
    out = []
    for row in report["rows"]:
        if row["benign"]:
            continue
        enc = json.loads((zoo / scan / "encoders" / f"{row['id']}.json").read_text())
        pool = enc["report"].get("pool")
        if not pool:
            sys.exit(f"{zoo / scan / 'encoders' / row['id']}.json has no pool: scan it with a clipdoor of scan version 4 or later")
        x = np.array([p["features"] for p in pool], float)
        y = np.array([any(names(p["text"], t) for t in row["triggers"]) for p in pool], float)
        out.append(dict(zoo=zoo.name, id=row["id"], split=row["split"], triggers=row["triggers"],
                        texts=[p["text"] for p in pool], x=x, y=y))
    return out


def fit(encoders):
    x = np.vstack([e["x"] for e in encoders])
    y = np.concatenate([e["y"] for e in encoders])
    w = np.zeros(x.shape[1])
    for _ in range(STEPS):
        p = 1 / (1 + np.exp(-x @ w))
        w -= STEP_SIZE * (x.T @ (p - y) / len(y) + L2 * w)
    return np.round(w, 2)


def compare(encoders, stage, learned):
    """Recall@5 by name under both orders, per trigger size, with the paired count: triggers the
    learned order gained and lost, and the exact (binomial) McNemar p of that split."""
    out = []
    for g in ["single", "multi"]:
        a = b = n = gained = lost = 0
        for e in encoders:
            first = {}
            for name, key in [("stage", stage), ("learned", learned)]:
                order = np.argsort(-key(e), kind="stable")
                first[name] = [e["texts"][i] for i in order[:5]]
            for t in e["triggers"]:
                if (len(t) == 1) != (g == "single"):
                    continue
                hs = any(names(c, t) for c in first["stage"])
                hl = any(names(c, t) for c in first["learned"])
                n += 1
                a += hs
                b += hl
                gained += hl and not hs
                lost += hs and not hl
        p = mcnemar(gained, lost)
        out.append(f"  {g:6} stages' order {wilson(a, n):26} learned {wilson(b, n):26} gained {gained}, lost {lost}, McNemar p {p:.3f}")
    return "\n".join(out)


def main():
    args = sys.argv[1:]
    scan = "scan"
    if "--scan" in args:
        k = args.index("--scan")
        scan = args[k + 1]
        del args[k : k + 2]
    shipped = "--shipped" in args
    zoos = [a for a in args if a != "--shipped"]
    if not zoos:
        sys.exit(__doc__)
    encoders = [e for z in zoos for e in load(z, scan)]
    cal = [e for e in encoders if e["split"] == "calibration"]
    if shipped:
        src = (Path(__file__).resolve().parent.parent / "src/scan/learned_rank.rs").read_text()
        body = src.split("pub const WEIGHTS")[1].split("[", 2)[2].split("]")[0]
        w = np.array([float(v) for v in body.replace("\n", " ").split(",") if v.strip()])
        print(f"the shipped weights (src/scan/learned_rank.rs), measured on {', '.join(zoos)}")
    else:
        w = fit(cal)
        print("features: bias stage_place drift moved touched_place evidence text_place shares_piece answer")
        print("          single_char ascii tokens in_probes block_siblings strongest_in_block insert substitute")
        print(f"fitted on {len(cal)} calibration encoders of {', '.join(zoos)}")
    print("pub const WEIGHTS: [f64; %d] = [%s];" % (len(w), ", ".join(f"{v:.2f}" for v in w)))
    stage = lambda e: e["x"][:, 1]
    learned = lambda e: e["x"] @ w
    splits = ["calibration", "test", "all"] if shipped else ["calibration", "test"]
    for split in splits:
        for z in [None] + [Path(z).name for z in zoos]:
            sel = [e for e in encoders if split in ("all", e["split"]) and (z is None or e["zoo"] == z)]
            if sel:
                print(f"recall@5 by name, {split} split, {z or 'all zoos'} ({len(sel)} backdoored encoders):")
                print(compare(sel, stage, learned))


if __name__ == "__main__":
    main()
