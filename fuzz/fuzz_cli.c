/* fuzz_cli.c - libFuzzer target: the command line's number and list parsers
 * (tools/cli_parse.c) on arbitrary text. Each must accept a whole argument or
 * nothing, and what it accepts must lie in the range asked for (a value out
 * of range, a fraction taken as an integer or a non-finite number is a
 * finding, and so is any sanitizer report). Built and run by fuzz/run.sh. */
#include "../tools/cli.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = 0;
    long long v;
    if (parse_long(s, -1000, 4095, &v) && (v < -1000 || v > 4095)) __builtin_trap();
    double d;
    if (parse_float(s, &d) && !isfinite(d)) __builtin_trap();
    double l[8];
    int n = parse_list(s, l, 8);
    if (n > 8) __builtin_trap();
    for (int i = 0; i < n; i++)
        if (!isfinite(l[i])) __builtin_trap();
    int r[4];
    n = parse_int_list(s, r, 4, -1000000, 1000000);
    if (n > 4) __builtin_trap();
    for (int i = 0; i < n; i++)
        if (r[i] < -1000000 || r[i] > 1000000) __builtin_trap();
    /* an accepted integer list has no fraction or exponent in it */
    if (n > 0 && (strchr(s, '.') || strchr(s, 'e') || strchr(s, 'E'))) __builtin_trap();
    free(s);
    return 0;
}
