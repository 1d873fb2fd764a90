#!/usr/bin/env bash
# demo.sh - install what loco needs (Debian/Ubuntu, only the packages that are
# missing), build it, and run LOCO Edit on the shipped faces model:
#   1. describe models/faces32 (our own 4.4M-parameter model, trained with
#      `loco train` on the synthetic faces; see models/faces32/README.md)
#   2. make a mouth mask from the example face's label map (`loco mask`)
#   3. `loco edit`: invert the face to t = 0.6 T, find the top local
#      directions of the posterior-mean Jacobian inside the mask, project out
#      the outside's, and denoise x_t + s v; writes build/demo/edit/strip.png
#      (original | reconstruction | edits at the listed strengths)
#   4. draw 16 samples from the model with `loco sample`
# Everything it writes goes to build/demo/.
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(build-essential pkg-config libdnnl-dev libopenblas-dev libopenblas-openmp-dev libcjson-dev libcmocka-dev liblapacke-dev libpng-dev zlib1g-dev libutf8proc-dev libmicrohttpd-dev)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "== installing: ${missing[*]}"
    if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# the OpenBLAS kernel the tests use (see README.md); override by setting it
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Haswell}"

echo "== building"
make -j"$(nproc)" build/loco

LOCO=build/loco
OUT=build/demo
M=models/faces32
mkdir -p "$OUT"

run() { echo; echo "\$ $*"; "$@"; }

run "$LOCO" info "$M"
run "$LOCO" mask "$M/example_labels.png" --part mouth --dilate 1 --out "$OUT/mouth.png"
run "$LOCO" edit "$M" --image "$M/example.png" --mask "$OUT/mouth.png" --out "$OUT/edit" \
    --t-edit 0.6 --rank 5 --null-rank 5 --strengths -6,-3,3,6
run "$LOCO" sample "$M" --count 16 --out "$OUT/samples.png" --steps 50
echo
ls -l "$OUT" "$OUT/edit"
echo
echo "$OUT/edit/strip.png: original | reconstruction | the first direction at"
echo "strengths -6, -3, 3, 6 (the mouth changes, the rest far less). report.json"
echo "has the parameters, timings, singular values and convergence;"
echo "directions.safetensors the directions (apply them to other faces with"
echo "'loco apply'). $OUT/samples.png: 16 faces drawn by the model."
