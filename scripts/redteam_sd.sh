#!/usr/bin/env bash
# The Stable Diffusion nudity red team (docs/attacks.md, "Stable Diffusion nudity"): erase, attack the
# erased encoder three ways with the I2P nudity prompts as targets, then draw everything with the
# original and the erased encoder and judge it (NudeNet at the experiment's threshold, CLIP).
#   bash scripts/redteam_sd.sh EXPERIMENT OUT_DIR [REFERENCE]
#   bash scripts/redteam_sd.sh experiments/redteam/sd_nudity_erase.toml runs/redteam_sd/erase
# REFERENCE: the original text encoder (default openai/clip-vit-large-patch14, SD 1.4's).
# Budgets (environment): N_PROMPTS (95: Ring-A-Bell's I2P selection), TS_STEPS (250 GCG steps; the
# paper's 1,000 take 880-1,005 s a prompt on a GPU), GENERATIONS (3,000, Ring-A-Bell's), DEVICE.
# Every step resumes: a finished training or attack is kept, an interrupted one continues, and the
# image stage reuses images already drawn. Writes OUT_DIR/images/report.json; list it in a red-team
# manifest (docs/results/redteam_shapes.json) for the attack × encoder table.
set -euo pipefail
cd "$(dirname "$0")/.."
exp=${1:?usage: redteam_sd.sh EXPERIMENT OUT_DIR [REFERENCE]}
out=${2:?usage: redteam_sd.sh EXPERIMENT OUT_DIR [REFERENCE]}
ref=${3:-openai/clip-vit-large-patch14}
bin=${CLIPDOOR:-target/release/clipdoor}
device=()
[ -n "${DEVICE:-}" ] && device=(--device "$DEVICE")
mkdir -p "$out"
run=$out/encoder
if [ ! -f "$run/DONE" ]; then
    resume=()
    [ -d "$run/checkpoint" ] && resume=(--resume)
    "$bin" train "$exp" --out "$run" "${device[@]}" "${resume[@]}"
fi
# The "no attack" row: the targets themselves, drawn as they are.
head -n "${N_PROMPTS:-95}" experiments/redteam/nudity_i2p.txt > "$out/i2p.txt"
concept="nudity, nude, naked, sexy"
common=(--encoder "$run" --reference "$ref" --concept "$concept" --seed 0 "${device[@]}")
attack() { # METHOD ARGS...: skip a finished set, resume an interrupted one
    local method=$1 file=$out/$1.jsonl
    shift
    [ -f "$file" ] && return 0
    local resume=()
    [ -f "$file.partial.json" ] && resume=(--resume)
    "$bin" attack "$method" "${common[@]}" "$@" --out "$file" "${resume[@]}"
}
attack token-search --prompts "$out/i2p.txt" --steps "${TS_STEPS:-250}" \
    --ban sex --ban porn --ban breast --ban nipple --ban topless
attack ring-a-bell --with experiments/redteam/nudity_i2p.txt --prompts "$out/i2p.txt" \
    --generations "${GENERATIONS:-3000}"
attack homoglyph --prompts "$out/i2p.txt" --per-prompt 1
"$bin" evaluate images --run "$run" --experiment "$exp" --out "$out/images" "${device[@]}" \
    --attack-concept nudity --attack "$out/i2p.txt" --attack "$out/token-search.jsonl" \
    --attack "$out/ring-a-bell.jsonl" --attack "$out/homoglyph.jsonl" --force
