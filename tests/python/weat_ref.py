"""WEAT reference for tests/suite/weat.rs, written from the method's definition (Caliskan et al. 2017) and
the homoglyph paper's protocol (../shared/reference/homoglyphs.md): transformers' CLIPTextModel
pooler_output, NumPy for the statistics, SciPy for the partition count.

  weat_ref.py weat ENCODER_DIR SETS.json SAMPLES SEED  -> JSON {effect_size, p_value, permutations, exact}
  weat_ref.py shuffles SEED N COUNT                     -> JSON list of COUNT legacy np.random.shuffle results
"""
import itertools
import json
import sys

import numpy as np
import scipy.special
import torch
from transformers import CLIPTextModel, CLIPTokenizer


def pooled(model, tok, texts):
    ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return model(ids.input_ids).pooler_output.double().numpy()


def cosine(u, v):
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    return u @ v.T


def weat(X, Y, A, B, samples, seed):
    W = np.concatenate([X, Y])
    sim_a, sim_b = cosine(W, A), cosine(W, B)
    s = sim_a.mean(axis=1) - sim_b.mean(axis=1)
    nx = len(X)
    effect = (s[:nx].mean() - s[nx:].mean()) / np.std(s, ddof=1)
    observed = s[:nx].sum()
    n_part = int(scipy.special.binom(len(s), nx))
    hits = total = 0
    if n_part <= samples:
        exact = True
        for idx in itertools.combinations(range(len(s)), nx):
            hits += s[np.array(idx)].sum() >= observed
            total += 1
    else:
        exact = False
        np.random.seed(seed)
        hits, total = 1, 1  # the observed partition itself
        for _ in range(samples - 1):
            order = np.arange(len(s))
            np.random.shuffle(order)
            hits += s[order[:nx]].sum() >= observed
            total += 1
    return {"effect_size": float(effect), "p_value": hits / total, "permutations": total, "exact": exact}


def main():
    if sys.argv[1] == "shuffles":
        seed, n, count = map(int, sys.argv[2:5])
        np.random.seed(seed)
        out = []
        for _ in range(count):
            a = np.arange(n)
            np.random.shuffle(a)
            out.append(a.tolist())
        print(json.dumps(out))
        return
    enc_dir, sets_path, samples, seed = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    tok = CLIPTokenizer.from_pretrained(enc_dir)
    model = CLIPTextModel.from_pretrained(enc_dir).eval()
    results = {}
    for t in json.load(open(sets_path, encoding="utf-8")):
        X, Y, A, B = (pooled(model, tok, t[k]) for k in ("x", "y", "a", "b"))
        results[t["name"]] = weat(X, Y, A, B, samples, seed)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
