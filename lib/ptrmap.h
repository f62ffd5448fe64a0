/* A small hash map from pointers to pointers (open addressing, linear
 * probing, backward-shift deletion), for associating our state with
 * library objects that have no user-data slot. */
#ifndef BRIDLE_PTRMAP_H
#define BRIDLE_PTRMAP_H

#include <stddef.h>

typedef struct ptrmap ptrmap;

ptrmap *ptrmap_new(void);
void ptrmap_free(ptrmap *m);
/* Inserts or replaces. */
void ptrmap_put(ptrmap *m, const void *key, void *value);
/* The value for key, or NULL. */
void *ptrmap_get(const ptrmap *m, const void *key);
void ptrmap_del(ptrmap *m, const void *key);
size_t ptrmap_size(const ptrmap *m);

#endif
