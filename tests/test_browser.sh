#!/bin/sh
# test_browser.sh - `loco serve`'s page end to end in a real browser: starts
# the server on a free port and runs tests/browser/serve.test.mjs (Debian's
# chromium, headless, driven by puppeteer-core from npm; no browser
# download): paint the mouth, find directions, drag a slider (the edit
# changes >= 5x more inside the mask than outside), transfer, downloads,
# cancel, and 403 without the token. Screenshots of each step go to
# $BUILD/browser-test/.
#
# Needs chromium, node and tests/browser/node_modules (cd tests/browser &&
# PUPPETEER_SKIP_DOWNLOAD=1 npm ci). Without them it says SKIP and passes,
# unless LOCO_REQUIRE_BROWSER=1 (as .ci/run sets it): then it fails.
. "$(dirname "$0")/cli_lib.sh"
cli_setup browser

DIR=$(cd "$(dirname "$0")/browser" && pwd)
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
why=
[ -n "$CHROMIUM" ] || why="no chromium (apt-get install chromium)"
command -v node >/dev/null 2>&1 || why="${why:+$why; }no node (apt-get install nodejs npm)"
[ -d "$DIR/node_modules/puppeteer-core" ] ||
    why="${why:+$why; }no tests/browser/node_modules (cd tests/browser && PUPPETEER_SKIP_DOWNLOAD=1 npm ci)"
if [ -n "$why" ]; then
    if [ "${LOCO_REQUIRE_BROWSER:-0}" = 1 ]; then
        bad "the browser test can run: $why"
        summary
        exit 1
    fi
    echo "browser: SKIP: $why"
    exit 0
fi
OUT="${BUILD:-build}/browser-test"
rm -rf "$OUT"
mkdir -p "$OUT"

"$LOCO" serve models/faces32 --port 0 >"$T/serve.out" 2>"$T/stderr" &
SPID=$!
trap 'kill -TERM "$SPID" 2>/dev/null; rm -rf "$T"' EXIT
URL=
for _ in $(seq 1 300); do
    URL=$(sed -n 's/^loco serve: \(http:[^ ]*\).*/\1/p' "$T/serve.out")
    [ -n "$URL" ] && break
    kill -0 "$SPID" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$URL" ]; then
    bad "the server starts and prints its URL"
    sed 's/^/       /' "$T/stderr"
    summary
    exit 1
fi
ok "the server starts ($URL)"

# the browser's own files (profile, crash dumps) stay in $T
if HOME="$T" CHROMIUM="$CHROMIUM" node "$DIR/serve.test.mjs" "$URL" "$OUT"; then
    ok "the page works in $("$CHROMIUM" --version 2>/dev/null | head -1)"
else
    bad "the page works in chromium (screenshots in $OUT)"
fi

kill -TERM "$SPID"
wait "$SPID"
rc=$?
check "the server stops cleanly on SIGTERM (exit $rc)" '[ "$rc" = 0 ]'
check "no sanitizer report from the server" sanitizer_clean
ls "$OUT"/*.png >/dev/null 2>&1 && echo "  screenshots: $(ls "$OUT" | tr '\n' ' ')"
summary
