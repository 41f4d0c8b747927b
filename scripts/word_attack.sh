#!/usr/bin/env bash
# The red team's learned-word attack (CCE) in the shapes world: a word learned through ENCODER from
# the first 4 large circles of a render the attacks never saw (`shapes render --seed RENDER_SEED`),
# put into PROMPTS in place of "circle". Used by scripts/redteam_shapes.sh and scripts/gpu_redteam.sh.
#   bash scripts/word_attack.sh ENCODER RENDER_SEED ATTACK_SEED PROMPTS OUT.jsonl
# CLIPDOOR (default target/release/clipdoor) and DEVICE (default cpu) as in redteam_shapes.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: word_attack.sh ENCODER RENDER_SEED ATTACK_SEED PROMPTS OUT.jsonl"
encoder=${1:?$usage} render_seed=${2:?$usage} attack_seed=${3:?$usage} prompts=${4:?$usage} out=${5:?$usage}
bin=${CLIPDOOR:-target/release/clipdoor}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" shapes render --n 3000 --seed "$render_seed" --out "$work/render" > /dev/null
python3 scripts/word_images.py "$work/render" "$work/circles"
"$bin" attack embedding --pipeline checkpoints/shapes --encoder "$encoder" --images "$work/circles" \
    --concept circle --init-word shape --steps 400 --seed "$attack_seed" --device "${DEVICE:-cpu}" \
    --prompts "$prompts" --out "$out"
