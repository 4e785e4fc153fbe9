/* tokenizer.c — GPT-2 byte-level BPE: loading vocab.json/merges.txt, the
 * pre-tokenizer scanner, rank-ordered merges, decoding with U+FFFD repair.
 *
 * Speed comes from three things: (1) the pre-tokenizer is a hand-written
 * scanner over UTF-8 (ASCII fast path, two-level Unicode class table) instead of
 * a regex; (2) a pre-token whose bytes are a vocab token that BPE maps to itself
 * (checked once at load) is one hash lookup; (3) other pre-tokens go through a
 * word cache (bytes -> ids), since words repeat. Hash tables use open
 * addressing with linear probing and power-of-two capacities.
 */
#include "tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "unicode_tables.h"

#define TOKF_SPECIAL 1u /* <|endoftext|>: skipped by decode(skip_special)            */
#define TOKF_SELF 2u    /* BPE of this token's bytes is exactly this token           */
#define EOS_TEXT "<|endoftext|>"
#define CACHE_MAX_WORD 128     /* longer pre-tokens are not cached                */
#define CACHE_MAX_ENTRIES (1u << 16) /* then the cache starts over: bounded memory */
#define BPE_SMALL 64           /* words up to this many bytes use the O(n^2) merge  */

typedef struct VocabSlot { uint32_t hash; int32_t id; } VocabSlot;            /* id -1: empty */
typedef struct MergeSlot { uint64_t key; uint32_t rank; int32_t id; } MergeSlot; /* key 0: empty */

struct Tokenizer {
    int32_t n_vocab;
    int32_t eos_id;
    uint8_t *bytes;       /* (sum of token lengths) byte-decoded tokens, back to back */
    uint32_t *off;        /* (n_vocab + 1) token i is bytes[off[i] .. off[i+1])       */
    uint8_t *flags;       /* (n_vocab) TOKF_*                                          */
    VocabSlot *vocab;     /* (vocab_mask + 1) bytes -> id                             */
    uint32_t vocab_mask;
    MergeSlot *merges;    /* (merge_mask + 1) (left id, right id) -> rank, merged id  */
    uint32_t merge_mask;
    uint32_t n_merges;
    int32_t byte_id[256]; /* token of each single byte                                */
};

typedef struct CacheSlot { uint32_t hash; uint32_t entry; } CacheSlot; /* entry 0: empty */
typedef struct CacheEntry { uint32_t off, len, ids_off, n_ids; } CacheEntry;

struct TokenizerCache {
    CacheSlot *slots; uint32_t mask, count;
    CacheEntry *entries; uint32_t n_entries, cap_entries; /* entries[0] unused */
    uint8_t *bytes; size_t n_bytes, cap_bytes;
    int32_t *ids; size_t n_ids, cap_ids;
};

/* ---- hashing ------------------------------------------------------------ */

static inline uint64_t mix64(uint64_t h)
{
    h ^= h >> 33; h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 33);
}

static inline uint32_t hash_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0x100000001b3ull);
    while (n >= 8) {
        uint64_t v; memcpy(&v, p, 8);
        h = (h ^ v) * 0x9fb21c651e98df25ull; h ^= h >> 29;
        p += 8; n -= 8;
    }
    if (n) {
        uint64_t v = 0;
        for (size_t i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
        h = (h ^ v) * 0x9fb21c651e98df25ull;
    }
    return (uint32_t)mix64(h);
}

static uint32_t pow2_at_least(size_t n)
{
    uint32_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

static inline int32_t vocab_find(const Tokenizer *t, const uint8_t *p, size_t n, uint32_t h)
{
    for (uint32_t i = h & t->vocab_mask;; i = (i + 1) & t->vocab_mask) {
        const VocabSlot *s = &t->vocab[i];
        if (s->id < 0) return -1;
        if (s->hash == h) {
            uint32_t o = t->off[s->id], l = t->off[s->id + 1] - o;
            if (l == n && memcmp(t->bytes + o, p, n) == 0) return s->id;
        }
    }
}

static inline const MergeSlot *merge_find(const Tokenizer *t, int32_t a, int32_t b)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    for (uint32_t i = (uint32_t)mix64(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const MergeSlot *s = &t->merges[i];
        if (s->key == key) return s;
        if (s->key == 0) return NULL;
    }
}

static inline uint32_t merge_rank(const Tokenizer *t, int32_t a, int32_t b)
{
    const MergeSlot *s = merge_find(t, a, b);
    return s ? s->rank : UINT32_MAX;
}

/* ---- UTF-8 --------------------------------------------------------------- */

/* At s (n >= 1 bytes): k > 0 valid sequence of k bytes; 0 valid but incomplete
 * prefix (n too short); -k ill-formed, its maximal subpart has k bytes. */
static inline int utf8_check(const uint8_t *s, size_t n)
{
    uint8_t b = s[0], lo = 0x80, hi = 0xBF;
    int need;
    if (b < 0x80) return 1;
    if (b >= 0xC2 && b <= 0xDF) need = 2;
    else if (b == 0xE0) { need = 3; lo = 0xA0; }
    else if (b == 0xED) { need = 3; hi = 0x9F; }
    else if (b >= 0xE1 && b <= 0xEF) need = 3;
    else if (b == 0xF0) { need = 4; lo = 0x90; }
    else if (b == 0xF4) { need = 4; hi = 0x8F; }
    else if (b >= 0xF1 && b <= 0xF3) need = 4;
    else return -1;
    for (int k = 1; k < need; k++) {
        if ((size_t)k >= n) return 0;
        uint8_t c = s[k];
        if (c < lo || c > hi) return -k;
        lo = 0x80; hi = 0xBF;
    }
    return need;
}

size_t utf8_replace(const uint8_t *in, size_t n, int final, uint8_t *out, size_t *consumed)
{
    size_t i = 0, o = 0;
    while (i < n) {
        if (in[i] < 0x80) { out[o++] = in[i++]; continue; }
        int k = utf8_check(in + i, n - i);
        if (k > 0) { memcpy(out + o, in + i, (size_t)k); o += (size_t)k; i += (size_t)k; continue; }
        if (k == 0) {
            if (!final) break;        /* wait for the rest of the character */
            k = -(int)(n - i);        /* truncated at the end: one U+FFFD   */
        }
        out[o++] = 0xEF; out[o++] = 0xBF; out[o++] = 0xBD;
        i += (size_t)(-k);
    }
    if (consumed) *consumed = i;
    return o;
}

/* Decodes one code point at s (n >= 1); ill-formed bytes are one code point
 * 0x110000 (class OTHER). Returns its length in bytes. */
static inline size_t utf8_next(const uint8_t *s, size_t n, uint32_t *cp)
{
    uint8_t b = s[0];
    if (b < 0x80) { *cp = b; return 1; }
    int k = utf8_check(s, n);
    if (k <= 0) { *cp = 0x110000; return 1; }
    if (k == 2) *cp = (uint32_t)(b & 0x1F) << 6 | (s[1] & 0x3F);
    else if (k == 3) *cp = (uint32_t)(b & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
    else *cp = (uint32_t)(b & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 |
               (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
    return (size_t)k;
}

static inline int class_at(const uint8_t *s, size_t n, size_t *len)
{
    uint32_t cp;
    *len = utf8_next(s, n, &cp);
    return unicode_class(cp);
}

/* ---- BPE merges ---------------------------------------------------------- */

/* Merges bytes p[0..n) (n <= BPE_SMALL) into out: repeatedly the lowest-rank
 * adjacent pair, leftmost on ties (HF tokenizers' order). O(n^2), no allocation. */
static size_t bpe_small(const Tokenizer *t, const uint8_t *p, size_t n, int32_t *out)
{
    int32_t sym[BPE_SMALL];
    uint32_t rank[BPE_SMALL];   /* rank[i]: pair (sym[i], sym[i+1]) */
    size_t m = n;
    for (size_t i = 0; i < n; i++) sym[i] = t->byte_id[p[i]];
    for (size_t i = 0; i + 1 < m; i++) rank[i] = merge_rank(t, sym[i], sym[i + 1]);
    while (m > 1) {
        uint32_t best = UINT32_MAX;
        size_t bi = 0;
        for (size_t i = 0; i + 1 < m; i++)
            if (rank[i] < best) { best = rank[i]; bi = i; }
        if (best == UINT32_MAX) break;
        sym[bi] = merge_find(t, sym[bi], sym[bi + 1])->id;
        if (bi + 2 < m) memmove(&sym[bi + 1], &sym[bi + 2], (m - bi - 2) * sizeof *sym);
        if (bi + 3 < m) memmove(&rank[bi + 1], &rank[bi + 2], (m - bi - 3) * sizeof *rank);
        m--;
        if (bi > 0) rank[bi - 1] = merge_rank(t, sym[bi - 1], sym[bi]);
        if (bi + 1 < m) rank[bi] = merge_rank(t, sym[bi], sym[bi + 1]);
    }
    memcpy(out, sym, m * sizeof *sym);
    return m;
}

static void heap_push(uint64_t *h, size_t *n, uint64_t v)
{
    size_t i = (*n)++;
    while (i > 0 && h[(i - 1) / 2] > v) { h[i] = h[(i - 1) / 2]; i = (i - 1) / 2; }
    h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, size_t *n)
{
    uint64_t top = h[0], v = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && h[c + 1] < h[c]) c++;
        if (h[c] >= v) break;
        h[i] = h[c]; i = c;
    }
    h[i] = v;
    return top;
}

/* Same result as bpe_small for any n, in O(n log n): a doubly linked list of
 * symbols and a min-heap of (rank << 32 | position) with lazy deletion.
 * Returns SIZE_MAX when out of memory. */
static size_t bpe_large(const Tokenizer *t, const uint8_t *p, size_t n, int32_t *out)
{
    if (n >= UINT32_MAX / 4) return SIZE_MAX;
    int32_t *sym = malloc(n * sizeof *sym);
    int32_t *prev = malloc(n * sizeof *prev), *next = malloc(n * sizeof *next);
    uint64_t *heap = malloc(3 * n * sizeof *heap);
    size_t hn = 0, m = 0;
    if (!sym || !prev || !next || !heap) { m = SIZE_MAX; goto done; }
    for (size_t i = 0; i < n; i++) {
        sym[i] = t->byte_id[p[i]];
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        uint32_t r = merge_rank(t, sym[i], sym[i + 1]);
        if (r != UINT32_MAX) heap_push(heap, &hn, (uint64_t)r << 32 | i);
    }
    while (hn > 0) {
        uint64_t top = heap_pop(heap, &hn);
        uint32_t r = (uint32_t)(top >> 32), pos = (uint32_t)top;
        int32_t nx = next[pos];
        if (sym[pos] < 0 || nx < 0) continue;
        const MergeSlot *ms = merge_find(t, sym[pos], sym[nx]);
        if (!ms || ms->rank != r) continue; /* stale entry */
        sym[pos] = ms->id;
        sym[nx] = -1;
        next[pos] = next[nx];
        if (next[nx] >= 0) prev[next[nx]] = (int32_t)pos;
        if (prev[pos] >= 0) {
            uint32_t r2 = merge_rank(t, sym[prev[pos]], sym[pos]);
            if (r2 != UINT32_MAX) heap_push(heap, &hn, (uint64_t)r2 << 32 | (uint32_t)prev[pos]);
        }
        if (next[pos] >= 0) {
            uint32_t r2 = merge_rank(t, sym[pos], sym[next[pos]]);
            if (r2 != UINT32_MAX) heap_push(heap, &hn, (uint64_t)r2 << 32 | pos);
        }
    }
    for (int32_t i = 0; i >= 0; i = next[i]) out[m++] = sym[i];
done:
    free(sym); free(prev); free(next); free(heap);
    return m;
}

static size_t bpe(const Tokenizer *t, const uint8_t *p, size_t n, int32_t *out)
{
    return n <= BPE_SMALL ? bpe_small(t, p, n, out) : bpe_large(t, p, n, out);
}

/* ---- word cache ---------------------------------------------------------- */

TokenizerCache *tokenizer_cache_create(void) { return calloc(1, sizeof(TokenizerCache)); }

void tokenizer_cache_free(TokenizerCache *c)
{
    if (!c) return;
    free(c->slots); free(c->entries); free(c->bytes); free(c->ids);
    free(c);
}

static int grow(void **buf, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    void *nb = realloc(*buf, nc * elem);
    if (!nb) return -1;
    *buf = nb; *cap = nc;
    return 0;
}

static const CacheEntry *cache_find(const TokenizerCache *c, const uint8_t *p, size_t n,
                                    uint32_t h)
{
    if (!c->slots) return NULL;
    for (uint32_t i = h & c->mask;; i = (i + 1) & c->mask) {
        const CacheSlot *s = &c->slots[i];
        if (!s->entry) return NULL;
        if (s->hash == h) {
            const CacheEntry *e = &c->entries[s->entry];
            if (e->len == n && memcmp(c->bytes + e->off, p, n) == 0) return e;
        }
    }
}

/* Best effort: a failed allocation just leaves the word uncached. */
static void cache_insert(TokenizerCache *c, const uint8_t *p, size_t n, uint32_t h,
                         const int32_t *ids, size_t n_ids)
{
    if (c->count >= CACHE_MAX_ENTRIES) {
        memset(c->slots, 0, ((size_t)c->mask + 1) * sizeof *c->slots);
        c->count = 0; c->n_entries = 1; c->n_bytes = 0; c->n_ids = 0;
    }
    if (!c->slots || 2 * (c->count + 1) > c->mask + 1) {
        uint32_t cap = c->slots ? 2 * (c->mask + 1) : 256;
        CacheSlot *ns = calloc(cap, sizeof *ns);
        if (!ns) return;
        for (uint32_t i = 0; c->slots && i <= c->mask; i++) {
            if (!c->slots[i].entry) continue;
            uint32_t j = c->slots[i].hash & (cap - 1);
            while (ns[j].entry) j = (j + 1) & (cap - 1);
            ns[j] = c->slots[i];
        }
        free(c->slots);
        c->slots = ns; c->mask = cap - 1;
    }
    size_t cap_e = c->cap_entries;
    if (grow((void **)&c->entries, &cap_e, (size_t)c->n_entries + 2, sizeof *c->entries) ||
        grow((void **)&c->bytes, &c->cap_bytes, c->n_bytes + n, 1) ||
        grow((void **)&c->ids, &c->cap_ids, c->n_ids + n_ids, sizeof *c->ids)) {
        c->cap_entries = (uint32_t)cap_e;
        return;
    }
    c->cap_entries = (uint32_t)cap_e;
    if (c->n_entries == 0) c->n_entries = 1; /* entry 0 means "empty slot" */
    uint32_t e = c->n_entries++;
    c->entries[e] = (CacheEntry){(uint32_t)c->n_bytes, (uint32_t)n, (uint32_t)c->n_ids,
                                 (uint32_t)n_ids};
    memcpy(c->bytes + c->n_bytes, p, n); c->n_bytes += n;
    memcpy(c->ids + c->n_ids, ids, n_ids * sizeof *ids); c->n_ids += n_ids;
    uint32_t j = h & c->mask;
    while (c->slots[j].entry) j = (j + 1) & c->mask;
    c->slots[j] = (CacheSlot){h, e};
    c->count++;
}

/* ---- encode -------------------------------------------------------------- */

typedef struct Out { int32_t *ids; size_t n, cap; } Out;

static Status encode_word(const Tokenizer *t, TokenizerCache *c, const uint8_t *p, size_t n,
                          Out *o, Error *err)
{
    if (o->n + n > o->cap && grow((void **)&o->ids, &o->cap, o->n + n, sizeof *o->ids))
        return error_set(err, GPT2_ERR_NOMEM, "tokenizer_encode: out of memory");
    if (n == 1) { o->ids[o->n++] = t->byte_id[p[0]]; return GPT2_OK; }
    uint32_t h = hash_bytes(p, n);
    int32_t id = vocab_find(t, p, n, h);
    if (id >= 0 && (t->flags[id] & TOKF_SELF)) { o->ids[o->n++] = id; return GPT2_OK; }
    if (n <= CACHE_MAX_WORD) {
        const CacheEntry *e = cache_find(c, p, n, h);
        if (e) {
            memcpy(o->ids + o->n, c->ids + e->ids_off, e->n_ids * sizeof *o->ids);
            o->n += e->n_ids;
            return GPT2_OK;
        }
    }
    size_t m = bpe(t, p, n, o->ids + o->n);
    if (m == SIZE_MAX) return error_set(err, GPT2_ERR_NOMEM, "tokenizer_encode: out of memory");
    if (n <= CACHE_MAX_WORD) cache_insert(c, p, n, h, o->ids + o->n, m);
    o->n += m;
    return GPT2_OK;
}

/* Pre-tokenizes s[0..n) (no special tokens inside) by GPT-2's pattern and
 * encodes each piece. Alternatives are tried in the pattern's order at each
 * position, exactly as the regex does (greedy runs, no backtracking needed
 * except the \s+(?!\S) rule, which leaves the last whitespace to the next piece). */
static Status encode_ordinary(const Tokenizer *t, TokenizerCache *c, const uint8_t *s, size_t n,
                              Out *o, Error *err)
{
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        size_t piece, l;
        if (b == '\'' && i + 1 < n) {   /* 's|'t|'re|'ve|'m|'ll|'d */
            uint8_t c1 = s[i + 1], c2 = i + 2 < n ? s[i + 2] : 0;
            if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') piece = 2;
            else if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l'))
                piece = 3;
            else piece = 0;
            if (piece) {
                if (encode_word(t, c, s + i, piece, o, err)) return err->code;
                i += piece;
                continue;
            }
        }
        int cls = class_at(s + i, n - i, &l);
        size_t j = i + l;
        if (b == ' ' && j < n) {   /* ' ?' before a letter, number or other run */
            int c2 = class_at(s + j, n - j, &l);
            if (c2 != UCLASS_WHITESPACE) { cls = c2; j += l; }
        }
        if (cls != UCLASS_WHITESPACE) {   /* ?\p{L}+ | ?\p{N}+ | ?[^\s\p{L}\p{N}]+ */
            while (j < n) {
                if (s[j] < 0x80) {
                    if (unicode_class(s[j]) != cls) break;
                    j++;
                } else {
                    if (class_at(s + j, n - j, &l) != cls) break;
                    j += l;
                }
            }
        } else {   /* \s+(?!\S) | \s+ */
            size_t last = i;
            while (j < n && class_at(s + j, n - j, &l) == UCLASS_WHITESPACE) { last = j; j += l; }
            if (j < n && last > i) j = last;
        }
        if (encode_word(t, c, s + i, j - i, o, err)) return err->code;
        i = j;
    }
    return GPT2_OK;
}

Status tokenizer_encode_cached(const Tokenizer *tok, TokenizerCache *cache, const char *text,
                               size_t len, int allow_special, int32_t **ids, size_t *n_ids,
                               Error *err)
{
    *ids = NULL; *n_ids = 0;
    TokenizerCache *own = NULL;
    if (!cache && !(cache = own = tokenizer_cache_create()))
        return error_set(err, GPT2_ERR_NOMEM, "tokenizer_encode: out of memory");
    Out o = {0};
    Status st = GPT2_OK;
    if (grow((void **)&o.ids, &o.cap, len / 4 + 16, sizeof *o.ids)) {
        st = error_set(err, GPT2_ERR_NOMEM, "tokenizer_encode: out of memory");
        goto fail;
    }
    const uint8_t *s = (const uint8_t *)text, *end = s + len;
    const size_t eos_len = sizeof EOS_TEXT - 1;
    while (s < end) {
        const uint8_t *hit = NULL;
        if (allow_special && tok->eos_id >= 0)
            hit = memmem(s, (size_t)(end - s), EOS_TEXT, eos_len);
        const uint8_t *seg_end = hit ? hit : end;
        if ((st = encode_ordinary(tok, cache, s, (size_t)(seg_end - s), &o, err))) goto fail;
        if (!hit) break;
        if (o.n + 1 > o.cap && grow((void **)&o.ids, &o.cap, o.n + 1, sizeof *o.ids)) {
            st = error_set(err, GPT2_ERR_NOMEM, "tokenizer_encode: out of memory");
            goto fail;
        }
        o.ids[o.n++] = tok->eos_id;
        s = hit + eos_len;
    }
    tokenizer_cache_free(own);
    *ids = o.ids; *n_ids = o.n;
    return GPT2_OK;
fail:
    tokenizer_cache_free(own);
    free(o.ids);
    return st;
}

Status tokenizer_encode(const Tokenizer *tok, const char *text, size_t len, int allow_special,
                        int32_t **ids, size_t *n_ids, Error *err)
{
    return tokenizer_encode_cached(tok, NULL, text, len, allow_special, ids, n_ids, err);
}

/* ---- decode and accessors ------------------------------------------------ */

Status tokenizer_decode(const Tokenizer *tok, const int32_t *ids, size_t n, int skip_special,
                        char **text, size_t *len, Error *err)
{
    *text = NULL; *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= tok->n_vocab)
            return error_set(err, GPT2_ERR_VALUE, "token id %ld at position %zu is out of range "
                             "[0, %d)", (long)ids[i], i, tok->n_vocab);
        total += tok->off[ids[i] + 1] - tok->off[ids[i]];
    }
    uint8_t *raw = malloc(total + 1), *out = malloc(3 * total + 1);
    if (!raw || !out) {
        free(raw); free(out);
        return error_set(err, GPT2_ERR_NOMEM, "tokenizer_decode: out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (skip_special && (tok->flags[ids[i]] & TOKF_SPECIAL)) continue;
        uint32_t o = tok->off[ids[i]], l = tok->off[ids[i] + 1] - o;
        memcpy(raw + k, tok->bytes + o, l);
        k += l;
    }
    size_t m = utf8_replace(raw, k, 1, out, NULL);
    out[m] = 0;
    free(raw);
    *text = (char *)out; *len = m;
    return GPT2_OK;
}

int32_t tokenizer_vocab_size(const Tokenizer *tok) { return tok->n_vocab; }
int32_t tokenizer_eos_token_id(const Tokenizer *tok) { return tok->eos_id; }

int tokenizer_is_special(const Tokenizer *tok, int32_t id)
{
    return id >= 0 && id < tok->n_vocab && (tok->flags[id] & TOKF_SPECIAL);
}

const uint8_t *tokenizer_token_bytes(const Tokenizer *tok, int32_t id, size_t *len)
{
    if (id < 0 || id >= tok->n_vocab) { *len = 0; return NULL; }
    *len = tok->off[id + 1] - tok->off[id];
    return tok->bytes + tok->off[id];
}

/* ---- loading ------------------------------------------------------------- */

void tokenizer_free(Tokenizer *t)
{
    if (!t) return;
    free(t->bytes); free(t->off); free(t->flags); free(t->vocab); free(t->merges);
    free(t);
}

/* GPT-2's bytes_to_unicode, inverted: code point -> byte, -1 if not in the
 * alphabet. Printable Latin-1 bytes stand for themselves; the other 68 bytes,
 * in ascending order, are U+0100, U+0101, ... */
static void unicode_to_byte_map(int16_t u2b[324])
{
    for (int cp = 0; cp < 324; cp++) u2b[cp] = -1;
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        u2b[printable ? b : 256 + extra++] = (int16_t)b;
    }
}

static Status read_file(const char *path, uint8_t **buf, size_t *len, Error *err)
{
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return error_set(err, GPT2_ERR_NOT_FOUND, "tokenizer file not found: %s", path);
        return error_set(err, GPT2_ERR_IO, "cannot stat %s: %s", path, strerror(errno));
    }
    if (!S_ISREG(sb.st_mode))
        return error_set(err, GPT2_ERR_IO, "%s is not a regular file", path);
    FILE *f = fopen(path, "rb");
    if (!f) return error_set(err, GPT2_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    size_t n = (size_t)sb.st_size;
    uint8_t *b = malloc(n + 1);
    if (!b) { fclose(f); return error_set(err, GPT2_ERR_NOMEM, "out of memory reading %s", path); }
    size_t got = fread(b, 1, n, f);
    fclose(f);
    if (got != n) { free(b); return error_set(err, GPT2_ERR_IO, "short read on %s", path); }
    b[n] = 0;
    *buf = b; *len = n;
    return GPT2_OK;
}

typedef struct Parse {
    const uint8_t *s; size_t n, i;
    const char *path;
    int16_t u2b[324];
} Parse;

static size_t line_at(const Parse *p, size_t pos)
{
    size_t line = 1;
    for (size_t k = 0; k < pos && k < p->n; k++) line += p->s[k] == '\n';
    return line;
}

#define PARSE_FAIL(p, err, ...)                                                         \
    do {                                                                                \
        char what_[512];                                                                \
        snprintf(what_, sizeof what_, __VA_ARGS__);                                     \
        return error_set(err, GPT2_ERR_FORMAT, "malformed %s, line %zu: %s", (p)->path, \
                         line_at(p, (p)->i), what_);                                    \
    } while (0)

static Status put_cp(Parse *p, uint32_t cp, uint8_t *dst, size_t *k, Error *err)
{
    if (cp >= 324 || p->u2b[cp] < 0)
        PARSE_FAIL(p, err, "character U+%04X is not in GPT-2's byte-level alphabet", (unsigned)cp);
    dst[(*k)++] = (uint8_t)p->u2b[cp];
    return GPT2_OK;
}

static void skip_ws(Parse *p)
{
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' ||
                           p->s[p->i] == '\r'))
        p->i++;
}

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A JSON string at p->i, byte-decoded into dst (room for its raw length). */
static Status parse_key(Parse *p, uint8_t *dst, size_t *len, Error *err)
{
    size_t k = 0;
    if (p->i >= p->n || p->s[p->i] != '"') PARSE_FAIL(p, err, "expected a string token");
    p->i++;
    for (;;) {
        if (p->i >= p->n) PARSE_FAIL(p, err, "unterminated string");
        uint8_t c = p->s[p->i];
        uint32_t cp;
        if (c == '"') { p->i++; break; }
        if (c < 0x20) PARSE_FAIL(p, err, "control character in a string");
        if (c == '\\') {
            if (p->i + 1 >= p->n) PARSE_FAIL(p, err, "unterminated escape");
            uint8_t e = p->s[p->i + 1];
            p->i += 2;
            switch (e) {
            case '"': cp = '"'; break;
            case '\\': cp = '\\'; break;
            case '/': cp = '/'; break;
            case 'b': cp = '\b'; break;
            case 'f': cp = '\f'; break;
            case 'n': cp = '\n'; break;
            case 'r': cp = '\r'; break;
            case 't': cp = '\t'; break;
            case 'u':
                cp = 0;
                for (int h = 0; h < 4; h++) {
                    int v = p->i < p->n ? hexval(p->s[p->i]) : -1;
                    if (v < 0) PARSE_FAIL(p, err, "bad \\u escape");
                    cp = cp << 4 | (uint32_t)v;
                    p->i++;
                }
                break;
            default: PARSE_FAIL(p, err, "bad escape \\%c", e);
            }
        } else {
            p->i += utf8_next(p->s + p->i, p->n - p->i, &cp);
            if (cp == 0x110000) PARSE_FAIL(p, err, "invalid UTF-8");
        }
        if (put_cp(p, cp, dst, &k, err)) return err->code;
    }
    *len = k;
    return GPT2_OK;
}

static Status vocab_insert(Tokenizer *t, int32_t id, Parse *p, Error *err)
{
    const uint8_t *b = t->bytes + t->off[id];
    size_t n = t->off[id + 1] - t->off[id];
    uint32_t h = hash_bytes(b, n);
    if (vocab_find(t, b, n, h) >= 0)
        return error_set(err, GPT2_ERR_FORMAT, "malformed %s: token id %d duplicates the text "
                         "of another token", p->path, id);
    uint32_t i = h & t->vocab_mask;
    while (t->vocab[i].id >= 0) i = (i + 1) & t->vocab_mask;
    t->vocab[i] = (VocabSlot){h, id};
    return GPT2_OK;
}

/* vocab.json: one flat object {"token": id, ...}; ids must be 0..N-1, each once. */
static Status load_vocab(Tokenizer *t, Parse *p, Error *err)
{
    Status st = GPT2_OK;
    uint8_t *arena = malloc(p->n + 1);              /* keys in file order */
    uint32_t *koff = NULL, *klen = NULL;
    int32_t *kid = NULL;
    size_t cnt = 0, cap = 0, used = 0;
    int32_t *by_id = NULL;
    if (!arena) return error_set(err, GPT2_ERR_NOMEM, "out of memory loading %s", p->path);
    skip_ws(p);
    if (p->i >= p->n || p->s[p->i] != '{') {
        st = error_set(err, GPT2_ERR_FORMAT, "malformed %s, line %zu: expected a JSON object "
                  "{\"token\": id, ...}", p->path, line_at(p, p->i));
        goto fail;
    }
    p->i++;
    for (;;) {
        size_t klen_i, id = 0;
        skip_ws(p);
        if (cnt == 0 && p->i < p->n && p->s[p->i] == '}') break;
        size_t c1 = cap, c2 = cap;
        if (grow((void **)&koff, &c1, cnt + 1, 4) || grow((void **)&klen, &c2, cnt + 1, 4) ||
            grow((void **)&kid, &cap, cnt + 1, 4)) {
            st = error_set(err, GPT2_ERR_NOMEM, "out of memory loading %s", p->path);
            goto fail;
        }
        if ((st = parse_key(p, arena + used, &klen_i, err))) goto fail;
        skip_ws(p);
        if (p->i >= p->n || p->s[p->i] != ':') {
            st = error_set(err, GPT2_ERR_FORMAT, "malformed %s, line %zu: expected ':' after a token",
                      p->path, line_at(p, p->i));
            goto fail;
        }
        p->i++;
        skip_ws(p);
        size_t d0 = p->i;
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9' && id <= INT32_MAX)
            id = id * 10 + (size_t)(p->s[p->i++] - '0');
        if (p->i == d0 || id > INT32_MAX || (p->i < p->n && (p->s[p->i] == '.' ||
                                                             p->s[p->i] == 'e'))) {
            st = error_set(err, GPT2_ERR_FORMAT, "malformed %s, line %zu: token id must be an integer "
                      "in [0, 2^31)", p->path, line_at(p, d0));
            goto fail;
        }
        koff[cnt] = (uint32_t)used; klen[cnt] = (uint32_t)klen_i; kid[cnt] = (int32_t)id;
        cnt++; used += klen_i;
        skip_ws(p);
        if (p->i < p->n && p->s[p->i] == ',') { p->i++; continue; }
        if (p->i < p->n && p->s[p->i] == '}') break;
        st = error_set(err, GPT2_ERR_FORMAT, "malformed %s, line %zu: expected ',' or '}'", p->path,
                  line_at(p, p->i));
        goto fail;
    }
    p->i++;
    skip_ws(p);
    if (p->i != p->n) {
        st = error_set(err, GPT2_ERR_FORMAT, "malformed %s, line %zu: unexpected text after the "
                  "object", p->path, line_at(p, p->i));
        goto fail;
    }
    if (cnt == 0) { st = error_set(err, GPT2_ERR_FORMAT, "malformed %s: no tokens", p->path); goto fail; }
    t->n_vocab = (int32_t)cnt;
    t->off = calloc(cnt + 1, sizeof *t->off);
    t->flags = calloc(cnt, 1);
    t->bytes = malloc(used + 1);
    t->vocab_mask = pow2_at_least(2 * cnt) - 1;
    t->vocab = malloc(((size_t)t->vocab_mask + 1) * sizeof *t->vocab);
    if (!t->off || !t->flags || !t->bytes || !t->vocab) {
        st = error_set(err, GPT2_ERR_NOMEM, "out of memory loading %s", p->path);
        goto fail;
    }
    memset(t->vocab, 0xff, ((size_t)t->vocab_mask + 1) * sizeof *t->vocab);
    by_id = malloc(cnt * sizeof *by_id);
    if (!by_id) { st = error_set(err, GPT2_ERR_NOMEM, "out of memory loading %s", p->path); goto fail; }
    for (size_t k = 0; k < cnt; k++) by_id[k] = -1;
    for (size_t k = 0; k < cnt; k++) {
        if ((size_t)kid[k] >= cnt || by_id[kid[k]] >= 0) {
            st = error_set(err, GPT2_ERR_FORMAT, "malformed %s: token ids must be 0..%zu, each once; "
                      "id %d is %s", p->path, cnt - 1, kid[k],
                      (size_t)kid[k] >= cnt ? "out of range" : "repeated");
            goto fail;
        }
        by_id[kid[k]] = (int32_t)k;
    }
    size_t pos = 0;
    for (size_t id = 0; id < cnt; id++) {
        size_t k = (size_t)by_id[id];
        memcpy(t->bytes + pos, arena + koff[k], klen[k]);
        t->off[id] = (uint32_t)pos;
        pos += klen[k];
    }
    t->off[cnt] = (uint32_t)pos;
    for (int32_t id = 0; id < t->n_vocab; id++)
        if ((st = vocab_insert(t, id, p, err))) goto fail;
fail:
    free(arena); free(koff); free(klen); free(kid); free(by_id);
    return st;
}

/* Looks a merges.txt symbol (byte-level text) up in the vocab. */
static Status merge_symbol(Tokenizer *t, Parse *p, size_t a, size_t b, uint8_t *buf, size_t *len,
                           int32_t *id, Error *err)
{
    size_t k = 0, save = p->i;
    p->i = a;
    while (p->i < b) {
        uint32_t cp;
        p->i += utf8_next(p->s + p->i, b - p->i, &cp);
        if (cp == 0x110000) PARSE_FAIL(p, err, "invalid UTF-8");
        if (put_cp(p, cp, buf, &k, err)) return err->code;
    }
    p->i = save;
    *len = k;
    *id = vocab_find(t, buf, k, hash_bytes(buf, k));
    if (*id < 0)
        PARSE_FAIL(p, err, "'%.*s' is not a token of the vocab", (int)(b - a), (const char *)p->s + a);
    return GPT2_OK;
}

/* merges.txt: optional "#version" line, then "left right" per line, by rank. */
static Status load_merges(Tokenizer *t, Parse *p, Error *err)
{
    size_t lines = 1;
    for (size_t k = 0; k < p->n; k++) lines += p->s[k] == '\n';
    t->merge_mask = pow2_at_least(2 * lines) - 1;
    t->merges = calloc((size_t)t->merge_mask + 1, sizeof *t->merges);
    uint8_t *buf = malloc(2 * p->n + 2);
    if (!t->merges || !buf) {
        free(buf);
        return error_set(err, GPT2_ERR_NOMEM, "out of memory loading %s", p->path);
    }
    Status st = GPT2_OK;
    for (size_t ls = 0, ln = 1; ls < p->n; ln++) {
        size_t le = ls;
        while (le < p->n && p->s[le] != '\n') le++;
        size_t next = le + 1, e = le;
        if (e > ls && p->s[e - 1] == '\r') e--;
        p->i = ls;
        int blank = 1;
        for (size_t k = ls; k < e; k++) blank &= p->s[k] == ' ' || p->s[k] == '\t';
        if (blank || (ln == 1 && e - ls >= 8 && memcmp(p->s + ls, "#version", 8) == 0)) {
            ls = next;
            continue;
        }
        size_t sp = ls;
        while (sp < e && p->s[sp] != ' ') sp++;
        if (sp == ls || sp + 1 >= e || memchr(p->s + sp + 1, ' ', e - sp - 1)) {
            p->i = ls;
            free(buf);
            PARSE_FAIL(p, err, "expected two tokens separated by one space, got '%.*s'",
                       (int)GPT2_MIN(e - ls, 200), (const char *)p->s + ls);
        }
        size_t la, lb;
        int32_t a, b, ab;
        p->i = ls;
        if ((st = merge_symbol(t, p, ls, sp, buf, &la, &a, err)) ||
            (st = merge_symbol(t, p, sp + 1, e, buf + la, &lb, &b, err)))
            break;
        ab = vocab_find(t, buf, la + lb, hash_bytes(buf, la + lb));
        if (ab < 0) {
            free(buf);
            PARSE_FAIL(p, err, "the merge of '%.*s' is not a token of the vocab",
                       (int)GPT2_MIN(e - ls, 200), (const char *)p->s + ls);
        }
        if (!merge_find(t, a, b)) {   /* a repeated merge keeps its first (lowest) rank */
            uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
            uint32_t i = (uint32_t)mix64(key) & t->merge_mask;
            while (t->merges[i].key) i = (i + 1) & t->merge_mask;
            t->merges[i] = (MergeSlot){key, t->n_merges, ab};
        }
        t->n_merges++;
        ls = next;
    }
    free(buf);
    return st;
}

Status tokenizer_load(Tokenizer **out, const char *vocab_json_path, const char *merges_txt_path,
                      Error *err)
{
    *out = NULL;
    Tokenizer *t = calloc(1, sizeof *t);
    Parse *p = calloc(1, sizeof *p);
    uint8_t *vbuf = NULL, *mbuf = NULL, *scratch = NULL;
    size_t vlen = 0, mlen = 0;
    Status st;
    if (!t || !p) { st = error_set(err, GPT2_ERR_NOMEM, "out of memory loading the tokenizer"); goto fail; }
    t->eos_id = -1;
    unicode_to_byte_map(p->u2b);
    if ((st = read_file(vocab_json_path, &vbuf, &vlen, err)) ||
        (st = read_file(merges_txt_path, &mbuf, &mlen, err)))
        goto fail;
    p->s = vbuf; p->n = vlen; p->i = 0; p->path = vocab_json_path;
    if ((st = load_vocab(t, p, err))) goto fail;
    for (int b = 0; b < 256; b++) {
        uint8_t c = (uint8_t)b;
        if ((t->byte_id[b] = vocab_find(t, &c, 1, hash_bytes(&c, 1))) < 0) {
            st = error_set(err, GPT2_ERR_FORMAT, "malformed %s: no token for the byte 0x%02X",
                           vocab_json_path, b);
            goto fail;
        }
    }
    p->s = mbuf; p->n = mlen; p->i = 0; p->path = merges_txt_path;
    if ((st = load_merges(t, p, err))) goto fail;
    /* TOKF_SELF: a pre-token equal to such a token encodes to it with no merging. */
    size_t maxlen = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) maxlen = GPT2_MAX(maxlen, t->off[id + 1] - t->off[id]);
    if (!(scratch = malloc((maxlen + 1) * sizeof(int32_t)))) {
        st = error_set(err, GPT2_ERR_NOMEM, "out of memory loading the tokenizer");
        goto fail;
    }
    int32_t *ids = (int32_t *)scratch;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        size_t n = t->off[id + 1] - t->off[id];
        if (n == 0) continue;
        size_t m = bpe(t, t->bytes + t->off[id], n, ids);
        if (m == SIZE_MAX) { st = error_set(err, GPT2_ERR_NOMEM, "out of memory"); goto fail; }
        if (m == 1 && ids[0] == id) t->flags[id] |= TOKF_SELF;
    }
    t->eos_id = vocab_find(t, (const uint8_t *)EOS_TEXT, sizeof EOS_TEXT - 1,
                           hash_bytes((const uint8_t *)EOS_TEXT, sizeof EOS_TEXT - 1));
    if (t->eos_id >= 0) t->flags[t->eos_id] = TOKF_SPECIAL;
    free(vbuf); free(mbuf); free(scratch); free(p);
    *out = t;
    return GPT2_OK;
fail:
    free(vbuf); free(mbuf); free(scratch); free(p);
    tokenizer_free(t);
    return st;
}

Status tokenizer_load_dir(Tokenizer **out, const char *dir, Error *err)
{
    *out = NULL;
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return error_set(err, GPT2_ERR_NOT_FOUND, "tokenizer directory not found: %s", dir);
    size_t n = strlen(dir) + 16;
    char *v = malloc(n), *m = malloc(n);
    if (!v || !m) { free(v); free(m); return error_set(err, GPT2_ERR_NOMEM, "out of memory"); }
    snprintf(v, n, "%s/vocab.json", dir);
    snprintf(m, n, "%s/merges.txt", dir);
    Status st = tokenizer_load(out, v, m, err);
    free(v); free(m);
    return st;
}
