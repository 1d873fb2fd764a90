#!/bin/sh
# test_hostile_cli.sh - the command line against hostile input (issue #12):
# out-of-range timesteps and numbers, overflowing inputs and weights, long
# paths, wrong output locations, whole-image masks, inputs inside --out,
# lying directions files, interrupted runs. Every case must fail early (before
# the first network evaluation, where it can be known then), exit 1 or 2
# with a 'loco: ...' message naming the problem, leave no output, and pass
# ASan/UBSan (make asan runs this script against the sanitized build).
# POSIX sh; run from the repository root.
set -u

. "$(dirname "$0")/cli_lib.sh"
FIX="${LOCO_FIXTURES:-tests/fixtures}"
SMALL="$FIX/unet-small"
M=models/faces32
IMG="$M/example.png"
cli_setup test_hostile_cli.sh
# a short edit: enough to exercise every phase in a few seconds
SHORT="--rank 1 --null-rank 1 --min-iter 1 --max-iter 1 --inv-steps 10 --steps 10 --quiet"

# run_err DESC PATTERN CMD...: exit 1 or 2, a 'loco: ' line matching PATTERN
# (grep -E) on stderr, no sanitizer report, and no work started (edit says
# "inverting" when it starts computing; nothing here may get that far unless
# the error can only be known then, see run_late_err).
run_err() {
    desc=$1
    pat=$2
    shift 2
    "$@" >"$T/stdout" 2>"$T/stderr"
    rc=$?
    if [ "$rc" -ne 1 ] && [ "$rc" -ne 2 ]; then
        bad_cmd "$desc: exit status $rc, expected 1 or 2"
    elif ! grep -q '^loco: ' "$T/stderr"; then
        bad_cmd "$desc: no 'loco: ...' message on stderr"
    elif ! grep -qE "$pat" "$T/stderr"; then
        bad_cmd "$desc: the message does not match /$pat/"
    elif ! sanitizer_clean; then
        bad_cmd "$desc: sanitizer report"
    elif grep -q 'inverting' "$T/stderr"; then
        bad_cmd "$desc: the error came after the work had started"
    else
        ok "$desc (exit $rc: $(sed -n 1p "$T/stderr"))"
    fi
}

# write_f32 FILE NAME SHAPE COUNT BYTES: a safetensors file with one F32
# tensor NAME of SHAPE whose COUNT elements all have the 4 bytes BYTES
# (printf octal escapes, little-endian)
write_f32() {
    st_header "$1" "$2" "$3" $(($4 * 4))
    printf "$5" >"$T/one"
    k=1
    while [ "$k" -lt "$4" ]; do cat "$T/one" "$T/one" >"$T/two" && mv "$T/two" "$T/one" && k=$((k * 2)); done
    head -c $(($4 * 4)) "$T/one" >>"$1"
}
# patch FILE OFFSET TEXT: overwrite bytes in place
patch() { printf '%s' "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null; }
# offset FILE TEXT: byte offset of the first TEXT in FILE
offset() { grep -obUaF "$2" "$1" | sed -n 1p | cut -d: -f1; }

echo "-- timesteps and numbers"
write_f32 "$T/x.safetensors" x 1,3,32,32 3072 '\000\000\000\000'
run_err "eps --t 1e30 (was a SEGV)" 'outside .*timesteps' "$LOCO" eps "$SMALL" --x "$T/x.safetensors" --t 1e30 --out "$T/o.safetensors"
run_err "eps --t 3e9 (past 2^31)" 'outside .*timesteps' "$LOCO" eps "$SMALL" --x "$T/x.safetensors" --t 3e9 --out "$T/o.safetensors"
run_err "eps --t 1000 on a 1000-step model" 'outside .*timesteps \[0, 999\]' "$LOCO" eps "$SMALL" --x "$T/x.safetensors" --t 1000 --out "$T/o.safetensors"
run_err "jacobian --t 1e30" 'outside .*timesteps' "$LOCO" jacobian "$SMALL" --x "$T/x.safetensors" --t 1e30 --mode jvp --in "$T/x.safetensors" --out "$T/o.safetensors"
run_err "jacobian --rect with 1e300" "bad --rect" "$LOCO" jacobian "$SMALL" --x "$T/x.safetensors" --t 10 --mode jvp --in "$T/x.safetensors" --out "$T/o.safetensors" --rect 0,1e300,0,4
run_err "edit --rect 0,1e300,..." "bad --rect" "$LOCO" edit "$M" --image "$IMG" --rect 0,1e300,0,4 --out "$T/e"
run_err "edit --rect with a fraction" "bad --rect" "$LOCO" edit "$M" --image "$IMG" --rect 0,4.5,0,4 --out "$T/e"
run_err "edit --rect 99999999999" "bad --rect" "$LOCO" edit "$M" --image "$IMG" --rect 0,99999999999,0,4 --out "$T/e"
run_err "edit --strengths 1e308" 'strengths: 1e\+308 is beyond' "$LOCO" edit "$M" --image "$IMG" --rect 0,4,0,4 --strengths 1e308 --out "$T/e"
run_err "edit --strengths 1," "bad --strengths" "$LOCO" edit "$M" --image "$IMG" --rect 0,4,0,4 --strengths 1, --out "$T/e"
run_err "edit --directions 0.7" "directions" "$LOCO" edit "$M" --image "$IMG" --rect 0,4,0,4 --directions 0.7 --out "$T/e"
run_err "edit --steps 1e300" "bad --steps" "$LOCO" edit "$M" --image "$IMG" --rect 0,4,0,4 --steps 1e300 --out "$T/e"
run_err "--threads 1e300" "bad --threads" "$LOCO" --threads 1e300 info "$M"
check "nothing written by the refused runs" '[ ! -e "$T/o.safetensors" ] && [ ! -e "$T/e" ] && [ -z "$(ls -A "$T" | grep loco-tmp)" ]'

echo "-- overflow: huge inputs and weights give an error, never a NaN output"
write_f32 "$T/big.safetensors" x 1,3,32,32 3072 '\231\166\226\176' # 1e38
run_err "eps on an input of 1e38" 'not finite|overflow|is inf|is nan' "$LOCO" eps "$SMALL" --x "$T/big.safetensors" --t 500 --out "$T/o.safetensors"
check "no output from it" '[ ! -e "$T/o.safetensors" ]'
mkdir "$T/hot"
cp "$SMALL/config.json" "$SMALL/diffusion_pytorch_model.safetensors" "$T/hot/"
hl=$(od -An -tu8 -N8 "$T/hot/diffusion_pytorch_model.safetensors" | tr -d ' ')
# conv_in.bias[0] (the first float of the data) = 3e38 (0x7F61ED1D)
printf '\035\355\141\177' | dd of="$T/hot/diffusion_pytorch_model.safetensors" bs=1 seek=$((8 + hl)) conv=notrunc 2>/dev/null
run_ok "info accepts a weight of 3e38 (finite)" "$LOCO" info "$T/hot"
run_err "eps with a weight of 3e38" 'not finite|overflow|is inf|is nan' "$LOCO" eps "$T/hot" --x "$T/x.safetensors" --t 500 --out "$T/o.safetensors"
check "no output from it" '[ ! -e "$T/o.safetensors" ]'

echo "-- output locations, checked before any work"
run_err "eps --out /dev/null" 'not a regular file' "$LOCO" eps "$SMALL" --x "$T/x.safetensors" --t 10 --out /dev/null
run_err "eps --out in a missing folder" 'does not exist' "$LOCO" eps "$SMALL" --x "$T/x.safetensors" --t 10 --out "$T/nope/o.safetensors"
mkdir "$T/adir"
run_err "eps --out a folder" 'is a folder' "$LOCO" eps "$SMALL" --x "$T/x.safetensors" --t 10 --out "$T/adir"
run_err "edit --out /dev/null" 'not a folder' "$LOCO" edit "$M" --image "$IMG" --rect 0,4,0,4 --out /dev/null $SHORT
echo data >"$T/afile"
run_err "edit --out a regular file" 'not a folder' "$LOCO" edit "$M" --image "$IMG" --rect 0,4,0,4 --out "$T/afile" $SHORT
run_err "edit --out in a missing folder" 'does not exist' "$LOCO" edit "$M" --image "$IMG" --rect 0,4,0,4 --out "$T/nope/e" $SHORT
run_err "edit --out a folder of other files" "does not write" "$LOCO" edit "$M" --image "$IMG" --rect 0,4,0,4 --out "$M" $SHORT
check "the model folder is untouched" '[ -f "$M/config.json" ] && [ -z "$(ls -A "$M/.." | grep loco-tmp)" ]'
run_err "sample --out /dev/null" 'not a regular file' "$LOCO" sample "$M" --count 1 --out /dev/null
run_err "mask --out a missing folder" 'does not exist' "$LOCO" mask "$M/example_labels.png" --part mouth --out "$T/nope/m.png"
run_err "analyze --out a file" 'not a folder' "$LOCO" analyze rank "$SMALL" --out "$T/afile"

echo "-- masks"
run_err "a whole-image mask is refused before the inversion" 'covers the whole image' "$LOCO" edit "$M" --image "$IMG" --rect 0,32,0,32 --out "$T/e" $SHORT
run_err "an empty ellipse" 'empty' "$LOCO" edit "$M" --image "$IMG" --ellipse 100,100,1,1 --out "$T/e" $SHORT
# (not --quiet: "inverting" on stderr would mean the work had started)
run_err "a rank beyond the mask's entries is refused before the inversion" 'rank 4 must be in \[1, 3\]' "$LOCO" edit "$M" --image "$IMG" --rect 0,1,0,1 --rank 4 --null-rank 1 --min-iter 1 --max-iter 1 --inv-steps 10 --steps 10 --out "$T/e"

echo "-- a long --out path (was cut at 1024 bytes)"
long="$T"
for d in aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa \
    bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb \
    cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc \
    dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd; do
    long="$long/$d"
done
mkdir -p "$long"
run_ok "edit into a 1000+ byte --out" "$LOCO" edit "$M" --image "$IMG" --rect 10,14,10,14 --out "$long/edit" $SHORT
check "report.json is where it belongs (${#long} byte folder)" '[ -f "$long/edit/report.json" ] && [ -f "$long/edit/directions.safetensors" ]'
check "nothing written beside it" '[ "$(ls -A "$long")" = edit ]'
check "mask_pixels counts pixels (4x4 = 16, not 48)" 'grep -q "\"mask_pixels\":[[:space:]]*16," "$long/edit/report.json"'

echo "-- outputs all-old or all-new, interrupted runs cleaned up"
E="$T/run"
run_ok "an edit with --save-tensors" "$LOCO" edit "$M" --image "$IMG" --rect 10,14,10,14 --out "$E" --strengths -4,4 --save-tensors $SHORT
check "tensors.safetensors holds xT (after inversion) and xt" 'head -c 2000 "$E/tensors.safetensors" | grep -q "\"xT\"" && head -c 2000 "$E/tensors.safetensors" | grep -q "\"xt\""'
run_ok "the same folder again, other strengths" "$LOCO" edit "$M" --image "$IMG" --rect 10,14,10,14 --out "$E" --strengths 2 $SHORT
check "only the new run's files remain" '[ -f "$E/edit_d0_s+2.png" ] && [ ! -e "$E/edit_d0_s+4.png" ] && [ ! -e "$E/tensors.safetensors" ]'
run_err "--image inside --out" 'inside --out' "$LOCO" edit "$M" --image "$E/recon.png" --rect 10,14,10,14 --out "$E" $SHORT
check "the input is still there" '[ -f "$E/recon.png" ]'
# a write that fails half way (a full disk; here a file-size limit, with
# SIGXFSZ ignored so that write() fails with EFBIG): the run fails and the
# folder keeps the previous run's outputs, all of them
(trap '' XFSZ; ulimit -f 16; exec "$LOCO" edit "$M" --image "$IMG" --rect 10,14,10,14 --out "$E" --strengths 7 $SHORT) \
    >"$T/stdout" 2>"$T/stderr"
rc=$?
check "a write failing half way fails the run (exit $rc)" '[ "$rc" -eq 1 ] && grep -q "^loco: error" "$T/stderr"'
check "the folder holds the previous run, whole" '[ -f "$E/edit_d0_s+2.png" ] && [ ! -e "$E/edit_d0_s+7.png" ] && [ -f "$E/directions.safetensors" ] && [ -f "$E/report.json" ]'
check "and no temporary is left" '[ -z "$(ls -A "$T" | grep loco-tmp)" ]'
# stale temporaries of a killed writer (a pid that cannot exist) are removed
mkdir "$T/.run.loco-tmp.4194999.abcdef"
: >"$T/.o.safetensors.loco-tmp.4194999.abcdef"
run_ok "an edit beside a killed run's temporary folder" "$LOCO" edit "$M" --image "$IMG" --rect 10,14,10,14 --out "$E" $SHORT
check "the stale folder is gone" '[ ! -e "$T/.run.loco-tmp.4194999.abcdef" ]'
write_f32 "$T/x0.safetensors" x 1,3,32,32 3072 '\000\000\000\000'
run_ok "eps beside a killed run's temporary file" "$LOCO" eps "$SMALL" --x "$T/x0.safetensors" --t 10 --out "$T/o.safetensors"
check "the stale file is gone" '[ ! -e "$T/.o.safetensors.loco-tmp.4194999.abcdef" ] && [ -f "$T/o.safetensors" ]'
# a real kill in the middle of a run
"$LOCO" edit "$M" --image "$IMG" --rect 10,14,10,14 --out "$T/killed" --inv-steps 400 --steps 400 --quiet >/dev/null 2>&1 &
pid=$!
sleep 1
kill -KILL "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
check "a killed run leaves no --out" '[ ! -e "$T/killed" ]'
run_ok "the next run into it" "$LOCO" edit "$M" --image "$IMG" --rect 10,14,10,14 --out "$T/killed" $SHORT
check "and no temporary is left" '[ -z "$(ls -A "$T" | grep loco-tmp)" ] && [ -f "$T/killed/report.json" ]'

echo "-- lying directions files"
D="$E/directions.safetensors"
cp "$D" "$T/d_shape.safetensors"
o=$(offset "$T/d_shape.safetensors" '"directions":{"shape":[1,3,32,32]')
[ -n "$o" ] && patch "$T/d_shape.safetensors" $((o + 27)) '16,64'
check "the patched file says [1,3,16,64]" 'head -c 600 "$T/d_shape.safetensors" | grep -q "\[1,3,16,64\]"'
run_err "apply: directions [1,3,16,64] for a 3x32x32 model" 'must have shape \[r,3,32,32\]' "$LOCO" apply "$M" --directions "$T/d_shape.safetensors" --image "$IMG" --out "$T/a"
cp "$D" "$T/d_inv.safetensors"
o=$(offset "$T/d_inv.safetensors" '"invert_to":"full"')
check "found invert_to in the metadata" '[ -n "$o" ]'
[ -n "$o" ] && patch "$T/d_inv.safetensors" $((o + 13)) 'bogu'
run_err "apply: invert_to 'bogu'" "invert_to' is 'bogu'" "$LOCO" apply "$M" --directions "$T/d_inv.safetensors" --image "$IMG" --out "$T/a"
run_err "apply --index 1e300" 'bad --index' "$LOCO" apply "$M" --directions "$D" --image "$IMG" --out "$T/a" --index 1e300
run_err "apply --index 0.7" 'bad --index' "$LOCO" apply "$M" --directions "$D" --image "$IMG" --out "$T/a" --index 0.7
run_err "apply --index beyond the file" 'out of range' "$LOCO" apply "$M" --directions "$D" --image "$IMG" --out "$T/a" --index 3
run_err "apply --direction F:0:1e308" 'bad --direction' "$LOCO" apply "$M" --direction "$D:0:1e308" --image "$IMG" --out "$T/a"
check "no apply output" '[ ! -e "$T/a" ]'

summary
