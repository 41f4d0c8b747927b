#!/usr/bin/env bash
# Pack what scripts/gpu_check.sh needs on a GPU machine into gpu/ (git-ignored, carried by the device
# tool): the release binary, gpu_check.sh, the torch-only reference loop and 9,000 captions. Nothing
# else: the random ViT-L/14 encoder and the SD 1.5-size UNet are made there.
#   bash scripts/gpu_pack.sh            # builds target/release/clipdoor first (cargo build --release)
#   then, with the device tool: run(command="bash gpu/gpu_check.sh --device cuda --out $OUT/gpu_check.json",
#                                   carry=["gpu"])
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cargo build --release
dest="$root/gpu"
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
cp target/release/clipdoor scripts/gpu_check.sh scripts/gpu_ref_tpa.py "$dest.tmp/"
cp scripts/gpu_warmup.sh "$dest.tmp/warmup.sh"
strip "$dest.tmp/clipdoor" 2>/dev/null || true
captions="$root/../shared/data/coco_captions_10000.txt"
[ -f "$captions" ] || { echo "gpu_pack: $captions is missing (../shared beside the checkout)" >&2; exit 2; }
head -n 9000 "$captions" > "$dest.tmp/captions.txt"
size=$(( $(du -sm "$dest.tmp" | cut -f1) + $( [ -d "$dest/whl" ] && du -sm "$dest/whl" | cut -f1 || echo 0) ))
if [ "$size" -gt 64 ]; then
    echo "gpu_pack: $dest.tmp is $size MiB, over the device tool's 64 MiB" >&2
    exit 1
fi
# Wheels carried for the GPU machine's Python (diffusers for the denoising reference) stay.
[ -d "$dest/whl" ] && mv "$dest/whl" "$dest.tmp/whl"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "$dest ($size MiB)"
