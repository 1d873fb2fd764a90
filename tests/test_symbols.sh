#!/bin/sh
# test_symbols.sh - the public library exports only loco_* symbols (every
# internal function and table is hidden), and the CLI links against it.
. "$(dirname "$0")/cli_lib.sh"
cli_setup test_symbols.sh

LIB="${BUILD:-build}/libloco.a"
[ -f "$LIB" ] || { echo "  FAIL $LIB is missing"; exit 1; }
others=$(nm -g --defined-only "$LIB" 2>/dev/null | awk 'NF == 3 { print $3 }' | grep -v '^loco_' | sort -u)
n_pub=$(nm -g --defined-only "$LIB" 2>/dev/null | awk 'NF == 3 { print $3 }' | grep -c '^loco_')
if [ -z "$others" ] && [ "$n_pub" -gt 50 ]; then
    ok "libloco.a exports $n_pub symbols, all loco_*"
else
    bad "libloco.a exports symbols without the loco_ prefix: $(echo "$others" | head -20 | tr '\n' ' ') ($n_pub loco_*)"
fi
# every public function of the headers is defined in the library
missing=""
for f in $(grep -ho 'loco_[a-z0-9_]*(' include/loco.h include/loco_train.h | tr -d '(' | sort -u); do
    nm -g --defined-only "$LIB" 2>/dev/null | awk 'NF == 3 { print $3 }' | grep -qx "$f" || missing="$missing $f"
done
if [ -z "$missing" ]; then ok "every function the public headers declare is exported"
else bad "declared in include/ but not exported:$missing"; fi
summary
