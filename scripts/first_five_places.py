#!/usr/bin/env python3
"""Where the first five's places go (docs/scanner-zoo.md, "One place per byte block, tried"): over
the backdoored encoders of the zoo scans given (both splits), how many of the first five's places
name a trigger of their encoder (zoo report's rule), repeat a trigger another place already named,
or name none; and of those naming none, how many are single characters outside ASCII that share
every UTF-8 byte but the last with one of the encoder's trigger characters (a block-mate), and in
how many of those the trigger itself is in the same first five.

    python3 scripts/first_five_places.py _scan shapes shapes_heldout shapes_fresh shapes_fresh2 shapes_fresh3 shapes_fresh4

reads docs/results/zoo/<ZOO_NAME><SUFFIX>.json. Standard library only.
"""
import json
import sys
from pathlib import Path

from zoo_stats import names

ROOT = Path(__file__).resolve().parent.parent / "docs" / "results" / "zoo"


def block(text):
    """A single non-ASCII character's UTF-8 bytes but the last (None otherwise)."""
    if len(text) != 1 or text.isascii():
        return None
    return text.encode()[:-1]


def main(suffix, zoos):
    places = repeats = none = mates = mates_beside = 0
    for zoo in zoos:
        report = json.loads((ROOT / f"{zoo}{suffix}.json").read_text())
        for row in report["rows"]:
            if row["benign"]:
                continue
            triggers, named = row["triggers"], set()
            trigger_chars = {c for t in triggers for c in t if block(c) is not None}
            for c in row["top5"]:
                places += 1
                hit = {t for t in triggers if names(c, t)}
                if not hit:
                    none += 1
                    mine = {t for t in trigger_chars if block(t) == block(c)} if block(c) else set()
                    if mine:
                        mates += 1
                        mates_beside += any(x in mine for x in row["top5"])
                elif hit <= named:
                    repeats += 1
                named |= hit
    print(f"first-five places of backdoored encoders: {places}")
    print(f"  naming a trigger already named by an earlier place: {repeats}")
    print(f"  naming no trigger: {none}")
    print(f"    of those, block-mates of a trigger character: {mates} (the trigger in the same first five: {mates_beside})")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
