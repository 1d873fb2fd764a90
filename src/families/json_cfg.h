/* json_cfg.h - strict readers of config.json keys for the families'
 * parsers (json_cfg.c). Every error names the file and the key. */
#ifndef LOCO_JSON_CFG_H
#define LOCO_JSON_CFG_H

#include "internal.h"

#include <cjson/cJSON.h>

typedef struct cfg_ctx {
    const cJSON *root;
    const char *path;
} cfg_ctx;

/* Parses text as one JSON object: refuses malformed text, anything but an
 * object, text after it and a key given twice, naming path. *root is the
 * caller's (cJSON_Delete), NULL on failure. */
loco_status cfg_parse_root(const char *text, size_t len, const char *path, cJSON **root);
/* the key's value, or NULL when absent or null */
const cJSON *cfg_get(const cfg_ctx *c, const char *key);
/* an integer in [lo, hi] (def when absent) */
loco_status cfg_int(const cfg_ctx *c, const char *key, int def, int lo, int hi, int *out);
/* a number in [lo, hi] (def when absent) */
loco_status cfg_num(const cfg_ctx *c, const char *key, double def, double lo, double hi, float *out);
loco_status cfg_bool(const cfg_ctx *c, const char *key, int def, int *out);
/* a string key that must equal want when present */
loco_status cfg_expect_str(const cfg_ctx *c, const char *key, const char *want);
/* a key that must be null or absent */
loco_status cfg_expect_null(const cfg_ctx *c, const char *key);
/* the name of a key that appears twice, or NULL (*s set when out of memory) */
const char *cfg_duplicate_key(const cJSON *root, loco_status *s, const char *path);

#endif
