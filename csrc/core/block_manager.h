/* block_manager.h — the paged KV cache's block allocator (host-side bookkeeping
 * only; the runner owns the memory). Fixed-size blocks of block_size token slots,
 * reference counts, and automatic prefix caching:
 *   - a FULL block is known by a 64-bit chain hash of (parent block's hash, its
 *     block_size tokens); a new sequence reuses cached blocks and skips their
 *     prefill (the tokens are stored too, so a hash collision is never a hit);
 *   - a block whose ref count drops to 0 stays in the cache, on an LRU list, and
 *     is evicted (loses its hash) only when a fresh block is needed and no
 *     never-cached free block is left;
 *   - num_free = every block no live sequence holds (cached-but-unreferenced
 *     blocks are free: they can be evicted).
 * A BlockTable is one sequence's logical -> physical block map. Forking a table
 * shares every block (ref counts); block_manager_cow gives a sequence its own
 * copy of a shared block before it writes into it.
 * Nothing here touches the device: callers copy KV for copy-on-write pairs.
 */
#ifndef GPT2_BLOCK_MANAGER_H
#define GPT2_BLOCK_MANAGER_H

#include <stdint.h>

#include "common.h"

typedef struct BlockTable {
    int32_t *ids;          /* (n) physical block ids */
    uint64_t *hashes;      /* (n) chain hash of block i, valid for i < num_hashed */
    int n, cap;
    int num_hashed;        /* leading full blocks whose hash is known */
} BlockTable;

typedef struct BlockManager {
    int num_blocks, block_size;
    int enable_caching;
    int32_t *ref;          /* (num_blocks) live references */
    uint8_t *cached;       /* (num_blocks) 1: holds a registered full block */
    uint64_t *hash;        /* (num_blocks) chain hash when cached */
    uint64_t *parent;      /* (num_blocks) parent hash when cached (collision check) */
    int32_t *tokens;       /* (num_blocks, block_size) tokens when cached */
    int32_t *free_stack;   /* (num_blocks) ref-0, never-cached blocks */
    int num_free_stack;
    int32_t *lru_prev, *lru_next; /* (num_blocks) ref-0 cached blocks, head = oldest */
    int lru_head, lru_tail, num_lru;
    int32_t *buckets;      /* (nbuckets) hash table heads, -1 = empty */
    int32_t *hnext;        /* (num_blocks) chain in a bucket */
    int nbuckets;          /* power of two */
    int64_t num_evictions;
} BlockManager;

Status block_manager_init(BlockManager *bm, int num_blocks, int block_size, int enable_caching,
                          Error *err);
void block_manager_free(BlockManager *bm);   /* safe on a zeroed or freed manager */

int block_manager_num_free(const BlockManager *bm);
/* Chain hash of one full block: parent hash (0 for the first block) + tokens. */
uint64_t block_hash(uint64_t parent, const int32_t *tokens, int n);

/* One fresh block (ref 1, not cached): a never-cached free block first, else the
 * least recently used cached free block (evicted). GPT2_ERR_NOMEM when none. */
Status block_manager_allocate(BlockManager *bm, int32_t *block, Error *err);
void block_manager_incref(BlockManager *bm, int32_t block);
/* Drops one reference; at 0 a cached block goes to the LRU tail, else the free stack. */
void block_manager_release(BlockManager *bm, int32_t block);

/* A cached block holding exactly (parent, tokens) with this hash, or -1. */
int32_t block_manager_lookup(const BlockManager *bm, uint64_t hash, uint64_t parent,
                             const int32_t *tokens);
/* Takes a reference on a block found by lookup (leaves the LRU if it was free). */
void block_manager_acquire(BlockManager *bm, int32_t block);
/* Records a full, computed block under its hash (no-op when caching is off, the
 * block is already cached, or another block already holds the hash). */
void block_manager_register(BlockManager *bm, int32_t block, uint64_t hash, uint64_t parent,
                            const int32_t *tokens);

/* --- sequence-level helpers over BlockTable --- */
Status block_table_reserve(BlockTable *t, int cap, Error *err);
void block_table_free(BlockTable *t);        /* frees the arrays only */
/* Appends fresh blocks until the table covers num_tokens slots. */
Status block_manager_grow(BlockManager *bm, BlockTable *t, int num_tokens, Error *err);
/* Blocks block_manager_grow would allocate for num_tokens slots. */
int block_manager_blocks_needed(const BlockManager *bm, const BlockTable *t, int num_tokens);
/* dst (empty) := src, sharing every block (ref counts +1). */
Status block_manager_fork(BlockManager *bm, BlockTable *dst, const BlockTable *src, Error *err);
/* Releases every block (last block first, so the LRU evicts tails first); n = 0. */
void block_manager_release_table(BlockManager *bm, BlockTable *t);
/* If block i of t is shared (ref > 1), replaces it with a fresh copy-target:
 * src and dst get the old/new physical ids (the caller copies the KV) and *copied
 * is 1; 0 when the block is already private. */
Status block_manager_cow(BlockManager *bm, BlockTable *t, int i, int32_t *src, int32_t *dst,
                         int *copied, Error *err);
/* Hashes and registers the full blocks of t covering tokens[0, num_computed). */
void block_manager_cache_full(BlockManager *bm, BlockTable *t, const int32_t *tokens,
                              int num_computed);
/* Prefix-cache hits for tokens[0, limit): appends the matching cached blocks to
 * the empty table t (taking references) and returns the number of hit blocks. */
int block_manager_match_prefix(BlockManager *bm, BlockTable *t, const int32_t *tokens, int limit);

#endif /* GPT2_BLOCK_MANAGER_H */
