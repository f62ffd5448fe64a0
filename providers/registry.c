/* The registry: every dialect bridle speaks. Adding a provider is one file
 * defining NAME_ops and one line in `all_providers`. */
#include "providers/provider.h"

#include <string.h>

extern const provider_ops openai_ops;
extern const provider_ops anthropic_ops;
extern const provider_ops gemini_ops;
extern const provider_ops ollama_ops;

static const provider_ops *const all_providers[] = {
    &openai_ops, &anthropic_ops, &gemini_ops, &ollama_ops, NULL,
};

const provider_ops *provider_find(const char *kind)
{
    if (!kind) return NULL;
    for (const provider_ops *const *p = all_providers; *p; p++)
        if (strcmp((*p)->kind, kind) == 0) return *p;
    return NULL;
}

const provider_ops *const *provider_all(void)
{
    return all_providers;
}
