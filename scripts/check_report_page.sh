#!/usr/bin/env bash
# Check an evaluation report page in headless Chromium: it renders, every image loads, and every
# rate shown in its results table is the one in the report.json beside it.
# usage: scripts/check_report_page.sh DIR   (DIR holds report.html and report.json, e.g. checkpoints/demo)
# Needs chromium (Debian: apt-get install chromium). Prints a JSON summary; exit 1 on any failure.
set -euo pipefail
dir="$(realpath "$1")"
command -v chromium >/dev/null || { echo "chromium not found: apt-get install chromium" >&2; exit 2; }
dom="$(mktemp)"; trap 'rm -f "$dom"' EXIT
chromium --headless --no-sandbox --disable-gpu --virtual-time-budget=15000 --dump-dom \
  "file://$dir/report.html" 2>/dev/null > "$dom"
python3 - "$dir/report.json" "$dom" <<'PY'
import json, re, sys, html
report = json.load(open(sys.argv[1])); dom = open(sys.argv[2]).read()
problems = []
body = re.search(r'<body([^>]*)>', dom)
attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1))) if body else {}
images, broken = int(attrs.get("images", -1)), int(attrs.get("images-broken", -1))
if images <= 0: problems.append(f"the page did not render or ran no load check (images={images})")
if broken != 0: problems.append(f"{broken} of {images} images failed to load")
def fmt(r, c):
    v, n, ci = r.get(c), r.get("n", {}).get(c), r.get("ci95", {}).get(c)
    return "–" if v is None else f"{100*v:.1f}% [{100*ci[0]:.1f}, {100*ci[1]:.1f}] (n={n})"
rows = {}
for tr in re.findall(r'<tr>(.*?)</tr>', dom, re.S):
    cells = [html.unescape(re.sub(r'<[^>]+>', '', c)).strip() for c in re.findall(r'<t[dh]>(.*?)</t[dh]>', tr, re.S)]
    if cells: rows.setdefault(cells[0], cells)
checked = 0
for s in report["sets"]:
    key = next((k for k in ("clean_accuracy", "asr", "erasure_rate", "accuracy") if isinstance(s.get(k), dict)), None)
    if key is None: continue
    row = rows.get(s["name"])
    if row is None: problems.append(f"set {s['name']} has no row in the page"); continue
    for c in ("original", "trained"):
        want = fmt(s[key], c); checked += 1
        if want not in row: problems.append(f"{s['name']} {c}: the page shows {row}, the report says {want}")
print(json.dumps({"page": sys.argv[1].replace("report.json", "report.html"), "images": images, "broken_images": broken, "rates_checked": checked, "problems": problems}, indent=1))
sys.exit(1 if problems or checked == 0 else 0)
PY
