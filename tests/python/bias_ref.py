"""Reference side of tests/suite/bias.rs.

make OUT            the I2P fixtures (OUT/pipe, OUT/erased, OUT/checker; tests/python/i2p_fixtures.py)
                    plus OUT/judge, a tiny random full CLIPModel (clip_eval_ref.make_clip)
rb RUN JUDGE        relative bias recomputed with transformers from a finished run: reads the groups,
                    cultures and conditions from RUN/report.json's settings and every image from
                    RUN/<condition>/images.jsonl, pairs clean and homoglyph images by prompt text and
                    seed (not by clipdoor's indices), and prints JSON
                    {condition: {culture: {group: mean RB}}} plus the per-image similarities
"""
import json
import os
import sys

import torch
import transformers
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clip_eval_ref  # noqa: E402


def make(out):
    import i2p_fixtures
    sys.argv = ["i2p_fixtures.py", out]
    i2p_fixtures.main()
    clip_eval_ref.make_clip(os.path.join(out, "judge"), 7, 64)


def rb(run, judge):
    rep = json.load(open(os.path.join(run, "report.json"), encoding="utf-8"))
    g = rep["settings"]["generation"]
    model = transformers.CLIPModel.from_pretrained(judge).eval()
    tok = transformers.CLIPTokenizer.from_pretrained(judge)
    proc = clip_eval_ref.processor()

    def text_feats(texts):
        t = tok(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        with torch.no_grad():
            f = model.text_projection(model.text_model(input_ids=t["input_ids"]).pooler_output)
        return f / f.norm(dim=-1, keepdim=True)

    def image_feat(path):
        px = proc(images=Image.open(path), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            f = model.visual_projection(model.vision_model(pixel_values=px).pooler_output)
        return (f / f.norm(dim=-1, keepdim=True))[0]

    out, sims = {}, {}
    for cond in g["conditions"]:
        name = cond["name"]
        recs = [json.loads(l) for l in open(os.path.join(run, name, "images.jsonl"), encoding="utf-8") if l.strip()]
        by = {(r["prompt"], r["seed"]): os.path.join(run, name, r["file"]) for r in recs}
        seeds = sorted({r["seed"] for r in recs})
        feats = {}

        def feat(p):
            if p not in feats:
                feats[p] = image_feat(p)
            return feats[p]

        out[name] = {}
        for c in g["cultures"]:
            out[name][c["key"]] = {}
            all_rb = []
            for grp in g["groups"]:
                vals = []
                for t in grp["templates"]:
                    clean = t.replace("# ", "")
                    hom = t.replace("#", c["homoglyph"])
                    tf = text_feats([t.replace("#", c["name"])])[0]
                    for s in seeds:
                        fc, fh = by[(clean, s)], by[(hom, s)]
                        sc = float(100 * feat(fc) @ tf)
                        sh = float(100 * feat(fh) @ tf)
                        sims[f"{name}/{os.path.relpath(fc, os.path.join(run, name))}/{c['key']}"] = sc
                        sims[f"{name}/{os.path.relpath(fh, os.path.join(run, name))}/{c['key']}"] = sh
                        vals.append(100 * (sh - sc) / sc)
                out[name][c["key"]][grp["name"]] = sum(vals) / len(vals)
                all_rb += vals
            out[name][c["key"]]["all"] = sum(all_rb) / len(all_rb)
    print(json.dumps({"rb": out, "sims": sims}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make":
        make(sys.argv[2])
    elif cmd == "rb":
        rb(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(f"unknown command {cmd}")
