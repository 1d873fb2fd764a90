#!/usr/bin/env bash
# p2-end-to-end.sh - a P2-weighting checkpoint as it is published (a bare
# guided-diffusion .pt, no config) through loco, end to end, with random
# weights (real checkpoints cannot be downloaded here):
#   1. loco init: a random model of the published P2 flags (configs/adm-p2-256.json)
#   2. loco convert to OUT.pt: the state dict as guided-diffusion saves it
#   3. loco info --preset p2: what is inferred from the shapes
#   4. loco edit --preset p2 --settings ffhq: a (short) LOCO edit
# Usage: scripts/p2-end-to-end.sh [WORK_DIR]   (default build/p2-check; ~1.5 GB)
set -euo pipefail
cd "$(dirname "$0")/.."
W="${1:-build/p2-check}"
LOCO=build/loco
[ -x "$LOCO" ] || make -j"$(nproc)" build/loco
mkdir -p "$W"
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Haswell}"
run() { echo; echo "\$ $*"; "$@"; }
[ -s "$W/p2/config.json" ] || run "$LOCO" init "$W/p2" --config configs/adm-p2-256.json --seed 1
[ -s "$W/ffhq_p2.pt" ] || run "$LOCO" convert "$W/p2" "$W/ffhq_p2.pt"
run "$LOCO" info "$W/ffhq_p2.pt" --preset p2
run /usr/bin/time -v "$LOCO" edit "$W/ffhq_p2.pt" --preset p2 --settings ffhq --image models/faces32/example.png \
    --resize --rect 100,160,60,200 --out "$W/edit" --inv-steps 5 --steps 5 --max-iter 2 --min-iter 1 --rank 2 \
    --null-rank 2 --strengths -8,8 2> >(grep -E "Elapsed|Maximum resident|loco:" >&2)
ls -l "$W/edit"
