#!/bin/sh
# fuzz/run.sh [SECONDS] [TARGET...]  - fuzz loco's readers with libFuzzer
# fuzz/run.sh --seeds                - regenerate the seed corpora
#
# Builds the libFuzzer targets fuzz/fuzz_<target>.c with clang under
# AddressSanitizer + UndefinedBehaviorSanitizer into build/fuzz/, then runs
# each target for SECONDS (default 120) as one process (no -jobs/-workers:
# the machine is small and shared), starting from its seed corpus
# fuzz/corpus/<target>/ (read-only here; new inputs go to
# build/fuzz/corpus/<target>/). Prints executions and coverage (cov/ft from
# libFuzzer's final lines) per target; full logs in build/fuzz/logs/.
# Targets: safetensors config png pickle pytorch (see fuzz/harness.h),
# cli: the command line's number and list parsers (tools/cli_parse.c), and
# serve: loco serve's API handlers and job queue (fuzz/fuzz_serve.c; needs
# libmicrohttpd-dev).
#
# A crash, leak, timeout or out-of-memory leaves its input in
# build/fuzz/artifacts/<target>/ and makes the script exit 1. Fix it, then
# copy the input to fuzz/regressions/<target>/: tests/test_pytorch.c replays
# every regression and corpus input through the same harness under
# `make test` and `make asan`. This script is not part of CI.
#
# Needs clang with libFuzzer (Debian: clang, libclang-rt-14-dev) and the
# library's own packages (libopenblas-dev libcjson-dev libpng-dev zlib1g-dev).
set -eu
cd "$(dirname "$0")/.."
OUT=build/fuzz
CC="${FUZZ_CC:-clang}"
ALL="safetensors config png pickle pytorch cli tokenizer serve"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=all"
CFLAGS="-std=c11 -g -O1 -fno-omit-frame-pointer $SAN -fopenmp -Iinclude -Isrc -D_GNU_SOURCE -Wall -Wno-unused-parameter"
LIBS="-lopenblas -lcjson -lpng -lz -lutf8proc -lm"
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Haswell}"

if [ "${1:-}" = "--seeds" ]; then
    make -s build/libloco.a
    mkdir -p "$OUT"
    gcc -std=c11 -fopenmp -Iinclude -Isrc -D_GNU_SOURCE fuzz/make_corpus.c build/libloco.a $LIBS -o "$OUT/make_corpus"
    for t in $ALL; do # serve's seeds are hand-written requests: kept
        [ "$t" = serve ] && continue
        rm -rf "fuzz/corpus/$t"
        mkdir -p "fuzz/corpus/$t"
    done
    "$OUT/make_corpus" fuzz/corpus
    cp tests/fixtures/unet-small/config.json fuzz/corpus/config/unet-small.json
    cp tests/fixtures/unet-small_mh/config.json fuzz/corpus/config/unet-small_mh.json
    [ -f configs/ddpm-cifar10-32.json ] && cp configs/ddpm-cifar10-32.json fuzz/corpus/config/
    printf '{"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear"}\n' \
        >fuzz/corpus/config/scheduler_config.json
    cp tests/fixtures/edit-small/original.png fuzz/corpus/png/original_32x32.png
    du -sh fuzz/corpus
    exit 0
fi

SECS="${1:-120}"
[ $# -gt 0 ] && shift
TARGETS="${*:-$ALL}"
command -v "$CC" >/dev/null || { echo "fuzz/run.sh: $CC not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }

# ---- build: the library once, then each target --------------------------
mkdir -p "$OUT/obj" "$OUT/logs"
# src/ and its subfolders (src/ops/conv.c -> obj/ops/conv.o); only these
# objects are linked, so those of removed or moved sources do not linger
OBJS=""
for src in $(find src -name '*.c' | sort); do
    obj="$OUT/obj/${src#src/}"
    obj="${obj%.c}.o"
    mkdir -p "$(dirname "$obj")"
    if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find src include -name '*.h' -newer "$obj")" ]; then
        echo "cc $src"
        $CC $CFLAGS -fsanitize=fuzzer-no-link -c "$src" -o "$obj"
    fi
    OBJS="$OBJS $obj"
done
for t in $TARGETS; do
    [ -f "fuzz/fuzz_$t.c" ] || { echo "fuzz/run.sh: no target '$t' (have: $ALL)" >&2; exit 2; }
    echo "link fuzz_$t"
    extra=""
    xlibs=""
    [ "$t" = cli ] && extra=tools/cli_parse.c # the CLI's parsers are not in the library
    if [ "$t" = serve ]; then                 # loco serve's sources, its page and libmicrohttpd
        sh tools/serve_page/embed.sh tools/serve_page/*.html tools/serve_page/*.js tools/serve_page/*.css \
            >"$OUT/serve_page.c"
        extra="tools/serve.c tools/serve_api.c tools/serve_state.c tools/cli.c tools/cli_parse.c $OUT/serve_page.c"
        xlibs="-lmicrohttpd -lpthread"
    fi
    $CC $CFLAGS -fsanitize=fuzzer "fuzz/fuzz_$t.c" $extra $OBJS $LIBS $xlibs -o "$OUT/fuzz_$t"
done
cat fuzz/dict/pickle.dict fuzz/dict/zip.dict >"$OUT/pytorch.dict"

# ---- run ------------------------------------------------------------------
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:allocator_may_return_null=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
status=0
summary=""
for t in $TARGETS; do
    case $t in
        safetensors) dict=fuzz/dict/json.dict; maxlen=16384 ;;
        config) dict=fuzz/dict/json.dict; maxlen=8192 ;;
        png) dict=fuzz/dict/png.dict; maxlen=16384 ;;
        pickle) dict=fuzz/dict/pickle.dict; maxlen=4096 ;;
        pytorch) dict="$OUT/pytorch.dict"; maxlen=16384 ;;
        cli) dict=fuzz/dict/cli.dict; maxlen=256 ;;
        tokenizer) dict=fuzz/dict/tokenizer.dict; maxlen=4096 ;;
        serve) dict=fuzz/dict/serve.dict; maxlen=8192 ;;
    esac
    mkdir -p "$OUT/corpus/$t" "$OUT/artifacts/$t"
    log="$OUT/logs/$t.log"
    echo "== fuzz_$t for ${SECS}s (log: $log)"
    set +e
    "$OUT/fuzz_$t" -max_total_time="$SECS" -print_final_stats=1 -timeout=10 -rss_limit_mb=2560 \
        -malloc_limit_mb=2048 -max_len="$maxlen" -dict="$dict" -artifact_prefix="$OUT/artifacts/$t/" \
        "$OUT/corpus/$t" "fuzz/corpus/$t" >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
    corp=$(echo "$last" | sed -n 's/.* corp: \([0-9]*\/[0-9A-Za-z]*\).*/\1/p')
    crashes=$(find "$OUT/artifacts/$t" -type f | wc -l)
    if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        status=1
        echo "   FOUND SOMETHING (exit $rc); inputs in $OUT/artifacts/$t/:"
        grep -E 'ERROR: |runtime error|SUMMARY' "$log" | head -5 | sed 's/^/   /'
    fi
    line=$(printf '%-12s %10s execs  cov %6s  ft %6s  corpus %-10s  exit %s  artifacts %s' \
        "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$rc" "$crashes")
    echo "   $line"
    summary="$summary$line
"
done
echo
echo "fuzz summary (${SECS}s per target, ASan+UBSan):"
printf '%s' "$summary"
exit $status
