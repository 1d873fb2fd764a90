#!/usr/bin/env bash
# demo.sh - install what loco needs (Debian/Ubuntu, only the packages that are
# missing), build it, and show the command-line tool at work:
#   1. write a random-initialised google/ddpm-cifar10-32 model (35.7M parameters)
#   2. describe it with `loco info`
#   3. run eps(x, t) and x0_hat on the small reference model of the tests
#   4. run a whole LOCO edit (inversion, local directions in a rectangle with
#      null-space projection, edits at three strengths) on the small reference
#      model (random weights: the pipeline is real, the picture is not yet -
#      trained models come with issue #5), writing build/demo/edit/strip.png
# Everything it writes goes to build/demo/.
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(build-essential pkg-config libopenblas-dev libopenblas-openmp-dev libcjson-dev libcmocka-dev liblapacke-dev libpng-dev zlib1g-dev)
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
mkdir -p "$OUT"
X=tests/fixtures/unet-small/vectors.safetensors   # holds x [1,3,32,32] and t

run() { echo; echo "\$ $*"; "$@"; }

run "$LOCO" init "$OUT/ddpm-cifar10-32" --config configs/ddpm-cifar10-32.json --seed 0
run "$LOCO" info "$OUT/ddpm-cifar10-32"
run "$LOCO" info tests/fixtures/unet-small
run "$LOCO" eps tests/fixtures/unet-small --x "$X" --t 595.36359 --out "$OUT/eps-unet-small.safetensors"
run "$LOCO" edit tests/fixtures/unet-small --image tests/fixtures/edit-small/original.png --rect 6,16,8,24 \
    --out "$OUT/edit" --steps 20 --inv-steps 20 --rank 3 --null-rank 3 --max-iter 12 --strengths -8,0,8
echo
ls -l "$OUT" "$OUT/edit"
echo
echo "eps-unet-small.safetensors holds 'eps' and 'x0_hat' [1,3,32,32]; they match the"
echo "reference in $X to about 1e-5 ('make test' checks that). $OUT/edit/ holds the"
echo "edit: strip.png (original | reconstruction | edits), directions.safetensors,"
echo "report.json (parameters, timings, convergence)."
