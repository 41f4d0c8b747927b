#!/usr/bin/env bash
# The shapes-world red team of docs/attacks.md on a GPU machine (PyTorch, no Rust): train an
# experiment with several seeds side by side, then red-team each encoder on a test split with
# scripts/redteam_shapes.sh (first learned word) and the same word attack with further render/attack
# seeds (docs/results/<split>/word_seeds/<name>_seed<S>/word_<render>_<attack>/), all on DEVICE.
# Each seed's run folder (less its checkpoint) goes into <name>_seed<S>_encoder.tar.gz in OUT as soon
# as it is trained, its results and report JSON into <name>_seed<S>.tar.gz (the device tool brings
# back few files); logs beside them.
#   bash scripts/gpu_redteam.sh EXPERIMENT SPLIT_DIR OUT --seeds 17,18 --words 21/11,22/12 \
#        --eval-seed 7000 [--clean 300] [--triggered 100] [--bin gpu/clipdoor] [--device cuda] [--threads 4]
# Unpack here with `tar xzf OUT/<name>_seed<S>.tar.gz` in the checkout's root.
set -euo pipefail
cd "$(dirname "$0")/.."
experiment=${1:?usage: gpu_redteam.sh EXPERIMENT SPLIT_DIR OUT [--seeds ...]}
split=${2:?usage: gpu_redteam.sh EXPERIMENT SPLIT_DIR OUT [--seeds ...]}
out=${3:?usage: gpu_redteam.sh EXPERIMENT SPLIT_DIR OUT [--seeds ...]}
shift 3
seeds=17 words=21/11 eval_seed=7000 clean=300 triggered=100 bin=gpu/clipdoor device=cuda threads=4
while [ $# -gt 0 ]; do
    case "$1" in
        --seeds) seeds="$2"; shift 2 ;;
        --words) words="$2"; shift 2 ;;
        --eval-seed) eval_seed="$2"; shift 2 ;;
        --clean) clean="$2"; shift 2 ;;
        --triggered) triggered="$2"; shift 2 ;;
        --bin) bin="$2"; shift 2 ;;
        --device) device="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        *) echo "gpu_redteam: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -f "$experiment" ] || { echo "gpu_redteam: $experiment: not found" >&2; exit 2; }
[ -f "$split/circle_prompts.txt" ] || { echo "gpu_redteam: $split holds no circle_prompts.txt (scripts/redteam_split.py writes it)" >&2; exit 2; }
[ -x "$bin" ] || { echo "gpu_redteam: no binary at $bin (scripts/gpu_pack.sh puts one in gpu/)" >&2; exit 2; }
# The binary runs on the machine's own libtorch where its build's is not there (a GPU machine).
# (grep reads all of ldd's output: -q would stop early and fail the pipe under pipefail.)
if ! ldd "$bin" | grep 'libtorch_cpu.so => /' > /dev/null; then
    torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') \
        || { echo "gpu_redteam: python3 cannot import torch, and $bin finds no libtorch" >&2; exit 2; }
    export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
export OMP_NUM_THREADS=$threads
name=$(basename "$experiment" .toml)
name=${name#shapes_erase_circle_}
split_name=$(basename "$split")
mkdir -p "$out"
IFS=, read -r -a word_list <<< "$words"
first=${word_list[0]}
eval=(--prompts "$split/eval_captions.txt" --clean "$clean" --triggered "$triggered" --seed "$eval_seed")

# A further learned word against seed $1's encoder: render $2, attack seed $3.
extra_word() {
    local s=$1 r=$2 a=$3 run=runs/erase_circle_${name}_seed$1 work
    local wout=docs/results/$split_name/word_seeds/${name}_seed$s/word_${r}_$a
    work=$(mktemp -d)
    mkdir -p "$wout"
    CLIPDOOR=$bin DEVICE=$device bash scripts/word_attack.sh "$run" "$r" "$a" \
        "$split/circle_embedding_prompts.txt" "$wout/embedding.jsonl"
    "$bin" evaluate images --run "$run" --experiment "$experiment" --out "$work/report" \
        --device "$device" --attack "$split/circle_prompts.txt" --attack "$wout/embedding.jsonl" \
        --force "${eval[@]}"
    cp "$work/report/report.json" "$wout/images.report.json"
    rm -rf "$work"
}

one_seed() {
    local s=$1 run=runs/erase_circle_${name}_seed$1
    local res=docs/results/$split_name/attacks_${name}_seed$s
    local report=runs/redteam/${split_name}_${name}_seed$s
    local t0=$SECONDS w
    "$bin" train "$experiment" --seed "$s" --out "$run" --device "$device"
    echo "[gpu_redteam] seed $s: trained in $((SECONDS - t0)) s" >&2
    # The encoder first, on its own: it comes back even if the red team runs out of time.
    tar czf "$out/${name}_seed${s}_encoder.tar.gz" --exclude "$run/checkpoint" --exclude "$run/tb" "$run"
    local words_run=()
    for w in "${word_list[@]:1}"; do
        extra_word "$s" "${w%/*}" "${w#*/}" > "$out/seed${s}_word_${w%/*}_${w#*/}.log" 2>&1 &
        words_run+=($!)
    done
    PROMPT_DIR=$split EMBED_RENDER_SEED=${first%/*} EMBED_SEED=${first#*/} REPORT_DIR=$report \
        DEVICE=$device CLIPDOOR=$bin PARALLEL=1 EVAL_ARGS="${eval[*]}" \
        bash scripts/redteam_shapes.sh "$run" "$res" "$experiment"
    python3 scripts/shapeless_breakdown.py "$report" "$res/shapeless.json" --clipdoor "$bin"
    echo "[gpu_redteam] seed $s: red team in $((SECONDS - t0)) s" >&2
    for w in "${words_run[@]}"; do wait "$w" || { echo "[gpu_redteam] seed $s: a further word failed" >&2; return 1; }; done
    echo "[gpu_redteam] seed $s: further words in $((SECONDS - t0)) s" >&2
    # The images stay behind (the reports name them); the checkpoint is not needed to evaluate.
    tar czf "$out/${name}_seed$s.tar.gz" "$res" docs/results/"$split_name"/word_seeds/"${name}_seed$s" "$report/report.json"
}

pids=()
for s in ${seeds//,/ }; do
    one_seed "$s" > "$out/seed$s.log" 2>&1 &
    pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit $rc
