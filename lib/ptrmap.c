#include "lib/ptrmap.h"

#include <stdint.h>
#include <stdlib.h>

struct ptrmap {
    const void **keys;
    void **vals;
    size_t cap; /* power of two */
    size_t n;
};

static size_t slot_of(const ptrmap *m, const void *key)
{
    uint64_t h = (uint64_t)(uintptr_t)key * 0x9E3779B97F4A7C15ULL;
    return (size_t)(h >> 20) & (m->cap - 1);
}

ptrmap *ptrmap_new(void)
{
    ptrmap *m = calloc(1, sizeof *m);
    if (!m) abort();
    m->cap = 64;
    m->keys = calloc(m->cap, sizeof *m->keys);
    m->vals = calloc(m->cap, sizeof *m->vals);
    if (!m->keys || !m->vals) abort();
    return m;
}

void ptrmap_free(ptrmap *m)
{
    if (!m) return;
    free(m->keys);
    free(m->vals);
    free(m);
}

static void grow(ptrmap *m)
{
    ptrmap old = *m;
    m->cap *= 2;
    m->n = 0;
    m->keys = calloc(m->cap, sizeof *m->keys);
    m->vals = calloc(m->cap, sizeof *m->vals);
    if (!m->keys || !m->vals) abort();
    for (size_t i = 0; i < old.cap; i++)
        if (old.keys[i]) ptrmap_put(m, old.keys[i], old.vals[i]);
    free(old.keys);
    free(old.vals);
}

void ptrmap_put(ptrmap *m, const void *key, void *value)
{
    if ((m->n + 1) * 4 > m->cap * 3) grow(m);
    size_t i = slot_of(m, key);
    while (m->keys[i] && m->keys[i] != key)
        i = (i + 1) & (m->cap - 1);
    if (!m->keys[i]) m->n++;
    m->keys[i] = key;
    m->vals[i] = value;
}

void *ptrmap_get(const ptrmap *m, const void *key)
{
    size_t i = slot_of(m, key);
    while (m->keys[i]) {
        if (m->keys[i] == key) return m->vals[i];
        i = (i + 1) & (m->cap - 1);
    }
    return NULL;
}

void ptrmap_del(ptrmap *m, const void *key)
{
    size_t i = slot_of(m, key);
    while (m->keys[i] && m->keys[i] != key)
        i = (i + 1) & (m->cap - 1);
    if (!m->keys[i]) return;
    m->keys[i] = NULL;
    m->n--;
    /* Backward shift: re-place the rest of the cluster. */
    for (size_t j = (i + 1) & (m->cap - 1); m->keys[j]; j = (j + 1) & (m->cap - 1)) {
        const void *k = m->keys[j];
        void *v = m->vals[j];
        m->keys[j] = NULL;
        m->n--;
        ptrmap_put(m, k, v);
    }
}

size_t ptrmap_size(const ptrmap *m)
{
    return m->n;
}
