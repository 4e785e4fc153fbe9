/* block_manager.c — block allocator, ref counts, prefix-cache hash table and LRU
 * of evictable cached blocks (see block_manager.h). O(1) per block operation,
 * except hash-bucket walks. */
#include "block_manager.h"

#include <stdlib.h>
#include <string.h>

#include "sampling.h"   /* sampling_mix64 */

static void lru_remove(BlockManager *bm, int32_t b)
{
    int32_t p = bm->lru_prev[b], n = bm->lru_next[b];
    if (p >= 0) bm->lru_next[p] = n; else bm->lru_head = n;
    if (n >= 0) bm->lru_prev[n] = p; else bm->lru_tail = p;
    bm->lru_prev[b] = bm->lru_next[b] = -1;
    bm->num_lru--;
}

static void lru_push_tail(BlockManager *bm, int32_t b)
{
    bm->lru_prev[b] = bm->lru_tail;
    bm->lru_next[b] = -1;
    if (bm->lru_tail >= 0) bm->lru_next[bm->lru_tail] = b; else bm->lru_head = b;
    bm->lru_tail = b;
    bm->num_lru++;
}

static int bucket_of(const BlockManager *bm, uint64_t h) { return (int)(h & (uint64_t)(bm->nbuckets - 1)); }

static void hash_remove(BlockManager *bm, int32_t b)
{
    int32_t *link = &bm->buckets[bucket_of(bm, bm->hash[b])];
    while (*link >= 0 && *link != b) link = &bm->hnext[*link];
    if (*link == b) *link = bm->hnext[b];
    bm->hnext[b] = -1;
    bm->cached[b] = 0;
}

Status block_manager_init(BlockManager *bm, int num_blocks, int block_size, int enable_caching,
                          Error *err)
{
    memset(bm, 0, sizeof *bm);
    if (num_blocks < 1 || block_size < 1)
        return error_set(err, GPT2_ERR_VALUE, "block manager: num_blocks (%d) and block_size (%d) "
                         "must be >= 1", num_blocks, block_size);
    bm->num_blocks = num_blocks;
    bm->block_size = block_size;
    bm->enable_caching = enable_caching;
    bm->nbuckets = 16;
    while (bm->nbuckets < 2 * num_blocks) bm->nbuckets *= 2;
    size_t nb = (size_t)num_blocks;
    bm->ref = calloc(nb, sizeof *bm->ref);
    bm->cached = calloc(nb, 1);
    bm->hash = calloc(nb, sizeof *bm->hash);
    bm->parent = calloc(nb, sizeof *bm->parent);
    bm->tokens = calloc(nb * (size_t)block_size, sizeof *bm->tokens);
    bm->free_stack = malloc(nb * sizeof *bm->free_stack);
    bm->lru_prev = malloc(nb * sizeof *bm->lru_prev);
    bm->lru_next = malloc(nb * sizeof *bm->lru_next);
    bm->hnext = malloc(nb * sizeof *bm->hnext);
    bm->buckets = malloc((size_t)bm->nbuckets * sizeof *bm->buckets);
    if (!bm->ref || !bm->cached || !bm->hash || !bm->parent || !bm->tokens || !bm->free_stack ||
        !bm->lru_prev || !bm->lru_next || !bm->hnext || !bm->buckets) {
        block_manager_free(bm);
        return error_set(err, GPT2_ERR_NOMEM, "block manager: out of memory for %d blocks",
                         num_blocks);
    }
    /* stack top = block 0, so blocks are handed out in id order */
    for (int i = 0; i < num_blocks; i++) {
        bm->free_stack[i] = num_blocks - 1 - i;
        bm->lru_prev[i] = bm->lru_next[i] = bm->hnext[i] = -1;
    }
    bm->num_free_stack = num_blocks;
    for (int i = 0; i < bm->nbuckets; i++) bm->buckets[i] = -1;
    bm->lru_head = bm->lru_tail = -1;
    return GPT2_OK;
}

void block_manager_free(BlockManager *bm)
{
    if (!bm) return;
    free(bm->ref); free(bm->cached); free(bm->hash); free(bm->parent); free(bm->tokens);
    free(bm->free_stack); free(bm->lru_prev); free(bm->lru_next); free(bm->hnext);
    free(bm->buckets);
    memset(bm, 0, sizeof *bm);
}

int block_manager_num_free(const BlockManager *bm) { return bm->num_free_stack + bm->num_lru; }

uint64_t block_hash(uint64_t parent, const int32_t *tokens, int n)
{
    uint64_t h = sampling_mix64(parent ^ 0x5bd1e9955bd1e995ULL);
    for (int i = 0; i < n; i++) h = sampling_mix64(h ^ (uint64_t)(uint32_t)tokens[i]);
    return sampling_mix64(h ^ (uint64_t)n);
}

Status block_manager_allocate(BlockManager *bm, int32_t *block, Error *err)
{
    int32_t b;
    if (bm->num_free_stack > 0) {
        b = bm->free_stack[--bm->num_free_stack];
    } else if (bm->num_lru > 0) {
        b = bm->lru_head;
        lru_remove(bm, b);
        hash_remove(bm, b);
        bm->num_evictions++;
    } else {
        return error_set(err, GPT2_ERR_NOMEM, "block manager: no free KV block (%d in all)",
                         bm->num_blocks);
    }
    bm->ref[b] = 1;
    *block = b;
    return GPT2_OK;
}

void block_manager_incref(BlockManager *bm, int32_t block) { bm->ref[block]++; }

void block_manager_release(BlockManager *bm, int32_t block)
{
    if (bm->ref[block] <= 0) return;   /* tolerate a double release: never corrupt lists */
    if (--bm->ref[block] > 0) return;
    if (bm->cached[block]) lru_push_tail(bm, block);
    else bm->free_stack[bm->num_free_stack++] = block;
}

int32_t block_manager_lookup(const BlockManager *bm, uint64_t hash, uint64_t parent,
                             const int32_t *tokens)
{
    if (!bm->enable_caching) return -1;
    for (int32_t b = bm->buckets[bucket_of(bm, hash)]; b >= 0; b = bm->hnext[b])
        if (bm->hash[b] == hash && bm->parent[b] == parent &&
            memcmp(bm->tokens + (size_t)b * bm->block_size, tokens,
                   (size_t)bm->block_size * sizeof *tokens) == 0)
            return b;
    return -1;
}

void block_manager_acquire(BlockManager *bm, int32_t block)
{
    if (bm->ref[block] == 0) lru_remove(bm, block);
    bm->ref[block]++;
}

void block_manager_register(BlockManager *bm, int32_t block, uint64_t hash, uint64_t parent,
                            const int32_t *tokens)
{
    if (!bm->enable_caching || bm->cached[block]) return;
    if (block_manager_lookup(bm, hash, parent, tokens) >= 0) return;
    bm->cached[block] = 1;
    bm->hash[block] = hash;
    bm->parent[block] = parent;
    memcpy(bm->tokens + (size_t)block * bm->block_size, tokens,
           (size_t)bm->block_size * sizeof *tokens);
    int k = bucket_of(bm, hash);
    bm->hnext[block] = bm->buckets[k];
    bm->buckets[k] = block;
}

Status block_table_reserve(BlockTable *t, int cap, Error *err)
{
    if (cap <= t->cap) return GPT2_OK;
    int32_t *ids = realloc(t->ids, (size_t)cap * sizeof *ids);
    if (!ids) return error_set(err, GPT2_ERR_NOMEM, "block table: out of memory");
    t->ids = ids;
    uint64_t *h = realloc(t->hashes, (size_t)cap * sizeof *h);
    if (!h) return error_set(err, GPT2_ERR_NOMEM, "block table: out of memory");
    t->hashes = h;
    t->cap = cap;
    return GPT2_OK;
}

void block_table_free(BlockTable *t)
{
    free(t->ids);
    free(t->hashes);
    memset(t, 0, sizeof *t);
}

int block_manager_blocks_needed(const BlockManager *bm, const BlockTable *t, int num_tokens)
{
    int need = (num_tokens + bm->block_size - 1) / bm->block_size - t->n;
    return need > 0 ? need : 0;
}

Status block_manager_grow(BlockManager *bm, BlockTable *t, int num_tokens, Error *err)
{
    int need = block_manager_blocks_needed(bm, t, num_tokens);
    if (t->n + need > t->cap) {
        Status s = block_table_reserve(t, GPT2_MAX(t->n + need, 2 * t->cap), err);
        if (s) return s;
    }
    for (int i = 0; i < need; i++) {
        Status s = block_manager_allocate(bm, &t->ids[t->n], err);
        if (s) return s;
        t->n++;
    }
    return GPT2_OK;
}

Status block_manager_fork(BlockManager *bm, BlockTable *dst, const BlockTable *src, Error *err)
{
    Status s = block_table_reserve(dst, GPT2_MAX(src->cap, 1), err);
    if (s) return s;
    for (int i = 0; i < src->n; i++) {
        dst->ids[i] = src->ids[i];
        dst->hashes[i] = src->hashes[i];
        block_manager_incref(bm, src->ids[i]);
    }
    dst->n = src->n;
    dst->num_hashed = src->num_hashed;
    return GPT2_OK;
}

void block_manager_release_table(BlockManager *bm, BlockTable *t)
{
    for (int i = t->n - 1; i >= 0; i--) block_manager_release(bm, t->ids[i]);
    t->n = 0;
    t->num_hashed = 0;
}

Status block_manager_cow(BlockManager *bm, BlockTable *t, int i, int32_t *src, int32_t *dst,
                         int *copied, Error *err)
{
    *copied = 0;
    int32_t old = t->ids[i];
    if (bm->ref[old] <= 1) return GPT2_OK;
    int32_t fresh = -1;
    Status s = block_manager_allocate(bm, &fresh, err);
    if (s) return s;
    block_manager_release(bm, old);
    t->ids[i] = fresh;
    *src = old;
    *dst = fresh;
    *copied = 1;
    return GPT2_OK;
}

void block_manager_cache_full(BlockManager *bm, BlockTable *t, const int32_t *tokens,
                              int num_computed)
{
    int bs = bm->block_size, full = GPT2_MIN(num_computed / bs, t->n);
    for (int i = t->num_hashed; i < full; i++) {
        uint64_t parent = i > 0 ? t->hashes[i - 1] : 0;
        t->hashes[i] = block_hash(parent, tokens + (size_t)i * bs, bs);
        block_manager_register(bm, t->ids[i], t->hashes[i], parent, tokens + (size_t)i * bs);
    }
    if (full > t->num_hashed) t->num_hashed = full;
}

int block_manager_match_prefix(BlockManager *bm, BlockTable *t, const int32_t *tokens, int limit)
{
    if (!bm->enable_caching || t->n != 0) return 0;
    int bs = bm->block_size, nfull = GPT2_MIN(limit / bs, t->cap), hits = 0;
    uint64_t parent = 0;
    for (int i = 0; i < nfull; i++) {
        uint64_t h = block_hash(parent, tokens + (size_t)i * bs, bs);
        int32_t b = block_manager_lookup(bm, h, parent, tokens + (size_t)i * bs);
        if (b < 0) break;
        block_manager_acquire(bm, b);
        t->ids[i] = b;
        t->hashes[i] = h;
        t->n = t->num_hashed = ++hits;
        parent = h;
    }
    return hits;
}
