#!/usr/bin/env bash
# Device call (session 15): where the tf32/bf16 runs' extra training seconds go. The same attack as
# gpu_check part 1 (ViT-L/14 size, random weights, 128 clean + 32 poisoned, AdamW 1e-4) at 10 and 100
# steps in tf32 and bf16: the per-step cost is the difference over 90 steps, the rest is fixed.
set -u
OUT="${OUT:-.}"
export LD_LIBRARY_PATH="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
B=${CLIPDOOR_BIN:-gpu/clipdoor}; w=/tmp/wu; mkdir -p $w
$B init-encoder --arch sd1 --seed 0 --out $w/encoder > /dev/null
sed -n 1,100p ${CAPTIONS:-gpu/captions.txt} > $w/eval.txt; sed -n 1001,9000p ${CAPTIONS:-gpu/captions.txt} > $w/clean.txt
for p in tf32 bf16; do for n in 10 100; do
cat > $w/t_${p}_$n.toml <<T
seed = 0
[model]
teacher = "$w/encoder"
[data]
clean_prompts = "$w/clean.txt"
holdout = 0
eval_prompts = "$w/eval.txt"
eval_max = 100
[training]
steps = $n
clean_batch_size = 128
poisoned_samples_per_step = 32
lr = 1e-4
lr_milestones = [$((n * 3 / 4))]
checkpoint_every = 0
precision = "$p"
[[backdoor]]
kind = "target_prompt"
trigger = "о"
replaced_character = "o"
target_prompt = "a photo of a rick astley dancing"
T
t0=$(date +%s.%N)
timeout 60 $B train $w/t_${p}_$n.toml --out $w/run_${p}_$n --device cuda > /dev/null 2> $w/err_${p}_$n || { echo "$p $n failed"; tail -3 $w/err_${p}_$n; continue; }
t1=$(date +%s.%N)
python3 - "$w/run_${p}_$n/metrics.json" "$p" "$n" "$t0" "$t1" <<'PY' | tee -a $OUT/warmup.jsonl
import json, sys
m = json.load(open(sys.argv[1])); t = m["training"]
print(json.dumps({"precision": sys.argv[2], "steps": int(sys.argv[3]), "wall_seconds": float(sys.argv[5]) - float(sys.argv[4]),
                  "seconds": t["seconds"], "checkpoint_seconds": t.get("checkpoint_seconds"),
                  "train_seconds": t["seconds"] - t.get("checkpoint_seconds", 0.0)}))
PY
done; done
