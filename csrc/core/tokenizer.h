/* tokenizer.h — GPT-2 byte-level BPE tokenizer (Python-free).
 *
 * Loads Hugging Face vocab.json + merges.txt and encodes/decodes exactly like
 * OpenAI's encoder.py, HF GPT2Tokenizer(Fast) and tiktoken's "gpt2":
 *   pre-tokenize with 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *   (a hand-written scanner over UTF-8, classes from unicode_tables.h), then
 *   merge each pre-token's bytes by merge rank (lowest first, leftmost on ties).
 * A Tokenizer is immutable after tokenizer_load: every call may run
 * concurrently from several threads on one Tokenizer.
 */
#ifndef GPT2_TOKENIZER_H
#define GPT2_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef struct Tokenizer Tokenizer;           /* opaque, immutable once loaded */
typedef struct TokenizerCache TokenizerCache; /* per-thread word cache, see below */

/* Loads vocab.json and merges.txt. Missing file -> GPT2_ERR_NOT_FOUND; malformed
 * file -> GPT2_ERR_FORMAT naming the file and line; allocation -> GPT2_ERR_NOMEM. */
Status tokenizer_load(Tokenizer **out, const char *vocab_json_path, const char *merges_txt_path,
                      Error *err);
/* Same, from a directory holding vocab.json and merges.txt. */
Status tokenizer_load_dir(Tokenizer **out, const char *dir, Error *err);
void tokenizer_free(Tokenizer *tok); /* NULL-safe */

/* Encodes UTF-8 text (len bytes). allow_special: recognise "<|endoftext|>" as
 * the special token (like HF GPT2TokenizerFast); 0 treats it as plain text
 * (tiktoken's encode_ordinary). Writes a malloc'ed int32 array to *ids (the
 * caller frees it with free(); may be NULL when *n_ids == 0). Bytes that are not
 * valid UTF-8 are pre-tokenized as single "other" characters. */
Status tokenizer_encode(const Tokenizer *tok, const char *text, size_t len, int allow_special,
                        int32_t **ids, size_t *n_ids, Error *err);

/* A word cache (pre-token bytes -> ids) to reuse across many encode calls in one
 * thread (encode_batch). Not thread-safe: one per thread. */
TokenizerCache *tokenizer_cache_create(void);
void tokenizer_cache_free(TokenizerCache *cache); /* NULL-safe */
/* tokenizer_encode with a caller-owned cache (NULL: a temporary one). */
Status tokenizer_encode_cached(const Tokenizer *tok, TokenizerCache *cache, const char *text,
                               size_t len, int allow_special, int32_t **ids, size_t *n_ids,
                               Error *err);

/* Decodes ids to UTF-8; bytes that are not valid UTF-8 become U+FFFD exactly as
 * Python's bytes.decode("utf-8", "replace"). *text is malloc'ed and
 * NUL-terminated, its length in *len. skip_special drops <|endoftext|>.
 * An id outside [0, vocab_size) -> GPT2_ERR_VALUE. */
Status tokenizer_decode(const Tokenizer *tok, const int32_t *ids, size_t n, int skip_special,
                        char **text, size_t *len, Error *err);

int32_t tokenizer_vocab_size(const Tokenizer *tok);
int32_t tokenizer_eos_token_id(const Tokenizer *tok); /* id of <|endoftext|> or -1 */
int tokenizer_is_special(const Tokenizer *tok, int32_t id);
/* Raw bytes of one token (after byte-decoding); NULL and *len = 0 when out of range. */
const uint8_t *tokenizer_token_bytes(const Tokenizer *tok, int32_t id, size_t *len);

/* UTF-8 repair as Python's decode(errors="replace"): each maximal ill-formed
 * subpart becomes U+FFFD. out must hold 3*n bytes. Reads in[0..n); returns the
 * bytes written. final=0 stops before a trailing incomplete (but so far valid)
 * sequence, leaving it unconsumed; *consumed gets the input bytes used. */
size_t utf8_replace(const uint8_t *in, size_t n, int final, uint8_t *out, size_t *consumed);

#endif /* GPT2_TOKENIZER_H */
