/* formats/zip.h - the zip archives torch.save writes: a reader of stored
 * (uncompressed) archives held in memory, zip64 included. The writer,
 * loco_zip_build, is declared in internal.h (the tests and fuzz targets
 * build archives with it).
 *
 * Every entry of a torch archive is stored (not compressed); data start at
 * 64-byte boundaries through an 'FB' padding extra field; CRC and sizes
 * follow each entry in a data descriptor and are repeated in the central
 * directory, which is what the reader reads. */
#ifndef LOCO_FORMATS_ZIP_H
#define LOCO_FORMATS_ZIP_H

#include "internal.h"

#define ZIP_SIG_LOCAL 0x04034b50u
#define ZIP_SIG_CENTRAL 0x02014b50u
#define ZIP_SIG_EOCD 0x06054b50u
#define ZIP_SIG_EOCD64 0x06064b50u
#define ZIP_SIG_LOC64 0x07064b50u
#define ZIP_SIG_DESCRIPTOR 0x08074b50u

typedef struct zip_entry {
    const char *name; /* into the archive bytes, not NUL-terminated */
    size_t nlen;
    uint64_t hdr, off, size; /* local header, data start, data size */
    uint32_t crc;
} zip_entry;

typedef struct zip_archive {
    const char *path;   /* for messages; borrowed */
    const uint8_t *buf; /* the archive; borrowed */
    size_t len;
    zip_entry *ents; /* sorted by name; owned (zip_archive_close) */
    size_t n;
} zip_archive;

/* Does b[0..len) start as a zip archive does (a local header, or the end
 * record of an empty archive)? */
bool zip_starts_archive(const uint8_t *b, size_t len);

/* Reads the central directory of buf[0..len) (borrowed: it must outlive
 * *z) into *z; path names the archive in messages. Every entry must be
 * stored, unencrypted, inside the file, not overlapping another, named once
 * and (when check_crc) match its CRC-32. On failure *z holds nothing to
 * free; on success zip_archive_close frees what it holds. */
loco_status zip_archive_open(zip_archive *z, const char *path, const uint8_t *buf, size_t len, bool check_crc);
void zip_archive_close(zip_archive *z);

/* The entry named name[0..nlen), or NULL; owned by z. */
const zip_entry *zip_archive_find(const zip_archive *z, const char *name, size_t nlen);

#endif
