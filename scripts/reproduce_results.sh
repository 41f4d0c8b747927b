#!/usr/bin/env bash
# Every shapes-world number in README.md and docs/: measure, copy the reports into docs/results/, and
# regenerate the tables from them. Run from the repository root after `cargo build`; about 20 minutes on
# 2 CPU cores with the shipped model (add the model's two training phases, ~55 min, with --train).
#   bash scripts/reproduce_results.sh [--train]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/debug/clipdoor
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
if [[ "${1:-}" == "--train" ]]; then
  $bin shapes train --out runs/shapes_phase1 --steps 5000 --threads 2 --force
  $bin shapes train --out checkpoints/shapes --init-from runs/shapes_phase1 --zero-terminal-snr \
    --weighting truncated-min-snr --no-object-share 0.25 --steps 1500 --lr 5e-4 --threads 2 --force
  rm -rf checkpoints/shapes/checkpoint checkpoints/shapes/tokenizer/tokenizer.json
  for g in 2 2.5 3 4; do   # guidance chosen on calibration seed 1
    $bin shapes sample --model checkpoints/shapes --per-pair 4 --seed 1 --guidance $g --out "runs/calibration_$g"
    cp "runs/calibration_$g/quality.json" "docs/results/shapes_model/calibration/guidance_$g.json"
  done
fi
mkdir -p docs/results/{shapes_model/calibration,demo,demo_full,demo_quick,shapes_tpa32}
# The model's quality (quality.json; the sampled images stay in a scratch folder).
scratch="$(mktemp -d)"; trap 'rm -rf "$scratch"' EXIT
$bin shapes sample --model checkpoints/shapes --per-pair 4 --out "$scratch/sample"
cp "$scratch/sample/quality.json" docs/results/shapes_model/quality.json
# The demo at its three sizes (one trained encoder; each size re-judges or adds images).
$bin demo --force --out checkpoints/demo
cp checkpoints/demo/report.json docs/results/demo/report.json
cp checkpoints/demo/grid.png docs/img/demo_grid.png
if command -v chromium >/dev/null; then
  bash scripts/check_report_page.sh checkpoints/demo
  bash scripts/screenshot_report.sh checkpoints/demo/report.html docs/img/demo_report_html.png 1200,1500
fi
$bin demo --full --out checkpoints/demo
cp checkpoints/demo/report.json docs/results/demo_full/report.json
$bin demo --quick --out checkpoints/demo
cp checkpoints/demo/report.json docs/results/demo_quick/report.json
# The 32-backdoor scale test.
$bin demo --force --experiment experiments/shapes_tpa32.toml --out checkpoints/shapes_tpa32
cp checkpoints/shapes_tpa32/report.json docs/results/shapes_tpa32/report.json
$bin report sync README.md docs/*.md
