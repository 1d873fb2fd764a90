/* clip_tokenizer.c - Stable Diffusion's CLIP BPE tokenizer: the ids that
 * transformers' CLIPTokenizer (the Python "slow" tokenizer without ftfy,
 * which diffusers' pipelines use) gives a prompt. Written from the
 * behaviour of transformers 4.45 (tokenization_clip.py, tokenization_utils
 * .py) and checked against its output (tests/test_tokenizer.c). A prompt
 * goes through:
 *
 *  1. Added tokens. The special tokens (<|startoftext|>, <|endoftext|>, the
 *     pad token: "!" in SD 2.x) and any other added token are cut out of
 *     the raw text, leftmost first and longest at one place (transformers'
 *     trie), each giving its id (their lstrip/rstrip flags would strip
 *     Python whitespace beside them, which step 2 ignores anyway).
 *  2. BasicTokenizer (strip_accents False, no punctuation split), on each
 *     piece of text between them: U+0000, U+FFFD and every code point of
 *     category C* except tab, LF and CR are dropped; tab, LF, CR and Zs
 *     become a space; spaces go around CJK ideographs; NFC; the text is
 *     split at Python's whitespace (str.split()) and each word lower-cased
 *     as Python's str.lower() does (U+0130 -> "i" U+0307, final sigma).
 *  3. CLIP's pattern, case-insensitive, splits each word:
 *     <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|
 *     [\p{N}]|[^\s\p{L}\p{N}]+  (first alternative that matches wins; a
 *     "<|startoftext|>" spelt exactly so is the special token's id).
 *  4. Byte-level BPE on each match: its UTF-8 bytes become GPT-2's
 *     bytes_to_unicode characters, the last one with "</w>" appended; then,
 *     while some adjacent pair is in merges.txt, every occurrence of the pair
 *     of lowest rank is merged, left to right. Each symbol is a vocab.json id.
 *  5. <|startoftext|>, the first max_length - 2 ids, <|endoftext|>, then the
 *     pad id up to max_length.
 *
 * Data structures: vocab.json is parsed by a small JSON reader of its own
 * (a flat object of string -> integer; exact byte offsets in messages) into
 * one string arena and an open-addressing hash table (FNV-1a, linear
 * probing, at most half full); merges are a second open-addressing table
 * keyed by the pair of ids. BPE on a word of m bytes is O(m log m): a binary
 * heap of (rank, position) pairs over a linked list of symbols, processed a
 * rank at a time, which is exactly the Python loop's order (all occurrences
 * of the lowest-ranked pair, left to right, then the next). No cache: the
 * handle is never written after opening, so threads may share it. Unicode
 * properties (categories, NFC, simple lower-case mappings) come from
 * utf8proc (Debian's libutf8proc, Unicode 15.0). */
#include "text/clip_tokenizer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "internal.h"

#define CLIP_MAX_FILE ((size_t)256 << 20)  /* vocab.json, merges.txt             */
#define CLIP_MAX_CONFIG ((size_t)16 << 20) /* the other (JSON) files             */
#define CLIP_DEFAULT_MAX_LENGTH 77
#define CLIP_MAX_MAX_LENGTH 65536

/* ======================================================================== */
/* UTF-8 and Unicode helpers                                                */
/* ======================================================================== */

size_t clip_utf8_check(const char *s, size_t n) {
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp, min;
        if (c >= 0xC2 && c <= 0xDF) k = 1, cp = c & 0x1Fu, min = 0x80;
        else if ((c & 0xF0) == 0xE0) k = 2, cp = c & 0x0Fu, min = 0x800;
        else if (c >= 0xF0 && c <= 0xF4) k = 3, cp = c & 0x07u, min = 0x10000;
        else return i;
        if (n - i <= k) return i;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xC0) != 0x80) return i;
            cp = cp << 6 | (p[i + j] & 0x3Fu);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += k + 1;
    }
    return n;
}

/* The code point at p[*i] of well-formed UTF-8; advances *i. */
static uint32_t utf8_next(const uint8_t *p, size_t *i) {
    uint8_t c = p[*i];
    if (c < 0x80) {
        (*i)++;
        return c;
    }
    size_t k = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : 1;
    uint32_t cp = c & (0x3Fu >> k);
    for (size_t j = 1; j <= k; j++) cp = cp << 6 | (p[*i + j] & 0x3Fu);
    *i += k + 1;
    return cp;
}

/* Writes cp as UTF-8 at out (room for 4 bytes); returns the byte count. */
static size_t utf8_put(uint32_t cp, uint8_t *out) {
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | cp >> 18);
    out[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

static int category(uint32_t cp) { return (int)utf8proc_category((utf8proc_int32_t)cp); }

static bool is_letter(uint32_t cp) {
    if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
    int c = category(cp);
    return c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO;
}

static bool is_number(uint32_t cp) {
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    int c = category(cp);
    return c >= UTF8PROC_CATEGORY_ND && c <= UTF8PROC_CATEGORY_NO;
}

/* Python's str.isspace(): category Zs, or bidirectional class WS, B or S. */
static bool py_isspace(uint32_t cp) {
    if (cp < 0x80) return cp == ' ' || (cp >= 9 && cp <= 13) || (cp >= 0x1C && cp <= 0x1F);
    if (cp == 0x85 || cp == 0x2028 || cp == 0x2029) return true;
    return category(cp) == UTF8PROC_CATEGORY_ZS;
}

/* BasicTokenizer's _clean_text: what it drops (U+0000, U+FFFD, and its
 * "control" characters: category C* but tab, LF, CR) and what becomes a
 * space (space, tab, LF, CR, category Zs). */
static bool clean_drops(uint32_t cp) {
    if (cp < 0x80) return cp < 0x20 ? !(cp == 9 || cp == 10 || cp == 13) : cp == 0x7F;
    if (cp == 0xFFFD) return true;
    int c = category(cp);
    return c == UTF8PROC_CATEGORY_CN || c >= UTF8PROC_CATEGORY_CC;
}

static bool clean_space(uint32_t cp) {
    if (cp < 0x80) return cp == ' ' || cp == 9 || cp == 10 || cp == 13;
    return category(cp) == UTF8PROC_CATEGORY_ZS;
}

/* BasicTokenizer's _is_chinese_char: the CJK ideograph blocks. */
static bool is_cjk(uint32_t cp) {
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) ||
           (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) ||
           (cp >= 0x2B820 && cp <= 0x2CEAF) || (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

/* Python's "cased" and "case-ignorable" properties, for the final sigma.
 * utf8proc has neither; these follow their definitions (DerivedCoreProperties)
 * from the categories, with the few characters that categories miss. */
static bool py_cased(uint32_t cp) {
    int c = category(cp);
    if (c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LL || c == UTF8PROC_CATEGORY_LT) return true;
    if (cp == 0xAA || cp == 0xBA) return true;                      /* Other_Lowercase Lo */
    if (cp >= 0x1F130 && cp <= 0x1F189) return !(cp >= 0x1F14A && cp <= 0x1F14F) && !(cp >= 0x1F16A && cp <= 0x1F16F);
    return utf8proc_tolower((utf8proc_int32_t)cp) != (utf8proc_int32_t)cp ||
           utf8proc_toupper((utf8proc_int32_t)cp) != (utf8proc_int32_t)cp; /* Ⓐ, ⅰ ... */
}

static bool py_case_ignorable(uint32_t cp) {
    switch (cp) { /* Word_Break MidLetter, MidNumLet, Single_Quote */
    case 0x27: case 0x2E: case 0x3A: case 0xB7: case 0x387: case 0x55F: case 0x5F4: case 0x2018: case 0x2019:
    case 0x2024: case 0x2027: case 0xFE13: case 0xFE52: case 0xFE55: case 0xFF07: case 0xFF0E: case 0xFF1A:
        return true;
    default:
        break;
    }
    int c = category(cp);
    return c == UTF8PROC_CATEGORY_MN || c == UTF8PROC_CATEGORY_ME || c == UTF8PROC_CATEGORY_CF ||
           c == UTF8PROC_CATEGORY_LM || c == UTF8PROC_CATEGORY_SK;
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves,
 * the other 68 (0x00-0x20, 0x7F-0xA0, 0xAD) for U+0100.. in byte order. */
static uint32_t byte_char(unsigned b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE)) return b;
    if (b <= 0x20) return 256 + b;
    if (b <= 0xA0) return 256 + 33 + (b - 0x7F);
    return 256 + 67; /* 0xAD */
}

/* s[0..n) for a message: at most ~48 bytes, controls and quotes escaped. */
static const char *shown(const char *s, size_t n, char *buf, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; i < n && o + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (o > 48 && (c & 0xC0) != 0x80) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (c < 0x20 || c == 0x7F || c == '\'' || c == '\\') o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
        else buf[o++] = (char)c;
    }
    buf[o] = 0;
    return buf;
}

/* ======================================================================== */
/* The tokenizer                                                            */
/* ======================================================================== */

typedef struct added_tok {
    char *text; /* malloc'd, NUL-terminated UTF-8 */
    size_t len;
    int32_t id;
} added_tok;

typedef struct merge_slot {
    uint64_t key; /* (left + 1) << 32 | right; 0: empty */
    int32_t rank, result;
} merge_slot;

/* The handle owns every pointer in it (malloc'd, freed by
 * loco_tokenizer_free); id_text and the *_s strings point into arena and the
 * added tokens' texts. Never written after loco_tokenizer_open returns. */
struct loco_tokenizer {
    char *dir;                    /* the folder read (malloc'd)             */
    /* vocabulary: entry e is arena[off[e] .. off[e] + len[e]) -> id[e]   */
    char *arena;                  /* all tokens, each NUL-terminated        */
    uint32_t *off, *len;
    int32_t *id;
    size_t n_vocab;
    uint32_t *slot;               /* entry + 1, 0 empty; mask + 1 slots     */
    size_t mask;
    int32_t n_ids;                /* largest id + 1                         */
    const char **id_text;         /* [n_ids]: token of each id, or NULL     */
    /* merges                                                              */
    merge_slot *merges;
    size_t mmask;
    int n_merges;
    int32_t byte_id[256], byte_eow_id[256]; /* single bytes, without/with </w> */
    /* added tokens (special ones included)                                */
    added_tok *added;
    int n_added;
    bool first_byte[256];         /* some added token starts with the byte  */
    int32_t bos, eos, pad, unk;   /* unk -1 if none                         */
    const char *bos_s, *eos_s, *pad_s, *unk_s;
    int max_length;
};

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The vocabulary entry of s[0..n), or -1. */
static long vocab_entry(const loco_tokenizer *t, const char *s, size_t n) {
    size_t h = (size_t)hash_bytes(s, n) & t->mask;
    for (;;) {
        uint32_t e = t->slot[h];
        if (!e) return -1;
        e--;
        if (t->len[e] == n && memcmp(t->arena + t->off[e], s, n) == 0) return (long)e;
        h = (h + 1) & t->mask;
    }
}

static int32_t vocab_id(const loco_tokenizer *t, const char *s, size_t n) {
    long e = vocab_entry(t, s, n);
    return e < 0 ? -1 : t->id[e];
}

/* rank of the merge (a, b), its result in *res; -1 if none */
static int32_t merge_rank(const loco_tokenizer *t, int32_t a, int32_t b, int32_t *res) {
    uint64_t key = (uint64_t)(uint32_t)(a + 1) << 32 | (uint32_t)b;
    size_t h = (size_t)mix64(key) & t->mmask;
    for (;;) {
        const merge_slot *m = &t->merges[h];
        if (!m->key) return -1;
        if (m->key == key) {
            *res = m->result;
            return m->rank;
        }
        h = (h + 1) & t->mmask;
    }
}

void loco_tokenizer_free(loco_tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_added; i++) free(t->added[i].text);
    free(t->added);
    free(t->merges);
    free(t->id_text);
    free(t->slot);
    free(t->id);
    free(t->len);
    free(t->off);
    free(t->arena);
    free(t->dir);
    free(t);
}

/* ---- vocab.json ---------------------------------------------------------- */

/* A growing byte buffer; returns false when memory runs out. */
typedef struct bbuf {
    char *p;
    size_t n, cap;
} bbuf;

static bool bb_reserve(bbuf *b, size_t more) {
    if (b->cap - b->n >= more) return true;
    size_t c = b->cap ? b->cap : 4096;
    while (c - b->n < more) {
        if (c > SIZE_MAX / 2) return false;
        c *= 2;
    }
    char *q = realloc(b->p, c);
    if (!q) return false;
    b->p = q;
    b->cap = c;
    return true;
}

typedef struct jreader {
    const char *s;
    size_t n, i;
    const char *path;
} jreader;

static void j_ws(jreader *r) {
    while (r->i < r->n && (r->s[r->i] == ' ' || r->s[r->i] == '\t' || r->s[r->i] == '\n' || r->s[r->i] == '\r'))
        r->i++;
}

static loco_status j_err(const jreader *r, const char *what) {
    if (r->i >= r->n) return loco_fail(LOCO_E_FORMAT, "%s: %s at the end of the file (byte %zu)", r->path, what, r->i);
    return loco_fail(LOCO_E_FORMAT, "%s: byte %zu: %s", r->path, r->i, what);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool j_hex4(jreader *r, uint32_t *v) {
    if (r->n - r->i < 4) return false;
    uint32_t x = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval(r->s[r->i + (size_t)k]);
        if (h < 0) return false;
        x = x << 4 | (uint32_t)h;
    }
    r->i += 4;
    *v = x;
    return true;
}

/* A JSON string at r->i (its opening quote), decoded and appended to b with
 * a NUL after it; *len: its length without the NUL. The file is known to be
 * UTF-8. Refuses "\u0000" (tokens are C strings) and lone surrogates. */
static loco_status j_string(jreader *r, bbuf *b, size_t *len) {
    if (r->i >= r->n || r->s[r->i] != '"') return j_err(r, "expected a string (\")");
    size_t start = b->n;
    r->i++;
    for (;;) {
        if (r->i >= r->n) return j_err(r, "unterminated string");
        unsigned char c = (unsigned char)r->s[r->i];
        if (c == '"') {
            r->i++;
            break;
        }
        if (c < 0x20) return j_err(r, "raw control character inside a string (JSON needs an escape)");
        if (!bb_reserve(b, 5)) return loco_fail(LOCO_E_NOMEM, "%s: out of memory", r->path);
        if (c != '\\') {
            b->p[b->n++] = (char)c;
            r->i++;
            continue;
        }
        r->i++;
        if (r->i >= r->n) return j_err(r, "unterminated string");
        char e = r->s[r->i++];
        uint32_t cp;
        switch (e) {
        case '"': case '\\': case '/': b->p[b->n++] = e; continue;
        case 'b': b->p[b->n++] = '\b'; continue;
        case 'f': b->p[b->n++] = '\f'; continue;
        case 'n': b->p[b->n++] = '\n'; continue;
        case 'r': b->p[b->n++] = '\r'; continue;
        case 't': b->p[b->n++] = '\t'; continue;
        case 'u':
            if (!j_hex4(r, &cp)) return j_err(r, "\\u needs four hexadecimal digits");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                if (r->n - r->i < 2 || r->s[r->i] != '\\' || r->s[r->i + 1] != 'u') return j_err(r, "lone surrogate escape");
                r->i += 2;
                if (!j_hex4(r, &lo) || lo < 0xDC00 || lo > 0xDFFF) return j_err(r, "lone surrogate escape");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return j_err(r, "lone surrogate escape");
            }
            if (cp == 0) return j_err(r, "\\u0000 (a NUL character) in a string");
            b->n += utf8_put(cp, (uint8_t *)b->p + b->n);
            continue;
        default:
            r->i--;
            return j_err(r, "invalid escape in a string");
        }
    }
    if (!bb_reserve(b, 1)) return loco_fail(LOCO_E_NOMEM, "%s: out of memory", r->path);
    b->p[b->n++] = 0;
    *len = b->n - 1 - start;
    return LOCO_OK;
}

/* A JSON integer in [0, CLIP_MAX_ID) at r->i; `what` names it in messages. */
static loco_status j_id(jreader *r, const char *what, int32_t *out) {
    size_t at = r->i;
    bool neg = r->i < r->n && r->s[r->i] == '-';
    if (neg) r->i++;
    if (r->i >= r->n || r->s[r->i] < '0' || r->s[r->i] > '9') {
        r->i = at;
        return loco_fail(LOCO_E_FORMAT, "%s: byte %zu: the value of %s must be an integer id", r->path, at, what);
    }
    uint64_t v = 0;
    size_t digits = r->i;
    while (r->i < r->n && r->s[r->i] >= '0' && r->s[r->i] <= '9') {
        if (v < ((uint64_t)1 << 40)) v = v * 10 + (uint64_t)(r->s[r->i] - '0');
        r->i++;
    }
    digits = r->i - digits;
    if (r->i < r->n && (r->s[r->i] == '.' || r->s[r->i] == 'e' || r->s[r->i] == 'E'))
        return loco_fail(LOCO_E_FORMAT, "%s: byte %zu: the value of %s must be an integer id", r->path, at, what);
    if (neg || v >= CLIP_MAX_ID)
        return loco_fail(LOCO_E_FORMAT, "%s: byte %zu: id %s%.*s%s of %s is out of range [0, %d)", r->path, at,
                         neg ? "-" : "", (int)(digits < 24 ? digits : 24), r->s + r->i - digits, digits > 24 ? "..." : "",
                         what, CLIP_MAX_ID);
    *out = (int32_t)v;
    return LOCO_OK;
}

/* Grows the three entry arrays to hold `need` entries. */
static bool grow_entries(loco_tokenizer *t, size_t *cap, size_t need) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap * 2 : 1024;
    while (c < need) c *= 2;
    uint32_t *o = realloc(t->off, c * sizeof *o);
    if (!o) return false;
    t->off = o;
    uint32_t *l = realloc(t->len, c * sizeof *l);
    if (!l) return false;
    t->len = l;
    int32_t *d = realloc(t->id, c * sizeof *d);
    if (!d) return false;
    t->id = d;
    *cap = c;
    return true;
}

static loco_status parse_vocab(loco_tokenizer *t, const char *path, const char *data, size_t n) {
    jreader r = {data, n, 0, path};
    bbuf arena = {0};
    size_t cap_e = 0, ne = 0;
    char b1[160], b2[160];
    loco_status st = LOCO_OK;
    j_ws(&r);
    if (r.i >= n || data[r.i] != '{') {
        st = j_err(&r, "expected a JSON object ({\"token\": id, ...})");
        goto done;
    }
    r.i++;
    j_ws(&r);
    if (r.i < n && data[r.i] == '}') {
        r.i++;
    } else {
        for (;;) {
            j_ws(&r);
            size_t key_at = r.i, klen = 0;
            if ((st = j_string(&r, &arena, &klen))) goto done;
            size_t koff = arena.n - klen - 1;
            if (koff > UINT32_MAX - klen) {
                st = loco_fail(LOCO_E_NOMEM, "%s: tokens too long", path);
                goto done;
            }
            j_ws(&r);
            if (r.i >= n || data[r.i] != ':') {
                st = j_err(&r, "expected ':' after a token");
                goto done;
            }
            r.i++;
            j_ws(&r);
            char what[200];
            snprintf(what, sizeof what, "'%s' (at byte %zu)", shown(arena.p + koff, klen, b1, sizeof b1), key_at);
            int32_t id = 0;
            if ((st = j_id(&r, what, &id))) goto done;
            if (!grow_entries(t, &cap_e, ne + 1)) {
                st = loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
                goto done;
            }
            t->off[ne] = (uint32_t)koff;
            t->len[ne] = (uint32_t)klen;
            t->id[ne] = id;
            ne++;
            if (ne >= CLIP_MAX_ID) {
                st = loco_fail(LOCO_E_UNSUPPORTED, "%s: more than %d tokens", path, CLIP_MAX_ID);
                goto done;
            }
            j_ws(&r);
            if (r.i < n && data[r.i] == ',') {
                r.i++;
                continue;
            }
            if (r.i < n && data[r.i] == '}') {
                r.i++;
                break;
            }
            st = j_err(&r, "expected ',' or '}' after an id");
            goto done;
        }
    }
    j_ws(&r);
    if (r.i < n) {
        st = j_err(&r, "data after the JSON object");
        goto done;
    }
    if (ne == 0) {
        st = loco_fail(LOCO_E_FORMAT, "%s: the vocabulary is empty", path);
        goto done;
    }
    t->arena = arena.p;
    arena.p = NULL;
    t->n_vocab = ne;
    /* the hash table, at most half full */
    size_t cap = 16;
    while (cap < 2 * ne) cap *= 2;
    t->slot = calloc(cap, sizeof *t->slot);
    if (!t->slot) {
        st = loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
        goto done;
    }
    t->mask = cap - 1;
    int32_t max_id = -1;
    for (size_t e = 0; e < ne; e++) {
        const char *s = t->arena + t->off[e];
        size_t h = (size_t)hash_bytes(s, t->len[e]) & t->mask;
        while (t->slot[h]) {
            uint32_t o = t->slot[h] - 1;
            if (t->len[o] == t->len[e] && memcmp(t->arena + t->off[o], s, t->len[e]) == 0) {
                st = loco_fail(LOCO_E_FORMAT, "%s: token '%s' appears twice (ids %d and %d)", path,
                               shown(s, t->len[e], b1, sizeof b1), (int)t->id[o], (int)t->id[e]);
                goto done;
            }
            h = (h + 1) & t->mask;
        }
        t->slot[h] = (uint32_t)e + 1;
        if (t->id[e] > max_id) max_id = t->id[e];
    }
    t->n_ids = max_id + 1;
    t->id_text = calloc((size_t)t->n_ids, sizeof *t->id_text);
    if (!t->id_text) {
        st = loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
        goto done;
    }
    for (size_t e = 0; e < ne; e++) {
        const char *s = t->arena + t->off[e], *o = t->id_text[t->id[e]];
        if (o) {
            st = loco_fail(LOCO_E_FORMAT, "%s: tokens '%s' and '%s' both have id %d", path,
                           shown(o, strlen(o), b1, sizeof b1), shown(s, t->len[e], b2, sizeof b2), (int)t->id[e]);
            goto done;
        }
        t->id_text[t->id[e]] = s;
    }
done:
    free(arena.p);
    return st;
}

/* ---- merges.txt ------------------------------------------------------------ */

static loco_status parse_merges(loco_tokenizer *t, const char *path, const char *data, size_t n) {
    const uint8_t *p = (const uint8_t *)data;
    char b1[160], b2[160], b3[160];
    /* Python: text.strip().split("\n")[1 : 1 + CLIP_MERGE_LIMIT], each line
     * .split() into a pair. Strip: the first and the last non-space. */
    size_t start = n, end = 0;
    for (size_t i = 0; i < n;) {
        size_t at = i;
        uint32_t cp = utf8_next(p, &i);
        if (!py_isspace(cp)) {
            if (start == n) start = at;
            end = i;
        }
    }
    if (start == n) return loco_fail(LOCO_E_FORMAT, "%s: the file is empty", path);
    size_t line_no = 1; /* of `start` in the file */
    for (size_t i = 0; i < start; i++) line_no += p[i] == '\n';
    /* count the merge lines to size the table */
    size_t lines = 1;
    for (size_t i = start; i < end; i++) lines += p[i] == '\n';
    size_t n_merge = lines - 1 < (size_t)CLIP_MERGE_LIMIT ? lines - 1 : (size_t)CLIP_MERGE_LIMIT;
    size_t cap = 16;
    while (cap < 2 * n_merge) cap *= 2;
    t->merges = calloc(cap, sizeof *t->merges);
    if (!t->merges) return loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
    t->mmask = cap - 1;
    /* ranks of each line, to name the first line of a repeated merge */
    uint32_t *rank_line = malloc((n_merge ? n_merge : 1) * sizeof *rank_line);
    bbuf cat = {0};
    loco_status st = LOCO_OK;
    if (!rank_line) return loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
    size_t i = start;
    while (i < end && p[i] != '\n') i++; /* the first line (#version) is skipped */
    line_no++;
    for (size_t r = 0; r < n_merge; r++, line_no++) {
        i++; /* past '\n' */
        size_t ls = i;
        while (i < end && p[i] != '\n') i++;
        /* split [ls, i) at Python whitespace */
        size_t ps[3], pe[3];
        int parts = 0;
        for (size_t k = ls; k < i;) {
            size_t at = k;
            uint32_t cp = utf8_next(p, &k);
            if (py_isspace(cp)) continue;
            if (parts < 3) ps[parts] = at;
            while (k < i) {
                size_t k2 = k;
                if (py_isspace(utf8_next(p, &k2))) break;
                k = k2;
            }
            if (parts < 3) pe[parts] = k;
            parts++;
        }
        if (parts != 2) {
            st = loco_fail(LOCO_E_FORMAT, "%s: line %zu: expected two tokens separated by a space, found %d%s%s%s",
                           path, line_no, parts, parts ? " ('" : "", parts ? shown(data + ls, i - ls, b1, sizeof b1) : "",
                           parts ? "')" : "");
            goto done;
        }
        int32_t a = vocab_id(t, data + ps[0], pe[0] - ps[0]), b = vocab_id(t, data + ps[1], pe[1] - ps[1]);
        if (a < 0 || b < 0) {
            int k = a < 0 ? 0 : 1;
            st = loco_fail(LOCO_E_FORMAT, "%s: line %zu: token '%s' is not in vocab.json", path, line_no,
                           shown(data + ps[k], pe[k] - ps[k], b1, sizeof b1));
            goto done;
        }
        size_t la = pe[0] - ps[0], lb = pe[1] - ps[1];
        cat.n = 0;
        if (!bb_reserve(&cat, la + lb)) {
            st = loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
            goto done;
        }
        memcpy(cat.p, data + ps[0], la);
        memcpy(cat.p + la, data + ps[1], lb);
        int32_t res = vocab_id(t, cat.p, la + lb);
        if (res < 0) {
            st = loco_fail(LOCO_E_FORMAT, "%s: line %zu: the merge of '%s' and '%s', '%s', is not in vocab.json", path,
                           line_no, shown(data + ps[0], la, b1, sizeof b1), shown(data + ps[1], lb, b2, sizeof b2),
                           shown(cat.p, la + lb, b3, sizeof b3));
            goto done;
        }
        uint64_t key = (uint64_t)(uint32_t)(a + 1) << 32 | (uint32_t)b;
        size_t h = (size_t)mix64(key) & t->mmask;
        while (t->merges[h].key && t->merges[h].key != key) h = (h + 1) & t->mmask;
        if (t->merges[h].key) {
            st = loco_fail(LOCO_E_FORMAT, "%s: line %zu repeats the merge '%s %s' of line %u", path, line_no,
                           shown(data + ps[0], la, b1, sizeof b1), shown(data + ps[1], lb, b2, sizeof b2),
                           rank_line[t->merges[h].rank]);
            goto done;
        }
        t->merges[h] = (merge_slot){key, (int32_t)r, res};
        rank_line[r] = (uint32_t)line_no;
    }
    t->n_merges = (int)n_merge;
done:
    free(rank_line);
    free(cat.p);
    return st;
}

/* ---- the configuration files ---------------------------------------------- */

/* A special token as a configuration gives it: unset (the key is absent),
 * none (null), or text (borrowed from the cJSON tree). The AddedToken flags
 * are checked for type; lstrip/rstrip change nothing (see clip_encode),
 * single_word is refused. */
typedef struct tok_spec {
    enum { SPEC_UNSET, SPEC_NONE, SPEC_SET } state;
    const char *text;
} tok_spec;

/* v: a string, null, or an AddedToken object {"content": ..., "lstrip": ...} */
static loco_status token_spec(const cJSON *v, const char *path, const char *key, tok_spec *out) {
    if (cJSON_IsNull(v)) {
        *out = (tok_spec){SPEC_NONE, NULL};
        return LOCO_OK;
    }
    if (cJSON_IsString(v)) {
        *out = (tok_spec){SPEC_SET, v->valuestring};
        return LOCO_OK;
    }
    if (!cJSON_IsObject(v)) return loco_fail(LOCO_E_FORMAT, "%s: '%s' must be a string, null or an object", path, key);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (!cJSON_IsString(c))
        return loco_fail(LOCO_E_FORMAT, "%s: '%s' is an object without a string 'content'", path, key);
    *out = (tok_spec){SPEC_SET, c->valuestring};
    static const char *const flags[] = {"lstrip", "rstrip", "single_word", "normalized", "special"};
    for (int k = 0; k < 5; k++) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(v, flags[k]);
        if (!f || cJSON_IsNull(f)) continue;
        if (!cJSON_IsBool(f)) return loco_fail(LOCO_E_FORMAT, "%s: '%s': '%s' must be true or false", path, key, flags[k]);
        if (k == 2 && cJSON_IsTrue(f))
            return loco_fail(LOCO_E_UNSUPPORTED, "%s: '%s': single_word tokens are not supported", path, key);
    }
    return LOCO_OK;
}

/* cJSON decodes "\u0000" and cuts the string there, which would make a token
 * silently another: the offset of the first such escape (an odd run of
 * backslashes before "u0000"), or len. */
static size_t escaped_nul(const char *s, size_t len) {
    for (const char *p = s; (p = memmem(p, len - (size_t)(p - s), "u0000", 5)) != NULL; p++) {
        size_t k = 0;
        while (p - k > s && p[-1 - (ptrdiff_t)k] == '\\') k++;
        if (k % 2) return (size_t)(p - 1 - s);
    }
    return len;
}

/* Reads an optional JSON object file (UTF-8); *root NULL when absent. */
static loco_status read_json(const char *path, cJSON **root) {
    *root = NULL;
    loco_status st = loco_check_file(path);
    if (st == LOCO_E_NOT_FOUND) return LOCO_OK;
    if (st) return st;
    char *text;
    size_t len;
    if ((st = loco_read_file(path, &text, &len, CLIP_MAX_CONFIG))) return st;
    size_t bad = clip_utf8_check(text, len);
    if (bad < len) {
        st = loco_fail(LOCO_E_FORMAT, "%s: byte %zu: not UTF-8", path, bad);
    } else if (memchr(text, 0, len)) {
        st = loco_fail(LOCO_E_FORMAT, "%s: byte %zu: a NUL byte", path, (size_t)((char *)memchr(text, 0, len) - text));
    } else if ((bad = escaped_nul(text, len)) < len) {
        st = loco_fail(LOCO_E_FORMAT, "%s: byte %zu: \\u0000 (a NUL character) in a string", path, bad);
    } else {
        *root = cJSON_ParseWithLength(text, len);
        if (!*root || !cJSON_IsObject(*root)) {
            cJSON_Delete(*root);
            *root = NULL;
            st = loco_fail(LOCO_E_FORMAT, "%s: not a valid JSON object", path);
        }
    }
    free(text);
    return st;
}

/* A token's text from a configuration: not empty, UTF-8. */
static loco_status check_text(const char *path, const char *key, const char *s) {
    if (!s[0]) return loco_fail(LOCO_E_FORMAT, "%s: '%s' is empty", path, key);
    if (clip_utf8_check(s, strlen(s)) < strlen(s)) return loco_fail(LOCO_E_FORMAT, "%s: '%s' is not UTF-8", path, key);
    return LOCO_OK;
}

static int find_added(const loco_tokenizer *t, const char *s, size_t n) {
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].len == n && memcmp(t->added[i].text, s, n) == 0) return i;
    return -1;
}

/* Adds an added token (text copied); an existing one with the same text is
 * kept (as transformers keeps the first). id < 0: the vocabulary's id. */
static loco_status add_token(loco_tokenizer *t, const char *path, const char *what, const char *text, int32_t id) {
    char b1[160];
    size_t n = strlen(text);
    if (find_added(t, text, n) >= 0) return LOCO_OK;
    if (id < 0) {
        id = vocab_id(t, text, n);
        if (id < 0)
            return loco_fail(LOCO_E_FORMAT, "%s: %s '%s' is not in vocab.json (nor an added token)", path, what,
                             shown(text, n, b1, sizeof b1));
    }
    if (t->n_added >= 4096) return loco_fail(LOCO_E_UNSUPPORTED, "%s: more than 4096 added tokens", path);
    added_tok *q = realloc(t->added, (size_t)(t->n_added + 1) * sizeof *q);
    if (!q) return loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
    t->added = q;
    char *c = malloc(n + 1);
    if (!c) return loco_fail(LOCO_E_NOMEM, "%s: out of memory", path);
    memcpy(c, text, n + 1);
    t->added[t->n_added++] = (added_tok){c, n, id};
    t->first_byte[(unsigned char)text[0]] = true;
    return LOCO_OK;
}

/* The special tokens and added tokens, as transformers' from_pretrained
 * reads them: tokenizer_config.json's keys; when it has no
 * "added_tokens_decoder" (the older layout of the SD 1.x / 2.x folders),
 * special_tokens_map.json's keys replace its, and added_tokens.json (text ->
 * id) adds tokens. Keys absent everywhere take CLIPTokenizer's defaults. */
static loco_status read_config(loco_tokenizer *t, const char *dir) {
    char *cfg_path = NULL, *map_path = NULL, *add_path = NULL;
    cJSON *cfg = NULL, *map = NULL, *addj = NULL;
    loco_status st = LOCO_OK;
    char b1[160];
    if (asprintf(&cfg_path, "%s/tokenizer_config.json", dir) < 0) cfg_path = NULL;
    if (asprintf(&map_path, "%s/special_tokens_map.json", dir) < 0) map_path = NULL;
    if (asprintf(&add_path, "%s/added_tokens.json", dir) < 0) add_path = NULL;
    if (!cfg_path || !map_path || !add_path) {
        st = loco_fail(LOCO_E_NOMEM, "out of memory");
        goto done;
    }
    if ((st = read_json(cfg_path, &cfg))) goto done;
    const cJSON *v;
    t->max_length = CLIP_DEFAULT_MAX_LENGTH;
    if (cfg && (v = cJSON_GetObjectItemCaseSensitive(cfg, "model_max_length")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || !(v->valuedouble >= 3) ||
            v->valuedouble > CLIP_MAX_MAX_LENGTH) {
            st = loco_fail(LOCO_E_UNSUPPORTED, "%s: 'model_max_length' must be an integer in [3, %d]", cfg_path,
                           CLIP_MAX_MAX_LENGTH);
            goto done;
        }
        t->max_length = (int)v->valuedouble;
    }
    if (cfg && (v = cJSON_GetObjectItemCaseSensitive(cfg, "tokenizer_class")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsString(v) || (strcmp(v->valuestring, "CLIPTokenizer") != 0 &&
                                   strcmp(v->valuestring, "CLIPTokenizerFast") != 0)) {
            st = loco_fail(LOCO_E_UNSUPPORTED, "%s: 'tokenizer_class' is '%s', not CLIPTokenizer", cfg_path,
                           cJSON_IsString(v) ? shown(v->valuestring, strlen(v->valuestring), b1, sizeof b1) : "?");
            goto done;
        }
    }
    const cJSON *dec = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "added_tokens_decoder") : NULL;
    const bool legacy = !dec;
    if (legacy && (st = read_json(map_path, &map))) goto done;

    /* 1. the added tokens with ids of their own */
    if (dec) {
        if (!cJSON_IsObject(dec)) {
            st = loco_fail(LOCO_E_FORMAT, "%s: 'added_tokens_decoder' must be an object", cfg_path);
            goto done;
        }
        const cJSON *e;
        cJSON_ArrayForEach(e, dec) {
            char *endp;
            errno = 0;
            long id = strtol(e->string, &endp, 10);
            char what[96];
            snprintf(what, sizeof what, "added_tokens_decoder['%s']", shown(e->string, strlen(e->string), b1, 40));
            if (!e->string[0] || *endp || errno || id < 0 || id >= CLIP_MAX_ID) {
                st = loco_fail(LOCO_E_FORMAT, "%s: %s: the key must be an id in [0, %d)", cfg_path, what, CLIP_MAX_ID);
                goto done;
            }
            tok_spec sp;
            if ((st = token_spec(e, cfg_path, what, &sp))) goto done;
            if (sp.state != SPEC_SET || (st = check_text(cfg_path, what, sp.text))) {
                if (!st) st = loco_fail(LOCO_E_FORMAT, "%s: %s must be an object with 'content'", cfg_path, what);
                goto done;
            }
            if ((st = add_token(t, cfg_path, what, sp.text, (int32_t)id))) goto done;
        }
    } else if ((st = read_json(add_path, &addj))) {
        goto done;
    } else if (addj) {
        const cJSON *e;
        cJSON_ArrayForEach(e, addj) {
            if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || !(e->valuedouble >= 0) ||
                e->valuedouble >= CLIP_MAX_ID) {
                st = loco_fail(LOCO_E_FORMAT, "%s: the id of '%s' must be an integer in [0, %d)", add_path,
                               shown(e->string, strlen(e->string), b1, sizeof b1), CLIP_MAX_ID);
                goto done;
            }
            if ((st = check_text(add_path, e->string, e->string))) goto done;
            if ((st = add_token(t, add_path, "added token", e->string, (int32_t)e->valuedouble))) goto done;
        }
    }

    /* 2. the special tokens */
    static const char *const keys[4] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    static const char *const defaults[4] = {"<|startoftext|>", "<|endoftext|>", "<|endoftext|>", "<|endoftext|>"};
    const char *from[4];
    tok_spec sp[4];
    for (int k = 0; k < 4; k++) {
        sp[k] = (tok_spec){SPEC_UNSET, NULL};
        from[k] = "CLIPTokenizer's default";
        if (cfg && (v = cJSON_GetObjectItemCaseSensitive(cfg, keys[k]))) {
            if ((st = token_spec(v, cfg_path, keys[k], &sp[k]))) goto done;
            from[k] = cfg_path;
        }
        if (map && (v = cJSON_GetObjectItemCaseSensitive(map, keys[k]))) {
            if ((st = token_spec(v, map_path, keys[k], &sp[k]))) goto done;
            from[k] = map_path;
        }
        if (sp[k].state == SPEC_UNSET) sp[k] = (tok_spec){SPEC_SET, defaults[k]};
        if (sp[k].state == SPEC_SET && (st = check_text(from[k], keys[k], sp[k].text))) goto done;
        if (sp[k].state == SPEC_NONE && k != 2) {
            st = loco_fail(LOCO_E_UNSUPPORTED, "%s: '%s' is null: a Stable Diffusion prompt needs one", from[k], keys[k]);
            goto done;
        }
    }
    for (int k = 0; k < 4; k++) {
        if (sp[k].state != SPEC_SET) continue;
        if ((st = add_token(t, from[k], keys[k], sp[k].text, -1))) goto done;
    }
    /* additional_special_tokens: the configuration's, then (older layout)
     * the map's that it lacks */
    for (int src = 0; src < 2; src++) {
        const cJSON *list = src == 0 ? (cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "additional_special_tokens") : NULL)
                                     : (map ? cJSON_GetObjectItemCaseSensitive(map, "additional_special_tokens") : NULL);
        const char *path = src == 0 ? cfg_path : map_path;
        if (!list || cJSON_IsNull(list)) continue;
        if (!cJSON_IsArray(list)) {
            st = loco_fail(LOCO_E_FORMAT, "%s: 'additional_special_tokens' must be a list", path);
            goto done;
        }
        const cJSON *e;
        cJSON_ArrayForEach(e, list) {
            tok_spec s;
            if ((st = token_spec(e, path, "additional_special_tokens", &s))) goto done;
            if (s.state != SPEC_SET) continue;
            if ((st = check_text(path, "additional_special_tokens", s.text))) goto done;
            if ((st = add_token(t, path, "additional special token", s.text, -1))) goto done;
        }
    }
    int32_t *ids[4] = {&t->bos, &t->eos, &t->unk, &t->pad};
    const char **texts[4] = {&t->bos_s, &t->eos_s, &t->unk_s, &t->pad_s};
    for (int k = 0; k < 4; k++) {
        *ids[k] = -1;
        *texts[k] = NULL;
        if (sp[k].state != SPEC_SET) continue;
        int a = find_added(t, sp[k].text, strlen(sp[k].text));
        *ids[k] = t->added[a].id;
        *texts[k] = t->added[a].text;
    }
done:
    cJSON_Delete(cfg);
    cJSON_Delete(map);
    cJSON_Delete(addj);
    free(cfg_path);
    free(map_path);
    free(add_path);
    return st;
}

/* ---- opening ---------------------------------------------------------------- */

static int64_t token_id(const loco_tokenizer *t, const char *s, size_t n);

static loco_status read_text_file(const char *dir, const char *name, char **path, char **data, size_t *len) {
    *data = NULL;
    if (asprintf(path, "%s/%s", dir, name) < 0) {
        *path = NULL;
        return loco_fail(LOCO_E_NOMEM, "out of memory");
    }
    loco_status st = loco_check_file(*path);
    if (st == LOCO_E_NOT_FOUND) return loco_fail(LOCO_E_NOT_FOUND, "%s: missing (a tokenizer folder needs it)", *path);
    if (st) return st;
    if ((st = loco_read_file(*path, data, len, CLIP_MAX_FILE))) return st;
    size_t bad = clip_utf8_check(*data, *len);
    if (bad < *len) return loco_fail(LOCO_E_FORMAT, "%s: byte %zu: not UTF-8", *path, bad);
    return LOCO_OK;
}

loco_status loco_tokenizer_open(const char *dir, loco_tokenizer **out) {
    if (out) *out = NULL;
    if (!dir || !out) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_tokenizer_open: NULL argument");
    if (!loco_is_dir(dir)) {
        loco_status s = loco_check_file(dir);
        if (s == LOCO_E_NOT_FOUND) return loco_fail(LOCO_E_NOT_FOUND, "%s: no such folder", dir);
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "%s: not a folder (give the tokenizer folder or the pipeline folder)", dir);
    }
    loco_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return loco_fail(LOCO_E_NOMEM, "out of memory");
    loco_status st = LOCO_OK;
    char *path = NULL, *data = NULL;
    size_t len = 0;
    /* the tokenizer folder itself, or a pipeline folder's tokenizer/ */
    if (asprintf(&path, "%s/vocab.json", dir) < 0) path = NULL;
    if (!path) {
        st = loco_fail(LOCO_E_NOMEM, "out of memory");
        goto fail;
    }
    bool here = loco_file_exists(path);
    free(path);
    path = NULL;
    if (here) t->dir = strdup(dir);
    else if (asprintf(&t->dir, "%s/tokenizer", dir) < 0) t->dir = NULL;
    if (!t->dir) {
        st = loco_fail(LOCO_E_NOMEM, "out of memory");
        goto fail;
    }
    if (!here && !loco_is_dir(t->dir)) {
        st = loco_fail(LOCO_E_NOT_FOUND,
                       "%s: neither a tokenizer folder (no vocab.json) nor a pipeline folder (no tokenizer/)", dir);
        goto fail;
    }
    if ((st = read_text_file(t->dir, "vocab.json", &path, &data, &len))) goto fail;
    if ((st = parse_vocab(t, path, data, len))) goto fail;
    free(data);
    free(path);
    data = path = NULL;
    /* the single bytes, alone and ending a word */
    for (unsigned b = 0; b < 256; b++) {
        uint8_t s[8];
        size_t k = utf8_put(byte_char(b), s);
        memcpy(s + k, "</w>", 4);
        t->byte_id[b] = vocab_id(t, (const char *)s, k);
        t->byte_eow_id[b] = vocab_id(t, (const char *)s, k + 4);
        if (t->byte_id[b] < 0 || t->byte_eow_id[b] < 0) {
            char b1[32];
            st = loco_fail(LOCO_E_FORMAT, "%s/vocab.json: lacks the byte-level token '%s' (byte 0x%02x)", t->dir,
                           shown((const char *)s, t->byte_id[b] < 0 ? k : k + 4, b1, sizeof b1), b);
            goto fail;
        }
    }
    if ((st = read_text_file(t->dir, "merges.txt", &path, &data, &len))) goto fail;
    if ((st = parse_merges(t, path, data, len))) goto fail;
    free(data);
    free(path);
    data = path = NULL;
    if ((st = read_config(t, t->dir))) goto fail;
    /* added tokens may have ids past the vocabulary's */
    int32_t max_id = t->n_ids - 1;
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].id > max_id) max_id = t->added[i].id;
    if (max_id + 1 > t->n_ids) {
        const char **q = realloc(t->id_text, (size_t)(max_id + 1) * sizeof *q);
        if (!q) {
            st = loco_fail(LOCO_E_NOMEM, "out of memory");
            goto fail;
        }
        for (int32_t i = t->n_ids; i <= max_id; i++) q[i] = NULL;
        t->id_text = q;
        t->n_ids = max_id + 1;
    }
    for (int i = 0; i < t->n_added; i++) t->id_text[t->added[i].id] = t->added[i].text;
    /* the pattern turns these two into tokens whatever the configuration */
    if (token_id(t, "<|startoftext|>", 15) < 0 || token_id(t, "<|endoftext|>", 13) < 0) {
        st = loco_fail(LOCO_E_FORMAT, "%s/vocab.json: lacks <|startoftext|> or <|endoftext|> (and no unk_token)", t->dir);
        goto fail;
    }
    *out = t;
    return LOCO_OK;
fail:
    free(data);
    free(path);
    loco_tokenizer_free(t);
    return st;
}

int loco_tokenizer_max_length(const loco_tokenizer *t) { return t ? t->max_length : 0; }

loco_status loco_tokenizer_get_info(const loco_tokenizer *t, loco_tokenizer_info *info) {
    if (!t || !info) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_tokenizer_get_info: NULL argument");
    *info = (loco_tokenizer_info){
        .max_length = t->max_length,
        .vocab_size = (int)t->n_vocab,
        .n_ids = t->n_ids,
        .bos_id = t->bos,
        .eos_id = t->eos,
        .pad_id = t->pad,
        .unk_id = t->unk,
        .bos = t->bos_s,
        .eos = t->eos_s,
        .pad = t->pad_s,
        .unk = t->unk_s,
        .dir = t->dir,
    };
    return LOCO_OK;
}

const char *loco_tokenizer_token(const loco_tokenizer *t, int64_t id) {
    if (!t || id < 0 || id >= t->n_ids) return NULL;
    return t->id_text[id];
}

/* ======================================================================== */
/* Encoding                                                                 */
/* ======================================================================== */

typedef struct heap_e {
    int32_t rank, pos;
} heap_e;

/* One call's state and scratch (malloc'd, grown as needed, owned by the
 * call and freed at its end; out is the caller's). */
typedef struct enc {
    const loco_tokenizer *t;
    int64_t *out;
    size_t cap, n; /* ids written: out[0 .. min(n, cap)) */
    bool full;     /* n > cap: stop                       */
    bool oom;
    uint32_t *word;
    size_t word_n, word_cap;
    uint32_t *low;
    size_t low_cap;
    uint8_t *u8;
    size_t u8_cap;
    int32_t *sym, *nxt, *prv, *merged;
    size_t sym_cap;
    heap_e *heap;
    size_t heap_n, heap_cap;
} enc;

static void *grow(enc *e, void *p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return p;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(p, c * elem);
    if (!q) {
        e->oom = true;
        return NULL;
    }
    *cap = c;
    return q;
}

static void emit(enc *e, int64_t id) {
    if (e->n < e->cap) e->out[e->n] = id;
    e->n++;
    if (e->n > e->cap) e->full = true;
}

static bool heap_less(heap_e a, heap_e b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }

static bool heap_push(enc *e, int32_t rank, int32_t pos) {
    heap_e *h = grow(e, e->heap, &e->heap_cap, e->heap_n + 1, sizeof *h);
    if (!h) return false;
    e->heap = h;
    size_t i = e->heap_n++;
    heap_e x = {rank, pos};
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(x, h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
    return true;
}

/* Puts x at hole i of the heap h[0..n) and sifts it down. */
static void sift_down(heap_e *h, size_t n, size_t i, heap_e x) {
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_less(h[c + 1], h[c])) c++;
        if (!heap_less(h[c], x)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

static heap_e heap_pop(enc *e) {
    heap_e top = e->heap[0];
    if (--e->heap_n) sift_down(e->heap, e->heap_n, 0, e->heap[e->heap_n]);
    return top;
}

/* Pushes the pair starting at symbol p (if any, and if it merges). */
static bool push_pair(enc *e, int32_t p) {
    if (p < 0 || e->nxt[p] < 0) return true;
    int32_t res = -1, r = merge_rank(e->t, e->sym[p], e->sym[e->nxt[p]], &res);
    return r < 0 || heap_push(e, r, p);
}

/* BPE of one pre-token's bytes b[0..m), emitting its ids. */
static void bpe(enc *e, const uint8_t *b, size_t m) {
    const loco_tokenizer *t = e->t;
    if (m == 1) {
        emit(e, t->byte_eow_id[b[0]]);
        return;
    }
    if (m > INT32_MAX / 4) {
        e->oom = true;
        return;
    }
    if (m > e->sym_cap) {
        int32_t **arr[4] = {&e->sym, &e->nxt, &e->prv, &e->merged};
        for (int k = 0; k < 4; k++) {
            int32_t *q = realloc(*arr[k], m * sizeof *q);
            if (!q) {
                e->oom = true;
                return;
            }
            *arr[k] = q;
        }
        e->sym_cap = m;
    }
    int32_t *s = e->sym, *nx = e->nxt, *pv = e->prv, *mg = e->merged;
    for (size_t i = 0; i < m; i++) {
        s[i] = i + 1 < m ? t->byte_id[b[i]] : t->byte_eow_id[b[i]];
        nx[i] = i + 1 < m ? (int32_t)i + 1 : -1;
        pv[i] = (int32_t)i - 1;
    }
    /* the initial pairs, heapified in place */
    heap_e *h = grow(e, e->heap, &e->heap_cap, m, sizeof *h);
    if (!h) return;
    e->heap = h;
    e->heap_n = 0;
    for (size_t i = 0; i + 1 < m; i++) {
        int32_t res, r = merge_rank(t, s[i], s[i + 1], &res);
        if (r >= 0) h[e->heap_n++] = (heap_e){r, (int32_t)i};
    }
    for (size_t i = e->heap_n / 2; i-- > 0;) sift_down(h, e->heap_n, i, h[i]);
    /* Python's loop, a rank at a time: every occurrence of the lowest-ranked
     * pair, left to right (the heap yields a rank's entries by position, and
     * positions only grow along the list), skipping those an earlier merge
     * of the round used or changed; then the pairs the round made, pushed
     * only after it (a lower-ranked one must wait for the round's end, as in
     * Python). A round cannot make a pair of its own rank (the merged symbol
     * is longer than either half), so none is missed. */
    while (e->heap_n) {
        int32_t r = e->heap[0].rank;
        size_t nm = 0;
        while (e->heap_n && e->heap[0].rank == r) {
            int32_t p = heap_pop(e).pos, q = nx[p], res = -1;
            if (s[p] < 0 || q < 0 || merge_rank(t, s[p], s[q], &res) != r) continue;
            s[p] = res;
            s[q] = -1;
            nx[p] = nx[q];
            if (nx[q] >= 0) pv[nx[q]] = p;
            mg[nm++] = p;
        }
        for (size_t k = 0; k < nm; k++) {
            int32_t p = mg[k];
            if (s[p] < 0) continue;
            if (!push_pair(e, pv[p]) || !push_pair(e, p)) return;
        }
    }
    for (int32_t p = 0; p >= 0 && !e->full; p = nx[p]) emit(e, s[p]);
}

/* The id of an added/special token's text (transformers: the added tokens
 * first, then the vocabulary, else unk). */
static int64_t token_id(const loco_tokenizer *t, const char *s, size_t n) {
    int a = find_added(t, s, n);
    if (a >= 0) return t->added[a].id;
    int32_t id = vocab_id(t, s, n);
    return id >= 0 ? id : t->unk;
}

/* U+0345 COMBINING GREEK YPOGEGRAMMENI: under IGNORECASE the regex module
 * matches it with none of [\p{L}], [\p{N}] and [^\s\p{L}\p{N}] (its case
 * folding is a letter, itself is not: the only such code point), so findall
 * skips it like a space. */
#define YPOGEGRAMMENI 0x345

/* Does w[i..) start with the ASCII literal lit, case-insensitively as the
 * regex module's IGNORECASE matches (simple case folding: "s" also matches
 * U+017F, "k" U+212A)? */
static bool match_lit(const uint32_t *w, size_t n, size_t i, const char *lit) {
    size_t k = 0;
    for (; lit[k]; k++) {
        if (i + k >= n) return false;
        uint32_t c = w[i + k], x = (unsigned char)lit[k];
        if (c == x) continue;
        if (x >= 'a' && x <= 'z') {
            if (c == x - 32 || (x == 's' && c == 0x17F) || (x == 'k' && c == 0x212A)) continue;
        }
        return false;
    }
    return true;
}

/* One match of the pattern, w[0..n): to bytes, then BPE (or a special). */
static void pretoken(enc *e, const uint32_t *w, size_t n) {
    uint8_t *u = grow(e, e->u8, &e->u8_cap, 4 * n, 1);
    if (!u) return;
    e->u8 = u;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) m += utf8_put(w[i], u + m);
    /* CLIPTokenizer's cache holds these two as they are */
    if ((m == 15 && memcmp(u, "<|startoftext|>", 15) == 0) || (m == 13 && memcmp(u, "<|endoftext|>", 13) == 0)) {
        emit(e, token_id(e->t, (const char *)u, m));
        return;
    }
    bpe(e, u, m);
}

/* A word (no whitespace), cleaned: NFC, lower-case, split, encode. */
static void word(enc *e) {
    size_t n = e->word_n;
    uint32_t *w = e->word;
    e->word_n = 0;
    if (!n || e->full || e->oom) return;
    /* NFC; code points below U+0300 are all NFC-stable and never compose */
    bool plain = true;
    for (size_t i = 0; i < n && plain; i++) plain = w[i] < 0x300;
    if (!plain) {
        uint8_t *u = grow(e, e->u8, &e->u8_cap, 4 * n, 1);
        if (!u) return;
        e->u8 = u;
        size_t m = 0;
        for (size_t i = 0; i < n; i++) m += utf8_put(w[i], u + m);
        utf8proc_uint8_t *nfc = NULL;
        utf8proc_ssize_t k = utf8proc_map(u, (utf8proc_ssize_t)m, &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (k < 0) {
            free(nfc);
            e->oom = true; /* only UTF8PROC_ERROR_NOMEM can happen on valid text */
            return;
        }
        /* NFC can lengthen a text (U+0344 -> U+0308 U+0301): at most one
         * code point per byte */
        w = grow(e, e->word, &e->word_cap, (size_t)k, sizeof *w);
        if (!w) {
            free(nfc);
            return;
        }
        e->word = w;
        size_t nn = 0;
        for (size_t i = 0; i < (size_t)k;) w[nn++] = utf8_next(nfc, &i);
        free(nfc);
        n = nn;
    }
    /* Python's str.lower(): simple mappings, but U+0130 -> i U+0307 and a
     * capital sigma at the end of a word -> final sigma */
    uint32_t *lw = grow(e, e->low, &e->low_cap, 2 * n, sizeof *lw);
    if (!lw) return;
    e->low = lw;
    size_t L = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = w[i];
        if (c < 0x80) {
            lw[L++] = c >= 'A' && c <= 'Z' ? c + 32 : c;
        } else if (c == 0x130) {
            lw[L++] = 'i';
            lw[L++] = 0x307;
        } else if (c == 0x3A3) {
            size_t j = i;
            while (j > 0 && py_case_ignorable(w[j - 1])) j--;
            bool fin = j > 0 && py_cased(w[j - 1]);
            if (fin) {
                j = i + 1;
                while (j < n && py_case_ignorable(w[j])) j++;
                fin = j == n || !py_cased(w[j]);
            }
            lw[L++] = fin ? 0x3C2 : 0x3C3;
        } else {
            lw[L++] = (uint32_t)utf8proc_tolower((utf8proc_int32_t)c);
        }
    }
    /* CLIP's pattern */
    static const char *const contractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    for (size_t i = 0; i < L && !e->full && !e->oom;) {
        uint32_t c = lw[i];
        size_t j = i + 1;
        if (c == YPOGEGRAMMENI) { /* matches no alternative: skipped */
            i++;
            continue;
        }
        if (c == '<' && match_lit(lw, L, i, "<|startoftext|>")) {
            j = i + 15;
        } else if (c == '<' && match_lit(lw, L, i, "<|endoftext|>")) {
            j = i + 13;
        } else if (c == '\'' && i + 1 < L) {
            size_t k = 0;
            for (; k < 7; k++)
                if (match_lit(lw, L, i, contractions[k])) break;
            if (k < 7) j = i + strlen(contractions[k]);
            else goto other;
        } else if (is_letter(c)) {
            while (j < L && is_letter(lw[j])) j++;
        } else if (is_number(c)) {
            /* one digit */
        } else {
        other:
            while (j < L && !is_letter(lw[j]) && !is_number(lw[j]) && !py_isspace(lw[j]) && lw[j] != YPOGEGRAMMENI) j++;
        }
        pretoken(e, lw + i, j - i);
        i = j;
    }
}

static void word_push(enc *e, uint32_t cp) {
    uint32_t *w = grow(e, e->word, &e->word_cap, e->word_n + 1, sizeof *w);
    if (!w) return;
    e->word = w;
    w[e->word_n++] = cp;
}

/* A piece of text between added tokens: BasicTokenizer's cleaning, CJK
 * spacing and split at whitespace, word by word. */
static void piece(enc *e, const uint8_t *p, size_t n) {
    e->word_n = 0;
    for (size_t i = 0; i < n && !e->full && !e->oom;) {
        uint32_t cp = utf8_next(p, &i);
        if (cp == 0 || clean_drops(cp)) continue;
        if (clean_space(cp) || py_isspace(cp)) {
            word(e);
        } else if (is_cjk(cp)) {
            word(e);
            word_push(e, cp);
            word(e);
        } else {
            word_push(e, cp);
        }
    }
    word(e);
}

/* The leftmost added token in s[from..n) (the longest of those starting
 * there): its index, *at its offset; -1 if none. */
static int next_added(const loco_tokenizer *t, const char *s, size_t n, size_t from, size_t *at) {
    for (size_t i = from; i < n; i++) {
        if (!t->first_byte[(unsigned char)s[i]]) continue;
        int best = -1;
        for (int k = 0; k < t->n_added; k++) {
            const added_tok *a = &t->added[k];
            if (a->len <= n - i && memcmp(s + i, a->text, a->len) == 0 && (best < 0 || a->len > t->added[best].len))
                best = k;
        }
        if (best >= 0) {
            *at = i;
            return best;
        }
    }
    *at = n;
    return -1;
}

loco_status clip_encode(const loco_tokenizer *t, const char *text, size_t len, int64_t *ids, size_t cap, size_t *n,
                        bool *more) {
    if (n) *n = 0;
    if (more) *more = false;
    if (!t || (!text && len) || (!ids && cap) || !n)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "tokenize: NULL argument");
    if (len > CLIP_MAX_TEXT)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "prompt: %zu bytes, more than the %zu accepted", len, CLIP_MAX_TEXT);
    size_t bad = clip_utf8_check(text, len);
    if (bad < len)
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "prompt: not UTF-8: byte %zu (0x%02x) is not a valid UTF-8 sequence",
                         bad, (unsigned char)text[bad]);
    if (!text) text = "";
    enc e = {.t = t, .out = ids, .cap = cap};
    /* transformers strips the text beside an added token with lstrip/rstrip
     * of Python's whitespace; every such character is dropped or splits
     * words in BasicTokenizer anyway, so the flags change nothing here */
    for (size_t pos = 0; !e.full && !e.oom;) {
        size_t at;
        int a = next_added(t, text, len, pos, &at);
        piece(&e, (const uint8_t *)text + pos, at - pos);
        if (a < 0 || e.full || e.oom) break;
        emit(&e, t->added[a].id);
        pos = at + t->added[a].len;
    }
    free(e.word);
    free(e.low);
    free(e.u8);
    free(e.sym);
    free(e.nxt);
    free(e.prv);
    free(e.merged);
    free(e.heap);
    if (e.oom) return loco_fail(LOCO_E_NOMEM, "tokenize: out of memory (prompt of %zu bytes)", len);
    *n = e.n < cap ? e.n : cap;
    if (more) *more = e.n > cap;
    return LOCO_OK;
}

loco_status loco_tokenize_n(const loco_tokenizer *t, const char *text, size_t len, int64_t *ids, int *n_real,
                            int *truncated) {
    if (n_real) *n_real = 0;
    if (truncated) *truncated = 0;
    if (!t || !ids || (!text && len)) return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_tokenize: NULL argument");
    size_t ml = (size_t)t->max_length, n;
    bool more;
    loco_status st = clip_encode(t, text, len, ids + 1, ml - 2, &n, &more);
    if (st) return st;
    ids[0] = t->bos;
    ids[n + 1] = t->eos;
    for (size_t i = n + 2; i < ml; i++) ids[i] = t->pad;
    if (n_real) *n_real = (int)n + 2;
    if (truncated) *truncated = more;
    return LOCO_OK;
}

loco_status loco_tokenize(const loco_tokenizer *t, const char *prompt, int64_t *ids, int *n_real) {
    if (!prompt) {
        if (n_real) *n_real = 0;
        return loco_fail(LOCO_E_INVALID_ARGUMENT, "loco_tokenize: NULL prompt");
    }
    return loco_tokenize_n(t, prompt, strlen(prompt), ids, n_real, NULL);
}
