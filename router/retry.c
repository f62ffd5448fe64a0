/* Backoff, the retry decision and the retry budget (see router/retry.h). */
#include "router/retry.h"

#include "lib/util.h"

#include <stdlib.h>

#define RETRY_DEFAULT_MAX_ATTEMPTS 3
#define RETRY_DEFAULT_BASE_MS 250
#define RETRY_DEFAULT_CAP_MS 8000
#define RETRY_DEFAULT_MAX_WAIT_MS 60000

int64_t retry_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms, uint64_t rnd)
{
    if (base_ms <= 0 || cap_ms <= 0) return 0;
    int64_t bound = base_ms < cap_ms ? base_ms : cap_ms;
    /* double until the cap: at most 63 rounds whatever `attempt` is */
    for (int i = 0; i < attempt && bound < cap_ms; i++)
        bound = bound > cap_ms / 2 ? cap_ms : bound * 2;
    return (int64_t)(((unsigned __int128)rnd * (uint64_t)bound) >> 64);
}

static retry_decision retry_make(retry_action a, int64_t wait_ms, const char *why)
{
    return (retry_decision){.action = a, .wait_ms = wait_ms, .reason = why};
}

/* Retrying the same target is refused for `why`: try another if there is one. */
static retry_decision retry_elsewhere(const retry_input *in, const char *why)
{
    return retry_make(in->has_alternative ? RETRY_FAIL_OVER : RETRY_GIVE_UP, 0, why);
}

static retry_decision retry_rules(const retry_input *in)
{
    int max_attempts = in->max_attempts > 0 ? in->max_attempts : RETRY_DEFAULT_MAX_ATTEMPTS;
    int64_t max_wait = in->max_wait_ms > 0 ? in->max_wait_ms : RETRY_DEFAULT_MAX_WAIT_MS;
    int64_t base = in->backoff_base_ms > 0 ? in->backoff_base_ms : RETRY_DEFAULT_BASE_MS;
    int64_t cap = in->backoff_cap_ms > 0 ? in->backoff_cap_ms : RETRY_DEFAULT_CAP_MS;
    int64_t min_attempt = in->min_attempt_ms > 0 ? in->min_attempt_ms : 0;

    if (in->cls == ERRCLASS_NONE) return retry_make(RETRY_GIVE_UP, 0, "not an error");
    if (in->streamed)
        return retry_make(RETRY_GIVE_UP, 0, "response committed: bytes already streamed");
    if (in->deadline_left_ms <= min_attempt)
        return retry_make(RETRY_GIVE_UP, 0, "no time left before the deadline");
    /* before FATAL: the classifier calls a spent quota fatal for its target,
     * and another candidate may well have credit */
    if (in->quota_exhausted) return retry_elsewhere(in, "quota exhausted on this target");
    if (in->cls == ERRCLASS_FATAL)
        return retry_make(RETRY_GIVE_UP, 0, "fatal error: would fail again");
    bool ambiguous = in->cls == ERRCLASS_AMBIGUOUS;
    if (ambiguous && in->ambiguous_retries >= 1)
        return retry_make(RETRY_GIVE_UP, 0, "ambiguous error already retried once");
    if (in->cls != ERRCLASS_RETRYABLE && !ambiguous)
        return retry_make(RETRY_GIVE_UP, 0, "unknown error class");

    if (in->attempt >= (ambiguous && max_attempts > 2 ? 2 : max_attempts))
        return retry_elsewhere(in, "attempts on this target used up");
    if (in->retry_after_ms > max_wait)
        return retry_elsewhere(in, "retry-after longer than the max wait");
    if (in->budget_exhausted) return retry_elsewhere(in, "retry budget exhausted");
    int64_t wait = in->retry_after_ms >= 0 ? in->retry_after_ms
                                           : retry_backoff_ms(in->attempt - 1, base, cap, in->rnd);
    if (wait > max_wait) wait = max_wait;
    if ((__int128)wait + min_attempt >= in->deadline_left_ms)
        return retry_elsewhere(in, "the wait would end past the deadline");
    return retry_make(RETRY_SAME_AFTER, wait,
                      in->retry_after_ms >= 0 ? "retry after the advised delay"
                                              : "retry after backoff");
}

void retry_decide(const retry_input *in, retry_decision *out)
{
    *out = retry_rules(in);
}

const char *retry_action_name(retry_action a)
{
    switch (a) {
    case RETRY_GIVE_UP:
        return "give_up";
    case RETRY_SAME_AFTER:
        return "retry_same";
    case RETRY_FAIL_OVER:
        return "fail_over";
    }
    return "unknown";
}

/* ------------------------------------------------------------ budget */

typedef struct retry_bucket {
    int64_t idx; /* floor(t / bucket_ms); INT64_MIN when empty */
    int64_t requests;
    int64_t retries;
} retry_bucket;

struct retry_budget {
    retry_budget_config cfg;
    int64_t bucket_ms;
    int64_t denied;
    retry_bucket b[RETRY_BUDGET_MAX_BUCKETS];
};

retry_budget_config retry_budget_config_default(void)
{
    return (retry_budget_config){
        .ratio_pct = 10, .window_ms = 10000, .buckets = 10, .min_per_s = 3};
}

retry_budget *retry_budget_new(const retry_budget_config *cfg)
{
    retry_budget_config c = cfg ? *cfg : retry_budget_config_default();
    if (c.ratio_pct < 0 || c.ratio_pct > 1000 || c.buckets < 1 ||
        c.buckets > RETRY_BUDGET_MAX_BUCKETS || c.window_ms < c.buckets || c.min_per_s < 0)
        return NULL;
    retry_budget *rb = calloc(1, sizeof *rb);
    if (!rb) return NULL;
    rb->cfg = c;
    rb->bucket_ms = c.window_ms / c.buckets;
    for (int i = 0; i < RETRY_BUDGET_MAX_BUCKETS; i++)
        rb->b[i].idx = INT64_MIN;
    return rb;
}

void retry_budget_free(retry_budget *rb)
{
    free(rb);
}

static retry_bucket *retry_budget_bucket(retry_budget *rb, int64_t now_ms)
{
    int64_t cur = util_floor_div(now_ms, rb->bucket_ms);
    int64_t slot = cur % rb->cfg.buckets;
    if (slot < 0) slot += rb->cfg.buckets;
    retry_bucket *k = &rb->b[slot];
    if (k->idx != cur) *k = (retry_bucket){.idx = cur};
    return k;
}

static void retry_budget_sum(const retry_budget *rb, int64_t now_ms, int64_t *req, int64_t *ret)
{
    int64_t cur = util_floor_div(now_ms, rb->bucket_ms);
    *req = *ret = 0;
    for (int i = 0; i < rb->cfg.buckets; i++) {
        const retry_bucket *k = &rb->b[i];
        if (k->idx == INT64_MIN || k->idx > cur || cur - k->idx >= rb->cfg.buckets) continue;
        *req += k->requests;
        *ret += k->retries;
    }
}

void retry_budget_note_request(retry_budget *rb, int64_t now_ms)
{
    retry_budget_bucket(rb, now_ms)->requests++;
}

bool retry_budget_would_allow(const retry_budget *rb, int64_t now_ms)
{
    int64_t req, ret;
    retry_budget_sum(rb, now_ms, &req, &ret);
    /* the floor is a minimum, not an addition: at any volume where the ratio
     * allows more, the ratio alone bounds the amplification (SRE's 1.1×) */
    __int128 by_ratio = (__int128)req * rb->cfg.ratio_pct;
    __int128 floor = (__int128)rb->cfg.min_per_s * rb->cfg.window_ms / 10;
    return ((__int128)ret + 1) * 100 <= (by_ratio > floor ? by_ratio : floor);
}

bool retry_budget_allow(retry_budget *rb, int64_t now_ms)
{
    if (!retry_budget_would_allow(rb, now_ms)) {
        rb->denied++;
        return false;
    }
    retry_budget_bucket(rb, now_ms)->retries++;
    return true;
}

void retry_budget_refund(retry_budget *rb, int64_t now_ms)
{
    retry_bucket *k = retry_budget_bucket(rb, now_ms);
    if (k->retries > 0) k->retries--;
}

void retry_budget_get_snapshot(const retry_budget *rb, int64_t now_ms, retry_budget_snapshot *out)
{
    *out = (retry_budget_snapshot){.denied = rb->denied};
    retry_budget_sum(rb, now_ms, &out->requests, &out->retries);
}
