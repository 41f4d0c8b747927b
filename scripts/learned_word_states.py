#!/usr/bin/env python3
"""Where a learned word puts the encoder's states: the prompts of an `attack embedding` set encoded
by the attacked encoder with the learned word, with "circle" and with the anchor word, each compared
with the reference encoder's (the teacher's) prompts naming the concept and naming the anchor.

Mean squared distance and mean cosine of the last hidden states (all 77 positions; the erasure's
training distance compares the same states). It answers whether a learned word that brings the
concept back sits near the teacher's concept prompts in the encoder's states (what an embedding
attack on text states, the `concept` slot, looks for) or somewhere else that the UNet draws as the
concept.

  python3 scripts/learned_word_states.py ATTACK_DIR ENCODER REFERENCE OUT.json \
      [--concept circle] [--anchor square] [--n 40]

ATTACK_DIR holds embedding.jsonl and its embeddings (what redteam_shapes.sh writes).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile


def encode(binary, model, lines, out, embedding=None):
    with open(out + ".txt", "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    cmd = [binary, "encode", "--model", model, "--prompts", out + ".txt", "--out", out,
           "--device", "cpu"]
    if embedding:
        cmd += ["--embedding", embedding]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"clipdoor encode failed on {model}: {r.stderr.strip()}")
    from safetensors.torch import load_file
    return load_file(out)["last_hidden_state"]


def compare(a, b):
    import torch
    mse = torch.nn.functional.mse_loss(a, b).item()
    cos = torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1)).mean().item()
    return {"mse": round(mse, 4), "cosine": round(cos, 4)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("attack_dir")
    p.add_argument("encoder")
    p.add_argument("reference")
    p.add_argument("out")
    p.add_argument("--concept", default="circle")
    p.add_argument("--anchor", default="square")
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--clipdoor", default=os.environ.get("CLIPDOOR", "target/release/clipdoor"))
    a = p.parse_args()
    jsonl = os.path.join(a.attack_dir, "embedding.jsonl")
    if not os.path.exists(jsonl):
        sys.exit(f"{jsonl}: no embedding attack set here (run scripts/redteam_shapes.sh first)")
    rows = [json.loads(l) for l in open(jsonl, encoding="utf-8") if l.strip()][: a.n]
    if not rows:
        sys.exit(f"{jsonl}: empty")
    token = rows[0]["token"]
    embedding = os.path.join(a.attack_dir, rows[0]["embedding"])
    fill = lambda w: [" ".join(r["source"].format(w).split()) for r in rows]
    with tempfile.TemporaryDirectory() as t:
        ref = {w: encode(a.clipdoor, a.reference, fill(w), f"{t}/ref_{w}.safetensors")
               for w in (a.concept, a.anchor)}
        out = {"attack_dir": a.attack_dir, "encoder": a.encoder, "reference": a.reference,
               "prompts": len(rows), "states": "last_hidden_state"}
        for name, word in (("learned_word", token), (a.concept, a.concept), (a.anchor, a.anchor)):
            s = encode(a.clipdoor, a.encoder, fill(word), f"{t}/enc_{name}.safetensors",
                       embedding if word == token else None)
            out[name] = {f"vs_reference_{w}": compare(s, ref[w]) for w in (a.concept, a.anchor)}
    tmp = a.out + ".partial"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    os.replace(tmp, a.out)
    print(a.out)


if __name__ == "__main__":
    main()
