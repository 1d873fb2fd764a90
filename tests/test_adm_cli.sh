#!/bin/sh
# test_adm_cli.sh - every command on a guided-diffusion (ADM) model, given as
# the bare checkpoint file it is published as (the adm-small fixture's
# model.pt, flags inferred with --image-size and --head-channels) and as the
# folder `loco convert` writes from it.
. "$(dirname "$0")/cli_lib.sh"
cli_setup test_adm_cli.sh

FIX="${LOCO_FIXTURES:-tests/fixtures}/adm-small"
P="$T/ffhq_small.pt"
cp "$FIX/model.pt" "$P"
H="--image-size 32 --head-channels 16"
VEC="$FIX/vectors.safetensors"

run_ok "info on a bare checkpoint" "$LOCO" info "$P" $H
check "info names the family and what was inferred" \
    'grep -q "class: ADM" "$T/stdout" && grep -q "num_res_blocks 2" "$T/stdout" && grep -q "num_head_channels 16" "$T/stdout"'
run_ok "info --json" "$LOCO" info "$P" $H --json
check "info --json: family ADM, 1397190 parameters" \
    'grep -q "\"family\": \"ADM\"" "$T/stdout" && grep -q "\"parameters\": 1397190" "$T/stdout"'

# without the image size the flags cannot be inferred: a clear error, exit 2
"$LOCO" info "$P" >"$T/stdout" 2>"$T/stderr"
rc=$?
check "bare checkpoint without --image-size: error naming it (exit $rc)" '[ $rc -ne 0 ] && grep -q "image" "$T/stderr"'

run_ok "eps" "$LOCO" eps "$P" $H --x "$VEC" --t 696.27271 --out "$T/eps.safetensors"
check "eps written" '[ -s "$T/eps.safetensors" ]'
run_ok "jacobian jvp on a rectangle" "$LOCO" jacobian "$P" $H --x "$VEC" --t 696.27271 --mode jvp --in "$VEC" \
    --out "$T/jv.safetensors" --rect 6,16,8,24
check "jacobian written" '[ -s "$T/jv.safetensors" ]'

"$LOCO" dataset faces --count 2 --out "$T/faces" >/dev/null 2>&1
IMG="$T/faces/00000.png"
run_ok "edit" "$LOCO" edit "$P" $H --image "$IMG" --rect 8,20,8,24 --out "$T/edit" --steps 10 --inv-steps 10 \
    --rank 2 --null-rank 2 --min-iter 2 --max-iter 3 --strengths -4,4
check "edit outputs (the strip of 4 zoomed 4x by default)" '[ "$(png_size "$T/edit/strip.png")" = 512x128 ] && [ -s "$T/edit/directions.safetensors" ] && [ -s "$T/edit/report.json" ]'
check "edit used the P2 scripts' defaults (t_edit 0.7, boost_t 0.2)" \
    'tr -d " \t\n" <"$T/edit/report.json" | grep -q "\"t_edit\":0.69999" && tr -d " \t\n" <"$T/edit/report.json" | grep -q "\"boost_t\":0.2"'
run_ok "edit --settings ffhq" "$LOCO" edit "$P" $H --image "$IMG" --rect 8,20,8,24 --out "$T/edit_ffhq" --steps 10 \
    --inv-steps 10 --min-iter 2 --max-iter 3 --strengths 4 --settings ffhq --rank 2 --zoom 2
check "--zoom 2: original | reconstruction | edit, 2x (192x64)" '[ "$(png_size "$T/edit_ffhq/strip.png")" = 192x64 ]'
check "--settings ffhq: t_edit 0.2, rank 2 as given" \
    'tr -d " \t\n" <"$T/edit_ffhq/report.json" | grep -q "\"t_edit\":0.2" && tr -d " \t\n" <"$T/edit_ffhq/report.json" | grep -q "\"rank\":2"'
run_ok "apply the directions to another face" "$LOCO" apply "$P" $H --directions "$T/edit/directions.safetensors" \
    --image "$T/faces/00001.png" --out "$T/apply" --index 0 --strengths 4
check "apply outputs" '[ -n "$(ls "$T/apply"/*.png 2>/dev/null)" ]'
run_ok "sample" "$LOCO" sample "$P" $H --count 2 --steps 5 --out "$T/samples.png"
check "sample grid written" '[ -s "$T/samples.png" ]'
run_ok "analyze rank" "$LOCO" analyze rank "$P" $H --t 0.5 --image "$IMG" --out "$T/rank" --k 8 --max-exact 0
check "analyze rank outputs" '[ -n "$(ls "$T/rank" 2>/dev/null)" ]'

run_ok "convert the bare checkpoint to a folder" "$LOCO" convert "$P" $H "$T/folder"
check "the folder has config.json and model.safetensors" '[ -s "$T/folder/config.json" ] && [ -s "$T/folder/model.safetensors" ]'
run_ok "info on the folder (no flags)" "$LOCO" info "$T/folder"
cp "$T/stdout" "$T/info_folder"
"$LOCO" info "$P" $H >"$T/info_bare" 2>/dev/null
check "the folder describes the same network" \
    '[ "$(grep -v "^model:\|^  \|^inferred\|^from\|^defaults\|^checked\|^guided" "$T/info_folder")" = "$(grep -v "^model:\|^  \|^inferred\|^from\|^defaults\|^checked\|^guided" "$T/info_bare")" ]'
run_ok "eps of the folder" "$LOCO" eps "$T/folder" --x "$VEC" --t 696.27271 --out "$T/eps2.safetensors"
# the tensor data of a safetensors file (after its 8-byte length and header)
st_data() { _n=$(od -An -tu8 -N8 "$1" | tr -d ' '); tail -c +$((9 + _n)) "$1"; }
st_data "$T/eps.safetensors" >"$T/d1"
st_data "$T/eps2.safetensors" >"$T/d2"
check "the folder's eps equals the bare checkpoint's, byte for byte" '[ -s "$T/d1" ] && cmp -s "$T/d1" "$T/d2"'

# contradictions and absurd values
"$LOCO" info "$T/folder" --head-channels 8 >"$T/stdout" 2>"$T/stderr"
check "a folder contradicted by --head-channels: error naming the flag" 'grep -q "num_head_channels" "$T/stderr"'
"$LOCO" info "$P" --preset p2 >"$T/stdout" 2>"$T/stderr"
check "--preset p2 on a non-P2 checkpoint: error" '[ -s "$T/stderr" ] && ! [ -s "$T/stdout" ]'
"$LOCO" info "$P" --preset sd >"$T/stdout" 2>"$T/stderr"
rc=$?
check "--preset sd: usage error (exit $rc)" '[ $rc -eq 2 ]'
"$LOCO" info "$P" --image-size 1e9 >"$T/stdout" 2>"$T/stderr"
rc=$?
check "--image-size 1e9: usage error (exit $rc)" '[ $rc -eq 2 ]'

summary
