#!/usr/bin/env bash
# Run any clipdoor command that takes `--shard I/N` as a Slurm job array, plus one merge job that waits
# for the whole array. Run it where you would run sbatch (a login node); it submits two jobs:
#
#   1. an array job `--array=0-(N-1)`: task I runs `clipdoor <command> <args> --shard I/N`
#      (I = $SLURM_ARRAY_TASK_ID, expanded when the task starts);
#   2. a merge job `--dependency=afterok:<array job>`: `clipdoor evaluate merge --out <out>`
#      (coverage check, then the stage's report), started only when every task succeeded.
#
# Usage:
#
#   scripts/slurm.sh -n N [SBATCH OPTIONS...] [--no-merge] [--merge-command "ARGS"] -- COMMAND ARGS...
#
#   scripts/slurm.sh -n 16 --gres=gpu:1 --time=24:00:00 -- \
#       evaluate i2p --pipeline CompVis/stable-diffusion-v1-4 --prompts ../shared/data/i2p.csv --out runs/i2p
#   scripts/slurm.sh -n 8 --gres=gpu:1 -- generate --pipeline P --prompts prompts.txt --out runs/images
#   scripts/slurm.sh -n 4 --gres=gpu:1 -- evaluate images --run runs/tpa --out runs/tpa/eval
#   scripts/slurm.sh -n 4 --gres=gpu:1 -- evaluate bias relative --pipeline P --clip C --out runs/bias
#
# Options before `--`:
#   -n N, --shards N      the number of shards (array tasks), at least 1
#   --no-merge            submit only the array (run `clipdoor evaluate merge --out OUT` yourself)
#   --merge-command ARGS  clipdoor arguments of the merge job instead of `evaluate merge --out OUT`
#                         (split on spaces; e.g. for a command whose shards merge another way)
#   anything else         passed to both sbatch calls (--gres, --time, --partition, --mem, ...)
#
# COMMAND ARGS are the clipdoor arguments of one whole run, with --out and without --shard. The script
# checks (when the clipdoor binary is there) that the command takes --shard. A task that failed or was
# killed resumes when rerun with the same arguments: rerun only it with
# `sbatch --array=I <the array command printed by SLURM_DRY_RUN=1>`, then the merge.
#
# Environment:
#   CLIPDOOR        the clipdoor binary (default: `clipdoor` on PATH, else target/release/clipdoor here)
#   SBATCH          the sbatch command (default: sbatch)
#   SLURM_DRY_RUN=1 print the two sbatch commands (shell-quoted, one a line) instead of running them;
#                   the merge job's dependency then reads afterok:$ARRAY_JOB_ID
#
# scripts/slurm_i2p.sh is the older in-array form for `evaluate i2p` (the array's first task submits the
# merge); it keeps working. See docs/cluster.md.
set -euo pipefail

die() {
    echo "slurm.sh: $*" >&2
    exit 2
}

# POSIX single-quoting (sbatch --wrap scripts run under /bin/sh).
q() {
    local s=${1//\'/\'\\\'\'}
    printf "'%s'" "$s"
}

shards=""
merge=1
merge_command=""
sbatch_opts=()
while (($#)); do
    case $1 in
    -n | --shards)
        (($# >= 2)) || die "$1 needs a number"
        shards=$2
        shift 2
        ;;
    --shards=*)
        shards=${1#--shards=}
        shift
        ;;
    --no-merge)
        merge=""
        shift
        ;;
    --merge-command)
        (($# >= 2)) || die "$1 needs the merge job's clipdoor arguments"
        merge_command=$2
        shift 2
        ;;
    --merge-command=*)
        merge_command=${1#--merge-command=}
        shift
        ;;
    --array | --array=* | -a | --dependency | --dependency=* | -d | --wrap | --wrap=*)
        die "do not pass $1: the script sets the array, the dependency and the job command"
        ;;
    --)
        shift
        break
        ;;
    *)
        sbatch_opts+=("$1")
        shift
        ;;
    esac
done
(($#)) || die "no clipdoor command: usage: scripts/slurm.sh -n N [SBATCH OPTIONS] -- COMMAND ARGS..."
[[ -n $shards ]] || die "give the number of shards: -n N"
[[ $shards =~ ^[0-9]+$ ]] && ((shards >= 1)) || die "-n '$shards': the number of shards must be a whole number of at least 1"

# The command words (before the first flag) name the job; --out is where the merge reads.
out=""
words=()
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
    --out)
        ((i + 1 < ${#args[@]})) || die "--out needs a folder"
        out=${args[i + 1]}
        ;;
    --out=*) out=${args[i]#--out=} ;;
    --shard | --shard=*) die "do not pass --shard: each array task gives its own" ;;
    esac
done
for a in "$@"; do
    [[ $a == -* ]] && break
    words+=("$a")
done
((${#words[@]})) || die "the clipdoor command must come first after --, e.g. -- evaluate i2p --out DIR ..."
[[ -n $out || -z $merge ]] || die "give --out DIR in the clipdoor arguments (the merge job merges <out>/shards/), or --no-merge"

clipdoor=${CLIPDOOR:-}
if [[ -z $clipdoor ]]; then
    clipdoor=$(command -v clipdoor || echo "$PWD/target/release/clipdoor")
fi
if [[ -x $clipdoor ]]; then
    help=$("$clipdoor" "${words[@]}" --help 2>&1) || die "\`clipdoor ${words[*]}\` is not a clipdoor command:
$help"
    grep -q -- '--shard' <<<"$help" || die "\`clipdoor ${words[*]}\` does not take --shard I/N, so it cannot run as an array"
else
    echo "slurm.sh: warning: no clipdoor binary at '$clipdoor' here (build it or set CLIPDOOR); the jobs will look for it there" >&2
fi

name="clipdoor-$(
    IFS=-
    echo "${words[*]:0:2}"
)"
task_cmd="$(q "$clipdoor")"
for a in "$@"; do
    task_cmd+=" $(q "$a")"
done
task_cmd+=" --shard \"\$SLURM_ARRAY_TASK_ID/$shards\""

if [[ -n $merge_command ]]; then
    read -r -a merge_args <<<"$merge_command"
else
    merge_args=(evaluate merge --out "$out")
fi
merge_cmd="$(q "$clipdoor")"
for a in "${merge_args[@]}"; do
    merge_cmd+=" $(q "$a")"
done

sbatch=${SBATCH:-sbatch}
array=(--parsable "--array=0-$((shards - 1))" "--job-name=$name" "--output=$name-%A_%a.out"
    "${sbatch_opts[@]}" "--wrap=$task_cmd")

show() {
    local line
    line=$(q "$1")
    shift
    for a in "$@"; do
        line+=" $(q "$a")"
    done
    echo "$line"
}

if [[ ${SLURM_DRY_RUN:-} == 1 ]]; then
    show "$sbatch" "${array[@]}"
    job='$ARRAY_JOB_ID'
else
    job=$("$sbatch" "${array[@]}") || die "sbatch refused the array job"
    job=${job%%;*}
    [[ $job =~ ^[0-9]+$ ]] || die "sbatch --parsable printed '$job', not a job id"
    echo "slurm.sh: array job $job: $shards task(s) of clipdoor ${words[*]}" >&2
    echo "$job"
fi
if [[ -n $merge ]]; then
    merge_job=(--parsable "--dependency=afterok:$job" --kill-on-invalid-dep=yes "--job-name=$name-merge"
        "--output=$name-merge-%j.out" "${sbatch_opts[@]}" "--wrap=$merge_cmd")
    if [[ ${SLURM_DRY_RUN:-} == 1 ]]; then
        show "$sbatch" "${merge_job[@]}"
    else
        m=$("$sbatch" "${merge_job[@]}") || die "sbatch refused the merge job (the array job $job is submitted)"
        m=${m%%;*}
        echo "slurm.sh: merge job $m runs when array job $job has succeeded" >&2
        echo "$m"
    fi
fi
