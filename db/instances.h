/* This gateway among those sharing a database: bridle_instances (migration
 * 0004). Every heartbeat_ms it upserts its own row (instance id, seen_at =
 * now()) on its own non-blocking connection and reads back how many
 * instances were seen within the last 3 heartbeats (itself included): N,
 * by which rate limits are shared (router/ratelimit.h). Both times are the
 * database's clock, so the gateways' clocks need not agree. While the
 * database is away the last N is kept. */
#ifndef BRIDLE_INSTANCES_H
#define BRIDLE_INSTANCES_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct instances instances;

/* Called with N after every heartbeat answered. */
typedef void (*instances_count_fn)(void *ctx, int n);

/* Starts heartbeating at once. NULL on OOM. conninfo is never logged. */
instances *instances_new(struct event_base *base, const char *conninfo, const char *instance_id,
                         int64_t heartbeat_ms, instances_count_fn on_count, void *ctx);
/* Stops; the row is left to age out (other instances stop counting it
 * after 3 heartbeats). */
void instances_free(instances *in);

/* The last N read (1 until the first answer). */
int instances_count(const instances *in);
/* Heartbeats answered, and whether the last one was. */
int64_t instances_beats(const instances *in);
bool instances_ok(const instances *in);

#endif
