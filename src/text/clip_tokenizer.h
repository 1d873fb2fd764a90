/* clip_tokenizer.h - internal interface of the CLIP BPE tokenizer
 * (clip_tokenizer.c). The public functions (loco_tokenizer_*, loco_tokenize*)
 * are declared in include/loco.h, section "Tokenizer"; this header adds what
 * the library's own modules and the tests use besides. */
#ifndef LOCO_TEXT_CLIP_TOKENIZER_H
#define LOCO_TEXT_CLIP_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loco.h"

/* transformers' CLIPTokenizer reads only the first 49152 - 256 - 2 = 48894
 * merges of merges.txt (the lines after the first); later lines are ignored,
 * as there. */
#define CLIP_MERGE_LIMIT (49152 - 256 - 2)
/* ids are below this (vocab.json, added tokens) */
#define CLIP_MAX_ID (1 << 24)
/* longest prompt accepted, in bytes (LOCO_E_INVALID_ARGUMENT beyond) */
#define CLIP_MAX_TEXT ((size_t)1 << 30)

/* The offset of the first byte of s[0..n) that does not start a well-formed
 * UTF-8 sequence (overlong forms, surrogates, code points past U+10FFFF and
 * truncated sequences are ill-formed), or n when all of it is UTF-8. */
size_t clip_utf8_check(const char *s, size_t n);

/* The BPE token ids of text[0..len) (UTF-8; NUL bytes allowed and dropped,
 * as CLIPTokenizer drops U+0000), without start and end tokens, padding or
 * truncation: the first min(count, cap) ids go to ids[0..cap) (caller-owned),
 * *n receives that number and *more (may be NULL) whether there were more.
 * Work stops one token past cap, so a long text costs only what its first
 * cap tokens cost (plus one linear pass checking the UTF-8). Safe to call
 * from several threads on one tokenizer (the handle is never written).
 * Invalid UTF-8: LOCO_E_INVALID_ARGUMENT naming the byte offset. */
loco_status clip_encode(const loco_tokenizer *t, const char *text, size_t len, int64_t *ids, size_t cap,
                        size_t *n, bool *more);

#endif
