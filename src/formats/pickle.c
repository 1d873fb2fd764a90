/* formats/pickle.c - the restricted pickle interpreter that reads the
 * state_dict of a PyTorch checkpoint (values, the VM, its bounds), and the
 * writer of the pickle torch.save writes for a state_dict. See
 * formats/pickle.h for the form of a pickled tensor.
 *
 * The interpreter is a plain loop over opcodes with an explicit stack: no
 * recursion anywhere (deep nesting cannot overflow the C stack), every value
 * lives in one chain freed at the end (cycles through the memo are harmless),
 * and counts of objects, stack entries and memo slots are bounded. */
#include "formats/pickle.h"

#include "formats/bytes.h"
#include "formats/names.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ======================================================================== */
/* Values                                                                   */
/* ======================================================================== */

typedef enum vtype { V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_TUPLE, V_LIST, V_DICT, V_GLOBAL, V_STORAGE, V_TENSOR } vtype;
static const char *const vtype_name[] = {"None", "bool", "int", "float", "str", "tuple", "list", "dict",
                                         "global", "storage", "tensor"};

/* the globals that may be named */
enum {
    G_ODICT,
    G_REBUILD_V2,
    G_REBUILD_PARAM,
    G_STORAGE /* + dtype */
};
static const struct {
    const char *name;
    loco_dtype dtype;
} storage_types[] = {
    {"FloatStorage", LOCO_DTYPE_F32}, {"HalfStorage", LOCO_DTYPE_F16}, {"BFloat16Storage", LOCO_DTYPE_BF16},
    {"DoubleStorage", LOCO_DTYPE_F64}, {"LongStorage", LOCO_DTYPE_I64}, {"IntStorage", LOCO_DTYPE_I32},
    {"CharStorage", LOCO_DTYPE_I8},    {"ByteStorage", LOCO_DTYPE_U8},  {"BoolStorage", LOCO_DTYPE_BOOL},
};
#define N_STORAGE_TYPES (sizeof storage_types / sizeof storage_types[0])

typedef struct tdesc {
    int ndim;
    int64_t size[LOCO_MAX_DIMS], stride[LOCO_MAX_DIMS];
    uint64_t offset;
    struct val *storage;
} tdesc;

typedef struct val {
    vtype t;
    struct val *chain; /* every value, for freeing */
    union {
        int64_t i; /* V_BOOL, V_INT; V_GLOBAL: G_* */
        double f;
        struct {
            char *s;
            size_t len;
        } str;
        struct {
            struct val **it; /* V_DICT: key, value, key, value... */
            size_t n, cap;
        } seq;
        struct {
            loco_dtype dtype;
            pkl_storage *ent;
            uint64_t numel;
        } st;
        tdesc *td;
    } u;
} val;

static const char *global_name(int g, char *buf, size_t cap) {
    if (g == G_ODICT) return "collections.OrderedDict";
    if (g == G_REBUILD_V2) return "torch._utils._rebuild_tensor_v2";
    if (g == G_REBUILD_PARAM) return "torch._utils._rebuild_parameter";
    snprintf(buf, cap, "torch.%s", storage_types[g - G_STORAGE].name);
    return buf;
}

/* ======================================================================== */
/* The interpreter                                                          */
/* ======================================================================== */

typedef struct vm {
    const pkl_source *src;
    size_t pos; /* offset of the opcode being run */
    val **stack;
    size_t sp, scap;
    size_t *marks;
    size_t nm, mcap;
    val **memo;
    size_t memo_cap, memo_used;
    val *chain;
    size_t nobj;
} vm;

static loco_status vm_err(vm *m, loco_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static loco_status vm_err(vm *m, loco_status s, const char *fmt, ...) {
    char msg[512]; /* the message only; names in it are shortened by fmt_clean() */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return loco_fail(s, "%s: %s, byte %zu: %s", m->src->path, m->src->entry, m->pos, msg);
}

static void vm_free(vm *m) {
    for (val *v = m->chain, *nx; v; v = nx) {
        nx = v->chain;
        if (v->t == V_STR) free(v->u.str.s);
        else if (v->t == V_TUPLE || v->t == V_LIST || v->t == V_DICT) free(v->u.seq.it);
        else if (v->t == V_TENSOR) free(v->u.td);
        free(v);
    }
    free(m->stack);
    free(m->marks);
    free(m->memo);
}

static val *vnew(vm *m, vtype t) {
    if (m->nobj >= PKL_MAX_OBJECTS) return NULL;
    val *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    v->t = t;
    v->chain = m->chain;
    m->chain = v;
    m->nobj++;
    return v;
}

static loco_status oom(vm *m) {
    if (m->nobj >= PKL_MAX_OBJECTS)
        return vm_err(m, LOCO_E_NOMEM, "more than %zu objects: not a state_dict", (size_t)PKL_MAX_OBJECTS);
    return vm_err(m, LOCO_E_NOMEM, "out of memory");
}

static bool seq_push(val *v, val *x) {
    if (v->u.seq.n == v->u.seq.cap) {
        size_t nc = v->u.seq.cap ? 2 * v->u.seq.cap : 4;
        val **ni = realloc(v->u.seq.it, nc * sizeof *ni);
        if (!ni) return false;
        v->u.seq.it = ni;
        v->u.seq.cap = nc;
    }
    v->u.seq.it[v->u.seq.n++] = x;
    return true;
}

static loco_status push(vm *m, val *v) {
    if (!v) return oom(m);
    if (m->sp == m->scap) {
        if (m->scap >= PKL_MAX_STACK)
            return vm_err(m, LOCO_E_NOMEM, "the stack passes %zu entries: not a state_dict", (size_t)PKL_MAX_STACK);
        size_t nc = m->scap ? 2 * m->scap : 64;
        val **ns = realloc(m->stack, nc * sizeof *ns);
        if (!ns) return oom(m);
        m->stack = ns;
        m->scap = nc;
    }
    m->stack[m->sp++] = v;
    return LOCO_OK;
}

/* the stack may not be popped below the innermost MARK (as CPython) */
static size_t fence(const vm *m) { return m->nm ? m->marks[m->nm - 1] : 0; }

static loco_status need_items(vm *m, size_t k, const char *op) {
    if (m->sp - fence(m) < k) return vm_err(m, LOCO_E_FORMAT, "%s needs %zu value(s) on the stack", op, k);
    return LOCO_OK;
}

static loco_status pop_mark(vm *m, const char *op, size_t *k) {
    if (!m->nm) return vm_err(m, LOCO_E_FORMAT, "%s without a MARK", op);
    *k = m->marks[--m->nm];
    return LOCO_OK;
}

/* a new tuple/list/dict from stack[k..sp) */
static loco_status collect(vm *m, vtype t, size_t k, val **out) {
    val *v = vnew(m, t);
    if (!v) return oom(m);
    size_t cnt = m->sp - k;
    if (cnt) {
        v->u.seq.it = malloc(cnt * sizeof *v->u.seq.it);
        if (!v->u.seq.it) return oom(m);
        memcpy(v->u.seq.it, m->stack + k, cnt * sizeof *v->u.seq.it);
        v->u.seq.n = v->u.seq.cap = cnt;
    }
    m->sp = k;
    *out = v;
    return LOCO_OK;
}

static loco_status memo_put(vm *m, uint64_t idx) {
    if (m->sp == 0) return vm_err(m, LOCO_E_FORMAT, "memo store with an empty stack");
    if (idx >= PKL_MAX_MEMO)
        return vm_err(m, LOCO_E_NOMEM, "memo index %llu is beyond %zu", (unsigned long long)idx, (size_t)PKL_MAX_MEMO);
    if (idx >= m->memo_cap) {
        size_t nc = m->memo_cap ? m->memo_cap : 64;
        while (nc <= idx) nc *= 2;
        val **nm = realloc(m->memo, nc * sizeof *nm);
        if (!nm) return oom(m);
        memset(nm + m->memo_cap, 0, (nc - m->memo_cap) * sizeof *nm);
        m->memo = nm;
        m->memo_cap = nc;
    }
    if (!m->memo[idx]) m->memo_used++;
    m->memo[idx] = m->stack[m->sp - 1];
    return LOCO_OK;
}

static loco_status memo_get(vm *m, uint64_t idx) {
    if (idx >= m->memo_cap || !m->memo[idx])
        return vm_err(m, LOCO_E_FORMAT, "memo index %llu was never stored", (unsigned long long)idx);
    return push(m, m->memo[idx]);
}

static loco_status resolve_global(vm *m, const char *mod, size_t ml, const char *name, size_t nl, val **out) {
    int g = -1;
    if (ml == 11 && !memcmp(mod, "collections", 11) && nl == 11 && !memcmp(name, "OrderedDict", 11)) g = G_ODICT;
    else if (ml == 12 && !memcmp(mod, "torch._utils", 12)) {
        if (nl == 18 && !memcmp(name, "_rebuild_tensor_v2", 18)) g = G_REBUILD_V2;
        else if (nl == 18 && !memcmp(name, "_rebuild_parameter", 18)) g = G_REBUILD_PARAM;
    } else if (ml == 5 && !memcmp(mod, "torch", 5)) {
        for (size_t i = 0; i < N_STORAGE_TYPES; i++)
            if (strlen(storage_types[i].name) == nl && !memcmp(name, storage_types[i].name, nl)) g = G_STORAGE + (int)i;
    }
    if (g < 0) {
        char a[96], b[96]; /* for the message only (fmt_clean) */
        return vm_err(m, LOCO_E_UNSUPPORTED,
                      "global '%s.%s' is not allowed (a state_dict needs only collections.OrderedDict, "
                      "torch._utils._rebuild_tensor_v2 and torch.*Storage; nothing is ever executed)",
                      fmt_clean(a, sizeof a, mod, ml), fmt_clean(b, sizeof b, name, nl));
    }
    val *v = vnew(m, V_GLOBAL);
    if (!v) return oom(m);
    v->u.i = g;
    *out = v;
    return LOCO_OK;
}

/* BINPERSID: ('storage', torch.XStorage, key, location, numel) */
static loco_status persistent_load(vm *m, val *pid, val **out) {
    if (pid->t != V_TUPLE || pid->u.seq.n != 5)
        return vm_err(m, LOCO_E_FORMAT, "a persistent id must be a 5-tuple ('storage', type, key, location, numel), "
                      "not a %s%s", pid->t == V_TUPLE ? "tuple of another length" : vtype_name[pid->t], "");
    val **a = pid->u.seq.it;
    if (a[0]->t != V_STR || strcmp(a[0]->u.str.s, "storage") != 0)
        return vm_err(m, LOCO_E_UNSUPPORTED, "persistent id of a kind other than 'storage'");
    if (a[1]->t != V_GLOBAL || a[1]->u.i < G_STORAGE)
        return vm_err(m, LOCO_E_UNSUPPORTED, "a storage's type must be one of torch.*Storage, not a %s",
                      a[1]->t == V_GLOBAL ? "function" : vtype_name[a[1]->t]);
    if (a[2]->t != V_STR || a[3]->t != V_STR || a[4]->t != V_INT || a[4]->u.i < 0)
        return vm_err(m, LOCO_E_FORMAT, "a storage's key and location must be strings and its size an int >= 0");
    loco_dtype dt = storage_types[a[1]->u.i - G_STORAGE].dtype;
    const char *key = a[2]->u.str.s;
    size_t kl = a[2]->u.str.len;
    char kc[96]; /* the key for messages only (fmt_clean); the lookup uses the whole key */
    if (kl == 0 || kl > PKL_MAX_KEY) return vm_err(m, LOCO_E_FORMAT, "storage key of %zu bytes", kl);
    char *full = malloc(m->src->prefix_len + 5 + kl + 1);
    if (!full) return oom(m);
    memcpy(full, m->src->prefix, m->src->prefix_len);
    memcpy(full + m->src->prefix_len, "data/", 5);
    memcpy(full + m->src->prefix_len + 5, key, kl);
    pkl_storage *e = m->src->find(m->src->ctx, full, m->src->prefix_len + 5 + kl);
    free(full);
    fmt_clean(kc, sizeof kc, key, kl);
    if (!e)
        return vm_err(m, LOCO_E_FORMAT, "storage '%s' has no entry '%.*sdata/%s' in the archive", kc,
                      (int)m->src->prefix_len, m->src->prefix, kc);
    uint64_t numel = (uint64_t)a[4]->u.i, need;
    size_t es = loco_dtype_size(dt);
    if (__builtin_mul_overflow(numel, (uint64_t)es, &need)) need = UINT64_MAX;
    if (need != e->size)
        return vm_err(m, LOCO_E_FORMAT, "storage '%s' of %llu %s elements needs %s bytes, but its entry has %llu", kc,
                      (unsigned long long)numel, loco_dtype_name(dt),
                      need > e->size ? "more" : "fewer", (unsigned long long)e->size);
    if (e->dtype >= 0 && (e->dtype != (int)dt || e->numel != numel))
        return vm_err(m, LOCO_E_FORMAT, "storage '%s' is named with two different types or sizes",
                      kc);
    e->dtype = (int)dt;
    e->numel = numel;
    val *v = vnew(m, V_STORAGE);
    if (!v) return oom(m);
    v->u.st.dtype = dt;
    v->u.st.ent = e;
    v->u.st.numel = numel;
    *out = v;
    return LOCO_OK;
}

static loco_status int_tuple(vm *m, const val *v, const char *what, int64_t *out, int *n) {
    if (v->t != V_TUPLE) return vm_err(m, LOCO_E_FORMAT, "a tensor's %s must be a tuple, not a %s", what, vtype_name[v->t]);
    if (v->u.seq.n > LOCO_MAX_DIMS)
        return vm_err(m, LOCO_E_UNSUPPORTED, "a tensor of %zu dimensions (at most %d)", v->u.seq.n, LOCO_MAX_DIMS);
    for (size_t i = 0; i < v->u.seq.n; i++) {
        const val *x = v->u.seq.it[i];
        if (x->t != V_INT || x->u.i < 0)
            return vm_err(m, LOCO_E_FORMAT, "a tensor's %s[%zu] is not an int >= 0", what, i);
        if ((uint64_t)x->u.i > PKL_MAX_DIM)
            return vm_err(m, LOCO_E_NOMEM, "a tensor's %s[%zu] = %lld is absurdly large", what, i, (long long)x->u.i);
        out[i] = x->u.i;
    }
    *n = (int)v->u.seq.n;
    return LOCO_OK;
}

/* _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]) */
static loco_status rebuild_tensor(vm *m, val *args, val **out) {
    size_t na = args->u.seq.n;
    val **a = args->u.seq.it;
    if (na != 6 && na != 7)
        return vm_err(m, LOCO_E_FORMAT, "_rebuild_tensor_v2 takes 6 or 7 arguments, not %zu", na);
    if (a[0]->t != V_STORAGE)
        return vm_err(m, LOCO_E_FORMAT, "_rebuild_tensor_v2: the storage is a %s", vtype_name[a[0]->t]);
    if (a[1]->t != V_INT || a[1]->u.i < 0)
        return vm_err(m, LOCO_E_FORMAT, "_rebuild_tensor_v2: the storage offset is not an int >= 0");
    if (a[4]->t != V_BOOL && a[4]->t != V_INT)
        return vm_err(m, LOCO_E_FORMAT, "_rebuild_tensor_v2: requires_grad is a %s", vtype_name[a[4]->t]);
    if (a[5]->t != V_DICT || a[5]->u.seq.n)
        return vm_err(m, LOCO_E_UNSUPPORTED, "_rebuild_tensor_v2: backward hooks must be an empty dict");
    if (na == 7 && (a[6]->t != V_DICT || a[6]->u.seq.n))
        return vm_err(m, LOCO_E_UNSUPPORTED,
                      "_rebuild_tensor_v2: tensor metadata (conjugate or negative views) is not supported");
    tdesc *td = calloc(1, sizeof *td);
    if (!td) return oom(m);
    val *v = vnew(m, V_TENSOR);
    if (!v) {
        free(td);
        return oom(m);
    }
    v->u.td = td;
    int ns, nst;
    loco_status s;
    if ((s = int_tuple(m, a[2], "size", td->size, &ns)) || (s = int_tuple(m, a[3], "stride", td->stride, &nst)))
        return s;
    if (ns != nst)
        return vm_err(m, LOCO_E_FORMAT, "_rebuild_tensor_v2: %d sizes but %d strides", ns, nst);
    td->ndim = ns;
    td->offset = (uint64_t)a[1]->u.i;
    td->storage = a[0];
    /* the view must stay inside the storage: its last element is
     * offset + sum (size_d - 1) * stride_d */
    uint64_t numel = 1, last = td->offset;
    bool ovf = false;
    for (int d = 0; d < ns; d++) {
        uint64_t t;
        ovf |= __builtin_mul_overflow(numel, (uint64_t)td->size[d], &numel);
        if (td->size[d] > 0) {
            ovf |= __builtin_mul_overflow((uint64_t)td->size[d] - 1, (uint64_t)td->stride[d], &t);
            ovf |= __builtin_add_overflow(last, t, &last);
        }
    }
    uint64_t sn = a[0]->u.st.numel;
    char kc[96]; /* for messages only (fmt_clean) */
    const pkl_storage *e = a[0]->u.st.ent;
    if (ovf || numel > ((uint64_t)1 << 48))
        return vm_err(m, LOCO_E_NOMEM, "a view of storage '%s' has an absurd size", fmt_clean(kc, sizeof kc, e->name, e->nlen));
    if (numel > sn)
        return vm_err(m, LOCO_E_UNSUPPORTED, "a view of storage '%s' has %llu elements, more than the storage's %llu "
                      "(broadcast views are not read)", fmt_clean(kc, sizeof kc, e->name, e->nlen),
                      (unsigned long long)numel, (unsigned long long)sn);
    if (numel ? last >= sn : td->offset > sn)
        return vm_err(m, LOCO_E_FORMAT, "a view of storage '%s' reaches element %llu, but the storage has %llu",
                      fmt_clean(kc, sizeof kc, e->name, e->nlen), (unsigned long long)(numel ? last : td->offset),
                      (unsigned long long)sn);
    *out = v;
    return LOCO_OK;
}

static loco_status do_reduce(vm *m, val *fn, val *args, val **out) {
    if (fn->t != V_GLOBAL)
        return vm_err(m, LOCO_E_UNSUPPORTED, "REDUCE of a %s: only collections.OrderedDict, "
                      "torch._utils._rebuild_tensor_v2 and _rebuild_parameter may be called", vtype_name[fn->t]);
    if (args->t != V_TUPLE) return vm_err(m, LOCO_E_FORMAT, "REDUCE with %s arguments", vtype_name[args->t]);
    char gb[64]; /* "torch.BFloat16Storage" at most */
    switch (fn->u.i) {
    case G_ODICT:
        if (args->u.seq.n) return vm_err(m, LOCO_E_UNSUPPORTED, "collections.OrderedDict called with arguments");
        *out = vnew(m, V_DICT);
        return *out ? LOCO_OK : oom(m);
    case G_REBUILD_V2: return rebuild_tensor(m, args, out);
    case G_REBUILD_PARAM:
        /* _rebuild_parameter(data, requires_grad, backward_hooks): the data */
        if (args->u.seq.n != 3 || args->u.seq.it[0]->t != V_TENSOR || args->u.seq.it[2]->t != V_DICT ||
            args->u.seq.it[2]->u.seq.n)
            return vm_err(m, LOCO_E_UNSUPPORTED, "_rebuild_parameter takes (tensor, requires_grad, {})");
        *out = args->u.seq.it[0];
        return LOCO_OK;
    default:
        return vm_err(m, LOCO_E_UNSUPPORTED, "calling %s is not allowed", global_name((int)fn->u.i, gb, sizeof gb));
    }
}

static const char *op_name(uint8_t op) {
    switch (op) {
    case '(': return "MARK";
    case '.': return "STOP";
    case '0': return "POP";
    case '1': return "POP_MARK";
    case '2': return "DUP";
    case 'F': return "FLOAT";
    case 'I': return "INT";
    case 'J': return "BININT";
    case 'K': return "BININT1";
    case 'L': return "LONG";
    case 'M': return "BININT2";
    case 'N': return "NONE";
    case 'P': return "PERSID";
    case 'Q': return "BINPERSID";
    case 'R': return "REDUCE";
    case 'S': return "STRING";
    case 'T': return "BINSTRING";
    case 'U': return "SHORT_BINSTRING";
    case 'V': return "UNICODE";
    case 'X': return "BINUNICODE";
    case 'a': return "APPEND";
    case 'b': return "BUILD";
    case 'c': return "GLOBAL";
    case 'd': return "DICT";
    case '}': return "EMPTY_DICT";
    case 'e': return "APPENDS";
    case 'g': return "GET";
    case 'h': return "BINGET";
    case 'i': return "INST";
    case 'j': return "LONG_BINGET";
    case 'l': return "LIST";
    case ']': return "EMPTY_LIST";
    case 'o': return "OBJ";
    case 'p': return "PUT";
    case 'q': return "BINPUT";
    case 'r': return "LONG_BINPUT";
    case 's': return "SETITEM";
    case 't': return "TUPLE";
    case ')': return "EMPTY_TUPLE";
    case 'u': return "SETITEMS";
    case 'G': return "BINFLOAT";
    case 'B': return "BINBYTES";
    case 'C': return "SHORT_BINBYTES";
    case 0x80: return "PROTO";
    case 0x81: return "NEWOBJ";
    case 0x82: return "EXT1";
    case 0x83: return "EXT2";
    case 0x84: return "EXT4";
    case 0x85: return "TUPLE1";
    case 0x86: return "TUPLE2";
    case 0x87: return "TUPLE3";
    case 0x88: return "NEWTRUE";
    case 0x89: return "NEWFALSE";
    case 0x8a: return "LONG1";
    case 0x8b: return "LONG4";
    case 0x8c: return "SHORT_BINUNICODE";
    case 0x8d: return "BINUNICODE8";
    case 0x8e: return "BINBYTES8";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x92: return "NEWOBJ_EX";
    case 0x93: return "STACK_GLOBAL";
    case 0x94: return "MEMOIZE";
    case 0x95: return "FRAME";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    default: return NULL;
    }
}

/* Runs the pickle; *result is the value STOP returns. */
static loco_status vm_run(vm *m, val **result) {
    const uint8_t *b = m->src->pk;
    const size_t n = m->src->len;
    size_t i = 0;
    loco_status s = LOCO_OK;
    val *v, *x, *y;
    size_t k = 0;
#define NEED(cnt)                                                                                                     \
    do {                                                                                                               \
        if ((uint64_t)(cnt) > (uint64_t)(n - i))                                                                       \
            return vm_err(m, LOCO_E_FORMAT, "%s runs past the end of the pickle (truncated?)", op_name(op));          \
    } while (0)
#define TRY(e)                                                                                                         \
    do {                                                                                                               \
        if ((s = (e)) != LOCO_OK) return s;                                                                            \
    } while (0)
    if (n < 2 || b[0] != 0x80)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: %s: not a pickle of protocol 2 or later (torch.save writes protocol "
                         "2)", m->src->path, m->src->entry);
    for (;;) {
        if (i >= n) {
            m->pos = n;
            return vm_err(m, LOCO_E_FORMAT, "the pickle ends without STOP (truncated?)");
        }
        m->pos = i;
        uint8_t op = b[i++];
        switch (op) {
        case 0x80: /* PROTO */
            NEED(1);
            if (b[i] < 2 || b[i] > 5) return vm_err(m, LOCO_E_UNSUPPORTED, "pickle protocol %u (2 to 5 are read)", b[i]);
            i++;
            break;
        case 0x95: /* FRAME: only a size hint */
            NEED(8);
            if (fmt_rd64(b + i) > n - i - 8) return vm_err(m, LOCO_E_FORMAT, "FRAME of %llu bytes runs past the end",
                                                       (unsigned long long)fmt_rd64(b + i));
            i += 8;
            break;
        case '.': /* STOP */
            TRY(need_items(m, 1, "STOP"));
            *result = m->stack[--m->sp];
            return LOCO_OK;
        case '(': /* MARK */
            if (m->nm == m->mcap) {
                if (m->mcap >= PKL_MAX_STACK) return vm_err(m, LOCO_E_NOMEM, "too many MARKs");
                size_t nc = m->mcap ? 2 * m->mcap : 16;
                size_t *nmk = realloc(m->marks, nc * sizeof *nmk);
                if (!nmk) return oom(m);
                m->marks = nmk;
                m->mcap = nc;
            }
            m->marks[m->nm++] = m->sp;
            break;
        case '0': /* POP: the top, or else the innermost mark (as pickle.py) */
            if (m->sp > fence(m)) m->sp--;
            else if (m->nm) m->nm--;
            else return vm_err(m, LOCO_E_FORMAT, "POP on an empty stack");
            break;
        case '1': /* POP_MARK */
            TRY(pop_mark(m, "POP_MARK", &k));
            m->sp = k;
            break;
        case '2': /* DUP */
            TRY(need_items(m, 1, "DUP"));
            TRY(push(m, m->stack[m->sp - 1]));
            break;
        case 'N': TRY(push(m, vnew(m, V_NONE))); break;
        case 0x88: /* NEWTRUE */
        case 0x89: /* NEWFALSE */
            v = vnew(m, V_BOOL);
            if (v) v->u.i = op == 0x88;
            TRY(push(m, v));
            break;
        case 'J': /* BININT */
            NEED(4);
            v = vnew(m, V_INT);
            if (v) v->u.i = (int32_t)fmt_rd32(b + i);
            i += 4;
            TRY(push(m, v));
            break;
        case 'K': /* BININT1 */
            NEED(1);
            v = vnew(m, V_INT);
            if (v) v->u.i = b[i];
            i += 1;
            TRY(push(m, v));
            break;
        case 'M': /* BININT2 */
            NEED(2);
            v = vnew(m, V_INT);
            if (v) v->u.i = fmt_rd16(b + i);
            i += 2;
            TRY(push(m, v));
            break;
        case 0x8a: { /* LONG1: n bytes of two's complement, little-endian */
            NEED(1);
            size_t nb = b[i++];
            NEED(nb);
            if (nb > 8) return vm_err(m, LOCO_E_UNSUPPORTED, "an integer of %zu bytes (at most 8)", nb);
            uint64_t u = 0;
            for (size_t j = 0; j < nb; j++) u |= (uint64_t)b[i + j] << (8 * j);
            if (nb && nb < 8 && (b[i + nb - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * nb); /* sign-extend */
            i += nb;
            v = vnew(m, V_INT);
            if (v) memcpy(&v->u.i, &u, 8);
            TRY(push(m, v));
            break;
        }
        case 'G': { /* BINFLOAT: big-endian double */
            NEED(8);
            uint64_t u = 0;
            for (int j = 0; j < 8; j++) u = u << 8 | b[i + j];
            i += 8;
            v = vnew(m, V_FLOAT);
            if (v) memcpy(&v->u.f, &u, 8);
            TRY(push(m, v));
            break;
        }
        case 'X':    /* BINUNICODE */
        case 0x8c:   /* SHORT_BINUNICODE */
        case 0x8d: { /* BINUNICODE8 */
            uint64_t sl;
            if (op == 0x8c) {
                NEED(1);
                sl = b[i++];
            } else if (op == 'X') {
                NEED(4);
                sl = fmt_rd32(b + i);
                i += 4;
            } else {
                NEED(8);
                sl = fmt_rd64(b + i);
                i += 8;
            }
            NEED(sl);
            if (memchr(b + i, 0, (size_t)sl)) return vm_err(m, LOCO_E_FORMAT, "a string with a NUL character");
            v = vnew(m, V_STR);
            if (!v || !(v->u.str.s = malloc((size_t)sl + 1))) return oom(m);
            memcpy(v->u.str.s, b + i, (size_t)sl);
            v->u.str.s[sl] = 0;
            v->u.str.len = (size_t)sl;
            i += (size_t)sl;
            TRY(push(m, v));
            break;
        }
        case ')': TRY(push(m, vnew(m, V_TUPLE))); break;
        case ']': TRY(push(m, vnew(m, V_LIST))); break;
        case '}': TRY(push(m, vnew(m, V_DICT))); break;
        case 0x85: /* TUPLE1..3 */
        case 0x86:
        case 0x87:
            k = (size_t)(op - 0x84);
            TRY(need_items(m, k, op_name(op)));
            TRY(collect(m, V_TUPLE, m->sp - k, &v));
            TRY(push(m, v));
            break;
        case 't': /* TUPLE */
        case 'l': /* LIST */
        case 'd': /* DICT */
            TRY(pop_mark(m, op_name(op), &k));
            if (op == 'd' && (m->sp - k) % 2) return vm_err(m, LOCO_E_FORMAT, "DICT with an odd number of values");
            TRY(collect(m, op == 't' ? V_TUPLE : op == 'l' ? V_LIST : V_DICT, k, &v));
            TRY(push(m, v));
            break;
        case 'a': /* APPEND */
            TRY(need_items(m, 2, "APPEND"));
            x = m->stack[--m->sp];
            v = m->stack[m->sp - 1];
            if (v->t != V_LIST) return vm_err(m, LOCO_E_UNSUPPORTED, "APPEND to a %s", vtype_name[v->t]);
            if (!seq_push(v, x)) return oom(m);
            break;
        case 'e': /* APPENDS */
            TRY(pop_mark(m, "APPENDS", &k));
            if (k == 0 || k <= fence(m)) return vm_err(m, LOCO_E_FORMAT, "APPENDS without a list below its MARK");
            v = m->stack[k - 1];
            if (v->t != V_LIST) return vm_err(m, LOCO_E_UNSUPPORTED, "APPENDS to a %s", vtype_name[v->t]);
            for (size_t j = k; j < m->sp; j++)
                if (!seq_push(v, m->stack[j])) return oom(m);
            m->sp = k;
            break;
        case 's': /* SETITEM */
            TRY(need_items(m, 3, "SETITEM"));
            y = m->stack[--m->sp];
            x = m->stack[--m->sp];
            v = m->stack[m->sp - 1];
            if (v->t != V_DICT) return vm_err(m, LOCO_E_UNSUPPORTED, "SETITEM on a %s", vtype_name[v->t]);
            if (!seq_push(v, x) || !seq_push(v, y)) return oom(m);
            break;
        case 'u': /* SETITEMS */
            TRY(pop_mark(m, "SETITEMS", &k));
            if (k == 0 || k <= fence(m)) return vm_err(m, LOCO_E_FORMAT, "SETITEMS without a dict below its MARK");
            v = m->stack[k - 1];
            if (v->t != V_DICT) return vm_err(m, LOCO_E_UNSUPPORTED, "SETITEMS on a %s", vtype_name[v->t]);
            if ((m->sp - k) % 2) return vm_err(m, LOCO_E_FORMAT, "SETITEMS with an odd number of values");
            for (size_t j = k; j < m->sp; j++)
                if (!seq_push(v, m->stack[j])) return oom(m);
            m->sp = k;
            break;
        case 'c': { /* GLOBAL "module\nname\n" */
            const uint8_t *e1 = memchr(b + i, '\n', n - i < 256 ? n - i : 256);
            const uint8_t *e2 = e1 ? memchr(e1 + 1, '\n', (size_t)(b + n - e1 - 1) < 256 ? (size_t)(b + n - e1 - 1) : 256)
                                   : NULL;
            if (!e2) return vm_err(m, LOCO_E_FORMAT, "GLOBAL without two newline-terminated names");
            TRY(resolve_global(m, (const char *)b + i, (size_t)(e1 - b - i), (const char *)e1 + 1,
                               (size_t)(e2 - e1 - 1), &v));
            i = (size_t)(e2 - b) + 1;
            TRY(push(m, v));
            break;
        }
        case 0x93: /* STACK_GLOBAL */
            TRY(need_items(m, 2, "STACK_GLOBAL"));
            y = m->stack[--m->sp];
            x = m->stack[--m->sp];
            if (x->t != V_STR || y->t != V_STR) return vm_err(m, LOCO_E_FORMAT, "STACK_GLOBAL of non-strings");
            TRY(resolve_global(m, x->u.str.s, x->u.str.len, y->u.str.s, y->u.str.len, &v));
            TRY(push(m, v));
            break;
        case 'R': /* REDUCE */
            TRY(need_items(m, 2, "REDUCE"));
            y = m->stack[--m->sp];
            x = m->stack[--m->sp];
            TRY(do_reduce(m, x, y, &v));
            TRY(push(m, v));
            break;
        case 'b': /* BUILD: only the attributes of a dict (an OrderedDict's _metadata), dropped */
            TRY(need_items(m, 2, "BUILD"));
            y = m->stack[--m->sp];
            v = m->stack[m->sp - 1];
            if (v->t != V_DICT) return vm_err(m, LOCO_E_UNSUPPORTED, "BUILD on a %s", vtype_name[v->t]);
            if (y->t != V_DICT && y->t != V_NONE)
                return vm_err(m, LOCO_E_UNSUPPORTED, "BUILD with a %s state", vtype_name[y->t]);
            break;
        case 'Q': /* BINPERSID */
            TRY(need_items(m, 1, "BINPERSID"));
            x = m->stack[--m->sp];
            TRY(persistent_load(m, x, &v));
            TRY(push(m, v));
            break;
        case 'q': /* BINPUT */
            NEED(1);
            TRY(memo_put(m, b[i]));
            i += 1;
            break;
        case 'r': /* LONG_BINPUT */
            NEED(4);
            TRY(memo_put(m, fmt_rd32(b + i)));
            i += 4;
            break;
        case 0x94: /* MEMOIZE */
            TRY(memo_put(m, m->memo_used));
            break;
        case 'h': /* BINGET */
            NEED(1);
            TRY(memo_get(m, b[i]));
            i += 1;
            break;
        case 'j': /* LONG_BINGET */
            NEED(4);
            TRY(memo_get(m, fmt_rd32(b + i)));
            i += 4;
            break;
        default: {
            const char *nm = op_name(op);
            if (nm) return vm_err(m, LOCO_E_UNSUPPORTED, "opcode %s (0x%02x) is not allowed in a state_dict", nm, op);
            return vm_err(m, LOCO_E_FORMAT, "byte 0x%02x is not a pickle opcode", op);
        }
        }
    }
#undef NEED
#undef TRY
}

/* ======================================================================== */
/* The state_dict                                                           */
/* ======================================================================== */

/* The top-level dict -> *out */
static loco_status take_tensors(vm *m, val *root, pkl_tensor **out, size_t *nout) {
    const pkl_source *src = m->src;
    if (root->t != V_DICT)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: %s holds a %s, not a state_dict (a dict of tensors)", src->path,
                         src->entry, vtype_name[root->t]);
    size_t cnt = root->u.seq.n / 2, n = 0;
    pkl_tensor *ts = calloc(cnt ? cnt : 1, sizeof *ts);
    if (!ts) return loco_fail(LOCO_E_NOMEM, "%s: out of memory", src->path);
    char kc[96]; /* for messages only (fmt_clean); the names are strdup'd whole */
    loco_status s = LOCO_OK;
    for (size_t i = 0; i < cnt; i++) {
        const val *key = root->u.seq.it[2 * i], *tv = root->u.seq.it[2 * i + 1];
        if (key->t != V_STR || key->u.str.len == 0) {
            s = loco_fail(LOCO_E_FORMAT, "%s: state_dict key %zu is %s, not a non-empty string", src->path, i,
                          key->t == V_STR ? "empty" : vtype_name[key->t]);
            break;
        }
        if (tv->t != V_TENSOR) {
            s = loco_fail(LOCO_E_UNSUPPORTED, "%s: '%s' is a %s, not a tensor (only flat state_dicts of tensors are "
                          "read)", src->path, fmt_clean(kc, sizeof kc, key->u.str.s, key->u.str.len),
                          vtype_name[tv->t]);
            break;
        }
        const tdesc *td = tv->u.td;
        pkl_tensor *t = &ts[n];
        if (!(t->name = strdup(key->u.str.s))) {
            s = loco_fail(LOCO_E_NOMEM, "%s: out of memory", src->path);
            break;
        }
        n++;
        t->storage = td->storage->u.st.ent;
        t->ndim = td->ndim;
        t->offset = td->offset;
        memcpy(t->size, td->size, sizeof t->size);
        memcpy(t->stride, td->stride, sizeof t->stride);
    }
    if (s) {
        pkl_tensors_free(ts, n);
        return s;
    }
    *out = ts;
    *nout = n;
    return LOCO_OK;
}

void pkl_tensors_free(pkl_tensor *t, size_t n) {
    if (!t) return;
    for (size_t i = 0; i < n; i++) free(t[i].name);
    free(t);
}

loco_status pkl_load_state_dict(const pkl_source *src, pkl_tensor **out, size_t *n) {
    *out = NULL;
    *n = 0;
    if (src->len > PKL_MAX_PICKLE)
        return loco_fail(LOCO_E_UNSUPPORTED, "%s: %s is %llu bytes, more than the %zu allowed", src->path, src->entry,
                         (unsigned long long)src->len, PKL_MAX_PICKLE);
    vm m;
    memset(&m, 0, sizeof m);
    m.src = src;
    val *root = NULL;
    loco_status s = vm_run(&m, &root);
    if (!s) s = take_tensors(&m, root, out, n);
    vm_free(&m);
    return s;
}

/* ======================================================================== */
/* Writer                                                                   */
/* ======================================================================== */

typedef struct pkw {
    fmt_buf o;
    uint32_t memo; /* next memo index */
} pkw;

static void pk_put(pkw *w) {
    if (w->memo < 256) {
        fmt_buf_u8(&w->o, 'q');
        fmt_buf_u8(&w->o, (uint8_t)w->memo);
    } else {
        fmt_buf_u8(&w->o, 'r');
        fmt_buf_u32(&w->o, w->memo);
    }
    w->memo++;
}

static void pk_get(pkw *w, uint32_t idx) {
    if (idx < 256) {
        fmt_buf_u8(&w->o, 'h');
        fmt_buf_u8(&w->o, (uint8_t)idx);
    } else {
        fmt_buf_u8(&w->o, 'j');
        fmt_buf_u32(&w->o, idx);
    }
}

static void pk_str(pkw *w, const char *s) {
    size_t n = strlen(s);
    fmt_buf_u8(&w->o, 'X');
    fmt_buf_u32(&w->o, (uint32_t)n);
    fmt_buf_put(&w->o, s, n);
    pk_put(w);
}

/* a string memoized once and fetched afterwards, as pickle does for one object */
static void pk_str_once(pkw *w, const char *s, int64_t *slot) {
    if (*slot >= 0) {
        pk_get(w, (uint32_t)*slot);
        return;
    }
    *slot = w->memo;
    pk_str(w, s);
}

static void pk_int(pkw *w, int64_t v) {
    if (v >= 0 && v < 256) {
        fmt_buf_u8(&w->o, 'K');
        fmt_buf_u8(&w->o, (uint8_t)v);
    } else if (v >= 0 && v < 65536) {
        fmt_buf_u8(&w->o, 'M');
        fmt_buf_u16(&w->o, (uint16_t)v);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        fmt_buf_u8(&w->o, 'J');
        fmt_buf_u32(&w->o, (uint32_t)(int32_t)v);
    } else { /* LONG1, the fewest bytes that keep the sign */
        uint8_t t[8];
        int nb = 0;
        uint64_t u;
        memcpy(&u, &v, 8);
        for (int i = 0; i < 8; i++) t[i] = (uint8_t)(u >> (8 * i));
        for (nb = 8; nb > 1; nb--) {
            uint8_t top = t[nb - 1], below = t[nb - 2];
            if (!((top == 0 && !(below & 0x80)) || (top == 0xFF && (below & 0x80)))) break;
        }
        fmt_buf_u8(&w->o, 0x8a);
        fmt_buf_u8(&w->o, (uint8_t)nb);
        fmt_buf_put(&w->o, t, (size_t)nb);
    }
}

static void pk_global(pkw *w, const char *mod, const char *name, int64_t *slot) {
    if (*slot >= 0) {
        pk_get(w, (uint32_t)*slot);
        return;
    }
    fmt_buf_u8(&w->o, 'c');
    fmt_buf_put(&w->o, mod, strlen(mod));
    fmt_buf_u8(&w->o, '\n');
    fmt_buf_put(&w->o, name, strlen(name));
    fmt_buf_u8(&w->o, '\n');
    *slot = w->memo;
    pk_put(w);
}

static void pk_int_tuple(pkw *w, const int64_t *v, int n) {
    if (n == 0) {
        fmt_buf_u8(&w->o, ')');
        return; /* the empty tuple is a singleton pickle does not memoize */
    }
    if (n > 3) fmt_buf_u8(&w->o, '(');
    for (int i = 0; i < n; i++) pk_int(w, v[i]);
    fmt_buf_u8(&w->o, n > 3 ? 't' : (uint8_t)(0x84 + n));
    pk_put(w);
}

const char *pkl_storage_type(loco_dtype d) {
    for (size_t i = 0; i < N_STORAGE_TYPES; i++)
        if (storage_types[i].dtype == d) return storage_types[i].name;
    return NULL;
}

loco_status pkl_write_state_dict(const loco_tensor_ref *tensors, size_t n, uint8_t **out, size_t *len) {
    *out = NULL;
    *len = 0;
    pkw w = {{0}, 0};
    int64_t g_odict = -1, g_rebuild = -1, s_storage = -1, s_cpu = -1, g_st[LOCO_DTYPE_COUNT];
    for (int d = 0; d < LOCO_DTYPE_COUNT; d++) g_st[d] = -1;
    fmt_buf_u8(&w.o, 0x80);
    fmt_buf_u8(&w.o, 2);
    pk_global(&w, "collections", "OrderedDict", &g_odict);
    fmt_buf_u8(&w.o, ')');
    fmt_buf_u8(&w.o, 'R');
    pk_put(&w);
    char key[32]; /* a size_t in decimal */
    for (size_t i = 0; i < n; i++) {
        const loco_tensor_ref *t = &tensors[i];
        if (i % 1000 == 0 && n - i > 1) fmt_buf_u8(&w.o, '('); /* batches of 1000, as pickle */
        pk_str(&w, t->name);
        pk_global(&w, "torch._utils", "_rebuild_tensor_v2", &g_rebuild);
        fmt_buf_u8(&w.o, '(');
        fmt_buf_u8(&w.o, '(');
        pk_str_once(&w, "storage", &s_storage);
        pk_global(&w, "torch", pkl_storage_type(t->dtype), &g_st[t->dtype]);
        snprintf(key, sizeof key, "%zu", i);
        pk_str(&w, key);
        pk_str_once(&w, "cpu", &s_cpu);
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= (size_t)t->shape[d];
        pk_int(&w, (int64_t)numel);
        fmt_buf_u8(&w.o, 't');
        pk_put(&w);
        fmt_buf_u8(&w.o, 'Q');
        pk_int(&w, 0);
        pk_int_tuple(&w, t->shape, t->ndim);
        int64_t stride[LOCO_MAX_DIMS], acc = 1;
        for (int d = t->ndim - 1; d >= 0; d--) {
            stride[d] = acc;
            acc *= t->shape[d];
        }
        pk_int_tuple(&w, stride, t->ndim);
        fmt_buf_u8(&w.o, 0x89); /* requires_grad False */
        pk_global(&w, "collections", "OrderedDict", &g_odict);
        fmt_buf_u8(&w.o, ')');
        fmt_buf_u8(&w.o, 'R');
        pk_put(&w);
        fmt_buf_u8(&w.o, 't');
        pk_put(&w);
        fmt_buf_u8(&w.o, 'R');
        pk_put(&w);
        if (n - i == 1 && i % 1000 == 0) fmt_buf_u8(&w.o, 's');
        else if (i % 1000 == 999 || i == n - 1) fmt_buf_u8(&w.o, 'u');
    }
    /* the state_dict's _metadata attribute (an empty OrderedDict here) */
    fmt_buf_u8(&w.o, '}');
    pk_put(&w);
    pk_str(&w, "_metadata");
    pk_global(&w, "collections", "OrderedDict", &g_odict);
    fmt_buf_u8(&w.o, ')');
    fmt_buf_u8(&w.o, 'R');
    pk_put(&w);
    fmt_buf_u8(&w.o, 's');
    fmt_buf_u8(&w.o, 'b');
    fmt_buf_u8(&w.o, '.');
    if (w.o.oom) {
        free(w.o.b);
        return loco_fail(LOCO_E_NOMEM, "out of memory");
    }
    *out = w.o.b;
    *len = w.o.n;
    return LOCO_OK;
}
