"""What the zoo scripts share (standard library only): the zoo report's naming rule, 95% Wilson
intervals, and the exact McNemar test of a paired change. Imported by scripts/fit_ranker.py and
scripts/recall_compare.py (run from anywhere: Python puts the script's folder on the path)."""
from math import comb, sqrt


def names(candidate, trigger):
    """The zoo report's rule (src/zoo/metrics.rs `names_trigger`): the same text (the tokenizer
    lowercases), or a part of a trigger of several characters."""
    c, t = candidate.lower(), trigger.lower()
    return c == t or (len(t) >= 2 and c != "" and c in t)


def wilson(k, n, z=1.959964):
    """k of n with its 95% Wilson interval, in percent."""
    if n == 0:
        return "–"
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return f"{k}/{n} {100 * p:.1f}% [{100 * (c - h):.1f}, {100 * (c + h):.1f}]"


def mcnemar(gained, lost):
    """Exact (binomial) two-sided McNemar p of `gained` against `lost` discordant pairs."""
    m, k = gained + lost, min(gained, lost)
    return min(1.0, 2 * sum(comb(m, i) for i in range(k + 1)) / 2**m) if m else 1.0
