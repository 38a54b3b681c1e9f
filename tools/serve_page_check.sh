#!/usr/bin/env bash
# The page at `/` of `lumen serve` in headless Chromium (Debian's `chromium` package): load it, let it
# submit its form (`#generate`, 20 steps), and check in the rendered DOM that the page followed its
# job's server-sent events (not polling), that a TAESD step preview arrived (the server runs with the
# tiny TAESD fixture, which fits the demo model, and a preview every 5 steps: steps 5, 10, 15 and 20
# carry one; every event arrives, so the one shown is step 20's), that the progress bar reached its
# end, and that the image arrived in the gallery with its parameters and the status names the seed. With --screenshot FILE, also writes a screenshot of
# the page after a generation. With --browser firefox, the page runs in headless Firefox (Debian's
# `firefox-esr`, driven over Marionette by tools/firefox_page_dom.py) and the same checks apply.
#   bash tools/serve_page_check.sh [path/to/lumen] [--screenshot docs/images/serve-page.png] [--browser chromium|firefox]
set -euo pipefail
LUMEN=.build/release/lumen
SHOT=""
BROWSER=chromium
while [ $# -gt 0 ]; do
    case $1 in
        --screenshot) SHOT=$2; shift 2 ;;
        --browser) BROWSER=$2; shift 2 ;;
        *) LUMEN=$1; shift ;;
    esac
done
TAESD="$(cd "$(dirname "$0")/.." && pwd)/Tests/Fixtures/taesd/tiny"
case $BROWSER in
    chromium) command -v chromium >/dev/null || { echo "serve_page_check: chromium is not installed (apt-get install chromium)" >&2; exit 1; } ;;
    firefox) command -v firefox-esr >/dev/null || { echo "serve_page_check: firefox-esr is not installed (apt-get install firefox-esr)" >&2; exit 1; } ;;
    *) echo "serve_page_check: --browser $BROWSER: expected chromium or firefox" >&2; exit 1 ;;
esac
log=$(mktemp)
"$LUMEN" serve --port 0 --backend cpu --preview-taesd "$TAESD" --preview-every 5 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q "http://127.0.0.1:" "$log" && break; sleep 0.1; done
url=$(grep -o "http://127.0.0.1:[0-9]*/" "$log" | head -1)
[ -n "$url" ] || { echo "serve_page_check: the server did not start" >&2; cat "$log" >&2; exit 1; }
flags=(--headless --no-sandbox --disable-gpu --virtual-time-budget=60000 --window-size=1000,700)
if [ "$BROWSER" = firefox ]; then
    dom=$(timeout 180 python3 "$(dirname "$0")/firefox_page_dom.py" "${url}#generate" ${SHOT:+--screenshot "$SHOT"})
else
    dom=$(timeout 120 chromium "${flags[@]}" --dump-dom "${url}#generate" 2>/dev/null)
fi
fail=0
no() { echo "serve_page_check ($BROWSER): $1" >&2; fail=1; }
grep -q '<figure><img src="data:image/png;base64,' <<<"$dom" || no "no image in the gallery"
grep -q 'id="status">done, seed [0-9]' <<<"$dom" || no "the status does not say done"
grep -q 'Sampler: Euler a' <<<"$dom" || no "the image's parameters are not shown"
bar=$(grep -o '<progress id="progress"[^>]*>' <<<"$dom" || true)
grep -q 'value="1"' <<<"$bar" || no "the progress bar did not reach its end: $bar"
grep -q 'data-events="[1-9]' <<<"$bar" || no "the page received no job events: $bar"
if grep -q 'data-source=' <<<"$bar"; then no "the page fell back to polling: $bar"; fi
preview=$(grep -o '<img id="step-preview"[^>]*>' <<<"$dom" || true)
grep -q 'src="data:image/png;base64,[A-Za-z0-9+/]' <<<"$preview" || no "no step preview: ${preview:0:200}"
grep -q 'data-step="20"' <<<"$preview" || no "the preview shown is not the last step's (20): ${preview:0:80}…"
if grep -q ' hidden' <<<"$preview"; then no "the step preview is hidden"; fi
if [ -n "$SHOT" ] && [ "$BROWSER" = chromium ]; then
    timeout 120 chromium "${flags[@]}" --screenshot="$SHOT" "${url}#generate" >/dev/null 2>&1
fi
[ $fail = 0 ] && echo "serve_page_check ($BROWSER): the page followed its job's events (step 20's preview shown), reached 100 % and shows the image with its parameters"
exit $fail
