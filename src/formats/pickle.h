/* formats/pickle.h - the pickles of PyTorch checkpoints (data.pkl): a
 * restricted interpreter that reads a state_dict of tensors and executes
 * nothing, and a writer of the pickle torch.save writes for one.
 *
 * A tensor is pickled as
 *   torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
 *                                   requires_grad, backward_hooks[, metadata])
 * where storage is a persistent id ('storage', torch.FloatStorage, key,
 * location, numel) loaded by BINPERSID; the storage's bytes are the archive
 * entry ARCHIVE/data/<key>, found through the reader (pkl_source.find). */
#ifndef LOCO_FORMATS_PICKLE_H
#define LOCO_FORMATS_PICKLE_H

#include "internal.h"

/* bounds on what a pickle may ask for */
#define PKL_MAX_PICKLE ((size_t)64 << 20) /* data.pkl of 100k tensors is ~20 MB  */
#define PKL_MAX_OBJECTS ((size_t)1 << 22)
#define PKL_MAX_STACK ((size_t)1 << 22)
#define PKL_MAX_MEMO ((size_t)1 << 22)
#define PKL_MAX_DIM ((uint64_t)1 << 40) /* a dimension (the writer's bound too) */
#define PKL_MAX_KEY 1024                 /* a storage key, bytes */

/* A storage the pickle may name: an archive entry, supplied by the reader.
 * The interpreter records the type the pickle first names it with and
 * refuses another. */
typedef struct pkl_storage {
    const char *name; /* the entry's name, not NUL-terminated, for messages */
    size_t nlen;
    const uint8_t *data; /* its bytes */
    uint64_t size;       /* bytes */
    int dtype;           /* -1 until the pickle names it; then its loco_dtype */
    uint64_t numel;      /* elements, once named */
} pkl_storage;

/* What the interpreter reads, and how it finds storages. */
typedef struct pkl_source {
    const char *path;  /* the file, for messages */
    const char *entry; /* the pickle's entry, printable (fmt_clean), for messages */
    const uint8_t *pk; /* the pickle's bytes */
    size_t len;
    const char *prefix; /* "ARCHIVE/" (not NUL-terminated): storage KEY is the entry ARCHIVE/data/KEY */
    size_t prefix_len;
    /* the storage that is the entry name[0..nlen), or NULL; the reader's,
     * and it must outlive the tensors read */
    pkl_storage *(*find)(void *ctx, const char *name, size_t nlen);
    void *ctx;
} pkl_source;

/* One tensor of the state_dict: a strided view of its storage that the
 * interpreter checked stays inside it. */
typedef struct pkl_tensor {
    char *name;                 /* the state_dict's key, malloc'd */
    const pkl_storage *storage; /* its dtype is the tensor's */
    int ndim;
    int64_t size[LOCO_MAX_DIMS], stride[LOCO_MAX_DIMS];
    uint64_t offset; /* storage offset, elements */
} pkl_tensor;

/* Runs the pickle src describes (at most PKL_MAX_PICKLE bytes) and takes the
 * state_dict it returns: *out (new memory, freed with pkl_tensors_free)
 * receives its *n tensors in the pickle's order. Names are not checked for
 * duplicates. On failure *out is NULL and the message names src->path and
 * src->entry. */
loco_status pkl_load_state_dict(const pkl_source *src, pkl_tensor **out, size_t *n);
void pkl_tensors_free(pkl_tensor *t, size_t n);

/* The torch storage type of dtype ("FloatStorage"...), or NULL when torch has
 * none the reader knows. */
const char *pkl_storage_type(loco_dtype dtype);

/* The protocol-2 pickle torch.save writes for a state_dict (an OrderedDict)
 * of tensors[0..n) in that order: tensor i is a contiguous
 * _rebuild_tensor_v2 view of storage key "i" on 'cpu'. The caller has
 * checked the tensors (non-empty names, a storage type for each dtype,
 * ranks and dimensions up to PKL_MAX_DIM); data are not read. *out (new
 * memory, the caller frees) receives *len bytes. */
loco_status pkl_write_state_dict(const loco_tensor_ref *tensors, size_t n, uint8_t **out, size_t *len);

#endif
