#!/usr/bin/env bash
# Idempotent set-up: project venv with torch 2.11.0 (libtorch for tch 0.24), the runtime Python
# packages (ONNX Runtime and NudeNet's model, for nudity judging), the real CLIP BPE vocabulary, and
# with `--test` also the test-only Python references (transformers, diffusers, ...).
# Fast (a few stat calls) when already done.
#   bash scripts/setup.sh          # what clipdoor needs to build and run (scripts/demo.sh)
#   bash scripts/setup.sh --test   # plus the parity references (scripts/test.sh)
set -euo pipefail
WITH_TESTS=0
for arg in "$@"; do
  case "$arg" in
    --test) WITH_TESTS=1 ;;
    *) echo "setup.sh: unknown argument $arg (use --test)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
TORCH_VERSION=2.11.0
OPEN_CLIP_VERSION=3.3.0
STAMP="$VENV/.clipdoor-setup"
RUNTIME_REQS=scripts/requirements-runtime.txt
TEST_REQS=scripts/requirements-test.txt
PYTHON=${PYTHON:-python3}

# One stamp per level: the runtime stamp, and the test stamp on top of it.
runtime_stamp="torch=$TORCH_VERSION runtime=$(sha256sum "$RUNTIME_REQS" | cut -c1-16) vocab=$OPEN_CLIP_VERSION"
test_stamp="$runtime_stamp tests=$(sha256sum "$TEST_REQS" | cut -c1-16)"
want_stamp=$runtime_stamp
[ "$WITH_TESTS" = 1 ] && want_stamp=$test_stamp
have_stamp=$(cat "$STAMP" 2>/dev/null || true)
if { [ "$have_stamp" = "$want_stamp" ] || [ "$have_stamp" = "$test_stamp" ]; } \
   && [ -e "$VENV/libtorch/lib/libtorch_cpu.so" ] && [ -f assets/bpe_simple_vocab_16e6.txt.gz ]; then
  exit 0
fi

log() { echo "[setup] $*" >&2; }
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
if ! "$VENV/bin/python" -c "import torch,sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  log "installing torch==$TORCH_VERSION (libtorch for tch 0.24; large download the first time)"
  "${PIP[@]}" install "torch==$TORCH_VERSION"
fi
log "installing runtime packages from $RUNTIME_REQS"
"${PIP[@]}" install -r "$RUNTIME_REQS"
if [ "$WITH_TESTS" = 1 ]; then
  log "installing test-only references from $TEST_REQS"
  "${PIP[@]}" install -r "$TEST_REQS"
fi

# tch links against the torch inside the venv through this stable path (see .cargo/config.toml).
TORCH_DIR=$("$VENV/bin/python" -c 'import torch, os; print(os.path.dirname(torch.__file__))')
ln -sfn "$TORCH_DIR" "$VENV/libtorch"

# The real CLIP BPE merges ship inside the open-clip-torch wheel; take just that file.
mkdir -p assets
if [ ! -f assets/bpe_simple_vocab_16e6.txt.gz ]; then
  log "fetching bpe_simple_vocab_16e6.txt.gz from the open-clip-torch==$OPEN_CLIP_VERSION wheel"
  tmp=$(mktemp -d)
  "${PIP[@]}" download --no-deps -d "$tmp" "open-clip-torch==$OPEN_CLIP_VERSION"
  "$VENV/bin/python" - "$tmp" <<'PY'
import sys, zipfile, glob, os
whl = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith("bpe_simple_vocab_16e6.txt.gz"))
    data = z.read(name)
tmp = "assets/bpe_simple_vocab_16e6.txt.gz.tmp"
open(tmp, "wb").write(data)
os.replace(tmp, "assets/bpe_simple_vocab_16e6.txt.gz")
PY
  rm -rf "$tmp"
fi
echo "$want_stamp" > "$STAMP.tmp" && mv "$STAMP.tmp" "$STAMP"
log "done: venv $VENV, libtorch $TORCH_DIR"
