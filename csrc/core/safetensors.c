/* safetensors.c — mmap + validation of one .safetensors file (see safetensors.h).
 * Every number read from the file is bounds-checked against the file size with
 * overflow-safe arithmetic before it is used to form a pointer. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct { const char *name; size_t size; int supported; DType dt; } st_dtypes[] = {
    {"F32", 4, 1, DTYPE_F32}, {"F16", 2, 1, DTYPE_F16}, {"BF16", 2, 1, DTYPE_BF16},
    {"F64", 8, 0, DTYPE_F32}, {"I64", 8, 0, DTYPE_F32}, {"U64", 8, 0, DTYPE_F32},
    {"I32", 4, 0, DTYPE_F32}, {"U32", 4, 0, DTYPE_F32}, {"I16", 2, 0, DTYPE_F32},
    {"U16", 2, 0, DTYPE_F32}, {"I8", 1, 0, DTYPE_F32}, {"U8", 1, 0, DTYPE_F32},
    {"BOOL", 1, 0, DTYPE_F32}, {"F8_E4M3", 1, 0, DTYPE_F32}, {"F8_E5M2", 1, 0, DTYPE_F32},
    {"F8_E8M0", 1, 0, DTYPE_F32},
};

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const STTensor *)a)->name, ((const STTensor *)b)->name);
}

static int cmp_begin(const void *a, const void *b)
{
    const STTensor *x = *(const STTensor *const *)a, *y = *(const STTensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : 0;
}

/* A non-negative integer that fits size_t, or -1 with a message. */
static int get_size(const JsonValue *v, size_t *out)
{
    if (!v || v->type != JSON_NUMBER || !v->is_int || v->integer < 0) return -1;
    if ((uint64_t)v->integer > (uint64_t)SIZE_MAX) return -1;
    *out = (size_t)v->integer;
    return 0;
}

static Status parse_entry(const JsonValue *e, STTensor *t, const uint8_t *data, size_t data_size,
                          Error *err)
{
    const char *name = e->key;
    if (e->type != JSON_OBJECT)
        return error_set(err, GPT2_ERR_FORMAT, "tensor '%s': header entry is a %s, expected an object",
                         name, json_type_name(e->type));
    const JsonValue *dt = json_get(e, "dtype"), *shape = json_get(e, "shape"),
                    *offs = json_get(e, "data_offsets");
    if (!dt || dt->type != JSON_STRING)
        return error_set(err, GPT2_ERR_FORMAT, "tensor '%s': missing or non-string \"dtype\"", name);
    if (!shape || shape->type != JSON_ARRAY)
        return error_set(err, GPT2_ERR_FORMAT, "tensor '%s': missing or non-array \"shape\"", name);
    if (!offs || offs->type != JSON_ARRAY || offs->count != 2)
        return error_set(err, GPT2_ERR_FORMAT,
                         "tensor '%s': \"data_offsets\" must be an array [begin, end]", name);
    t->name = name;
    t->dtype_name = dt->str;
    size_t k = 0, nk = sizeof st_dtypes / sizeof st_dtypes[0];
    while (k < nk && strcmp(dt->str, st_dtypes[k].name) != 0) k++;
    if (k == nk)
        return error_set(err, GPT2_ERR_FORMAT, "tensor '%s': unknown dtype \"%.32s\"", name, dt->str);
    t->elem_size = st_dtypes[k].size;
    t->supported = st_dtypes[k].supported;
    t->dtype = st_dtypes[k].dt;
    if (shape->count > ST_MAX_DIMS)
        return error_set(err, GPT2_ERR_FORMAT, "tensor '%s': %zu dimensions (at most %d supported)",
                         name, shape->count, ST_MAX_DIMS);
    t->ndim = (int)shape->count;
    size_t numel = 1;
    int overflow = 0, i = 0;
    for (const JsonValue *d = shape->first; d; d = d->next, i++) {
        size_t n;
        if (get_size(d, &n) < 0)
            return error_set(err, GPT2_ERR_FORMAT,
                             "tensor '%s': shape[%d] is not a non-negative integer", name, i);
        t->shape[i] = (int64_t)n;
        if (n != 0 && numel > SIZE_MAX / n) overflow = 1;
        else numel *= n;
    }
    if (overflow || numel > SIZE_MAX / t->elem_size)
        return error_set(err, GPT2_ERR_FORMAT, "tensor '%s': shape is too large", name);
    t->numel = numel;
    if (get_size(offs->first, &t->begin) < 0 || get_size(offs->first->next, &t->end) < 0)
        return error_set(err, GPT2_ERR_FORMAT,
                         "tensor '%s': data_offsets must be non-negative integers", name);
    if (t->begin > t->end)
        return error_set(err, GPT2_ERR_FORMAT, "tensor '%s': data_offsets begin %zu > end %zu",
                         name, t->begin, t->end);
    if (t->end > data_size)
        return error_set(err, GPT2_ERR_FORMAT,
                         "tensor '%s': data_offsets end %zu is past the end of the data section "
                         "(%zu bytes; file truncated?)", name, t->end, data_size);
    if (t->end - t->begin != numel * t->elem_size)
        return error_set(err, GPT2_ERR_FORMAT,
                         "tensor '%s': byte length %zu does not match shape x dtype size "
                         "(%zu elements of %s = %zu bytes)", name, t->end - t->begin, numel,
                         t->dtype_name, numel * t->elem_size);
    t->data = data + t->begin;
    return GPT2_OK;
}

Status safetensors_parse(SafeTensors *st, const uint8_t *buf, size_t size, Error *err)
{
    memset(st, 0, sizeof *st);
    st->fd = -1;
    st->size = size;
    STTensor **by_begin = NULL;
    Status s;
    if (size < 8)
        return error_set(err, GPT2_ERR_FORMAT,
                         "file is %zu bytes, shorter than the 8-byte header length", size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen > size - 8)
        return error_set(err, GPT2_ERR_FORMAT,
                         "header length %llu runs past the end of the file (%zu bytes; truncated?)",
                         (unsigned long long)hlen, size);
    if (hlen > ST_MAX_HEADER)
        return error_set(err, GPT2_ERR_FORMAT, "header length %llu exceeds the %u-byte limit",
                         (unsigned long long)hlen, ST_MAX_HEADER);
    if ((s = json_parse(&st->header, (const char *)buf + 8, (size_t)hlen, err)) != GPT2_OK) {
        error_prefix(err, "header");
        goto fail;
    }
    const JsonValue *root = st->header.root;
    if (root->type != JSON_OBJECT) {
        s = error_set(err, GPT2_ERR_FORMAT, "header is a JSON %s, expected an object",
                      json_type_name(root->type));
        goto fail;
    }
    const uint8_t *data = buf + 8 + hlen;
    size_t data_size = size - 8 - (size_t)hlen;
    st->tensors = calloc(root->count ? root->count : 1, sizeof *st->tensors);
    if (!st->tensors) { s = error_set(err, GPT2_ERR_NOMEM, "out of memory"); goto fail; }
    for (const JsonValue *e = root->first; e; e = e->next) {
        if (strcmp(e->key, "__metadata__") == 0) {
            if (e->type != JSON_OBJECT) {
                s = error_set(err, GPT2_ERR_FORMAT, "\"__metadata__\" is not an object");
                goto fail;
            }
            continue;
        }
        if ((s = parse_entry(e, &st->tensors[st->n_tensors], data, data_size, err)) != GPT2_OK)
            goto fail;
        st->n_tensors++;
    }
    qsort(st->tensors, st->n_tensors, sizeof *st->tensors, cmp_name);
    for (size_t i = 1; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i - 1].name, st->tensors[i].name) == 0) {
            s = error_set(err, GPT2_ERR_FORMAT, "tensor '%s' appears twice in the header",
                          st->tensors[i].name);
            goto fail;
        }
    /* Overlap check: sort by begin; each non-empty range must start at or after
     * the end of every earlier one (ranges are sorted, so the running max end). */
    by_begin = malloc((st->n_tensors ? st->n_tensors : 1) * sizeof *by_begin);
    if (!by_begin) { s = error_set(err, GPT2_ERR_NOMEM, "out of memory"); goto fail; }
    for (size_t i = 0; i < st->n_tensors; i++) by_begin[i] = &st->tensors[i];
    qsort(by_begin, st->n_tensors, sizeof *by_begin, cmp_begin);
    const STTensor *prev = NULL;
    for (size_t i = 0; i < st->n_tensors; i++) {
        const STTensor *t = by_begin[i];
        if (t->begin == t->end) continue;
        if (prev && t->begin < prev->end) {
            s = error_set(err, GPT2_ERR_FORMAT,
                          "tensors '%s' [%zu, %zu) and '%s' [%zu, %zu) have overlapping data ranges",
                          prev->name, prev->begin, prev->end, t->name, t->begin, t->end);
            goto fail;
        }
        if (!prev || t->end > prev->end) prev = t;
    }
    free(by_begin);
    return GPT2_OK;
fail:
    free(by_begin);
    safetensors_close(st);
    return s;
}

Status safetensors_open(SafeTensors *st, const char *path, Error *err)
{
    memset(st, 0, sizeof *st);
    st->fd = -1;
    Status s;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return error_set(err, e == ENOENT ? GPT2_ERR_NOT_FOUND : GPT2_ERR_IO,
                         "cannot open '%s': %s", path, strerror(e));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return error_set(err, GPT2_ERR_IO, "'%s' is not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    void *map = NULL;
    if (size > 0) {
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            return error_set(err, GPT2_ERR_IO, "cannot mmap '%s': %s", path, strerror(e));
        }
    }
    close(fd);
    static const uint8_t empty[1] = {0};
    s = safetensors_parse(st, map ? (const uint8_t *)map : empty, size, err);
    if (s != GPT2_OK) {
        if (map) munmap(map, size);
        return error_prefix(err, "%s", path);
    }
    st->map = map;
    st->path = strdup(path);
    if (!st->path) {
        safetensors_close(st);
        return error_set(err, GPT2_ERR_NOMEM, "out of memory");
    }
    return GPT2_OK;
}

void safetensors_close(SafeTensors *st)
{
    if (!st) return;
    json_doc_free(&st->header);
    free(st->tensors);
    st->tensors = NULL;
    st->n_tensors = 0;
    if (st->map) munmap(st->map, st->size);
    st->map = NULL;
    free(st->path);
    st->path = NULL;
    st->fd = -1;
}

const STTensor *safetensors_find(const SafeTensors *st, const char *name)
{
    if (!st || !st->tensors) return NULL;
    STTensor key = {.name = name};
    return bsearch(&key, st->tensors, st->n_tensors, sizeof key, cmp_name);
}

int safetensors_fuzz_one(const uint8_t *data, size_t size)
{
    SafeTensors st;
    Error err;
    if (safetensors_parse(&st, data, size, &err) == GPT2_OK) safetensors_close(&st);
    return 0;
}
