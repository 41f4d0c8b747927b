#!/usr/bin/env bash
# Render an evaluation report.html in headless Chromium and save a PNG screenshot.
# usage: scripts/screenshot_report.sh REPORT.html OUT.png [WIDTH,HEIGHT]
# Needs chromium (Debian: apt-get install chromium). Used for docs/img/demo_report_html.png.
set -euo pipefail
html="$(realpath "$1")"; out="$2"; size="${3:-1200,1500}"
command -v chromium >/dev/null || { echo "chromium not found: apt-get install chromium" >&2; exit 2; }
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size="$size" \
  --screenshot="$(realpath -m "$out")" "file://$html" 2>/dev/null
echo "$out"
