#!/bin/sh
# test_serve_cli.sh - `loco serve`'s HTTP API as a script uses it (curl, no
# browser): every endpoint and its errors, the token and Host/Origin checks,
# body and image limits, a short find-directions job with its event stream,
# renders, transfer, downloads (loco apply reads the directions file),
# cancel answering while a job runs, malformed HTTP, and a clean stop.
. "$(dirname "$0")/cli_lib.sh"
cli_setup serve

if ! command -v curl >/dev/null 2>&1; then
    echo "serve: curl not found: skipped (apt-get install curl)"
    exit 0
fi
MODEL=models/faces32

"$LOCO" serve "$MODEL" --port 0 >"$T/serve.out" 2>"$T/serve.err" &
SPID=$!
stop_server() { kill -TERM "$SPID" 2>/dev/null; }
trap 'stop_server; rm -rf "$T"' EXIT
URL=
for _ in $(seq 1 300); do
    URL=$(sed -n 's/^loco serve: \(http:[^ ]*\).*/\1/p' "$T/serve.out")
    [ -n "$URL" ] && break
    kill -0 "$SPID" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$URL" ]; then
    bad "the server starts and prints its URL"
    sed 's/^/       /' "$T/serve.err"
    summary
    exit 1
fi
ok "the server starts and prints its URL ($URL)"
HOSTPORT=${URL#http://}
HOSTPORT=${HOSTPORT%/}
PORT=${HOSTPORT##*:}

# req METHOD PATH [CURL ARGS]: the status code; the body in $T/body
req() {
    _m=$1
    _p=$2
    shift 2
    curl -s -o "$T/body" -w '%{http_code}' -X "$_m" -H "X-Loco-Token: $TOK" "$@" "$URL${_p#/}"
}
# json METHOD PATH BODY: a JSON request
json() {
    _jm=$1
    _jp=$2
    _jb=$3
    shift 3
    req "$_jm" "$_jp" -H 'Content-Type: application/json' --data-binary "$_jb" "$@"
}
field() { sed -n "s/.*\"$1\":\"\\{0,1\\}\\([^\",}]*\\).*/\\1/p" "$T/body" | head -1; }
is_error() { grep -q '"error":"' "$T/body"; }
expect() { # DESC WANTED-CODE GOT-CODE [JSON-ERROR: 1]
    if [ "$3" = "$2" ] && { [ "${4:-0}" = 0 ] || is_error; }; then ok "$1 -> $2"; else
        bad "$1 -> $2 (got $3: $(head -c 200 "$T/body"))"
    fi
}

# ---- the page and the token -------------------------------------------------
code=$(curl -s -o "$T/page" -w '%{http_code}' "$URL")
TOK=$(sed -n 's/.*name="loco-token" content="\([0-9a-f]*\)".*/\1/p' "$T/page")
check "GET / -> 200 with a 64-hex-digit token in the page" '[ "$code" = 200 ] && [ ${#TOK} = 64 ]'
for f in app.js style.css; do
    expect "GET /$f" 200 "$(curl -s -o "$T/body" -w '%{http_code}' "$URL$f")"
done
expect "GET /nothing" 404 "$(curl -s -o "$T/body" -w '%{http_code}' "${URL}nothing")" 1
expect "POST / (the page is read-only)" 405 "$(curl -s -o "$T/body" -w '%{http_code}' -d x "$URL")" 1
expect "GET /../../etc/passwd (no path reaches the file system)" 404 \
    "$(curl -s --path-as-is -o "$T/body" -w '%{http_code}' "${URL}../../etc/passwd")" 1

expect "no token" 403 "$(curl -s -o "$T/body" -w '%{http_code}' "${URL}api/info")" 1
expect "no token, POST /api/sessions" 403 "$(curl -s -o "$T/body" -w '%{http_code}' -H 'Content-Type: application/json' \
    -d '{"source":"face"}' "${URL}api/sessions")" 1
expect "wrong token" 403 "$(curl -s -o "$T/body" -w '%{http_code}' -H "X-Loco-Token: 0$TOK" "${URL}api/info")" 1
expect "token as ?token=" 200 "$(curl -s -o "$T/body" -w '%{http_code}' "${URL}api/info?token=$TOK")"
expect "bad Host (DNS rebinding)" 403 "$(req GET /api/info -H "Host: evil.example:$PORT")" 1
expect "bad Host on the page" 403 "$(curl -s -o "$T/body" -w '%{http_code}' -H "Host: evil.example" "$URL")" 1
expect "Host localhost:PORT" 200 "$(req GET /api/info -H "Host: localhost:$PORT")"
expect "cross-site Origin" 403 "$(json POST /api/sessions '{"source":"face"}' -H 'Origin: http://evil.example')" 1
expect "same Origin" 201 "$(json POST /api/sessions '{"source":"face"}' -H "Origin: http://$HOSTPORT")"

# ---- info, sessions, images ---------------------------------------------------
expect "GET /api/info" 200 "$(req GET /api/info)"
check "info: the model, its size and the parts" 'grep -q "\"height\":32" "$T/body" && grep -q "\"mouth\"" "$T/body"'
expect "POST /api/info" 405 "$(req POST /api/info)" 1
expect "unknown API path" 404 "$(req GET /api/nothing)" 1
expect "malformed JSON" 400 "$(json POST /api/sessions '{"source": "face",')" 1
expect "JSON that is not an object" 400 "$(json POST /api/sessions '[1,2]')" 1
expect "empty JSON body" 400 "$(json POST /api/sessions '')" 1
expect "unknown source" 400 "$(json POST /api/sessions '{"source":"camera"}')" 1
expect "bad seed" 400 "$(json POST /api/sessions '{"source":"face","seed":-1}')" 1
expect "fractional index" 400 "$(json POST /api/sessions '{"source":"face","index":1.5}')" 1
expect "text body" 415 "$(req POST /api/sessions -H 'Content-Type: text/plain' --data-binary hello)" 1

"$LOCO" dataset faces --count 2 --out "$T/ds" --grid "$T/big.png" --grid-zoom 2 >/dev/null 2>&1
FACE=$T/ds/00000.png
expect "upload a face PNG" 201 "$(req POST /api/sessions -H 'Content-Type: image/png' --data-binary @"$FACE")"
UP=$(field session)
expect "upload that is not a PNG" 400 "$(req POST /api/sessions -H 'Content-Type: image/png' --data-binary @"$T/page")" 1
expect "upload of the wrong size" 400 "$(req POST /api/sessions -H 'Content-Type: image/png' --data-binary @"$T/big.png")" 1
check "  ... the error says the sizes" 'grep -q "works at 32x32" "$T/body"'
# a PNG header claiming 100000 x 100000 pixels
printf '\211PNG\r\n\032\n\000\000\000\015IHDR\000\001\206\240\000\001\206\240\010\002\000\000\000\000\000\000\000' >"$T/huge.png"
expect "upload claiming 100000x100000 pixels" 413 "$(req POST /api/sessions -H 'Content-Type: image/png' --data-binary @"$T/huge.png")" 1
head -c 5000000 /dev/zero >"$T/5mb"
expect "oversized upload (5 MB)" 413 "$(req POST /api/sessions -H 'Content-Type: image/png' --data-binary @"$T/5mb")" 1
expect "truncated PNG" 400 "$(head -c 200 "$FACE" >"$T/cut.png"; req POST /api/sessions -H 'Content-Type: image/png' --data-binary @"$T/cut.png")" 1

expect "generator face session" 201 "$(json POST /api/sessions '{"source":"face","seed":0,"index":0}')"
SID=$(field session)
check "  ... with its label map and parts" 'grep -q "\"has_labels\":true" "$T/body" && grep -q "\"parts\":\[.*\"mouth\"" "$T/body"'
expect "sample a face from the model" 201 "$(json POST /api/sessions '{"source":"sample","seed":1}')"
check "  ... with an image" 'grep -q "\"image\":\"data:image/png;base64," "$T/body"'
expect "GET the session" 200 "$(req GET "/api/sessions/$SID")"
expect "unknown session" 404 "$(req GET /api/sessions/0123456789abcdef0123456789abcdef)" 1
expect "unknown session: mask" 404 "$(json PUT /api/sessions/nope/mask '{"part":"mouth"}')" 1
expect "unknown session: directions" 404 "$(json POST /api/sessions/nope/directions '{}')" 1
expect "unknown session: render" 404 "$(json POST /api/sessions/nope/render '{}')" 1
expect "unknown session file" 404 "$(req GET /api/sessions/nope/files/edit.png)" 1

# ---- the mask ----------------------------------------------------------------------
expect "mask from a part" 200 "$(json PUT "/api/sessions/$SID/mask" '{"part":"mouth","dilate":1}')"
check "  ... not empty" '[ "$(field mask_pixels)" -gt 0 ]'
expect "unknown part" 400 "$(json PUT "/api/sessions/$SID/mask" '{"part":"tail"}')" 1
expect "part on an uploaded image (no labels)" 400 "$(json PUT "/api/sessions/$UP/mask" '{"part":"mouth"}')" 1
expect "mask string too short" 400 "$(json PUT "/api/sessions/$SID/mask" '{"mask":"0101"}')" 1
expect "mask with two kinds" 400 "$(json PUT "/api/sessions/$SID/mask" '{"part":"mouth","rect":[0,4,0,4]}')" 1
expect "mask rect" 200 "$(json PUT "/api/sessions/$UP/mask" '{"rect":[20,26,10,22]}')"
expect "mask rect outside the image" 400 "$(json PUT "/api/sessions/$UP/mask" '{"rect":[40,50,0,4]}')" 1
expect "mask ellipse" 200 "$(json PUT "/api/sessions/$UP/mask" '{"ellipse":[16,16,4,6]}')"
BITS=$(awk 'BEGIN{for(i=0;i<1024;i++) printf (i>=704 && i<768 && i%32>=10 && i%32<22) ? "1" : "0"}')
expect "mask as bits" 200 "$(json PUT "/api/sessions/$UP/mask" "{\"mask\":\"$BITS\"}")"
check "  ... 24 pixels" '[ "$(field mask_pixels)" = 24 ]'

# ---- before directions ----------------------------------------------------------------
expect "render before directions" 409 "$(json POST "/api/sessions/$SID/render" '{"strengths":[1]}')" 1
expect "download before directions" 409 "$(req GET "/api/sessions/$SID/files/report.json")" 1
expect "transfer before directions" 409 "$(json POST "/api/sessions/$SID/transfer" '{"source":"face","index":1}')" 1
expect "unknown file" 404 "$(req GET "/api/sessions/$SID/files/passwd")" 1
expect "rank 0" 400 "$(json POST "/api/sessions/$SID/directions" '{"rank":0}')" 1
expect "t_edit 2" 400 "$(json POST "/api/sessions/$SID/directions" '{"t_edit":2}')" 1
expect "min_iter > max_iter" 400 "$(json POST "/api/sessions/$SID/directions" '{"min_iter":9,"max_iter":3}')" 1
expect "rank as a string" 400 "$(json POST "/api/sessions/$SID/directions" '{"rank":"5"}')" 1
expect "empty mask" 400 "$(json POST "/api/sessions/$SID/directions" "{\"mask\":\"$(awk 'BEGIN{for(i=0;i<1024;i++) printf "0"}')\"}")" 1

# ---- a short find-directions job, its events, renders ------------------------------------
SHORT='{"steps":20,"max_iter":3,"min_iter":1,"rank":2,"null_rank":2}'
expect "find directions" 202 "$(json POST "/api/sessions/$SID/directions" "$SHORT")"
JOB=$(field job)
curl -s -N --max-time 300 -H "X-Loco-Token: $TOK" "${URL}api/jobs/$JOB/events" >"$T/events"
check "events: progress by phase, then done" 'grep -q "\"phase\":\"roi\"" "$T/events" && grep -q "sin_angle\":0\." "$T/events" && tail -n 2 "$T/events" | grep -q "\"state\":\"done\""'
expect "GET the job" 200 "$(req GET "/api/jobs/$JOB")"
check "  ... done" 'grep -q "\"state\":\"done\"" "$T/body"'
expect "unknown job" 404 "$(req GET /api/jobs/99999)" 1
expect "job id not a number" 404 "$(req GET /api/jobs/abc)" 1
expect "session with directions" 200 "$(req GET "/api/sessions/$SID")"
check "  ... singular values and the reconstruction" 'grep -q "\"singular_values\":\[" "$T/body" && grep -q "\"reconstruction\":\"data:image/png" "$T/body"'
expect "render" 200 "$(json POST "/api/sessions/$SID/render" '{"strengths":[6,0]}')"
check "  ... an image" 'grep -q "\"image\":\"data:image/png;base64," "$T/body"'
expect "render with too many strengths" 400 "$(json POST "/api/sessions/$SID/render" '{"strengths":[1,2,3]}')" 1
expect "render with strength 5000" 400 "$(json POST "/api/sessions/$SID/render" '{"strengths":[5000]}')" 1
expect "render with a string strength" 400 "$(json POST "/api/sessions/$SID/render" '{"strengths":["a"]}')" 1
expect "render of the transfer before one" 409 "$(json POST "/api/sessions/$SID/render" '{"target":"transfer"}')" 1
expect "render with a bad target" 400 "$(json POST "/api/sessions/$SID/render" '{"target":"x"}')" 1
expect "a preview render" 200 "$(json POST "/api/sessions/$SID/render" '{"strengths":[6,0],"preview":true}')"
check "  ... is exact on a 20-step schedule (11 steps: a preview would save little)" \
    'grep -q "\"preview\":true,\"exact\":true,\"steps\":11" "$T/body"'
expect "render with preview 1 (not a boolean)" 400 "$(json POST "/api/sessions/$SID/render" '{"preview":1}')" 1

# ---- downloads: the files loco edit writes -------------------------------------------------
for f in edit.png strip.png recon.png original.png; do
    expect "download $f" 200 "$(req GET "/api/sessions/$SID/files/$f")"
    cp "$T/body" "$T/dl_$f"
done
check "edit.png is a 32x32 PNG" '[ "$(png_size "$T/dl_edit.png")" = 32x32 ]'
check "strip.png: original | reconstruction | edit" '[ "$(png_size "$T/dl_strip.png")" = 96x32 ]'
expect "download report.json" 200 "$(req GET "/api/sessions/$SID/files/report.json")"
check "  ... with the singular values" 'grep -q "\"singular_values\"" "$T/body" && grep -q "\"t_edit\"" "$T/body"'
expect "download directions.safetensors" 200 "$(req GET "/api/sessions/$SID/files/directions.safetensors")"
cp "$T/body" "$T/directions.safetensors"
run_ok "loco apply reads the downloaded directions" "$LOCO" apply "$MODEL" --directions "$T/directions.safetensors" \
    --image "$T/ds/00001.png" --index 0,1 --strengths 6 --out "$T/apply"
check "  ... and writes the edits" '[ -f "$T/apply/img0_strip.png" ]'

# ---- transfer --------------------------------------------------------------------------------
expect "transfer to another face" 202 "$(json POST "/api/sessions/$SID/transfer" '{"source":"face","seed":0,"index":1}')"
TJ=$(field job)
for _ in $(seq 1 600); do
    req GET "/api/jobs/$TJ" >/dev/null
    grep -q '"state":"\(done\|failed\|cancelled\)"' "$T/body" && break
    sleep 0.2
done
check "  ... done" 'grep -q "\"state\":\"done\"" "$T/body"'
expect "render the transfer" 200 "$(json POST "/api/sessions/$SID/render" '{"strengths":[6,0],"target":"transfer"}')"
expect "transfer an uploaded PNG" 202 "$(req POST "/api/sessions/$SID/transfer" -H 'Content-Type: image/png' --data-binary @"$T/ds/00001.png")"

# ---- cancel while a long job runs; the server answers meanwhile --------------------------
expect "a long job" 202 "$(json POST "/api/sessions/$SID/directions" '{"max_iter":400,"min_iter":400,"tol":0}')"
LJ=$(field job)
for _ in $(seq 1 600); do
    req GET "/api/jobs/$LJ" >/dev/null
    grep -q '"state":"running"' "$T/body" && break
    sleep 0.1
done
check "  ... runs" 'grep -q "\"state\":\"running\"" "$T/body"'
t=$(curl -s -o "$T/body" -w '%{time_total}' -H "X-Loco-Token: $TOK" "${URL}api/jobs/$LJ")
check "status answers while it runs (${t} s < 0.5 s)" 'awk "BEGIN{exit !($t < 0.5)}"'
# two renders queued behind it: the newer one supersedes the older
rq_bg() { curl -s -o "$T/$1" -H "X-Loco-Token: $TOK" -H 'Content-Type: application/json' --data-binary "$2" \
    "${URL}api/sessions/$SID/render"; }
rq_bg renderA '{"strengths":[1,0]}' &
RA=$!
sleep 0.5
rq_bg renderB '{"strengths":[2,0]}' &
RB=$!
sleep 0.5
t=$(curl -s -o "$T/body" -w '%{time_total}' -X POST -H "X-Loco-Token: $TOK" "${URL}api/jobs/$LJ/cancel")
check "cancel answers at once (${t} s < 0.5 s)" 'awk "BEGIN{exit !($t < 0.5)}"'
for _ in $(seq 1 300); do
    req GET "/api/jobs/$LJ" >/dev/null
    grep -q '"state":"\(done\|failed\|cancelled\)"' "$T/body" && break
    sleep 0.1
done
check "  ... and the job stops (cancelled)" 'grep -q "\"state\":\"cancelled\"" "$T/body"'
wait "$RA" "$RB"
check "the older queued render answers superseded" 'grep -q "^{\"superseded\":true" "$T/renderA"'
check "the newer one renders" 'grep -q "\"image\":\"data:image/png;base64," "$T/renderB"'
expect "the earlier directions still render" 200 "$(json POST "/api/sessions/$SID/render" '{"strengths":[0,3]}')"
expect "cancel of an unknown job" 404 "$(req POST /api/jobs/424242/cancel)" 1

# ---- malformed HTTP and JSON: the server stays up ---------------------------------------------
for body in '{' '{"source":' '{"source":"face","seed":1e999}' '{"source":"face","index":null,"seed":[]}' \
    '{"source":{"a":1}}' "$(printf '{"source":"\001\377"}')" '"str"' 'null' '{"source":"face"}}}'; do
    c=$(json POST /api/sessions "$body")
    case $c in 201 | 400) ;; *) bad "JSON body '$body' -> $c" ;; esac
done
for body in '{"strengths":{}}' '{"strengths":[1e400]}' '{"strengths":[null]}' '{"target":7}' '{"strengths":-1}'; do
    c=$(json POST "/api/sessions/$SID/render" "$body")
    case $c in 200 | 400) ;; *) bad "render body '$body' -> $c" ;; esac
done
if command -v bash >/dev/null 2>&1; then
    bash -c "
        exec 3<>/dev/tcp/127.0.0.1/$PORT; printf 'GARBAGE\r\n\r\n' >&3; timeout 5 cat <&3 >/dev/null; exec 3>&-
        exec 3<>/dev/tcp/127.0.0.1/$PORT; printf 'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n' >&3; timeout 5 cat <&3 >/dev/null; exec 3>&-
        exec 3<>/dev/tcp/127.0.0.1/$PORT; head -c 20000 /dev/urandom >&3; timeout 5 cat <&3 >/dev/null; exec 3>&-
        exec 3<>/dev/tcp/127.0.0.1/$PORT; printf 'POST /api/sessions HTTP/1.1\r\nHost: $HOSTPORT\r\nX-Loco-Token: $TOK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n' >&3; timeout 5 cat <&3 >/dev/null; exec 3>&-
        exec 3<>/dev/tcp/127.0.0.1/$PORT; printf 'GET /%s HTTP/1.1\r\nHost: $HOSTPORT\r\n\r\n' \$(head -c 70000 /dev/zero | tr '\\\\0' a) >&3; timeout 5 cat <&3 >/dev/null; exec 3>&-
    " 2>/dev/null
fi
expect "after malformed HTTP the server still answers" 200 "$(req GET /api/info)"

# ---- delete, stop ---------------------------------------------------------------------------------
expect "DELETE the session" 200 "$(req DELETE "/api/sessions/$SID")"
expect "  ... then it is gone" 404 "$(req GET "/api/sessions/$SID")" 1
kill -TERM "$SPID"
rc=0
for _ in $(seq 1 300); do
    kill -0 "$SPID" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$SPID" 2>/dev/null; then
    bad "the server stops on SIGTERM"
    kill -KILL "$SPID"
else
    wait "$SPID" || rc=$?
    check "the server stops on SIGTERM with status 0" '[ "$rc" = 0 ]'
fi
cp "$T/serve.err" "$T/stderr"
check "no sanitizer report in the server's stderr" 'sanitizer_clean'
sanitizer_clean || sed -n '1,40p' "$T/serve.err"
summary
