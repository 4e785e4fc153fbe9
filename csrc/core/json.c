/* json.c — the strict JSON reader declared in json.h: recursive descent over a
 * byte buffer, nodes from a block arena, strings decoded into one buffer no
 * larger than the input (a decoded string plus its NUL never exceeds its quoted
 * source, so len + 1 bytes always suffice). */
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_BLOCK_NODES 256

typedef struct JsonBlock {
    struct JsonBlock *next;
    size_t used;
    JsonValue nodes[JSON_BLOCK_NODES];
} JsonBlock;

typedef struct Parser {
    const char *s;
    size_t len, pos;
    JsonDoc *doc;
    char *out;          /* next free byte in doc->strings */
    Error *err;
} Parser;

const char *json_type_name(JsonType t)
{
    switch (t) {
    case JSON_NULL: return "null";
    case JSON_BOOL: return "bool";
    case JSON_NUMBER: return "number";
    case JSON_STRING: return "string";
    case JSON_ARRAY: return "array";
    case JSON_OBJECT: return "object";
    }
    return "?";
}

static Status fail(Parser *p, const char *what)
{
    if (p->pos >= p->len)
        return error_set(p->err, GPT2_ERR_FORMAT, "invalid JSON at byte %zu (end of input): %s",
                         p->pos, what);
    unsigned char c = (unsigned char)p->s[p->pos];
    if (c >= 0x20 && c < 0x7f)
        return error_set(p->err, GPT2_ERR_FORMAT, "invalid JSON at byte %zu (near '%c'): %s",
                         p->pos, c, what);
    return error_set(p->err, GPT2_ERR_FORMAT, "invalid JSON at byte %zu (byte 0x%02x): %s",
                     p->pos, c, what);
}

static JsonValue *new_node(Parser *p, JsonType type)
{
    JsonBlock *b = p->doc->blocks;
    if (!b || b->used == JSON_BLOCK_NODES) {
        b = malloc(sizeof *b);
        if (!b) {
            error_set(p->err, GPT2_ERR_NOMEM, "out of memory parsing JSON");
            return NULL;
        }
        b->next = p->doc->blocks;
        b->used = 0;
        p->doc->blocks = b;
    }
    JsonValue *v = &b->nodes[b->used++];
    memset(v, 0, sizeof *v);
    v->type = type;
    return v;
}

static void skip_ws(Parser *p)
{
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static int hex4(Parser *p, unsigned *out)
{
    if (p->len - p->pos < 4) return 0;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->s[p->pos + i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    p->pos += 4;
    *out = v;
    return 1;
}

static void put_utf8(Parser *p, unsigned cp)
{
    if (cp < 0x80) *p->out++ = (char)cp;
    else if (cp < 0x800) {
        *p->out++ = (char)(0xc0 | (cp >> 6));
        *p->out++ = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *p->out++ = (char)(0xe0 | (cp >> 12));
        *p->out++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *p->out++ = (char)(0x80 | (cp & 0x3f));
    } else {
        *p->out++ = (char)(0xf0 | (cp >> 18));
        *p->out++ = (char)(0x80 | ((cp >> 12) & 0x3f));
        *p->out++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *p->out++ = (char)(0x80 | (cp & 0x3f));
    }
}

/* At the opening quote. Decodes into p->out; returns the start and the length. */
static Status parse_string(Parser *p, const char **str, size_t *n)
{
    p->pos++;                                   /* opening quote */
    char *start = p->out;
    for (;;) {
        if (p->pos >= p->len) return fail(p, "unterminated string");
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == '"') { p->pos++; break; }
        if (c < 0x20) return fail(p, "control character in string");
        if (c != '\\') { *p->out++ = (char)c; p->pos++; continue; }
        p->pos++;
        if (p->pos >= p->len) return fail(p, "unterminated escape");
        char e = p->s[p->pos++];
        switch (e) {
        case '"': *p->out++ = '"'; break;
        case '\\': *p->out++ = '\\'; break;
        case '/': *p->out++ = '/'; break;
        case 'b': *p->out++ = '\b'; break;
        case 'f': *p->out++ = '\f'; break;
        case 'n': *p->out++ = '\n'; break;
        case 'r': *p->out++ = '\r'; break;
        case 't': *p->out++ = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (!hex4(p, &cp)) return fail(p, "bad \\u escape (need 4 hex digits)");
            if (cp >= 0xdc00 && cp <= 0xdfff) return fail(p, "lone low surrogate in \\u escape");
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (p->len - p->pos < 6 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u')
                    return fail(p, "high surrogate not followed by a \\u low surrogate");
                p->pos += 2;
                if (!hex4(p, &lo) || lo < 0xdc00 || lo > 0xdfff)
                    return fail(p, "high surrogate not followed by a low surrogate");
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            put_utf8(p, cp);
            break;
        }
        default:
            p->pos--;
            return fail(p, "unknown escape in string");
        }
    }
    *n = (size_t)(p->out - start);
    *p->out++ = '\0';
    *str = start;
    return GPT2_OK;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static Status parse_number(Parser *p, JsonValue *v)
{
    size_t start = p->pos;
    int neg = 0, integral = 1, overflow = 0;
    uint64_t mag = 0;
    if (p->s[p->pos] == '-') { neg = 1; p->pos++; }
    if (p->pos >= p->len || !is_digit(p->s[p->pos])) return fail(p, "expected a digit");
    if (p->s[p->pos] == '0') {
        p->pos++;
        if (p->pos < p->len && is_digit(p->s[p->pos])) return fail(p, "leading zero in number");
    } else {
        while (p->pos < p->len && is_digit(p->s[p->pos])) {
            unsigned d = (unsigned)(p->s[p->pos++] - '0');
            if (mag > (UINT64_MAX - d) / 10) overflow = 1;
            else mag = mag * 10 + d;
        }
    }
    if (p->pos < p->len && p->s[p->pos] == '.') {
        integral = 0;
        p->pos++;
        if (p->pos >= p->len || !is_digit(p->s[p->pos])) return fail(p, "expected a digit after '.'");
        while (p->pos < p->len && is_digit(p->s[p->pos])) p->pos++;
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        integral = 0;
        p->pos++;
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
        if (p->pos >= p->len || !is_digit(p->s[p->pos])) return fail(p, "expected a digit in exponent");
        while (p->pos < p->len && is_digit(p->s[p->pos])) p->pos++;
    }
    size_t n = p->pos - start;
    char buf[512];
    if (n >= sizeof buf) { p->pos = start; return fail(p, "number literal too long"); }
    memcpy(buf, p->s + start, n);
    buf[n] = '\0';
    v->number = strtod(buf, NULL);
    if (integral && !overflow) {
        if (!neg && mag <= (uint64_t)INT64_MAX) { v->is_int = 1; v->integer = (int64_t)mag; }
        else if (neg && mag <= (uint64_t)INT64_MAX + 1) {
            v->is_int = 1;
            v->integer = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
        }
    }
    return GPT2_OK;
}

static int match_word(Parser *p, const char *w)
{
    size_t n = strlen(w);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, w, n) != 0) return 0;
    p->pos += n;
    return 1;
}

static Status parse_value(Parser *p, JsonValue **out, int depth);

static Status parse_container(Parser *p, JsonValue *v, int depth)
{
    int is_obj = v->type == JSON_OBJECT;
    char close = is_obj ? '}' : ']';
    JsonValue **tail = &v->first;
    p->pos++;                                   /* '{' or '[' */
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) { p->pos++; return GPT2_OK; }
    for (;;) {
        const char *key = NULL;
        size_t key_len = 0;
        Status st;
        skip_ws(p);
        if (is_obj) {
            if (p->pos >= p->len || p->s[p->pos] != '"') return fail(p, "expected a string key");
            if ((st = parse_string(p, &key, &key_len)) != GPT2_OK) return st;
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') return fail(p, "expected ':' after key");
            p->pos++;
        }
        JsonValue *child;
        if ((st = parse_value(p, &child, depth + 1)) != GPT2_OK) return st;
        child->key = key;
        child->key_len = key_len;
        *tail = child;
        tail = &child->next;
        v->count++;
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') { p->pos++; continue; }
        if (p->pos < p->len && p->s[p->pos] == close) { p->pos++; return GPT2_OK; }
        return fail(p, is_obj ? "expected ',' or '}' in object" : "expected ',' or ']' in array");
    }
}

static Status parse_value(Parser *p, JsonValue **out, int depth)
{
    skip_ws(p);
    if (p->pos >= p->len) return fail(p, "expected a value");
    if (depth >= JSON_MAX_DEPTH) return fail(p, "nesting deeper than the limit of 64");
    char c = p->s[p->pos];
    JsonValue *v;
    Status st = GPT2_OK;
    switch (c) {
    case '{': case '[':
        if (!(v = new_node(p, c == '{' ? JSON_OBJECT : JSON_ARRAY))) return GPT2_ERR_NOMEM;
        st = parse_container(p, v, depth);
        break;
    case '"':
        if (!(v = new_node(p, JSON_STRING))) return GPT2_ERR_NOMEM;
        st = parse_string(p, &v->str, &v->str_len);
        break;
    case 't': case 'f': case 'n':
        if (!(v = new_node(p, JSON_NULL))) return GPT2_ERR_NOMEM;
        if (match_word(p, "true")) { v->type = JSON_BOOL; v->boolean = 1; }
        else if (match_word(p, "false")) { v->type = JSON_BOOL; v->boolean = 0; }
        else if (!match_word(p, "null")) return fail(p, "unexpected literal");
        break;
    default:
        if (c != '-' && !is_digit(c)) return fail(p, "unexpected character");
        if (!(v = new_node(p, JSON_NUMBER))) return GPT2_ERR_NOMEM;
        st = parse_number(p, v);
        break;
    }
    *out = v;
    return st;
}

Status json_parse(JsonDoc *doc, const char *text, size_t len, Error *err)
{
    memset(doc, 0, sizeof *doc);
    if (len > SIZE_MAX - 1) return error_set(err, GPT2_ERR_FORMAT, "JSON input too large");
    doc->strings = malloc(len + 1);
    if (!doc->strings) return error_set(err, GPT2_ERR_NOMEM, "out of memory parsing JSON (%zu bytes)", len);
    Parser p = {.s = text, .len = len, .pos = 0, .doc = doc, .out = doc->strings, .err = err};
    JsonValue *root = NULL;
    Status st = parse_value(&p, &root, 0);
    if (st == GPT2_OK) {
        skip_ws(&p);
        if (p.pos != p.len) st = fail(&p, "trailing characters after the JSON value");
    }
    if (st != GPT2_OK) { json_doc_free(doc); return st; }
    doc->root = root;
    return GPT2_OK;
}

void json_doc_free(JsonDoc *doc)
{
    if (!doc) return;
    while (doc->blocks) {
        JsonBlock *next = doc->blocks->next;
        free(doc->blocks);
        doc->blocks = next;
    }
    free(doc->strings);
    doc->strings = NULL;
    doc->root = NULL;
}

const JsonValue *json_get(const JsonValue *obj, const char *key)
{
    if (!obj || obj->type != JSON_OBJECT) return NULL;
    size_t n = strlen(key);
    const JsonValue *hit = NULL;
    for (const JsonValue *m = obj->first; m; m = m->next)
        if (m->key_len == n && memcmp(m->key, key, n) == 0) hit = m;
    return hit;
}
