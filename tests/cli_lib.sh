# cli_lib.sh - helpers shared by the shell tests (sourced, POSIX sh):
# the loco binary, a temporary folder $T removed on exit, pass/fail counters
# and the common checks. Each test script then defines its own run_err (what
# a failing command must leave behind differs between suites) and ends with
# `summary`.
#   cli_setup NAME   NAME is the script's name, for messages and $T

LOCO="${LOCO:-${BUILD:-build}/loco}"

cli_setup() {
    SUITE=$1
    if [ ! -x "$LOCO" ]; then
        echo "$SUITE: $LOCO not found or not executable (run 'make' first)" >&2
        exit 1
    fi
    T=$(mktemp -d "${TMPDIR:-/tmp}/loco-$SUITE.XXXXXX") || exit 1
    trap 'rm -rf "$T"' EXIT
    trap 'exit 130' INT TERM
    npass=0
    nfail=0
}

ok() { npass=$((npass + 1)); echo "  ok   $1"; }
bad() { nfail=$((nfail + 1)); echo "  FAIL $1"; }
# a failed command: also show the start of what it wrote to stderr
bad_cmd() {
    bad "$1"
    if [ -s "$T/stderr" ]; then sed 's/^/       stderr: /' "$T/stderr" | sed -n '1,12p'; fi
}

# A sanitizer report, or a crash, must never pass for an expected error.
sanitizer_clean() { ! grep -q -e 'Sanitizer' -e 'runtime error:' "$T/stderr"; }

# run_ok DESC CMD...: must exit 0 with no sanitizer output; stdout in $T/stdout
run_ok() {
    desc=$1
    shift
    if "$@" >"$T/stdout" 2>"$T/stderr" && sanitizer_clean; then ok "$desc"; else bad_cmd "$desc (exit $?)"; fi
}

# check DESC COMMAND-STRING: evaluates a condition
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }

# st_header FILE NAME SHAPE NBYTES: starts FILE as a safetensors file with
# one F32 tensor NAME of SHAPE (e.g. 1,3,32,32) and NBYTES of data, which the
# caller appends: the 8-byte little-endian header length, then the header
st_header() {
    _st_h="{\"$2\":{\"dtype\":\"F32\",\"shape\":[$3],\"data_offsets\":[0,$4]}}"
    _st_n=${#_st_h}
    printf "$(printf '\\%03o\\%03o\\000\\000\\000\\000\\000\\000' $((_st_n % 256)) $((_st_n / 256 % 256)))" >"$1"
    printf '%s' "$_st_h" >>"$1"
}

# png_size FILE: "WIDTHxHEIGHT" from the PNG's IHDR chunk (sizes < 65536)
png_size() { od -An -tu1 -j16 -N8 "$1" | awk '{print $3 * 256 + $4 "x" $7 * 256 + $8}'; }

summary() {
    echo "$SUITE: $npass passed, $nfail failed"
    [ "$nfail" -eq 0 ]
}
