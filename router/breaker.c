/* Circuit breaker: the state machine of router/breaker.h. */
#include "router/breaker.h"

#include "lib/util.h"

#include <assert.h>
#include <stdlib.h>

typedef struct breaker_bucket {
    int64_t idx; /* floor(t / bucket_ms) of the calls held; stale when outside the window */
    int calls;
    int failures;
} breaker_bucket;

struct breaker {
    breaker_config cfg;
    int64_t bucket_ms;
    /* OPEN stays stored as OPEN after its period ends; breaker_allow() is
     * where it becomes HALF_OPEN, everything else reads it through
     * breaker_effective_state(). */
    breaker_state state;
    uint64_t period; /* +1 on every trip and every close: tickets carry it */
    int consecutive; /* failures in a row (CLOSED) */
    breaker_bucket buckets[BREAKER_MAX_BUCKETS];
    int consecutive_opens;
    uint64_t opens_total;
    int64_t open_until;   /* end of the open period (OPEN) */
    int probes;           /* probes in flight (HALF_OPEN) */
    int64_t closed_since; /* when the last HALF_OPEN -> CLOSED happened */
    int64_t paused_until; /* INT64_MIN when never paused */
};

breaker_config breaker_config_default(void)
{
    return (breaker_config){
        .consecutive_failures = 5,
        .window_ms = 10000,
        .window_buckets = 10,
        .window_min_calls = 20,
        .failure_rate_pct = 50,
        .open_base_ms = 5000,
        .open_max_ms = 60000,
        .jitter_pct = 20,
        .half_open_probes = 1,
        .stable_ms = 60000,
    };
}

static bool breaker_config_valid(const breaker_config *c)
{
    return c->consecutive_failures >= 1 && c->window_buckets >= 1 &&
           c->window_buckets <= BREAKER_MAX_BUCKETS && c->window_ms >= c->window_buckets &&
           c->window_min_calls >= 1 && c->failure_rate_pct >= 1 && c->failure_rate_pct <= 100 &&
           c->open_base_ms >= 1 && c->open_max_ms >= c->open_base_ms && c->jitter_pct >= 0 &&
           c->jitter_pct <= 100 && c->half_open_probes >= 1 && c->stable_ms >= 0;
}

breaker *breaker_new(const breaker_config *cfg)
{
    breaker_config c = cfg ? *cfg : breaker_config_default();
    if (!breaker_config_valid(&c)) return NULL;
    breaker *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->cfg = c;
    b->bucket_ms = c.window_ms / c.window_buckets;
    b->state = BREAKER_CLOSED;
    b->paused_until = INT64_MIN;
    for (int i = 0; i < BREAKER_MAX_BUCKETS; i++)
        b->buckets[i].idx = INT64_MIN;
    return b;
}

bool breaker_set_config(breaker *b, const breaker_config *cfg)
{
    breaker_config c = b->cfg;
    c.consecutive_failures = cfg->consecutive_failures;
    c.open_base_ms = cfg->open_base_ms;
    c.open_max_ms = cfg->open_max_ms;
    if (!breaker_config_valid(&c)) return false;
    b->cfg = c;
    return true;
}

void breaker_free(breaker *b)
{
    free(b);
}

/* ------------------------------------------------------------ window */

static bool breaker_bucket_live(const breaker *b, const breaker_bucket *k, int64_t cur)
{
    /* cur - idx < n, written so that idx = INT64_MIN cannot overflow */
    return k->idx != INT64_MIN && k->idx <= cur && cur - k->idx < b->cfg.window_buckets;
}

static void breaker_window_add(breaker *b, int64_t now_ms, bool failure)
{
    int64_t cur = util_floor_div(now_ms, b->bucket_ms);
    int64_t slot = cur % b->cfg.window_buckets;
    if (slot < 0) slot += b->cfg.window_buckets;
    breaker_bucket *k = &b->buckets[slot];
    if (k->idx != cur) *k = (breaker_bucket){.idx = cur};
    k->calls++;
    if (failure) k->failures++;
}

static void breaker_window_sum(const breaker *b, int64_t now_ms, int *calls, int *failures)
{
    int64_t cur = util_floor_div(now_ms, b->bucket_ms);
    *calls = *failures = 0;
    for (int i = 0; i < b->cfg.window_buckets; i++) {
        const breaker_bucket *k = &b->buckets[i];
        if (!breaker_bucket_live(b, k, cur)) continue;
        *calls += k->calls;
        *failures += k->failures;
    }
}

static void breaker_window_clear(breaker *b)
{
    for (int i = 0; i < b->cfg.window_buckets; i++)
        b->buckets[i] = (breaker_bucket){INT64_MIN, 0, 0};
}

/* ------------------------------------------------------------ state */

static breaker_state breaker_effective_state(const breaker *b, int64_t now_ms)
{
    if (b->state == BREAKER_OPEN && now_ms >= b->open_until) return BREAKER_HALF_OPEN;
    return b->state;
}

/* The open period for the current consecutive_opens (>= 1), jittered. */
static int64_t breaker_open_wait(const breaker *b, uint64_t rnd)
{
    int64_t w = b->cfg.open_base_ms;
    for (int i = 1; i < b->consecutive_opens && w < b->cfg.open_max_ms; i++)
        w = w > b->cfg.open_max_ms / 2 ? b->cfg.open_max_ms : w * 2;
    if (w > b->cfg.open_max_ms) w = b->cfg.open_max_ms;
    int64_t j = (int64_t)((__int128)w * b->cfg.jitter_pct / 100);
    __int128 wait = (__int128)w - j + (__int128)(rnd % ((uint64_t)j * 2 + 1));
    return wait > INT64_MAX ? INT64_MAX : (int64_t)wait;
}

/* The one place the state changes. `rnd` matters only for OPEN. */
static void breaker_set_state(breaker *b, breaker_state to, int64_t now_ms, uint64_t rnd)
{
    switch (to) {
    case BREAKER_OPEN:
        assert(b->state != BREAKER_OPEN);
        if (b->state == BREAKER_CLOSED && b->consecutive_opens > 0 &&
            now_ms - b->closed_since >= b->cfg.stable_ms)
            b->consecutive_opens = 0; /* it had been stable: start again from the base */
        b->consecutive_opens++;
        b->opens_total++;
        int64_t wait = breaker_open_wait(b, rnd);
        b->open_until = now_ms > INT64_MAX - wait ? INT64_MAX : now_ms + wait;
        b->period++;
        break;
    case BREAKER_HALF_OPEN:
        assert(b->state == BREAKER_OPEN);
        break; /* same period as the OPEN that preceded it */
    case BREAKER_CLOSED:
        assert(b->state == BREAKER_HALF_OPEN);
        b->closed_since = now_ms;
        b->period++;
        break;
    }
    b->state = to;
    b->probes = 0;
    b->consecutive = 0;
    breaker_window_clear(b);
}

bool breaker_allow(breaker *b, int64_t now_ms, breaker_ticket *ticket)
{
    if (now_ms < b->paused_until) return false;
    breaker_state s = breaker_effective_state(b, now_ms);
    if (s == BREAKER_OPEN) return false;
    if (s == BREAKER_HALF_OPEN) {
        if (b->state == BREAKER_OPEN) breaker_set_state(b, BREAKER_HALF_OPEN, now_ms, 0);
        if (b->probes >= b->cfg.half_open_probes) return false;
        b->probes++;
    }
    *ticket = (breaker_ticket){.period = b->period, .probe = s == BREAKER_HALF_OPEN};
    return true;
}

static void breaker_record_closed(breaker *b, int64_t now_ms, breaker_outcome o, uint64_t rnd)
{
    if (o == BREAKER_SUCCESS) {
        b->consecutive = 0;
        breaker_window_add(b, now_ms, false);
        return;
    }
    if (o != BREAKER_FAILURE) return;
    b->consecutive++;
    breaker_window_add(b, now_ms, true);
    int calls, failures;
    breaker_window_sum(b, now_ms, &calls, &failures);
    bool rate = calls >= b->cfg.window_min_calls &&
                (int64_t)failures * 100 >= (int64_t)b->cfg.failure_rate_pct * calls;
    if (b->consecutive >= b->cfg.consecutive_failures || rate)
        breaker_set_state(b, BREAKER_OPEN, now_ms, rnd);
}

static void breaker_record_probe(breaker *b, int64_t now_ms, breaker_outcome o, uint64_t rnd)
{
    assert(b->probes > 0);
    b->probes--;
    if (o == BREAKER_SUCCESS)
        breaker_set_state(b, BREAKER_CLOSED, now_ms, rnd);
    else if (o == BREAKER_FAILURE)
        breaker_set_state(b, BREAKER_OPEN, now_ms, rnd);
}

void breaker_record(breaker *b, int64_t now_ms, const breaker_ticket *ticket,
                    breaker_outcome outcome, uint64_t rnd)
{
    if (!ticket || ticket->period != b->period) return; /* from an earlier period */
    /* A ticket of the current period was issued in the current state: CLOSED
     * tickets while CLOSED, probe tickets once HALF_OPEN was entered. */
    if (!ticket->probe && b->state == BREAKER_CLOSED)
        breaker_record_closed(b, now_ms, outcome, rnd);
    else if (ticket->probe && b->state == BREAKER_HALF_OPEN)
        breaker_record_probe(b, now_ms, outcome, rnd);
}

void breaker_pause(breaker *b, int64_t until_ms)
{
    if (until_ms > b->paused_until) b->paused_until = until_ms;
}

breaker_state breaker_get_state(const breaker *b, int64_t now_ms)
{
    return breaker_effective_state(b, now_ms);
}

int64_t breaker_retry_at_ms(const breaker *b, int64_t now_ms)
{
    breaker_state s = breaker_effective_state(b, now_ms);
    int64_t t = now_ms;
    if (s == BREAKER_OPEN) t = b->open_until;
    if (s == BREAKER_HALF_OPEN && b->state == BREAKER_HALF_OPEN &&
        b->probes >= b->cfg.half_open_probes)
        return -1;
    return b->paused_until > t ? b->paused_until : t;
}

void breaker_get_snapshot(const breaker *b, int64_t now_ms, breaker_snapshot *out)
{
    breaker_state s = breaker_effective_state(b, now_ms);
    *out = (breaker_snapshot){.state = s, .opens_total = b->opens_total};
    out->consecutive_failures = s == BREAKER_CLOSED ? b->consecutive : 0;
    breaker_window_sum(b, now_ms, &out->window_calls, &out->window_failures);
    out->consecutive_opens = b->consecutive_opens;
    if (s == BREAKER_CLOSED && b->consecutive_opens > 0 &&
        now_ms - b->closed_since >= b->cfg.stable_ms)
        out->consecutive_opens = 0;
    out->probes_in_flight = b->state == BREAKER_HALF_OPEN ? b->probes : 0;
    out->open_until_ms = s == BREAKER_OPEN ? b->open_until : -1;
    out->paused_until_ms = now_ms < b->paused_until ? b->paused_until : -1;
    out->next_allow_ms = breaker_retry_at_ms(b, now_ms);
}

const char *breaker_state_name(breaker_state s)
{
    switch (s) {
    case BREAKER_CLOSED:
        return "closed";
    case BREAKER_OPEN:
        return "open";
    case BREAKER_HALF_OPEN:
        return "half_open";
    }
    return "unknown";
}

const char *breaker_outcome_name(breaker_outcome o)
{
    switch (o) {
    case BREAKER_SUCCESS:
        return "success";
    case BREAKER_FAILURE:
        return "failure";
    case BREAKER_NEUTRAL:
        return "neutral";
    case BREAKER_ABANDONED:
        return "abandoned";
    }
    return "unknown";
}
