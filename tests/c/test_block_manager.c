/* test_block_manager.c — plain C unit tests of block_manager.c: allocation and
 * free, ref counts, prefix hashes (chain, collision check), LRU eviction of
 * cached free blocks, fork + copy-on-write. Prints "N passed, M failed". */
#include <stdio.h>
#include <string.h>

#include "block_manager.h"

static int passed, failed;
#define CHECK(cond) do { if (cond) passed++; else { failed++; \
    fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); } } while (0)

static void test_alloc_free(void)
{
    BlockManager bm;
    Error err = {0};
    CHECK(block_manager_init(&bm, 5, 16, 1, &err) == GPT2_OK);
    CHECK(block_manager_num_free(&bm) == 5);
    int32_t b[5];
    for (int i = 0; i < 5; i++) CHECK(block_manager_allocate(&bm, &b[i], &err) == GPT2_OK);
    int distinct = 1;
    for (int i = 0; i < 5; i++)
        for (int j = i + 1; j < 5; j++) distinct &= b[i] != b[j];
    CHECK(distinct);
    CHECK(block_manager_num_free(&bm) == 0);
    int32_t x;
    CHECK(block_manager_allocate(&bm, &x, &err) == GPT2_ERR_NOMEM);
    block_manager_incref(&bm, b[2]);
    block_manager_release(&bm, b[2]);
    CHECK(block_manager_num_free(&bm) == 0);     /* still one reference */
    block_manager_release(&bm, b[2]);
    CHECK(block_manager_num_free(&bm) == 1);
    block_manager_release(&bm, b[2]);            /* double release tolerated */
    CHECK(block_manager_num_free(&bm) == 1);
    for (int i = 0; i < 5; i++) if (i != 2) block_manager_release(&bm, b[i]);
    CHECK(block_manager_num_free(&bm) == 5);
    block_manager_free(&bm);
    block_manager_free(&bm);                     /* twice is safe */
    CHECK(block_manager_init(&bm, 0, 16, 1, &err) == GPT2_ERR_VALUE);
}

static void test_hash_chain(void)
{
    int32_t a[4] = {1, 2, 3, 4}, b[4] = {1, 2, 3, 5};
    CHECK(block_hash(0, a, 4) != block_hash(0, b, 4));
    CHECK(block_hash(0, a, 4) == block_hash(0, a, 4));
    CHECK(block_hash(1, a, 4) != block_hash(2, a, 4));   /* parent matters */
}

/* Prefix caching: blocks of a finished sequence are hit by a new sequence with the
 * same prefix, only as far as the tokens agree; hits are taken off the free LRU. */
static void test_prefix_cache(void)
{
    BlockManager bm;
    Error err = {0};
    const int bs = 4;
    CHECK(block_manager_init(&bm, 8, bs, 1, &err) == GPT2_OK);
    int32_t toks[14];
    for (int i = 0; i < 14; i++) toks[i] = 100 + i;
    BlockTable t = {0};
    CHECK(block_table_reserve(&t, 8, &err) == GPT2_OK);
    CHECK(block_manager_grow(&bm, &t, 14, &err) == GPT2_OK);
    CHECK(t.n == 4);
    block_manager_cache_full(&bm, &t, toks, 14);        /* 3 full blocks */
    CHECK(t.num_hashed == 3);
    int32_t first3[3] = {t.ids[0], t.ids[1], t.ids[2]};
    block_manager_release_table(&bm, &t);
    CHECK(block_manager_num_free(&bm) == 8);            /* cached blocks count as free */
    CHECK(bm.num_lru == 3);

    BlockTable u = {0};
    CHECK(block_table_reserve(&u, 8, &err) == GPT2_OK);
    int32_t other[14];
    memcpy(other, toks, sizeof other);
    other[9] = 7;                                        /* differs in block 2 */
    int hits = block_manager_match_prefix(&bm, &u, other, 13);
    CHECK(hits == 2);
    CHECK(u.ids[0] == first3[0] && u.ids[1] == first3[1]);
    CHECK(bm.ref[first3[0]] == 1 && bm.num_lru == 1);
    CHECK(block_manager_num_free(&bm) == 6);
    block_manager_release_table(&bm, &u);
    /* limit: only blocks entirely inside [0, limit) are hit */
    CHECK(block_manager_match_prefix(&bm, &u, toks, 11) == 2);
    block_manager_release_table(&bm, &u);
    CHECK(block_manager_match_prefix(&bm, &u, toks, 12) == 3);
    block_manager_release_table(&bm, &u);
    /* a different first block never matches (chain) */
    int32_t shifted[14];
    for (int i = 0; i < 14; i++) shifted[i] = toks[(i + 4) % 14];
    CHECK(block_manager_match_prefix(&bm, &u, shifted, 13) == 0);
    block_table_free(&t);
    block_table_free(&u);
    block_manager_free(&bm);

    /* caching disabled: nothing is ever hit */
    CHECK(block_manager_init(&bm, 4, bs, 0, &err) == GPT2_OK);
    BlockTable v = {0};
    CHECK(block_table_reserve(&v, 4, &err) == GPT2_OK);
    CHECK(block_manager_grow(&bm, &v, 8, &err) == GPT2_OK);
    block_manager_cache_full(&bm, &v, toks, 8);
    block_manager_release_table(&bm, &v);
    CHECK(block_manager_match_prefix(&bm, &v, toks, 8) == 0);
    block_table_free(&v);
    block_manager_free(&bm);
}

/* LRU: never-cached free blocks are used first; then the least recently freed
 * cached block is evicted (and can no longer be hit). */
static void test_lru(void)
{
    BlockManager bm;
    Error err = {0};
    const int bs = 2;
    CHECK(block_manager_init(&bm, 4, bs, 1, &err) == GPT2_OK);
    int32_t seqA[2] = {1, 2}, seqB[2] = {3, 4}, seqC[2] = {5, 6};
    BlockTable a = {0}, b = {0}, c = {0};
    block_table_reserve(&a, 2, &err); block_table_reserve(&b, 2, &err);
    block_table_reserve(&c, 2, &err);
    block_manager_grow(&bm, &a, 2, &err); block_manager_cache_full(&bm, &a, seqA, 2);
    block_manager_grow(&bm, &b, 2, &err); block_manager_cache_full(&bm, &b, seqB, 2);
    block_manager_grow(&bm, &c, 2, &err); block_manager_cache_full(&bm, &c, seqC, 2);
    block_manager_release_table(&bm, &b);   /* LRU order: B, A, C */
    block_manager_release_table(&bm, &a);
    block_manager_release_table(&bm, &c);
    CHECK(block_manager_num_free(&bm) == 4 && bm.num_lru == 3);
    int32_t x, y;
    CHECK(block_manager_allocate(&bm, &x, &err) == GPT2_OK);   /* the never-cached one */
    CHECK(bm.num_lru == 3 && bm.num_evictions == 0);
    CHECK(block_manager_allocate(&bm, &y, &err) == GPT2_OK);   /* evicts B */
    CHECK(bm.num_evictions == 1);
    CHECK(block_manager_match_prefix(&bm, &b, seqB, 2) == 1 - 1);
    CHECK(block_manager_match_prefix(&bm, &a, seqA, 2) == 1);
    CHECK(block_manager_match_prefix(&bm, &c, seqC, 2) == 1);
    /* a hit block is off the LRU: the next allocation fails rather than evict it */
    int32_t z;
    CHECK(block_manager_allocate(&bm, &z, &err) == GPT2_ERR_NOMEM);
    /* re-registering an already cached hash keeps the first block */
    block_manager_release(&bm, x);
    BlockTable d = {0};
    block_table_reserve(&d, 1, &err);
    block_manager_grow(&bm, &d, 2, &err);
    block_manager_cache_full(&bm, &d, seqA, 2);
    CHECK(!bm.cached[d.ids[0]]);
    block_manager_release_table(&bm, &a); block_manager_release_table(&bm, &c);
    block_manager_release_table(&bm, &d); block_manager_release(&bm, y);
    CHECK(block_manager_num_free(&bm) == 4);
    block_table_free(&a); block_table_free(&b); block_table_free(&c); block_table_free(&d);
    block_manager_free(&bm);
}

/* Fork shares every block; the first writer into a shared partial block gets a
 * private copy, the last holder keeps the original. */
static void test_fork_cow(void)
{
    BlockManager bm;
    Error err = {0};
    CHECK(block_manager_init(&bm, 10, 4, 1, &err) == GPT2_OK);
    BlockTable p = {0}, q = {0}, r = {0};
    block_table_reserve(&p, 4, &err);
    CHECK(block_manager_grow(&bm, &p, 6, &err) == GPT2_OK);   /* 1 full + 1 partial */
    CHECK(block_manager_fork(&bm, &q, &p, &err) == GPT2_OK);
    CHECK(block_manager_fork(&bm, &r, &p, &err) == GPT2_OK);
    CHECK(q.n == 2 && q.ids[1] == p.ids[1] && bm.ref[p.ids[1]] == 3);
    CHECK(block_manager_num_free(&bm) == 8);
    int32_t src = -1, dst = -1, old = p.ids[1];
    int copied = 0;
    CHECK(block_manager_cow(&bm, &q, 1, &src, &dst, &copied, &err) == GPT2_OK);
    CHECK(copied && src == old && dst == q.ids[1] && dst != old && bm.ref[old] == 2);
    CHECK(block_manager_cow(&bm, &r, 1, &src, &dst, &copied, &err) == GPT2_OK);
    CHECK(copied && bm.ref[old] == 1);
    CHECK(block_manager_cow(&bm, &p, 1, &src, &dst, &copied, &err) == GPT2_OK);
    CHECK(!copied && p.ids[1] == old);                      /* last holder writes in place */
    CHECK(bm.ref[p.ids[0]] == 3);                           /* the full block stays shared */
    CHECK(block_manager_num_free(&bm) == 6);
    CHECK(block_manager_blocks_needed(&bm, &p, 9) == 1);
    CHECK(block_manager_blocks_needed(&bm, &p, 8) == 0);
    block_manager_release_table(&bm, &p);
    block_manager_release_table(&bm, &q);
    block_manager_release_table(&bm, &r);
    CHECK(block_manager_num_free(&bm) == 10);
    for (int i = 0; i < 10; i++) CHECK(bm.ref[i] == 0);
    block_table_free(&p); block_table_free(&q); block_table_free(&r);
    block_manager_free(&bm);
}

int main(void)
{
    test_alloc_free();
    test_hash_chain();
    test_prefix_cache();
    test_lru();
    test_fork_cow();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
