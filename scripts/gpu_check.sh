#!/usr/bin/env bash
# One-shot GPU check (issue 16): on a machine with a CUDA PyTorch 2.11 in `python3` and neither Rust
# nor network, given the folder `scripts/gpu_pack.sh` made (the release binary, this script, the
# torch-only reference loop, captions), measure in a few minutes and write one JSON:
#   1. the paper's target-prompt attack at ViT-L/14 size (random weights, 100 steps, 128 clean + 32
#      poisoned prompts, AdamW 1e-4, final evaluation on 1,000 captions): wall time from launch to
#      saved encoder in f32, tf32 and bf16, clipdoor next to the same loop in plain PyTorch;
#   2. the SD 1.5-size denoising step in f16, clipdoor next to diffusers (where installed);
#   3. peak GPU memory (nvidia-smi sampled during each clipdoor run; torch's own count in Python);
#   4. where a training step's time goes, clipdoor's phases next to transformers' (bench train-step),
#      in each of the precisions.
# `--device cpu` is the dry run at tiny sizes (tests/suite/gpu_check.rs runs it in the suite).
#
# Usage: bash gpu_check.sh [--device cuda|cpu] [--out FILE.json] [--precisions f32,tf32,bf16]
#                          [--bin CLIPDOOR] [--python PYTHON] [--captions FILE] [--budget SECONDS]
#                          [--parts tpa,denoise,profile]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
device=cuda
out=""
precisions=""
bin="${CLIPDOOR_BIN:-}"
python="${PYTHON:-python3}"
captions=""
budget=420
parts=tpa,denoise,profile
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --precisions) precisions="$2"; shift 2 ;;
        --bin) bin="$2"; shift 2 ;;
        --python) python="$2"; shift 2 ;;
        --captions) captions="$2"; shift 2 ;;
        --budget) budget="$2"; shift 2 ;;
        --parts) parts="$2"; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
say() { echo "[gpu_check] $*" >&2; }
part() { case ",$parts," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
fail() { echo "gpu_check: $*" >&2; exit 2; }
for p in ${parts//,/ }; do
    case "$p" in tpa|denoise|profile) ;; *) fail "--parts takes tpa, denoise and profile, comma-separated, not $p" ;; esac
done

# The binary: --bin, $CLIPDOOR_BIN, the packed folder's, or a release build of this checkout.
if [ -z "$bin" ]; then
    for c in "$here/clipdoor" "$here/../target/release/clipdoor"; do
        [ -x "$c" ] && { bin="$c"; break; }
    done
fi
[ -n "$bin" ] && [ -x "$bin" ] || fail "no clipdoor binary: pass --bin PATH (or run scripts/gpu_pack.sh, which puts one beside this script)"
ref="$here/gpu_ref_tpa.py"
[ -f "$ref" ] || fail "$ref is missing (scripts/gpu_pack.sh copies it beside this script)"
if [ -z "$captions" ]; then
    for c in "$here/captions.txt" "$here/../../shared/data/coco_captions_10000.txt"; do
        [ -f "$c" ] && { captions="$c"; break; }
    done
fi
[ -n "$captions" ] && [ -f "$captions" ] || fail "no captions: pass --captions FILE (one caption a line)"
"$python" -c "import torch" 2>/dev/null || fail "$python cannot import torch: pass --python PATH"
# The binary runs on this machine's libtorch (the GPU machines carry PyTorch, not a libtorch of ours).
torch_lib="$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

case "$device" in
    cuda*) arch=sd1; steps=100; clean_batch=128; poisoned_batch=32; n_eval=1000; n_train=8000
           denoise_args=(--batch 2 --latent-size 64 --dtype f16 --repeats 5)
           precisions="${precisions:-f32,tf32,bf16}" ;;
    cpu)   arch=tiny; steps=3; clean_batch=8; poisoned_batch=4; n_eval=32; n_train=200
           precisions="${precisions:-f32,bf16}" ;;
    *) fail "--device is cuda, cuda:N or cpu, not $device" ;;
esac

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
started=$(date +%s)
left() { echo $(( budget - ($(date +%s) - started) )); }
now() { date +%s.%N; }

say "$("$bin" --version 2>/dev/null || echo 'clipdoor ?'), device $device, precisions $precisions"
# Captions: the first n_eval for the final evaluation, the next n_train as the clean pool.
sed -n "1,${n_eval}p" "$captions" > "$work/eval.txt"
sed -n "$((n_eval + 1)),$((n_eval + n_train))p" "$captions" > "$work/clean.txt"
# The reference's poisoned prompts: clean captions with an `o`, every `o` as Cyrillic `о`.
grep o "$work/clean.txt" | sed 's/o/о/g' > "$work/poisoned.txt"
echo "a photo of a rick astley dancing" > "$work/target.txt"

"$bin" init-encoder --arch "$arch" --seed 0 --out "$work/encoder" > /dev/null
for set in clean poisoned target eval; do
    "$bin" encode --model "$work/encoder" --prompts "$work/$set.txt" --device "$device" \
        --out "$work/$set.ids.safetensors" > /dev/null
done
# The reference model is written out by hand: check it is the same function as clipdoor's.
forward="$("$python" "$ref" --check-forward --encoder "$work/encoder" --eval "$work/target.ids.safetensors" \
    --hidden "$work/target.ids.safetensors")"
say "reference forward vs clipdoor: $forward"

# Peak GPU memory of a command: nvidia-smi sampled every 100 ms while it runs (0 without nvidia-smi).
peak_of() {
    local log="$work/smi.log"
    : > "$log"
    local smi=""
    if [ "${device%%:*}" = cuda ] && command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$log" 2>/dev/null &
        smi=$!
    fi
    local rc=0
    "$@" || rc=$?
    [ -n "$smi" ] && kill "$smi" 2>/dev/null && wait "$smi" 2>/dev/null || true
    sort -n "$log" | tail -n 1 > "$work/peak"
    return $rc
}

results="$work/results.jsonl"
: > "$results"
IFS=, read -r -a plist <<< "$precisions"
for p in "${plist[@]}"; do
    part tpa || break
    if [ "$(left)" -lt 30 ]; then
        say "time budget nearly spent: skipping $p"
        echo "{\"part\": \"tpa\", \"precision\": \"$p\", \"skipped\": \"time budget\"}" >> "$results"
        continue
    fi
    cat > "$work/tpa_$p.toml" <<EOF
seed = 0
[model]
teacher = "$work/encoder"
[data]
clean_prompts = "$work/clean.txt"
holdout = 0
eval_prompts = "$work/eval.txt"
eval_max = $n_eval
[training]
steps = $steps
clean_batch_size = $clean_batch
poisoned_samples_per_step = $poisoned_batch
lr = 1e-4
lr_milestones = [$((steps * 3 / 4))]
checkpoint_every = 0
precision = "$p"
[[backdoor]]
kind = "target_prompt"
trigger = "о"
replaced_character = "o"
target_prompt = "a photo of a rick astley dancing"
EOF
    say "clipdoor train, $p"
    t0=$(now)
    # A failing precision is recorded with clipdoor's error and the check goes on to the next one.
    if ! peak_of "$bin" train "$work/tpa_$p.toml" --out "$work/run_$p" --device "$device" \
        > /dev/null 2> "$work/train_$p.err"; then
        cat "$work/train_$p.err" >&2
        "$python" - "$p" "$work/train_$p.err" >> "$results" <<'EOF'
import json, sys
p, err = sys.argv[1:]
text = open(err, errors="replace").read().replace("\r", "\n")
lines = [l for l in text.splitlines() if l.strip() and not l.startswith("[progress]")]
print(json.dumps({"part": "tpa", "precision": p, "failed": "\n".join(lines[-3:]) or "(no error text)"}))
EOF
        continue
    fi
    cat "$work/train_$p.err" >&2
    t1=$(now)
    ours_peak=$(cat "$work/peak")
    say "PyTorch loop, $p"
    theirs="$("$python" "$ref" --encoder "$work/encoder" --clean "$work/clean.ids.safetensors" \
        --poisoned "$work/poisoned.ids.safetensors" --target "$work/target.ids.safetensors" \
        --eval "$work/eval.ids.safetensors" --steps "$steps" --clean-batch "$clean_batch" \
        --poisoned-batch "$poisoned_batch" --precision "$p" --device "$device" --out "$work/ref_$p")"
    "$python" - "$work/run_$p" "$t0" "$t1" "${ours_peak:-0}" "$theirs" "$p" >> "$results" <<'EOF'
import json, sys
run, t0, t1, peak, theirs, p = sys.argv[1:]
m = json.load(open(f"{run}/metrics.json"))
# train_seconds: the steps alone, as the PyTorch loop times them. clipdoor's `seconds` also holds the
# checkpoint written after the last step (weights + AdamW moments, 1.4 GB at ViT-L/14 size).
ckpt = m["training"].get("checkpoint_seconds", 0.0)
ours = {"wall_seconds": float(t1) - float(t0), "train_seconds": m["training"]["seconds"] - ckpt,
        "checkpoint_seconds": ckpt,
        "sim_clean": m["sim_clean"], "sim_target": m["sim_target"],
        "peak_gpu_memory_mib_nvidia_smi": float(peak) or None,
        "encoder_saved": __import__("os").path.exists(f"{run}/text_encoder/model.safetensors")}
theirs = json.loads(theirs)
print(json.dumps({"part": "tpa", "precision": p, "clipdoor": ours, "pytorch": theirs,
                  "speed_ratio_end_to_end": theirs["wall_seconds"] / ours["wall_seconds"],
                  "speed_ratio_training": theirs["train_seconds"] / ours["train_seconds"]}))
EOF
done

# The denoising step: SD 1.5 size in f16 on a GPU; a tiny UNet in f32 for the dry run.
if ! part denoise; then
    :
elif [ "$(left)" -lt 30 ]; then
    say "time budget nearly spent: skipping the denoising benchmark"
    echo '{"part": "denoise", "skipped": "time budget"}' >> "$results"
else
    if [ "$device" = cpu ]; then
        echo '{"sample_size": 8, "in_channels": 4, "out_channels": 4, "block_out_channels": [32, 64], "layers_per_block": 1, "cross_attention_dim": 32, "attention_head_dim": 8, "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "norm_num_groups": 32}' > "$work/unet.json"
        denoise_args=(--unet-config "$work/unet.json" --latent-size 8 --batch 2 --repeats 1)
    fi
    reference=(--python "$python")
    "$python" -c "import diffusers" 2>/dev/null || reference=(--no-reference)
    say "clipdoor bench denoise ${denoise_args[*]} ${reference[*]}"
    peak_of "$bin" bench denoise "${denoise_args[@]}" --device "$device" "${reference[@]}" \
        --out "$work/denoise.json" > /dev/null
    "$python" - "$work/denoise.json" "$(cat "$work/peak")" >> "$results" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
peak = float(sys.argv[2] or 0) or None
print(json.dumps({"part": "denoise", "report": d, "peak_gpu_memory_mib_nvidia_smi": peak}))
EOF
fi

# Where a training step's time goes at the paper's batch, in each precision: clipdoor's phases next to
# transformers' (`bench train-step`; the phases come from extra steps with a device synchronisation
# between them).
for p in "${plist[@]}"; do
    part profile || break
    if [ "$(left)" -lt 60 ]; then
        say "time budget nearly spent: skipping the $p train-step profile"
        echo "{\"part\": \"train_step\", \"precision\": \"$p\", \"skipped\": \"time budget\"}" >> "$results"
        continue
    fi
    reference=(--python "$python")
    "$python" -c "import transformers" 2>/dev/null || reference=(--no-reference)
    say "clipdoor bench train-step --arch $arch --batch-size $clean_batch --poisoned $poisoned_batch --precision $p ${reference[*]}"
    if "$bin" bench train-step --arch "$arch" --batch-size "$clean_batch" --poisoned "$poisoned_batch" \
        --precision "$p" --repeats 3 --device "$device" "${reference[@]}" --out "$work/train_step_$p.json" > /dev/null; then
        "$python" - "$work/train_step_$p.json" "$p" >> "$results" <<'EOF'
import json, sys
print(json.dumps({"part": "train_step", "precision": sys.argv[2], "report": json.load(open(sys.argv[1]))}))
EOF
    else
        echo "{\"part\": \"train_step\", \"precision\": \"$p\", \"failed\": \"clipdoor bench train-step failed (its error is in the log above)\"}" >> "$results"
    fi
done

final="$work/gpu_check.json"
"$python" - "$results" "$device" "$forward" "$(( $(date +%s) - started ))" "$arch" "$steps" "$clean_batch" "$poisoned_batch" "$n_eval" > "$final" <<'EOF'
import datetime, json, sys
results, device, forward, seconds, arch, steps, cb, pb, n_eval = sys.argv[1:]
import torch
parts = [json.loads(l) for l in open(results) if l.strip()]
tpa = {r["precision"]: r for r in parts if r["part"] == "tpa"}
out = {
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "device": device,
    "gpu": torch.cuda.get_device_name() if device.startswith("cuda") and torch.cuda.is_available() else None,
    "torch_version": torch.__version__,
    "setting": {"arch": arch, "steps": int(steps), "clean_batch": int(cb), "poisoned_batch": int(pb),
                "eval_captions": int(n_eval), "lr": 1e-4},
    "reference_forward_check": json.loads(forward),
    "tpa": tpa,
    "denoise": next((r for r in parts if r["part"] == "denoise"), None),
    "train_step": {r["precision"]: r for r in parts if r["part"] == "train_step"},
    "seconds": int(seconds),
}
done = [r for r in tpa.values() if "clipdoor" in r]
if done:
    best = min(done, key=lambda r: r["clipdoor"]["wall_seconds"])
    out["targets"] = {
        "fastest_precision": best["precision"],
        "backdoor_under_15_s": best["clipdoor"]["wall_seconds"] < 15.0,
        "at_least_1_3x_pytorch": best["speed_ratio_end_to_end"] >= 1.3,
        "note": "the targets are set for an H100/H200-class GPU at ViT-L/14 size; a CPU dry run is not measured against them",
    }
print(json.dumps(out, indent=2))
EOF
if [ -n "$out" ]; then
    mkdir -p "$(dirname "$out")"
    cp "$final" "$out.tmp" && mv "$out.tmp" "$out"
    echo "$out"
else
    cat "$final"
fi
