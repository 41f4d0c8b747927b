#!/usr/bin/env bash
# The shapes-world red-team measurement of docs/attacks.md: the three encoder-side attacks against an
# encoder with "circle" erased, targets from the shipped shapes-world encoder. Writes the prompt sets
# and their summaries into OUT_DIR; `clipdoor report sync docs/attacks.md` then rebuilds the tables.
#   clipdoor train experiments/redteam/shapes_erase_circle.toml --out runs/erase_circle
#   bash scripts/redteam_shapes.sh runs/erase_circle docs/results/attacks
# With an experiment file as the third argument, the prompt sets (and the input lines themselves, the
# "no attack" row) are then drawn with the original and the attacked encoder and judged by the oracle
# (`evaluate images --attack`); the report goes to runs/redteam/<run name>/ (or REPORT_DIR) and its report.json to
# OUT_DIR/images.report.json. `circle_deleted.txt` (the input lines with "circle" deleted: what
# plain erasure trains them to) is the floor: how often the UNet draws a circle for a prompt that
# names no shape.
# Budgets are cut from the papers' (1,000 GCG steps, 3,000 generations) to fit 2 CPU cores.
# EMBED_RENDER_SEED (default 7) and EMBED_SEED (default 0) pick the embedding attack's circles and
# seed: another learned word, for a replication.
# PROMPT_DIR (default experiments/redteam) holds the circle_*.txt prompt files: the calibration split
# there, or a test split from scripts/redteam_split.py; EVAL_ARGS adds flags to `evaluate images`
# (the test split's `--prompts DIR/eval_captions.txt --clean 300 --seed 1000`).
set -euo pipefail
cd "$(dirname "$0")/.."
encoder=${1:?usage: redteam_shapes.sh ERASED_ENCODER OUT_DIR [EXPERIMENT]}
out=${2:?usage: redteam_shapes.sh ERASED_ENCODER OUT_DIR [EXPERIMENT]}
experiment=${3:-}
bin=${CLIPDOOR:-target/release/clipdoor}
device=${DEVICE:-cpu}
dir=${PROMPT_DIR:-experiments/redteam}
common=(--encoder "$encoder" --reference checkpoints/shapes --concept circle --device "$device" --seed 0)
# A finished prompt set is kept (delete it to search again). PARALLEL=1 runs the four attacks side by
# side (a GPU machine's cores), each a background job; a failing one fails the script.
jobs_run=()
launch() {
    if [ "${PARALLEL:-0}" = 1 ]; then "$@" & jobs_run+=($!); else "$@"; fi
}
[ -f "$out/token-search.jsonl" ] || launch "$bin" attack token-search "${common[@]}" --prompts "$dir/circle_prompts.txt" \
    --steps 150 --out "$out/token-search.jsonl"
[ -f "$out/ring-a-bell.jsonl" ] || launch "$bin" attack ring-a-bell "${common[@]}" --with "$dir/circle_prompts.txt" \
    --without "$dir/circle_removed.txt" --prompts "$dir/circle_removed.txt" \
    --generations 300 --out "$out/ring-a-bell.jsonl"
[ -f "$out/homoglyph.jsonl" ] || launch "$bin" attack homoglyph "${common[@]}" --prompts "$dir/circle_prompts.txt" \
    --per-prompt 1 --out "$out/homoglyph.jsonl"
# Concept inversion (CCE): a word learned, through the attacked encoder, from the first 4 large
# circles of a render the attacks never saw (EMBED_RENDER_SEED), in the prompts in place of "circle".
[ -f "$out/embedding.jsonl" ] || launch env CLIPDOOR="$bin" DEVICE="$device" bash scripts/word_attack.sh \
    "$encoder" "${EMBED_RENDER_SEED:-7}" "${EMBED_SEED:-0}" "$dir/circle_embedding_prompts.txt" "$out/embedding.jsonl"
for j in "${jobs_run[@]}"; do
    wait "$j" || { echo "redteam_shapes: an attack failed (its output above)" >&2; exit 1; }
done
if [ -n "$experiment" ]; then
    report=${REPORT_DIR:-runs/redteam/$(basename "$encoder")}
    # Images drawn under other settings (another set of learned words) are not reused: start afresh.
    rm -rf "$report"
    "$bin" evaluate images --run "$encoder" --experiment "$experiment" --out "$report" --device "$device" \
        --attack "$dir/circle_prompts.txt" --attack "$dir/circle_deleted.txt" --attack "$out/token-search.jsonl" \
        --attack "$out/ring-a-bell.jsonl" --attack "$out/homoglyph.jsonl" \
        --attack "$out/embedding.jsonl" --force ${EVAL_ARGS:-}
    cp "$report/report.json" "$out/images.report.json"
fi
