/* json_cfg.c - reading model config.json files strictly: typed keys with
 * ranges and defaults, keys that must hold a given value, duplicate keys
 * (shared by the families' config parsers). */
#include "families/json_cfg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const cJSON *cfg_get(const cfg_ctx *c, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->root, key);
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

loco_status cfg_int(const cfg_ctx *c, const char *key, int def, int lo, int hi, int *out) {
    const cJSON *v = cfg_get(c, key);
    if (!v) {
        *out = def;
        return LOCO_OK;
    }
    /* integral and in range before the cast (a double outside int, such as
     * 1e300 or the inf of 1e999, converts with undefined behaviour); the
     * negated test also refuses NaN */
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
        return loco_fail(LOCO_E_FORMAT, "%s: key '%s' must be an integer", c->path, key);
    if (!(v->valuedouble >= lo && v->valuedouble <= hi))
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: key '%s' = %.17g is outside the supported range [%d, %d]", c->path,
                         key, v->valuedouble, lo, hi);
    *out = (int)v->valuedouble;
    return LOCO_OK;
}

loco_status cfg_num(const cfg_ctx *c, const char *key, double def, double lo, double hi, float *out) {
    const cJSON *v = cfg_get(c, key);
    if (!v) {
        *out = (float)def;
        return LOCO_OK;
    }
    if (!cJSON_IsNumber(v)) return loco_fail(LOCO_E_FORMAT, "%s: key '%s' must be a number", c->path, key);
    if (!(v->valuedouble >= lo && v->valuedouble <= hi))
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: key '%s' = %.17g is outside the supported range [%g, %g]", c->path,
                         key, v->valuedouble, lo, hi);
    *out = (float)v->valuedouble;
    return LOCO_OK;
}

loco_status cfg_bool(const cfg_ctx *c, const char *key, int def, int *out) {
    const cJSON *v = cfg_get(c, key);
    if (!v) {
        *out = def;
        return LOCO_OK;
    }
    if (!cJSON_IsBool(v)) return loco_fail(LOCO_E_FORMAT, "%s: key '%s' must be true or false", c->path, key);
    *out = cJSON_IsTrue(v);
    return LOCO_OK;
}

/* A string key that must equal `want` when present. */
loco_status cfg_expect_str(const cfg_ctx *c, const char *key, const char *want) {
    const cJSON *v = cfg_get(c, key);
    if (!v) return LOCO_OK;
    if (!cJSON_IsString(v)) return loco_fail(LOCO_E_FORMAT, "%s: key '%s' must be a string", c->path, key);
    if (strcmp(v->valuestring, want) != 0)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: key '%s' = \"%s\" is not supported (only \"%s\")", c->path, key,
                         v->valuestring, want);
    return LOCO_OK;
}

loco_status cfg_expect_null(const cfg_ctx *c, const char *key) {
    const cJSON *v = cfg_get(c, key);
    if (!v) return LOCO_OK;
    char *s = cJSON_PrintUnformatted(v);
    loco_status st = loco_fail(LOCO_E_UNSUPPORTED, "%s: key '%s' = %s is not supported (only null)", c->path, key,
                               s ? s : "?");
    free(s);
    return st;
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A key that appears twice: parsers disagree on which one wins (cJSON the
 * first, Python's json the last), so such a config is refused. Returns the
 * name or NULL. Sorting keeps this fast on hostile files with many keys. */
const char *cfg_duplicate_key(const cJSON *root, loco_status *s, const char *path) {
    int n = cJSON_GetArraySize(root);
    if (n < 2) return NULL;
    const char **k = malloc((size_t)n * sizeof *k);
    if (!k) {
        *s = loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, root) k[i++] = it->string;
    qsort(k, (size_t)n, sizeof *k, cmp_str_ptr);
    const char *dup = NULL;
    for (i = 1; i < n && !dup; i++)
        if (strcmp(k[i - 1], k[i]) == 0) dup = k[i];
    free(k);
    return dup;
}


loco_status cfg_parse_root(const char *text, size_t len, const char *path, cJSON **out) {
    *out = NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) return loco_fail(LOCO_E_FORMAT, "%s: not valid JSON (truncated or malformed)", path);
    loco_status s = LOCO_OK;
    if (!cJSON_IsObject(root)) s = loco_fail(LOCO_E_FORMAT, "%s: not a JSON object", path);
    for (const char *q = end; !s && q && q < text + len; q++)
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r')
            s = loco_fail(LOCO_E_FORMAT, "%s: unexpected text after the JSON object (at byte %zu)", path,
                          (size_t)(q - text));
    if (!s) {
        const char *dup = cfg_duplicate_key(root, &s, path);
        if (!s && dup) s = loco_fail(LOCO_E_FORMAT, "%s: key '%s' appears twice", path, dup);
    }
    if (s) cJSON_Delete(root);
    else *out = root;
    return s;
}
