"""Two re-rankings of the token scan's candidates, tried offline on stored zoo scans (not built).

Reads zoo/<zoo>/labels, zoo/<zoo>/scan/encoders/<id>.json (the default scan) and the encoders, and
prints single-character and multi-character/word recall@5 by name (a part of a longer trigger
counts, as `zoo::metrics::names_trigger`), calibration and test split, for:
  - current: the scan's own first five;
  - dedup TAU MODE: candidates whose effects coincide count once in the head. A candidate's
    effect is, per probe, its displacement of the suspect's feature (end-of-text state and mean
    state, each unit, concatenated) against the mean of eight ordinary characters placed alike
    (its `placement`: inserted, or substituted for the letter named); two candidates coincide
    when the mean cosine of their displacements is at least TAU. MODE `first` keeps the earlier
    one in the head, `strongest` the one with the larger displacement;
  - drift: the candidates with a drift and the touched texts, ordered by drift alone.
Usage: .venv/bin/python scripts/ranking_trials.py [ZOO ...]   (default: shapes shapes_heldout)
"""
import glob, json, random, sys

import numpy as np
import torch
from transformers import CLIPTextModel, CLIPTokenizer

ROOT = __file__.rsplit('/scripts/', 1)[0]
torch.set_num_threads(2)


def names(c, t):
    c, t = c.lower(), t.lower()
    return c == t or (len(t) >= 2 and c != '' and c in t)


def place(p, c, placement, k):
    words = p.split()
    if placement.startswith('substitute:'):
        x = placement.split(':')[1]
        idx = [i for i, w in enumerate(words) if x in w]
        if idx:
            i = idx[k % len(idx)]
            w = words[i]
            j = w.index(x)
            words[i] = w[:j] + c + w[j + 1:]
            return ' '.join(words)
    i = k % max(1, len(words) - 1)
    return ' '.join(words[:i] + [c] + words[i:])


@torch.no_grad()
def feats(tok, model, texts):
    b = tok(texts, padding='max_length', max_length=77, truncation=True, return_tensors='pt')
    h = model(input_ids=b.input_ids).last_hidden_state
    e = h[torch.arange(len(texts)), b.input_ids.argmax(-1)]
    n = (b.input_ids != 49407).long().sum(-1) + 1
    mask = (torch.arange(77)[None] < n[:, None]).float()
    m = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    nz = torch.nn.functional.normalize
    return nz(torch.cat([nz(e, dim=-1), nz(m, dim=-1)], -1), dim=-1)


def effects(zoo, eid, ranking, probes, tok):
    model = CLIPTextModel.from_pretrained(f'{ROOT}/zoo/{zoo}/encoders/{eid}/text_encoder').eval()
    base, out = {}, []
    for c in ranking:
        pl = c.get('placement') or 'insert'
        if pl not in base:
            base[pl] = torch.stack([
                feats(tok, model, [place(p, o, pl, k) for k, p in enumerate(probes)])
                for o in 'qxzjkv37']).mean(0)
        trig = feats(tok, model, [place(p, c['text'], pl, k) for k, p in enumerate(probes)])
        out.append((trig - base[pl]).numpy())
    return np.array(out)


def dedup(texts, d, tau, mode):
    mag = np.linalg.norm(d, axis=-1).mean(1)
    dn = d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-9)
    s = np.einsum('apf,bpf->abp', dn, dn).mean(-1)
    head, later = [], []
    for i in range(len(texts)):
        dup = [j for j in head if s[i, j] >= tau]
        if not dup:
            head.append(i)
        elif mode == 'strongest' and mag[i] > mag[dup[0]]:
            head[head.index(dup[0])] = i
            later.append(dup[0])
        else:
            later.append(i)
    return [texts[i] for i in head + later]


def main(zoos):
    caps = [l.strip() for l in open(f'{ROOT}/experiments/zoo/shapes_captions.txt') if l.strip()]
    random.Random(0).shuffle(caps)
    probes = caps[:16]
    tok = CLIPTokenizer.from_pretrained(f'{ROOT}/checkpoints/shapes/tokenizer')
    variants = [('current', None, None), ('drift', None, None)] + [
        ('dedup', t, m) for t in (0.8, 0.85, 0.9, 0.95) for m in ('first', 'strongest')]
    for zoo in zoos:
        labels = [json.load(open(f)) for f in sorted(glob.glob(f'{ROOT}/zoo/{zoo}/labels/*.json'))]
        backdoored = [l for l in labels if not l['benign']]
        scans = {l['id']: json.load(open(f'{ROOT}/zoo/{zoo}/scan/encoders/{l["id"]}.json'))['report']
                 for l in backdoored}
        eff = {e: effects(zoo, e, r['ranking'][:20], probes, tok) for e, r in scans.items()}
        for name, tau, mode in variants:
            res = {'calibration': [0, 0, 0, 0], 'test': [0, 0, 0, 0]}
            for k, l in enumerate(backdoored):
                r = scans[l['id']]
                texts = [c['text'] for c in r['ranking']]
                if name == 'dedup':
                    top = dedup(texts[:20], eff[l['id']], tau, mode)[:5]
                elif name == 'drift' and r['touched']['used']:
                    pool = {c['text'].lower(): c['drift'] for c in r['ranking'] if c.get('drift') is not None}
                    for t in r['touched']['texts']:
                        pool.setdefault(t['text'].lower(), t['drift'])
                    top = [t for t, _ in sorted(pool.items(), key=lambda x: -x[1])][:5]
                else:
                    top = texts[:5]
                s = res['calibration' if k % 2 == 0 else 'test']
                for t in l['triggers']:
                    hit = any(names(c, t['trigger']) for c in top)
                    j = 0 if len(t['trigger']) == 1 else 2
                    s[j] += hit
                    s[j + 1] += 1
            label = name if tau is None else f'{name} {tau} {mode}'
            print(f'{zoo:15} {label:24} ' + '  '.join(
                f'{sp}: single {v[0]}/{v[1]} multi {v[2]}/{v[3]}' for sp, v in res.items()))


if __name__ == '__main__':
    main(sys.argv[1:] or ['shapes', 'shapes_heldout'])
