#!/bin/sh
# test_dataset_cli.sh - `loco dataset faces|fashion-mnist` and `loco mask`
# end to end: files written, determinism, --start, contact sheets, masks and
# their errors (exit 1 or 2, a 'loco: ...' message, no output left behind).
# POSIX sh; run from the repository root. Uses $LOCO, else $BUILD/loco, else
# build/loco. The Fashion-MNIST part runs when Debian's dataset-fashion-mnist
# is installed.
set -u

. "$(dirname "$0")/cli_lib.sh"
FM=/usr/share/datasets/fashion-mnist
cli_setup test_dataset_cli.sh

# run_err DESC NEEDLE CMD...: exit 1 or 2, 'loco: ' and NEEDLE on stderr,
# nothing left in $T/err
run_err() {
    desc=$1
    needle=$2
    shift 2
    rm -rf "$T/err"
    mkdir "$T/err"
    "$@" >"$T/stdout" 2>"$T/stderr"
    rc=$?
    if [ "$rc" -ne 1 ] && [ "$rc" -ne 2 ]; then
        bad_cmd "$desc: exit status $rc, expected 1 or 2"
    elif ! grep -q '^loco: ' "$T/stderr" || ! grep -q -e "$needle" "$T/stderr"; then
        bad_cmd "$desc: stderr lacks 'loco: ' or '$needle'"
    elif ! sanitizer_clean; then
        bad_cmd "$desc: sanitizer report"
    elif [ -n "$(ls -A "$T/err")" ]; then
        bad "$desc: left files behind: $(ls -A "$T/err" | tr '\n' ' ')"
    else
        ok "$desc (exit $rc: $(head -n 1 "$T/stderr"))"
    fi
}

echo "dataset faces"
run_ok "faces --count 5 --seed 3 (a)" "$LOCO" --quiet dataset faces --count 5 --out "$T/a" --seed 3
run_ok "faces --count 5 --seed 3 (b)" "$LOCO" --quiet dataset faces --count 5 --out "$T/b" --seed 3
run_ok "faces --count 1 --start 2 --seed 3" "$LOCO" --quiet dataset faces --count 1 --start 2 --out "$T/c" --seed 3
run_ok "faces --count 5 --seed 4" "$LOCO" --quiet dataset faces --count 5 --out "$T/d" --seed 4
check "images, label maps, factors.csv and parts.txt written" \
    "[ -s '$T/a/00000.png' ] && [ -s '$T/a/00004.png' ] && [ -s '$T/a/00004_labels.png' ] && [ ! -e '$T/a/00005.png' ] && [ -s '$T/a/parts.txt' ]"
check "factors.csv: a header and 5 rows of 18 columns" \
    "[ \$(wc -l <'$T/a/factors.csv') -eq 6 ] && head -n 1 '$T/a/factors.csv' | grep -q '^index,eye_size,' && [ \$(sed -n 6p '$T/a/factors.csv' | tr ',' '\n' | wc -l) -eq 18 ]"
check "parts.txt: the label table and the groups" \
    "grep -q '^7 mouth\$' '$T/a/parts.txt' && grep -q '^# eyes = 3 4 5 6\$' '$T/a/parts.txt'"
same=1
for f in 00000.png 00004.png 00004_labels.png factors.csv parts.txt; do cmp -s "$T/a/$f" "$T/b/$f" || same=0; done
check "same seed: byte-identical files" "[ $same -eq 1 ]"
check "--start 2: the same image 2" "cmp -s '$T/a/00002.png' '$T/c/00002.png' && cmp -s '$T/a/00002_labels.png' '$T/c/00002_labels.png'"
check "another seed: other images" "! cmp -s '$T/a/00000.png' '$T/d/00000.png'"
run_ok "faces --version 1 (the first, jittered generator)" "$LOCO" --quiet dataset faces --count 5 --out "$T/v1" --seed 3 --version 1
run_ok "faces --version 2 (the default)" "$LOCO" --quiet dataset faces --count 5 --out "$T/v2" --seed 3 --version 2
check "--version 2 is the default" "cmp -s '$T/a/factors.csv' '$T/v2/factors.csv' && cmp -s '$T/a/00003.png' '$T/v2/00003.png'"
# factors.csv columns 16-18 are offset_x, offset_y, scale (after the index)
check "version 2: no geometric jitter (offset_x, offset_y, scale all 0.500000)" \
    "[ \"\$(tail -n +2 '$T/a/factors.csv' | cut -d, -f16-18 | sort -u)\" = '0.500000,0.500000,0.500000' ]"
check "version 1: jittered, the other factors the same" \
    "[ \$(tail -n +2 '$T/v1/factors.csv' | cut -d, -f16-18 | sort -u | wc -l) -eq 5 ] && [ \"\$(cut -d, -f1-15 '$T/v1/factors.csv')\" = \"\$(cut -d, -f1-15 '$T/a/factors.csv')\" ]"
run_err "faces: --version 3" "version" "$LOCO" dataset faces --count 1 --out "$T/err/x" --version 3
run_ok "faces --grid --label-grid --count 64" "$LOCO" --quiet dataset faces --count 64 --grid "$T/g.png" --label-grid "$T/l.png"
check "contact sheets written" "[ -s '$T/g.png' ] && [ -s '$T/l.png' ]"
run_ok "faces --grid --grid-zoom 3 --count 16" "$LOCO" --quiet dataset faces --count 16 --grid "$T/g3.png" --grid-zoom 3
# PNG width and height: big-endian at bytes 16..23
check "sheet sizes: 8x8 of 32+1 px is 265x265, 8x2 of 96+1 px is 777x195 ($(png_size "$T/g.png"), $(png_size "$T/g3.png"))" \
    "[ \"\$(png_size '$T/g.png')\" = 265x265 ] && [ \"\$(png_size '$T/g3.png')\" = 777x195 ]"
run_err "faces: bad --grid-zoom" "grid-zoom" "$LOCO" dataset faces --count 4 --grid "$T/err/g.png" --grid-zoom 0
run_err "faces: missing --count" "count" "$LOCO" dataset faces --out "$T/err/x"
run_err "faces: --count 0" "count" "$LOCO" dataset faces --count 0 --out "$T/err/x"
run_err "faces: no output" "out" "$LOCO" dataset faces --count 2
run_err "dataset: unknown kind" "usage" "$LOCO" dataset cifar --count 2 --out "$T/err/x"

echo "mask"
run_ok "mask mouth --dilate 1" "$LOCO" mask "$T/a/00000_labels.png" --part mouth --dilate 1 --out "$T/m1.png"
check "mask mouth: reports its pixel count" "grep -q 'mouth, dilated 1 px: [0-9]* of 1024 pixels' '$T/stderr'"
n0=$("$LOCO" mask "$T/a/00000_labels.png" --part mouth --out "$T/m0.png" 2>&1 | sed -n 's/.*: \([0-9]*\) of 1024.*/\1/p')
n1=$(sed -n 's/.*: \([0-9]*\) of 1024.*/\1/p' "$T/stderr")
check "dilation grows the mask ($n0 -> $n1 pixels)" "[ -n '$n0' ] && [ -n '$n1' ] && [ $n1 -gt $n0 ] && [ $n0 -ge 12 ]"
run_ok "mask eyes, left_eye, hair, clothes" sh -c "'$LOCO' --quiet mask '$T/a/00001_labels.png' --part eyes --out '$T/e.png' && '$LOCO' --quiet mask '$T/a/00001_labels.png' --part left_eye --dilate 2 --out '$T/le.png' && '$LOCO' --quiet mask '$T/a/00001_labels.png' --part hair --out '$T/h.png' && '$LOCO' --quiet mask '$T/a/00001_labels.png' --part clothes --out '$T/c.png'"
run_err "mask: unknown part lists the valid ones" "valid parts: background, skin, hair" \
    "$LOCO" mask "$T/a/00000_labels.png" --part moustache --out "$T/err/m.png"
run_err "mask: an RGB image is not a label map" "not a part label map: 3 channels" \
    "$LOCO" mask "$T/a/00000.png" --part mouth --out "$T/err/m.png"
run_err "mask: a 0/255 mask is not a label map" "value 255" \
    "$LOCO" mask "$T/m1.png" --part mouth --out "$T/err/m.png"
echo 'iVBORw0KGgoAAAANSUhEUgAAAAQAAAAECAAAAACMmsGiAAAAAXNSR0IArs4c6QAAAAtJREFUCJljYMAEAAAUAAFl9YdZAAAAAElFTkSuQmCC' |
    base64 -d >"$T/zero.png"
run_err "mask: a part absent from the map" "absent" "$LOCO" mask "$T/zero.png" --part mouth --out "$T/err/m.png"
run_ok "mask: background of the all-background map" "$LOCO" --quiet mask "$T/zero.png" --part background --out "$T/bg.png"
run_err "mask: bad --dilate" "dilate" "$LOCO" mask "$T/a/00000_labels.png" --part mouth --dilate 99 --out "$T/err/m.png"
run_err "mask: missing --part" "usage" "$LOCO" mask "$T/a/00000_labels.png" --out "$T/err/m.png"
run_err "mask: missing file" "no-such" "$LOCO" mask "$T/no-such.png" --part mouth --out "$T/err/m.png"

echo "dataset fashion-mnist"
run_err "fashion-mnist: a folder without the files" "dataset-fashion-mnist" \
    "$LOCO" dataset fashion-mnist --count 2 --dir "$T/err" --out "$T/err/x"
if [ -d "$FM" ]; then
    run_ok "fashion-mnist --count 3" "$LOCO" --quiet dataset fashion-mnist --count 3 --out "$T/fm"
    check "3 PNGs and labels.csv (train[0] is an ankle boot)" \
        "[ -s '$T/fm/00002.png' ] && [ ! -e '$T/fm/00003.png' ] && sed -n 2p '$T/fm/labels.csv' | grep -q '^0,9,Ankle boot\$'"
    run_ok "fashion-mnist --split test --grid" "$LOCO" --quiet dataset fashion-mnist --count 16 --split test --grid "$T/fg.png"
    check "test split contact sheet written" "[ -s '$T/fg.png' ]"
    run_err "fashion-mnist: bad --split" "split" "$LOCO" dataset fashion-mnist --count 2 --split valid --out "$T/err/x"
else
    echo "  NOTE: $FM absent (apt-get install dataset-fashion-mnist); Fashion-MNIST export not tested"
fi

summary
