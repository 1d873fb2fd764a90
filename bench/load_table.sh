#!/bin/sh
# bench/load_table.sh - whole loco commands on a busy machine: each workload
# under each thread setting with 0, 1 and 2 busy-looping processes beside it
# (what a laptop doing other work looks like), median wall time of R runs.
#   bench/load_table.sh [R]          (default R = 3; needs `make` and a
#                                     random celebahq-256 model, made once)
# Settings (the environment of the loco process):
#   default      nothing set: what a new user gets
#   1 thread     OMP_NUM_THREADS=1
#   2 passive    OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive
#   2 spinning   OMP_NUM_THREADS=2 GOMP_SPINCOUNT=10000 (libgomp's own
#                default wait, the behaviour before loco re-executed itself)
# (default now: loco re-executes itself with GOMP_SPINCOUNT=1000 and picks
# the thread count from the model's size and the machine's load)
# Prints a markdown table: seconds, and default / best of the other settings.
set -eu
cd "$(dirname "$0")/.."
R="${1:-3}"
LOCO=build/loco
M=models/faces32
CELEBA=build/bench-models/ddpm-ema-celebahq-256
W="${TMPDIR:-/tmp}/loco-load.$$"
mkdir -p "$W"
hogs=""
cleanup() { for p in $hogs; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT INT TERM
[ -x "$LOCO" ] || { echo "run make first" >&2; exit 2; }
if [ ! -f "$CELEBA/diffusion_pytorch_model.safetensors" ]; then
    mkdir -p build/bench-models
    "$LOCO" init "$CELEBA" --config configs/ddpm-ema-celebahq-256.json --seed 0 --quiet
fi
"$LOCO" mask "$M/example_labels.png" --part mouth --dilate 1 --out "$W/mouth.png" --quiet
# x [1,3,256,256] of zeros for the one-shot eps
n=$((3 * 256 * 256))
. tests/cli_lib.sh # st_header
st_header "$W/x.safetensors" x 1,3,256,256 $((n * 4))
head -c $((n * 4)) /dev/zero >>"$W/x.safetensors"

EDIT="$LOCO edit $M --image $M/example.png --mask $W/mouth.png --out $W/e --rank 5 --null-rank 5 --strengths -6,6 --min-iter 4 --max-iter 4 --quiet"
EPS="$LOCO eps $CELEBA --x $W/x.safetensors --t 500 --out $W/o.safetensors --quiet"

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
# time_it SETTING COMMAND: the median seconds of R runs (paths here have no spaces)
time_it() {
    for _ in $(seq "$R"); do
        t0=$(now)
        env $1 $2 >/dev/null 2>"$W/err" || { echo "failed: $1 $2" >&2; cat "$W/err" >&2; }
        t1=$(now)
        echo "$t0 $t1" | awk '{printf "%.2f\n", $2 - $1}'
    done | median
}

echo "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | sed -n 1p), family $(sed -n 's/^cpu family[[:space:]]*: //p' /proc/cpuinfo | sed -n 1p), $(nproc) cpus; OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)}; $R runs each, median"
echo
echo "| workload | busy processes | default | 1 thread | 2 passive | 2 spinning | default / best |"
echo "|---|---|---|---|---|---|---|"
for load in 0 1 2; do
    for p in $hogs; do kill "$p" 2>/dev/null || true; done
    hogs=""
    i=0
    while [ "$i" -lt "$load" ]; do
        sh -c 'while :; do :; done' &
        hogs="$hogs $!"
        i=$((i + 1))
    done
    for w in edit eps; do
        cmd=$([ "$w" = edit ] && echo "$EDIT" || echo "$EPS")
        d=$(time_it "LOCO_LOAD_TABLE=1" "$cmd")
        o=$(time_it "OMP_NUM_THREADS=1" "$cmd")
        p=$(time_it "OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive" "$cmd")
        s=$(time_it "OMP_NUM_THREADS=2 GOMP_SPINCOUNT=10000" "$cmd")
        name=$([ "$w" = edit ] && echo "faces32 edit (demo's, 4 iterations)" || echo "celebahq-256 eps, one-shot")
        echo "$d $o $p $s" | awk -v n="$name" -v l="$load" '{b = $2; if ($3 < b) b = $3; if ($4 < b) b = $4;
            printf "| %s | %d | %.1f | %.1f | %.1f | %.1f | %.2f |\n", n, l, $1, $2, $3, $4, $1 / b}'
    done
done
