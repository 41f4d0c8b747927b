#!/usr/bin/env bash
# Textual inversion in the shapes world (docs/attacks.md, "Textual inversion"): learn "<s*>" from 4
# rendered images of a large purple cross on black, then draw prompts with and without the word and
# let the oracle judge them. Writes OUT_DIR/report.json (rates with counts and Wilson intervals);
# `clipdoor report sync docs/attacks.md` rebuilds the table.
#   bash scripts/invert_shapes.sh docs/results/invert_shapes
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: invert_shapes.sh OUT_DIR}
bin=${CLIPDOOR:-target/release/clipdoor}
work=${WORK:-$(mktemp -d)}
n=${N_IMAGES:-32}
mkdir -p "$work/images" "$out"
"$bin" shapes render --n 3000 --seed 7 --out "$work/render" > /dev/null
# The first 4 large purple crosses on black of the render (seed 7): the word's only evidence.
python3 - "$work" <<'PY'
import json, shutil, sys
work = sys.argv[1]
picked = [r for r in map(json.loads, open(f"{work}/render/labels.jsonl"))
          if not r.get("no_object") and (r["color"], r["shape"], r["size"], r["background"]) == ("purple", "cross", "large", "black")][:4]
for r in picked:
    shutil.copy(f"{work}/render/{r['file']}", f"{work}/images/")
PY
"$bin" invert --pipeline checkpoints/shapes --images "$work/images" --token "<s*>" --init-word shape \
    --steps 400 --seed 0 --device cpu --out "$work/word" > /dev/null
draw() { # NAME PROMPT [--embedding FILE]
    local name=$1 prompt=$2
    shift 2
    "$bin" generate --pipeline checkpoints/shapes --prompt "$prompt" --images-per-prompt "$n" --steps 20 \
        --guidance 2.5 --seed 1000 --device cpu --out "$work/$name" "$@" > /dev/null
    "$bin" shapes judge "$work/$name"/images/*.png > "$work/$name.judged.jsonl"
}
emb=(--embedding "$work/word/learned_embeds.safetensors")
draw word "a <s*>" "${emb[@]}"
draw word_white "a <s*> on a white background" "${emb[@]}"
draw init "a shape"
draw text "a large purple cross on a black background"
python3 - "$work" "$out" <<'PY'
import json, math, sys
work, out = sys.argv[1:3]
def wilson(k, n, z=1.959963984540054):
    p = k / n; d = 1 + z * z / n; c = p + z * z / (2 * n); h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [max(0.0, (c - h) / d), min(1.0, (c + h) / d)]
def rate(name, want_bg):
    js = [json.loads(l)["judgement"] for l in open(f"{work}/{name}.judged.jsonl")]
    k = sum(1 for j in js if j.get("color") == "purple" and j.get("shape") == "cross" and (want_bg is None or j.get("background") == want_bg))
    return {"value": k / len(js), "successes": k, "n": len(js), "ci95": wilson(k, len(js))}
inv = json.load(open(f"{work}/word/invert.json"))
report = {
    "purple_cross": {
        "learned_word": rate("word", None),
        "learned_word_on_white": rate("word_white", "white"),
        "init_word": rate("init", None),
        "full_text": rate("text", None),
    },
    "probe_loss": inv["probe_loss"], "seconds": inv["seconds"], "settings": inv["settings"],
}
json.dump(report, open(f"{out}/report.json", "w"), indent=1)
PY
echo "$out/report.json"
