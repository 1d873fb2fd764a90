/* molrg_cmd.c - `loco molrg init`: write a MoLRG closed-form model. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <stdio.h>
#include <string.h>

int cmd_molrg(args *a) {
    if (a->i >= a->argc || strcmp(a->argv[a->i], "init") != 0)
        return usage_error("molrg: %s", "usage: loco molrg init OUT.safetensors --n CxHxW --k K --d D [--sigma0 S] [--seed N]");
    a->i++;
    const char *out = NULL, *v;
    int C = 3, H = 32, W = 32;
    long long K = 4, d = 8, seed = 0;
    double sigma0 = 0;
    for (; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i];
        if ((v = opt(a, "--n"))) {
            char tail;
            if (sscanf(v, "%dx%dx%d%c", &C, &H, &W, &tail) != 3 || C < 1 || H < 1 || W < 1)
                return usage_error("molrg init: --n '%s' must be CxHxW", v);
        } else if ((v = opt(a, "--k"))) {
            if (!parse_long(v, 1, 4096, &K)) return usage_error("molrg init: bad --k '%s'", v);
        } else if ((v = opt(a, "--d"))) {
            if (!parse_long(v, 1, 1 << 20, &d)) return usage_error("molrg init: bad --d '%s'", v);
        } else if ((v = opt(a, "--seed"))) {
            if (!parse_long(v, 0, INT64_MAX, &seed)) return usage_error("molrg init: bad --seed '%s'", v);
        } else if ((v = opt(a, "--sigma0"))) {
            if (!parse_float(v, &sigma0) || sigma0 < 0) return usage_error("molrg init: bad --sigma0 '%s'", v);
        } else if (s[0] == '-') return usage_error("molrg init: unknown or incomplete option '%s'", s);
        else if (!out) out = s;
        else return usage_error("molrg init: unexpected argument '%s'", s);
    }
    if (!out) return usage_error("molrg init: %s", "missing OUT.safetensors");
    int rc0 = check_out_file(out, "OUT");
    if (rc0) return rc0;
    loco_status st = loco_molrg_init(out, C, H, W, (int)K, (int)d, (float)sigma0, (uint64_t)seed);
    if (st) return fail(st);
    if (!g_quiet) fprintf(stderr, "loco: wrote %s (MoLRG, %lld x rank %lld in %dx%dx%d)\n", out, K, d, C, H, W);
    return 0;
}
