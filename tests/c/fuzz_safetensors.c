/* fuzz_safetensors.c — fuzz harness for the safetensors parser (and through it
 * the JSON reader).
 *
 * libFuzzer:  clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *               -Icsrc/core tests/c/fuzz_safetensors.c csrc/core/{safetensors,json,common}.c \
 *               -o fuzz_st && ./fuzz_st CORPUS_DIR
 * Without libFuzzer (gcc): add -DFUZZ_STANDALONE and -fsanitize=address,undefined;
 *   ./fuzz_st SEED.safetensors [ITERATIONS]  mutates the seed's bytes (mostly in
 *   the header) at random and parses each mutant. */
#include "safetensors.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Copy so that reads past `size` hit the sanitizer's redzone. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    safetensors_fuzz_one(buf, size);
    free(buf);
    return 0;
}

#ifdef FUZZ_STANDALONE
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return rng_state;
}

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: %s SEED.safetensors [ITERATIONS]\n", argv[0]); return 2; }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 2; }
    fseek(f, 0, SEEK_END);
    size_t n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *seed = malloc(n), *mut = malloc(n + 64);
    if (!seed || !mut || fread(seed, 1, n, f) != n) { fclose(f); return 2; }
    fclose(f);
    size_t hlen = n >= 8 ? (size_t)seed[0] | (size_t)seed[1] << 8 | (size_t)seed[2] << 16 : 0;
    size_t span = GPT2_MIN(n, 8 + hlen);
    long iters = argc > 2 ? atol(argv[2]) : 100000;
    long ok = 0;
    for (long i = 0; i < iters; i++) {
        size_t len = n;
        memcpy(mut, seed, n);
        int edits = 1 + (int)(rnd() % 4);
        for (int e = 0; e < edits; e++) {
            size_t pos = span ? rnd() % span : 0;
            switch (rnd() % 4) {
            case 0: mut[pos] = (uint8_t)rnd(); break;                         /* random byte */
            case 1: mut[pos] = "{}[]\",:0123456789-eE.\\u "[rnd() % 25]; break; /* JSON token */
            case 2: len = rnd() % (n + 1); break;                             /* truncate */
            default: mut[pos] ^= (uint8_t)(1u << (rnd() % 8)); break;         /* bit flip */
            }
        }
        SafeTensors st;
        Error err;
        if (safetensors_parse(&st, mut, len, &err) == GPT2_OK) { ok++; safetensors_close(&st); }
        LLVMFuzzerTestOneInput(mut, len);      /* again on an exact-size copy, for ASan */
    }
    printf("%ld mutants, %ld parsed OK, no crash\n", iters, ok);
    free(seed);
    free(mut);
    return 0;
}
#endif
