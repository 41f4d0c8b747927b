"""Table of the token scan on noise-started backdoored encoders (docs/scanner-zoo.md,
"Noise-started fine-tunes"): for each scan report in docs/results/zoo/noise_started/, the sweep's
scope, rows moved and threshold, the encoder's score, and which labelled triggers (the design zoo's
labels of the encoder it copies) are named in the first five.
Usage: python3 scripts/noise_started_summary.py
"""
import glob, json, os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def names(c, t):
    c, t = c.lower(), t.lower()
    return c == t or (len(t) >= 2 and c != '' and c in t)


print('| encoder | noise | scan | sweep | rows moved (threshold) | score | first five | named |')
print('|---|---|---|---|---|---|---|---|')
MODES = {'default': 'default', 'no_touched': '`--no-touched`', 'ten_medians': 'before (ten medians)'}
runs = []
for f in glob.glob(f'{ROOT}/docs/results/zoo/noise_started/*.json'):
    stem = os.path.basename(f)[:-5]
    mode = next(m for m in MODES if stem.endswith('_' + m))
    enc = stem.split('_')[0]
    noise = '30%' if '_noise30' in stem else '6%'
    runs.append((enc, noise, list(MODES).index(mode), f, MODES[mode]))
for enc, noise, _, f, mode in sorted(runs):
    labels = json.load(open(f'{ROOT}/zoo/shapes/labels/{enc}.json'))
    r = json.load(open(f))['report']
    top = [c['text'] for c in r['ranking'][:5]]
    trig = [t['trigger'] for t in labels['triggers']]
    hit = [t for t in trig if any(names(c, t) for c in top)]
    t = r.get('touched') or {}
    moved = f"{t['tokens']} ({t['threshold']:.2f})" if t else '-'
    show = lambda xs: ' '.join(x.encode('unicode_escape').decode() if not x.isprintable() else x for x in xs)
    print(f"| {enc} | {noise} | {mode} | {r['sweep_scope']} ({r['swept']}) | {moved} | {r['score']:.3f} | "
          f"{show(top)} | {len(hit)} of {len(trig)}: {show(hit)} |")
