#!/bin/sh
# Runs each test binary given, then prints one summary line.
# Exit status is non-zero if any test program fails.
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Haswell}"
pass=0; failn=0; failed=""
for t in "$@"; do
    echo "== $t"
    if "$t"; then pass=$((pass + 1)); else failn=$((failn + 1)); failed="$failed $t"; fi
done
[ -n "$failed" ] && echo "failed:$failed"
echo "tests: $pass passed, $failn failed"
[ "$failn" -eq 0 ]
