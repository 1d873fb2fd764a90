#!/bin/sh
# Runs each test given - a test binary, or a shell test (*.sh, run with sh) -
# then prints one summary line. Exit status is non-zero if any test fails.
export OPENBLAS_CORETYPE="${OPENBLAS_CORETYPE:-Haswell}"
# OpenMP threads that spin while waiting make a loaded 2-core machine 25-45x
# slower (measured); sleeping waits cost nothing measurable on an idle one.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
pass=0; failn=0; failed=""
for t in "$@"; do
    echo "== $t"
    case "$t" in
        *.sh) sh "$t" ;;
        *) "$t" ;;
    esac
    if [ $? -eq 0 ]; then pass=$((pass + 1)); else failn=$((failn + 1)); failed="$failed $t"; fi
done
[ -n "$failed" ] && echo "failed:$failed"
echo "tests: $pass passed, $failn failed"
[ "$failn" -eq 0 ]
