/* detokenizer.c — incremental UTF-8-safe detokenization, see detokenizer.h.
 * At most 3 bytes are ever pending: utf8_replace(final=0) consumes everything
 * except a trailing prefix of a character that could still be completed. */
#include "detokenizer.h"

#include <stdlib.h>
#include <string.h>

void detokenizer_init(Detokenizer *d, const Tokenizer *tok, int skip_special)
{
    memset(d, 0, sizeof *d);
    d->tok = tok;
    d->skip_special = skip_special;
}

void detokenizer_free(Detokenizer *d)
{
    free(d->text);
    free(d->scratch);
    d->text = NULL; d->scratch = NULL;
    d->text_len = d->text_cap = d->scratch_cap = d->n_pending = 0;
}

static int reserve(void **buf, size_t *cap, size_t need)
{
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 256;
    while (nc < need) nc *= 2;
    void *nb = realloc(*buf, nc);
    if (!nb) return -1;
    *buf = nb; *cap = nc;
    return 0;
}

/* Runs pending + bytes through the UTF-8 repair and appends the result. */
static Status feed(Detokenizer *d, const uint8_t *bytes, size_t n, int final, size_t *new_bytes,
                   Error *err)
{
    size_t total = d->n_pending + n;
    if (reserve((void **)&d->scratch, &d->scratch_cap, total + 1) ||
        reserve((void **)&d->text, &d->text_cap, d->text_len + 3 * total + 1))
        return error_set(err, GPT2_ERR_NOMEM, "detokenizer: out of memory");
    memcpy(d->scratch, d->pending, d->n_pending);
    if (n) memcpy(d->scratch + d->n_pending, bytes, n);
    size_t used, out = utf8_replace(d->scratch, total, final,
                                    (uint8_t *)d->text + d->text_len, &used);
    d->n_pending = total - used;   /* < 4 by construction */
    memmove(d->pending, d->scratch + used, d->n_pending);
    d->text_len += out;
    d->text[d->text_len] = 0;
    if (new_bytes) *new_bytes = out;
    return GPT2_OK;
}

Status detokenizer_push(Detokenizer *d, int32_t id, size_t *new_bytes, Error *err)
{
    size_t n;
    const uint8_t *b = tokenizer_token_bytes(d->tok, id, &n);
    if (new_bytes) *new_bytes = 0;
    if (!b)
        return error_set(err, GPT2_ERR_VALUE, "token id %ld is out of range [0, %d)", (long)id,
                         tokenizer_vocab_size(d->tok));
    if (d->skip_special && tokenizer_is_special(d->tok, id)) n = 0;
    return feed(d, b, n, 0, new_bytes, err);
}

Status detokenizer_flush(Detokenizer *d, size_t *new_bytes, Error *err)
{
    return feed(d, NULL, 0, 1, new_bytes, err);
}
