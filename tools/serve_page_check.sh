#!/usr/bin/env bash
# The page at `/` of `lumen serve` in headless Chromium (Debian's `chromium` package): load it, let it
# submit its form (`#generate`), and check in the rendered DOM that the image arrived in the
# gallery, the progress bar reached its end and the status names the seed. With --screenshot FILE,
# also writes a screenshot of the page after a generation.
#   bash tools/serve_page_check.sh [path/to/lumen] [--screenshot docs/images/serve-page.png]
set -euo pipefail
LUMEN=${1:-.build/release/lumen}
SHOT=""
if [ "${2:-}" = "--screenshot" ]; then SHOT=$3; fi
command -v chromium >/dev/null || { echo "serve_page_check: chromium is not installed (apt-get install chromium)" >&2; exit 1; }
log=$(mktemp)
"$LUMEN" serve --port 0 --backend cpu 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q "http://127.0.0.1:" "$log" && break; sleep 0.1; done
url=$(grep -o "http://127.0.0.1:[0-9]*/" "$log" | head -1)
[ -n "$url" ] || { echo "serve_page_check: the server did not start" >&2; cat "$log" >&2; exit 1; }
flags=(--headless --no-sandbox --disable-gpu --virtual-time-budget=60000 --window-size=1000,700)
dom=$(chromium "${flags[@]}" --dump-dom "${url}#generate" 2>/dev/null)
fail=0
grep -q '<figure><img src="data:image/png;base64,' <<<"$dom" || { echo "serve_page_check: no image in the gallery" >&2; fail=1; }
grep -q 'id="status">done, seed [0-9]' <<<"$dom" || { echo "serve_page_check: the status does not say done" >&2; fail=1; }
grep -q '<progress id="progress" max="1" value="1"' <<<"$dom" || { echo "serve_page_check: the progress bar did not reach its end" >&2; fail=1; }
grep -q 'Sampler: Euler a' <<<"$dom" || { echo "serve_page_check: the image's parameters are not shown" >&2; fail=1; }
if [ -n "$SHOT" ]; then
    chromium "${flags[@]}" --screenshot="$SHOT" "${url}#generate" >/dev/null 2>&1
fi
[ $fail = 0 ] && echo "serve_page_check: the page generated an image and shows it with its parameters"
exit $fail
