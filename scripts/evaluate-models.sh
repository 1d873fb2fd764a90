#!/bin/sh
# evaluate-models.sh - the measurements and pictures behind docs/models.md and
# the trained-model charts of docs/analysis (issues #5 and #6). Run from the
# repository root after `make`. Each part can run alone (and in parallel
# with the others, e.g. one per core with OMP_NUM_THREADS=1):
#
#   scripts/evaluate-models.sh faces      faces32: samples, data grid, held-out loss, colours
#   scripts/evaluate-models.sh fashion    fashion32: samples, data grid, held-out loss
#   scripts/evaluate-models.sh edits      edit locality on faces32 (20 faces x 3 parts)
#   scripts/evaluate-models.sh rank-faces32 | rank-fashion32 | rank-random
#                                         rank and linearity charts (docs/analysis)
#   scripts/evaluate-models.sh all        everything (about an hour on 2 cores)
#
# Results go to docs/models/ and docs/analysis/. Deterministic (fixed seeds).
set -eu
B=${BUILD:-build}
D=docs/models
A=docs/analysis
mkdir -p "$D"
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Haswell}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
what=${1:-all}

run() { echo "\$ $*" >&2; "$@"; }
want() { [ "$what" = "$1" ] || [ "$what" = all ]; }

if want faces; then
    run "$B/loco" --quiet sample models/faces32 --count 64 --out "$D/faces32-samples.png" --steps 50 --seed 0 \
        --cols 8 --zoom 2
    run "$B/loco" --quiet dataset faces --count 64 --grid "$D/faces-data.png" --grid-zoom 2
    run "$B/eval_loss" models/faces32 --data faces --count 512 --json "$D/faces32-loss.json" >"$D/faces32-loss.txt"
    # colour of 64 samples against the data (bench/colour_eval.h; exits 1 over the bound)
    run "$B/eval_colour" models/faces32 --json "$D/faces32-colour.json" >"$D/faces32-colour.txt" || true
    # does the model keep backgrounds to the data's four colours? (bench/eval_modes.c)
    run "$B/eval_modes" models/faces32 >"$D/faces32-modes.txt"
fi
if want fashion; then
    run "$B/loco" --quiet sample models/fashion32 --count 64 --out "$D/fashion32-samples.png" --steps 50 --seed 0 \
        --cols 8 --zoom 2
    run "$B/loco" --quiet dataset fashion-mnist --count 64 --grid "$D/fashion-data.png" --grid-zoom 2
    run "$B/eval_loss" models/fashion32 --data fashion-mnist --count 512 --json "$D/fashion32-loss.json" \
        >"$D/fashion32-loss.txt"
fi
if want edits; then
    # t_edit 0.6, rank 5, null rank 5 (the setting); 50-step DDIM
    # both ways and 10-15 iterations keep it to ~25 minutes on one core
    run "$B/eval_edit" models/faces32 --count 20 --parts eyes,mouth,hair --strength 4 --steps 50 \
        --inv-steps 50 --max-iter 15 --strips "$D" --json "$D/faces32-edits.json" >"$D/faces32-edits.txt"
fi
# rank at t = 0.1, 0.3, 0.5, 0.6, 0.7, 0.9 (exact: every column of the
# Jacobian; 2 images for fashion32, 1 for the 3x larger faces models) and
# linearity at t = 0.6 on 2 images: held-out faces for the faces models,
# DDIM samples for fashion32
analysis() { # name model-dir rank-image-options -- linearity-image-options
    name=$1
    dir=$2
    shift 2
    ropts=""
    while [ "$1" != -- ]; do ropts="$ropts $1"; shift; done
    shift
    # shellcheck disable=SC2086
    run "$B/loco" --quiet analyze rank "$dir" --t 0.1,0.3,0.5,0.6,0.7,0.9 $ropts --out "$A/$name-rank"
    rm -f "$A/$name-rank/spectrum.csv" # large; regenerate with the command above
    run "$B/loco" --quiet analyze linearity "$dir" --t 0.6 "$@" --out "$A/$name-linearity"
}
R=$(mktemp -d)
trap 'rm -rf "$R"' EXIT
case $what in rank-* | all) "$B/loco" --quiet dataset faces --count 2 --seed 99 --out "$R/faces" ;; esac
FACES="--image $R/faces/00000.png --image $R/faces/00001.png"
# shellcheck disable=SC2086
if want rank-faces32; then
    analysis faces32 models/faces32 --image $R/faces/00000.png -- $FACES
    # faces32's 0.8 T (sqrt(abar) 0.20) is near DDPM's schedule at 0.6 T (0.16)
    run "$B/loco" --quiet analyze linearity models/faces32 --t 0.8 $FACES --out "$A/faces32-linearity-0.8"
fi
if want rank-fashion32; then analysis fashion32 models/fashion32 --images 2 -- --images 2; fi
if want rank-random; then
    run "$B/loco" --quiet init "$R/faces32-random" --config configs/faces32.json --seed 0
    # shellcheck disable=SC2086
    analysis faces32-random "$R/faces32-random" --image $R/faces/00000.png -- $FACES
fi
