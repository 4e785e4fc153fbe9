/* common.h — status codes, error messages and dtypes shared by the whole core.
 *
 * Every fallible core function returns a Status and, on failure, fills the
 * caller's Error with a message that names the problem. Python (csrc/python)
 * turns the code into an exception class: see status_to_exception in module.c.
 * This header never includes Python.h.
 */
#ifndef GPT2_COMMON_H
#define GPT2_COMMON_H

#include <stddef.h>
#include <stdint.h>

typedef enum Status {
    GPT2_OK = 0,
    GPT2_ERR_VALUE,    /* bad argument from the user            -> ValueError        */
    GPT2_ERR_NOT_FOUND,/* a file or directory that is not there -> FileNotFoundError */
    GPT2_ERR_IO,       /* a read/mmap that failed               -> OSError           */
    GPT2_ERR_FORMAT,   /* a malformed file (json, safetensors)  -> ValueError        */
    GPT2_ERR_NOMEM,    /* host or device allocation failed      -> MemoryError       */
    GPT2_ERR_DEVICE,   /* CUDA / cuBLAS / NCCL failure          -> EngineError       */
    GPT2_ERR_INTERNAL, /* a broken invariant inside the engine  -> EngineError       */
} Status;

typedef struct Error {
    Status code;
    char msg[1024];
} Error;

/* Records code and a printf-style message in err (if not NULL); returns code,
 * so callers write `return error_set(err, GPT2_ERR_VALUE, "...", ...);`. */
Status error_set(Error *err, Status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefixes an existing message: "loading x: <old message>". Returns err->code. */
Status error_prefix(Error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

typedef enum DType { DTYPE_F32 = 0, DTYPE_F16 = 1, DTYPE_BF16 = 2 } DType;

size_t dtype_size(DType dt);
const char *dtype_name(DType dt);               /* "float32", "float16", "bfloat16" */
/* Accepts "float32"/"fp32"/"float", "float16"/"fp16"/"half", "bfloat16"/"bf16". */
int dtype_from_name(const char *name, DType *out);

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);   /* round to nearest even */
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);  /* round to nearest even, NaN kept */
/* Converts n elements between dtypes (host memory). */
void dtype_convert(void *dst, DType dst_dt, const void *src, DType src_dt, size_t n);

#define GPT2_MIN(a, b) ((a) < (b) ? (a) : (b))
#define GPT2_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif /* GPT2_COMMON_H */
