/* json.h — a small, strict JSON reader for the loaders (config.json, safetensors
 * headers, model.safetensors.index.json).
 *
 * json_parse builds a read-only DOM over a copy-free parse of the input: every
 * value is a JsonValue node; arrays and objects keep their children as a linked
 * list in document order (object members carry their key). Strings are decoded
 * (escapes, \uXXXX, surrogate pairs -> UTF-8) into one buffer owned by the
 * document. Nesting is limited to JSON_MAX_DEPTH. Errors are GPT2_ERR_FORMAT with
 * the byte offset of the problem. This is not a general JSON library: no
 * writer, no mutation.
 */
#ifndef GPT2_JSON_H
#define GPT2_JSON_H

#include "common.h"

#include <stdint.h>

#define JSON_MAX_DEPTH 64

typedef enum JsonType {
    JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT
} JsonType;

typedef struct JsonValue {
    JsonType type;
    int boolean;                 /* JSON_BOOL */
    int is_int;                  /* JSON_NUMBER: the literal is an integer that fits int64 */
    int64_t integer;             /* JSON_NUMBER with is_int */
    double number;               /* JSON_NUMBER (always set) */
    const char *str;             /* JSON_STRING: decoded, NUL-terminated */
    size_t str_len;              /* bytes, without the NUL (may contain \u0000) */
    const char *key;             /* member of an object: its decoded key, else NULL */
    size_t key_len;
    size_t count;                /* JSON_ARRAY / JSON_OBJECT: number of children */
    struct JsonValue *first;     /* first child */
    struct JsonValue *next;      /* next sibling */
} JsonValue;

typedef struct JsonDoc {
    JsonValue *root;
    char *strings;               /* decoded string storage */
    struct JsonBlock *blocks;    /* node arena */
} JsonDoc;

/* Parses text[0..len) (need not be NUL-terminated). Trailing whitespace is
 * allowed, anything else after the value is an error. On failure doc is left
 * empty (json_doc_free is still safe). */
Status json_parse(JsonDoc *doc, const char *text, size_t len, Error *err);
void json_doc_free(JsonDoc *doc);   /* safe on a zeroed or freed doc, safe twice */

/* Member `key` of an object, or NULL (also when obj is NULL or not an object).
 * With duplicate keys the last one wins, as in Python's json. */
const JsonValue *json_get(const JsonValue *obj, const char *key);
const char *json_type_name(JsonType t);

#endif /* GPT2_JSON_H */
