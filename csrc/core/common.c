/* common.c — Error helpers and host-side dtype conversion (fp16/bf16 <-> fp32). */
#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

Status error_set(Error *err, Status code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

Status error_prefix(Error *err, const char *fmt, ...)
{
    if (!err) return GPT2_ERR_INTERNAL;
    char prefix[512], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
    return err->code;
}

size_t dtype_size(DType dt) { return dt == DTYPE_F32 ? 4 : 2; }

const char *dtype_name(DType dt)
{
    switch (dt) {
    case DTYPE_F32: return "float32";
    case DTYPE_F16: return "float16";
    case DTYPE_BF16: return "bfloat16";
    }
    return "?";
}

int dtype_from_name(const char *name, DType *out)
{
    static const struct { const char *name; DType dt; } table[] = {
        {"float32", DTYPE_F32}, {"fp32", DTYPE_F32}, {"float", DTYPE_F32},
        {"float16", DTYPE_F16}, {"fp16", DTYPE_F16}, {"half", DTYPE_F16},
        {"bfloat16", DTYPE_BF16}, {"bf16", DTYPE_BF16},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(name, table[i].name) == 0) { *out = table[i].dt; return 1; }
    return 0;
}

static uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0) {               /* zero or subnormal: man * 2^-24 */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    if (exp == 31) return bits_f32(sign | 0x7f800000u | (man << 13));
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t f32_to_f16(float f)
{
    uint32_t u = f32_bits(f), sign = (u >> 16) & 0x8000;
    uint32_t au = u & 0x7fffffffu;
    if (au >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (au > 0x7f800000u ? 0x200 : 0));
    if (au >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);      /* rounds to inf */
    if (au < 0x38800000u) {                                        /* subnormal half */
        float v = bits_f32(au) * 16777216.0f;                      /* * 2^24 */
        uint32_t m = (uint32_t)v;                                  /* truncation */
        float rem = v - (float)m;
        if (rem > 0.5f || (rem == 0.5f && (m & 1))) m++;
        return (uint16_t)(sign | m);
    }
    uint32_t exp = ((au >> 23) - 112) << 10, man = (au >> 13) & 0x3ff;
    uint32_t h = exp | man, rest = au & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;        /* carries into exp */
    return (uint16_t)(sign | h);
}

float bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

void dtype_convert(void *dst, DType dst_dt, const void *src, DType src_dt, size_t n)
{
    if (dst_dt == src_dt) { memcpy(dst, src, n * dtype_size(dst_dt)); return; }
    for (size_t i = 0; i < n; i++) {
        float v;
        switch (src_dt) {
        case DTYPE_F32: v = ((const float *)src)[i]; break;
        case DTYPE_F16: v = f16_to_f32(((const uint16_t *)src)[i]); break;
        default: v = bf16_to_f32(((const uint16_t *)src)[i]); break;
        }
        switch (dst_dt) {
        case DTYPE_F32: ((float *)dst)[i] = v; break;
        case DTYPE_F16: ((uint16_t *)dst)[i] = f32_to_f16(v); break;
        default: ((uint16_t *)dst)[i] = f32_to_bf16(v); break;
        }
    }
}
