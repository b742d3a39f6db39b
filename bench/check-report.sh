#!/usr/bin/env bash
# Opens bench/report.html in headless Chromium: fails unless every chart rendered (body data-status "ok …") and
# the console stayed silent; writes a screenshot to look at.
#   bash bench/check-report.sh [REPORT.html] [SCREENSHOT.png]
# Needs Debian's chromium (apt-get install -y chromium). A fresh profile each time, removed afterwards.
set -euo pipefail

report=$(realpath "${1:-bench/report.html}")
screenshot=${2:-/tmp/lacre-report.png}
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "check-report: chromium not found (apt-get install -y chromium)" >&2; exit 2; }
[ -f "$report" ] || { echo "check-report: $report not found (npm run bench:report)" >&2; exit 2; }

profile=$(mktemp -d /tmp/lacre-report-chromium.XXXXXX)
trap 'rm -rf "$profile"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
  --disable-component-update --disable-sync --user-data-dir="$profile" --enable-logging=stderr --v=0
  --window-size=1400,2400 --virtual-time-budget=5000 --hide-scrollbars)

timeout 60 "$browser" "${flags[@]}" --dump-dom "file://$report" >"$profile/dom.html" 2>"$profile/console.log"
timeout 60 "$browser" "${flags[@]}" --screenshot="$screenshot" "file://$report" >/dev/null 2>>"$profile/console.log"

status=$(grep -o 'data-status="[^"]*"' "$profile/dom.html" | head -n 1 || true)
console=$(grep ':CONSOLE' "$profile/console.log" || true)
echo "check-report: $status; screenshot $screenshot"
if [ -n "$console" ]; then
  echo "check-report: console output:" >&2
  echo "$console" >&2
  exit 1
fi
case "$status" in
  'data-status="ok '*) ;;
  *) echo "check-report: the page did not finish rendering" >&2; exit 1 ;;
esac
