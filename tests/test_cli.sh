#!/bin/sh
# test_cli.sh - the loco command-line tool end to end: init (determinism, f16),
# info (text and JSON), eps (fixture, batch, random real config) and its error
# paths (non-zero exit, a message on stderr, no output file left behind).
# POSIX sh; run from the repository root. Uses $LOCO, else $BUILD/loco, else
# build/loco.
set -u

. "$(dirname "$0")/cli_lib.sh"
FIX="${LOCO_FIXTURES:-tests/fixtures}"
SMALL="$FIX/unet-small"
VEC="$SMALL/vectors.safetensors"
CIFAR_CFG="configs/ddpm-cifar10-32.json"
cli_setup test_cli.sh

# run_err DESC OUTFILE CMD...: must exit 1 or 2, say 'loco: ...' on stderr,
# and leave neither OUTFILE nor anything else in $T/err.
run_err() {
    desc=$1
    out=$2
    shift 2
    rm -rf "$T/err"
    mkdir "$T/err"
    "$@" >"$T/stdout" 2>"$T/stderr"
    rc=$?
    if [ "$rc" -ne 1 ] && [ "$rc" -ne 2 ]; then
        bad_cmd "$desc: exit status $rc, expected 1 or 2"
    elif ! grep -q '^loco: ' "$T/stderr"; then
        bad_cmd "$desc: no 'loco: ...' message on stderr"
    elif ! sanitizer_clean; then
        bad_cmd "$desc: sanitizer report"
    elif [ -e "$out" ]; then
        bad "$desc: left $out behind"
    elif [ -n "$(ls -A "$T/err")" ]; then
        bad "$desc: left files behind: $(ls -A "$T/err" | tr '\n' ' ')"
    else
        ok "$desc (exit $rc: $(head -n 1 "$T/stderr"))"
    fi
}


# write_x FILE SHAPE NFLOATS [FIRST]: a safetensors file with one F32 tensor
# 'x' of SHAPE (e.g. 1,3,32,32) holding NFLOATS zeros; FIRST=nan makes the
# first value a NaN.
write_x() {
    st_header "$1" x "$2" $(($3 * 4))
    if [ "${4:-}" = nan ]; then
        printf '\000\000\300\177' >>"$1"
        dd if=/dev/zero bs=4 count=$(($3 - 1)) 2>/dev/null >>"$1"
    else
        dd if=/dev/zero bs=4 count="$3" 2>/dev/null >>"$1"
    fi
}

# the start of a safetensors file (its JSON header) as text
header() {
    dd if="$1" bs=1024 count=1 2>/dev/null | tr -c '[:print:]' '.'
}

echo "loco CLI: $LOCO"

echo "help and version"
run_ok "loco help" "$LOCO" help
check "help lists the commands" "grep -q 'init OUT_DIR' '$T/stdout' && grep -q 'eps MODEL' '$T/stdout'"
run_ok "loco --version" "$LOCO" --version
check "--version prints the version" "grep -q '^loco [0-9]' '$T/stdout'"
"$LOCO" >"$T/stdout" 2>"$T/stderr"
rc=$?
check "no command: exit 2 and the usage on stderr" "[ $rc -eq 2 ] && grep -q '^usage: loco' '$T/stderr' && [ ! -s '$T/stdout' ]"
run_err "unknown command" "$T/err/none" "$LOCO" frobnicate

echo "init: determinism"
run_ok "init cifar10-32 --seed 3 (a)" "$LOCO" --quiet init "$T/s3a" --config "$CIFAR_CFG" --seed 3
run_ok "init cifar10-32 --seed 3 (b)" "$LOCO" --quiet init "$T/s3b" --config "$CIFAR_CFG" --seed 3
run_ok "init cifar10-32 --seed 4" "$LOCO" --quiet init "$T/s4" --config "$CIFAR_CFG" --seed 4
W=diffusion_pytorch_model.safetensors
check "init wrote config.json and the weights" "[ -s '$T/s3a/config.json' ] && [ -s '$T/s3a/$W' ]"
check "same seed: byte-identical weights" "cmp -s '$T/s3a/$W' '$T/s3b/$W'"
check "same seed: identical config.json" "cmp -s '$T/s3a/config.json' '$T/s3b/config.json'"
check "another seed: different weights" "! cmp -s '$T/s3a/$W' '$T/s4/$W'"
check "another seed: same size" "[ \$(wc -c <'$T/s3a/$W') -eq \$(wc -c <'$T/s4/$W') ]"
run_err "init: missing --config" "$T/err/m" "$LOCO" init "$T/err/m"
run_err "init: config file missing" "$T/err/m" "$LOCO" init "$T/err/m" --config "$T/nonexistent.json"
run_err "init: bad --dtype" "$T/err/m" "$LOCO" init "$T/err/m" --config "$CIFAR_CFG" --dtype f64
run_err "init: bad --seed" "$T/err/m" "$LOCO" init "$T/err/m" --config "$CIFAR_CFG" --seed -1

echo "info"
run_ok "info cifar10-32" "$LOCO" info "$T/s3a"
check "info names UNet2DModel and the parameters" "grep -q 'UNet2DModel' '$T/stdout' && grep -q '^parameters: 357' '$T/stdout'"
run_ok "info --json cifar10-32" "$LOCO" info --json "$T/s3a"
check "info --json: one JSON object with the 32x32x3 shape" \
    "[ \$(wc -l <'$T/stdout') -eq 1 ] && grep -q '^{.*}\$' '$T/stdout' && grep -q '\"height\": 32, \"width\": 32' '$T/stdout' && grep -q '\"in_channels\": 3' '$T/stdout'"
run_ok "info unet-small" "$LOCO" info "$SMALL"
check "unet-small has 1113955 parameters" "grep -q '^parameters: 1113955 ' '$T/stdout'"
run_ok "info --json unet-small" "$LOCO" info --json "$SMALL"
check "unet-small --json: \"parameters\": 1113955" "grep -q '\"parameters\": 1113955,' '$T/stdout'"
run_ok "info on the config.json path" "$LOCO" info "$SMALL/config.json"
run_err "info: missing model folder" "$T/err/none" "$LOCO" info "$T/no-such-model"
run_err "info: unknown option" "$T/err/none" "$LOCO" info --bogus "$SMALL"

echo "init --dtype f16"
run_ok "init unet-small config --dtype f16" "$LOCO" --quiet init "$T/h16" --config "$SMALL/config.json" --dtype f16 --seed 7
run_ok "init unet-small config --dtype f32" "$LOCO" --quiet init "$T/h32" --config "$SMALL/config.json" --seed 7
run_ok "info on the f16 model" "$LOCO" info "$T/h16"
check "f16 model loads with 1113955 parameters" "grep -q '^parameters: 1113955 ' '$T/stdout'"
check "f16 weights are about half the f32 size" \
    "[ \$((\$(wc -c <'$T/h16/$W') * 2)) -lt \$((\$(wc -c <'$T/h32/$W') + 65536)) ] && [ \$((\$(wc -c <'$T/h16/$W') * 2)) -gt \$((\$(wc -c <'$T/h32/$W') - 65536)) ]"
check "f16 weights are F16 tensors" "header '$T/h16/$W' | grep -q '\"F16\"'"

echo "eps"
OUT="$T/eps.safetensors"
run_ok "eps on the unet-small reference vectors" "$LOCO" eps "$SMALL" --x "$VEC" --t 595.36359 --out "$OUT"
check "eps wrote a file" "[ -s '$OUT' ]"
check "with eps and x0_hat of shape [1,3,32,32]" \
    "header '$OUT' | grep -q '\"eps\":{[^}]*\"shape\":\[1,3,32,32\]' && header '$OUT' | grep -q '\"x0_hat\":{[^}]*\"shape\":\[1,3,32,32\]'"
check "and 2 x 3072 floats of data" "[ \$(wc -c <'$OUT') -gt 24576 ]"
run_ok "eps again, same input" "$LOCO" eps "$SMALL" --x "$VEC" --t 595.36359 --out "$T/eps2.safetensors"
check "eps is deterministic (byte-identical output)" "cmp -s '$OUT' '$T/eps2.safetensors'"
write_x "$T/x2.safetensors" 2,3,32,32 6144
run_ok "eps at batch 2 (x = 0)" "$LOCO" eps "$SMALL" --x "$T/x2.safetensors" --t 10 --out "$T/eps-b2.safetensors"
check "batch 2 output has shape [2,3,32,32]" "header '$T/eps-b2.safetensors' | grep -q '\"shape\":\[2,3,32,32\]'"
write_x "$T/x1.safetensors" 1,3,32,32 3072
run_ok "eps on the random cifar10-32 model" "$LOCO" eps "$T/s3a" --x "$T/x1.safetensors" --t 999 --out "$T/eps-c.safetensors"
check "cifar10-32 output written" "[ -s '$T/eps-c.safetensors' ]"

echo "eps: errors"
E="$T/err/out.safetensors"
run_err "missing model folder" "$E" "$LOCO" eps "$T/no-such-model" --x "$VEC" --t 1 --out "$E"
check "the message names the missing folder" "grep -q 'no-such-model' '$T/stderr'"
run_err "--x file missing" "$E" "$LOCO" eps "$SMALL" --x "$T/no-such-x.safetensors" --t 1 --out "$E"
check "the message names the missing file" "grep -q 'no-such-x.safetensors' '$T/stderr'"
run_err "--x file without tensor 'x'" "$E" "$LOCO" eps "$SMALL" --x "$OUT" --t 1 --out "$E"
check "the message names tensor 'x'" "grep -q \"'x'\" '$T/stderr'"
write_x "$T/x-small.safetensors" 1,3,16,16 768
run_err "x of the wrong shape [1,3,16,16]" "$E" "$LOCO" eps "$SMALL" --x "$T/x-small.safetensors" --t 1 --out "$E"
write_x "$T/x-3d.safetensors" 3,32,32 3072
run_err "x without a batch dimension" "$E" "$LOCO" eps "$SMALL" --x "$T/x-3d.safetensors" --t 1 --out "$E"
write_x "$T/x-nan.safetensors" 1,3,32,32 3072 nan
run_err "x holding a NaN" "$E" "$LOCO" eps "$SMALL" --x "$T/x-nan.safetensors" --t 1 --out "$E"
printf 'not a safetensors file\n' >"$T/x-junk.safetensors"
run_err "--x file that is not safetensors" "$E" "$LOCO" eps "$SMALL" --x "$T/x-junk.safetensors" --t 1 --out "$E"
run_err "bad --t 'abc'" "$E" "$LOCO" eps "$SMALL" --x "$VEC" --t abc --out "$E"
run_err "bad --t '-1'" "$E" "$LOCO" eps "$SMALL" --x "$VEC" --t -1 --out "$E"
run_err "bad --t 'nan'" "$E" "$LOCO" eps "$SMALL" --x "$VEC" --t nan --out "$E"
run_err "bad --t '5x'" "$E" "$LOCO" eps "$SMALL" --x "$VEC" --t 5x --out "$E"
run_err "missing --t" "$E" "$LOCO" eps "$SMALL" --x "$VEC" --out "$E"
run_err "unknown option" "$E" "$LOCO" eps "$SMALL" --x "$VEC" --t 1 --out "$E" --bogus
run_err "option without its value" "$E" "$LOCO" eps "$SMALL" --x "$VEC" --t 1 --out
run_err "output folder missing" "$T/err/nodir/out.safetensors" \
    "$LOCO" eps "$SMALL" --x "$VEC" --t 1 --out "$T/err/nodir/out.safetensors"
run_err "bad --threads" "$E" "$LOCO" --threads 0 eps "$SMALL" --x "$VEC" --t 1 --out "$E"

echo "sample"
run_ok "sample 3 images, 5 steps" "$LOCO" --quiet sample "$SMALL" --count 3 --out "$T/g3.png" --steps 5 --seed 1
check "3 images of 32x32: a 2x2 grid zoomed 4x by default (256x256)" "[ \"\$(png_size '$T/g3.png')\" = 256x256 ]"
run_ok "sample again, same seed" "$LOCO" --quiet sample "$SMALL" --count 3 --out "$T/g3b.png" --steps 5 --seed 1
check "same seed: identical PNG" "cmp -s '$T/g3.png' '$T/g3b.png'"
run_ok "sample, another seed" "$LOCO" --quiet sample "$SMALL" --count 3 --out "$T/g3c.png" --steps 5 --seed 2
check "another seed: another PNG" "! cmp -s '$T/g3.png' '$T/g3c.png'"
run_ok "sample 1 image, --json, --tensors" "$LOCO" --quiet sample "$SMALL" --count 1 --out "$T/g1.png" --steps 5 --json \
    --tensors "$T/g1.safetensors"
check "one image is 32x32" "[ \"\$(png_size '$T/g1.png')\" = 32x32 ]"
check "--json reports the count" "grep -q '\"count\": 1' '$T/stdout'"
check "--tensors holds samples [1,3,32,32]" "header '$T/g1.safetensors' | grep -q '\"samples\":{[^}]*\"shape\":\[1,3,32,32\]'"
run_ok "sample 2 images, zoom 3" "$LOCO" --quiet sample "$SMALL" --count 2 --zoom 3 --out "$T/gz.png" --steps 3
check "2 images at zoom 3: 192x96" "[ \"\$(png_size '$T/gz.png')\" = 192x96 ]"
run_ok "sample 5 images in 4 columns, --zoom 1" "$LOCO" --quiet sample "$SMALL" --count 5 --cols 4 --zoom 1 --out "$T/g5.png" --steps 3
check "5 images in 4 columns: 128x64" "[ \"\$(png_size '$T/g5.png')\" = 128x64 ]"
run_ok "sample 2 images, --zoom auto" "$LOCO" --quiet sample "$SMALL" --count 2 --zoom auto --out "$T/ga.png" --steps 3
check "--zoom auto: 4x for 32x32 (256x128)" "[ \"\$(png_size '$T/ga.png')\" = 256x128 ]"
E="$T/err/g.png"
run_err "sample: missing --count" "$E" "$LOCO" sample "$SMALL" --out "$E"
run_err "sample: --count 0" "$E" "$LOCO" sample "$SMALL" --count 0 --out "$E"
run_err "sample: --steps 1" "$E" "$LOCO" sample "$SMALL" --count 1 --steps 1 --out "$E"
run_err "sample: more steps than the schedule" "$E" "$LOCO" sample "$SMALL" --count 1 --steps 1001 --out "$E"
run_err "sample: --zoom 0" "$E" "$LOCO" sample "$SMALL" --count 1 --zoom 0 --out "$E"
run_err "sample: --zoom 17" "$E" "$LOCO" sample "$SMALL" --count 1 --zoom 17 --out "$E"
run_err "sample: --zoom big" "$E" "$LOCO" sample "$SMALL" --count 1 --zoom big --out "$E"
run_err "sample: --boost-t 1" "$E" "$LOCO" sample "$SMALL" --count 1 --boost-t 1 --out "$E"
run_err "sample: missing model" "$E" "$LOCO" sample "$T/no-such-model" --count 1 --out "$E"
run_err "sample: output folder missing" "$T/err/nodir/g.png" "$LOCO" sample "$SMALL" --count 1 --steps 2 \
    --out "$T/err/nodir/g.png"

echo "analyze rank on a closed-form MoLRG model"
run_ok "molrg init 1x8x8, 2 x rank 4" "$LOCO" --quiet molrg init "$T/mo.st" --n 1x8x8 --k 2 --d 4 --seed 1
run_ok "analyze rank at t = 0.05 and 0.5" "$LOCO" --quiet analyze rank "$T/mo.st" --t 0.05,0.5 --images 2 --out "$T/mor"
check "rank d = 4 at t = 0.05 T for both images (rank.csv)" \
    "[ \"\$(awk -F, '\$1 == \"0.0500\" { print \$4 }' '$T/mor/rank.csv' | tr '\\n' ' ')\" = '4 4 ' ]"
check "rank K d = 8 at t = 0.5 T" "[ \"\$(awk -F, '\$1 == \"0.5000\" { print \$4 }' '$T/mor/rank.csv' | tr '\\n' ' ')\" = '8 8 ' ]"
check "spectrum.csv: all 64 singular values per (t, image)" "[ \$(wc -l <'$T/mor/spectrum.csv') -eq 257 ]"
check "rank.svg and rank.json written" "[ -s '$T/mor/rank.svg' ] && grep -q rank_ratio_mean_10thr '$T/mor/rank.json'"

summary
