/* detokenizer.h — incremental detokenizer for streaming output and stop strings
 * (Python-free). One per output sequence. It appends each token's bytes and
 * emits only complete characters: a multi-byte character split over several
 * tokens appears once, whole, when its last byte arrives. Ill-formed bytes
 * become U+FFFD exactly as Python's decode(errors="replace"), so after
 * detokenizer_flush, d->text equals tokenizer_decode of all pushed ids.
 */
#ifndef GPT2_DETOKENIZER_H
#define GPT2_DETOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "tokenizer.h"

typedef struct Detokenizer {
    const Tokenizer *tok;
    int skip_special;    /* drop <|endoftext|> like decode(skip_special=1) */
    char *text;          /* (text_len + 1) all complete text so far, NUL-terminated;
                          * NULL until the first push */
    size_t text_len, text_cap;
    uint8_t pending[4];  /* bytes of an incomplete (so far valid) character */
    size_t n_pending;
    uint8_t *scratch;    /* pending + one token's bytes */
    size_t scratch_cap;
} Detokenizer;

void detokenizer_init(Detokenizer *d, const Tokenizer *tok, int skip_special);
void detokenizer_free(Detokenizer *d); /* safe on a zeroed or freed Detokenizer */
/* Appends one token; *new_bytes = bytes appended to d->text (0 if the token
 * ended mid-character). Out-of-range id -> GPT2_ERR_VALUE, d unchanged. */
Status detokenizer_push(Detokenizer *d, int32_t id, size_t *new_bytes, Error *err);
/* End of sequence: pending bytes become one U+FFFD. *new_bytes may be NULL. */
Status detokenizer_flush(Detokenizer *d, size_t *new_bytes, Error *err);

#endif /* GPT2_DETOKENIZER_H */
