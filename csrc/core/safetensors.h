/* safetensors.h — mmap and validate one Hugging Face .safetensors file.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *  "__metadata__": {..}}, then the data section; offsets are relative to it.
 * Everything is checked before any tensor is handed out: header length within
 * the file, valid JSON, known dtype strings, begin <= end <= data size, no two
 * tensors overlapping, shape x element size == byte length, no duplicate names.
 * Tensors of any safetensors dtype are accepted here (so buffers we never read,
 * e.g. an I64 one, do not fail the file); `supported` says whether the dtype is
 * one the engine computes in (F32/F16/BF16).
 */
#ifndef GPT2_SAFETENSORS_H
#define GPT2_SAFETENSORS_H

#include "common.h"
#include "json.h"

#include <stdint.h>

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER (100u * 1024u * 1024u)   /* the same cap as the reference library */

typedef struct STTensor {
    const char *name;            /* decoded, NUL-terminated (owned by the header doc) */
    const char *dtype_name;      /* as stored: "F32", "I64", ... */
    int supported;               /* dtype is F32/F16/BF16 */
    DType dtype;                 /* valid when supported */
    size_t elem_size;            /* bytes per element */
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t numel;
    size_t begin, end;           /* byte range within the data section */
    const void *data;            /* start of the tensor's bytes */
} STTensor;

typedef struct SafeTensors {
    char *path;                  /* for messages; NULL for an in-memory buffer */
    int fd;
    void *map;                   /* mmap of the whole file (NULL for a buffer) */
    size_t size;                 /* file / buffer size */
    JsonDoc header;
    STTensor *tensors;           /* sorted by name */
    size_t n_tensors;
} SafeTensors;

/* Parses and validates buf[0..size); st borrows buf (it must outlive st).
 * This is the fuzz entry point: any input gives GPT2_OK or an error, never a
 * crash or an out-of-bounds read. */
Status safetensors_parse(SafeTensors *st, const uint8_t *buf, size_t size, Error *err);
/* mmaps path (read-only) and parses it. Errors name the file. */
Status safetensors_open(SafeTensors *st, const char *path, Error *err);
void safetensors_close(SafeTensors *st);          /* safe on a zeroed or closed st, twice */
const STTensor *safetensors_find(const SafeTensors *st, const char *name);   /* NULL if absent */

/* libFuzzer-style entry: parses data and frees everything; always returns 0. */
int safetensors_fuzz_one(const uint8_t *data, size_t size);

#endif /* GPT2_SAFETENSORS_H */
