#!/usr/bin/env bash
# The I2P evaluation as a Slurm job array: task I of N runs `clipdoor evaluate i2p ... --shard I/N`
# (its block of the prompts, into <out>/shards/I-of-N/), and the array's first task submits one merge
# job that waits for the whole array (`--dependency=afterok:<array job>`) and runs
# `clipdoor evaluate merge --out <out>` (coverage check, scores, report). See docs/i2p.md.
#
# Usage (every argument after the script goes to `clipdoor evaluate i2p`; --out is required):
#
#   sbatch --array=0-15 scripts/slurm_i2p.sh \
#       --pipeline CompVis/stable-diffusion-v1-4 --prompts ../shared/data/i2p.csv --out runs/i2p \
#       --encoder erased=runs/nudity-erased --sld medium \
#       --safety-checker CompVis/stable-diffusion-safety-checker \
#       --q16 ../shared/data/q16_vitl14_prompts.safetensors --clip openai/clip-vit-large-patch14
#
# The array must be 0-based (`--array=0-(N-1)`): task I is shard I of N = SLURM_ARRAY_TASK_COUNT.
# A task that failed or was killed is rerun with the same arguments and resumes; to rerun only some
# tasks give the shard count explicitly, e.g. `CLIPDOOR_SHARDS=16 sbatch --array=3,7 scripts/...`
# (the rerun array's first task submits a new merge job waiting for the rerun).
#
# Environment:
#   CLIPDOOR          the clipdoor binary (default: `clipdoor` on PATH, else target/release/clipdoor
#                     of the submit folder)
#   CLIPDOOR_SHARDS   the number of shards N (default: SLURM_ARRAY_TASK_COUNT)
#   CLIPDOOR_NO_MERGE=1  do not submit the merge job (run `clipdoor evaluate merge --out OUT` yourself)
#   SBATCH            the sbatch command used to submit the merge job (default: sbatch)
#
#SBATCH --job-name=clipdoor-i2p
#SBATCH --array=0-7
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=24:00:00
#SBATCH --output=clipdoor-i2p-%A_%a.out
set -euo pipefail

die() {
    echo "slurm_i2p.sh: $*" >&2
    exit 2
}

: "${SLURM_ARRAY_TASK_ID:?not inside a Slurm job array: submit with sbatch --array=0-(N-1) $0 ...}"
id=$SLURM_ARRAY_TASK_ID
count=${CLIPDOOR_SHARDS:-${SLURM_ARRAY_TASK_COUNT:-}}
[[ -n $count ]] || die "SLURM_ARRAY_TASK_COUNT is not set: give the shard count as CLIPDOOR_SHARDS=N"
[[ $id =~ ^[0-9]+$ && $count =~ ^[0-9]+$ ]] || die "task id '$id' and count '$count' must be whole numbers"
((id < count)) || die "array task $id is not below the shard count $count: use --array=0-$((count - 1)) (0-based), or set CLIPDOOR_SHARDS"

# The output folder (for the merge job).
out=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
    --out) out=${args[i + 1]:-} ;;
    --out=*) out=${args[i]#--out=} ;;
    --shard | --shard=*) die "do not pass --shard: the array task gives it" ;;
    esac
done
[[ -n $out ]] || die "give --out DIR (and the other clipdoor evaluate i2p arguments) after the script"

clipdoor=${CLIPDOOR:-}
if [[ -z $clipdoor ]]; then
    clipdoor=$(command -v clipdoor || echo "${SLURM_SUBMIT_DIR:-.}/target/release/clipdoor")
fi
[[ -x $clipdoor ]] || die "no clipdoor binary at '$clipdoor': build it (cargo build --release) or set CLIPDOOR"

min=${SLURM_ARRAY_TASK_MIN:-0}
if [[ $id == "$min" && -z ${CLIPDOOR_NO_MERGE:-} ]]; then
    job=${SLURM_ARRAY_JOB_ID:?SLURM_ARRAY_JOB_ID is not set}
    printf -v merge_cmd '%q evaluate merge --out %q' "$clipdoor" "$out"
    ${SBATCH:-sbatch} --dependency="afterok:$job" --kill-on-invalid-dep=yes \
        --job-name=clipdoor-i2p-merge --output="clipdoor-i2p-merge-%j.out" \
        --wrap="$merge_cmd"
fi

echo "clipdoor-i2p: shard $id/$count on $(hostname)" >&2
exec "$clipdoor" evaluate i2p "$@" --shard "$id/$count"
