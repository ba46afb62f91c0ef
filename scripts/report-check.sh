#!/usr/bin/env bash
# scripts/report-check.sh REPORT_HTML [SCREENSHOT_PNG]
# Renders a run's report.html in headless chromium: the rendered DOM must
# have the page title and no script element (the report has none of its own,
# so one would come from item text), and a 1280×2000 screenshot is written
# (default: next to the report, report.png) for a person to look at.
set -euo pipefail
report=${1:?usage: scripts/report-check.sh REPORT_HTML [SCREENSHOT_PNG]}
shot=${2:-${report%.html}.png}
[ -f "$report" ] || { echo "report-check: $report: no such file" >&2; exit 2; }
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "report-check: chromium is not installed (make setup installs it)" >&2; exit 2; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
url="file://$(realpath "$report")"
flags=(--headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking
       --disable-dev-shm-usage "--user-data-dir=$profile")
dom=$(timeout 90 "$browser" "${flags[@]}" --dump-dom "$url" 2>/dev/null)
grep -q '<h1>tailforge run ' <<<"$dom" || { echo "report-check: $report did not render" >&2; exit 1; }
if grep -qi '<script' <<<"$dom"; then
  echo "report-check: $report has a script element once rendered (unescaped item text?)" >&2
  exit 1
fi
timeout 90 "$browser" "${flags[@]}" --window-size=1280,2000 --hide-scrollbars "--screenshot=$(realpath -m "$shot")" "$url" 2>/dev/null
[ -s "$shot" ] || { echo "report-check: no screenshot written" >&2; exit 1; }
echo "report-check: $report renders ($(grep -o '<h2>[^<]*</h2>' <<<"$dom" | sed 's/<[^>]*>//g' | paste -sd, -)); screenshot $shot"
