/* formats/names.h - names read from files: one sorted-name lookup for the
 * readers (safetensors tensors, zip entries, a state_dict's tensors, and the
 * safetensors writer's order), and names made printable for messages.
 *
 * Names are byte strings with a length (they need not be NUL-terminated)
 * ordered bytewise with a shorter prefix first: for names without a NUL,
 * the order of strcmp. An array is sorted once (which also finds a name that
 * appears twice) and then searched by binary search. */
#ifndef LOCO_FORMATS_NAMES_H
#define LOCO_FORMATS_NAMES_H

#include "internal.h"

/* The name of the array element at elem (a pointer into the array: for an
 * array of pointers, a pointer to one of them); *len receives its length in
 * bytes. The name is the element's, only read. */
typedef const char *(*fmt_name_of)(const void *elem, size_t *len);

/* a[0..alen) against b[0..blen): <0, 0 or >0, as memcmp, a prefix first */
int fmt_name_cmp(const char *a, size_t alen, const char *b, size_t blen);

/* Sorts base[0..n) (elements of `size` bytes) by name(). Returns NULL when
 * the names are all different, else an element (in base, now sorted) whose
 * name another element also has, for the caller's message. */
const void *fmt_sort_names(void *base, size_t n, size_t size, fmt_name_of name);

/* The element of base[0..n) (sorted by fmt_sort_names with the same name())
 * named key[0..klen), or NULL. */
const void *fmt_find_name(const void *base, size_t n, size_t size, fmt_name_of name, const char *key,
                          size_t klen);

/* s[0..len) as printable text for messages, in buf (cap bytes, returned): at
 * most 80 characters, anything outside printable ASCII as '?', "..." when
 * shortened. */
const char *fmt_clean(char *buf, size_t cap, const char *s, size_t len);

#endif
