/* attention.c — the attention backend registry and selector.
 * Priority: forced name (LLM(attention_backend=...)) > GPT2_ENGINE_ATTENTION_BACKEND >
 * auto-detection (CPU on the CPU; FLASH on compute capability >= 8.0 when it can
 * serve the head size and dtype; PAGED otherwise). A named backend that cannot
 * serve the model is an error, never a silent fallback. */
#include "attention.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const AttentionBackend *const registry[] = {
    &attention_backend_cpu,
#ifdef GPT2_ENGINE_HAVE_CUDA
    &attention_backend_paged,
    &attention_backend_flash,
#endif
};
#define NUM_BACKENDS (sizeof registry / sizeof registry[0])

Status attention_check_batch(const char *backend, const AttentionMetadata *md, int *empty,
                             Error *err)
{
    *empty = md->num_seqs <= 0 || md->num_tokens <= 0;
    if (!*empty && (md->num_decodes < 0 || md->num_decodes > md->num_seqs))
        return error_set(err, GPT2_ERR_INTERNAL, "%s: num_decodes %d of %d sequences", backend,
                         md->num_decodes, md->num_seqs);
    return GPT2_OK;
}

const char *attention_backend_names(void) { return "CPU, PAGED, FLASH"; }

static const AttentionBackend *find(const char *name)
{
    for (size_t i = 0; i < NUM_BACKENDS; i++) {
        const char *a = registry[i]->name, *b = name;
        while (*a && *b && toupper((unsigned char)*a) == toupper((unsigned char)*b)) a++, b++;
        if (!*a && !*b) return registry[i];
    }
    return NULL;
}

static int known_name(const char *name)
{
    static const char *all[] = {"CPU", "PAGED", "FLASH"};
    for (size_t i = 0; i < 3; i++) if (strcasecmp(name, all[i]) == 0) return 1;
    return 0;
}

static Status select_named(const AttentionBackend **out, const char *name, const char *origin,
                           const AttentionConfig *cfg, char *reason, size_t reason_len,
                           Error *err)
{
    const AttentionBackend *ab = find(name);
    if (!ab) {
        if (known_name(name))
            return error_set(err, GPT2_ERR_VALUE, "attention backend '%s' (%s) needs a CUDA "
                             "build of gpt2_engine; this build is CPU-only", name, origin);
        return error_set(err, GPT2_ERR_VALUE, "unknown attention backend '%s' (%s); valid "
                         "names: %s", name, origin, attention_backend_names());
    }
    Error why = {0};
    if (ab->check(cfg, &why) != GPT2_OK)
        return error_set(err, GPT2_ERR_VALUE, "attention backend %s (%s) cannot serve this "
                         "model: %s", ab->name, origin, why.msg);
    *out = ab;
    snprintf(reason, reason_len, "%s", origin);
    return GPT2_OK;
}

Status attention_select(const AttentionBackend **out, const char *forced,
                        const AttentionConfig *cfg, char *reason, size_t reason_len,
                        Error *err)
{
    *out = NULL;
    if (forced && *forced)
        return select_named(out, forced, "forced by attention_backend=", cfg, reason,
                            reason_len, err);
    const char *env = getenv("GPT2_ENGINE_ATTENTION_BACKEND");
    if (env && *env)
        return select_named(out, env, "from GPT2_ENGINE_ATTENTION_BACKEND", cfg, reason,
                            reason_len, err);
    if (strcmp(cfg->device, "cpu") == 0) {
        *out = &attention_backend_cpu;
        snprintf(reason, reason_len, "auto: device is the CPU");
        return GPT2_OK;
    }
#ifdef GPT2_ENGINE_HAVE_CUDA
    Error why = {0};
    if (cfg->compute_capability >= 80 && attention_backend_flash.check(cfg, &why) == GPT2_OK) {
        *out = &attention_backend_flash;
        snprintf(reason, reason_len, "auto: compute capability %d.%d, head size %d, %s",
                 cfg->compute_capability / 10, cfg->compute_capability % 10, cfg->head_size,
                 dtype_name(cfg->dtype));
        return GPT2_OK;
    }
    if (cfg->compute_capability < 80)
        snprintf(why.msg, sizeof why.msg, "compute capability %d.%d < 8.0",
                 cfg->compute_capability / 10, cfg->compute_capability % 10);
    Error why_paged = {0};
    if (attention_backend_paged.check(cfg, &why_paged) != GPT2_OK)
        return error_set(err, GPT2_ERR_VALUE, "no attention backend can serve this model: "
                         "FLASH: %s; PAGED: %s", why.msg, why_paged.msg);
    *out = &attention_backend_paged;
    snprintf(reason, reason_len, "auto: FLASH unavailable (%s)", why.msg);
    return GPT2_OK;
#else
    return error_set(err, GPT2_ERR_VALUE, "device '%s' has no attention backend in this "
                     "CPU-only build", cfg->device);
#endif
}
