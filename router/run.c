/* The run: one request from its body to its outcome (router/run.h). */
#include "router/run.h"

#include <assert.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db/cache_store.h"
#include "db/idem.h"
#include "db/ledger.h"
#include "lib/buf.h"
#include "lib/jtok.h"
#include "lib/log.h"
#include "lib/util.h"
#include "providers/embeddings.h"
#include "providers/params.h"
#include "providers/sse.h"
#include "router/budget.h"
#include "router/cache.h"
#include "router/canon.h"
#include "router/keyring.h"
#include "router/metrics.h"
#include "router/ratelimit.h"

#define MAX_PLAN 8
#define MAX_UPSTREAM_BODY (64 << 20)
/* The stream as the client gets it, kept to replay for its Idempotency-Key
 * or to store in the response cache (up to a cap: a longer one is not
 * stored, and the key is freed). */
#define IDEM_STREAM_MAX (8 << 20)
/* The output a request without max_tokens is reserved for (unless its
 * provider has its own default_max_tokens): a budget or a rate limit must
 * never reserve an unbounded amount. A budgeted request also sends it. */
#define DEFAULT_OUTPUT_BOUND 4096

/* The answer the settlement steps see and the sink then gets. */
typedef struct answer {
    int status;
    const char *content_type;
    const char *body; /* whole answers; NULL for a stream (its bytes are in r->out) */
    size_t len;
    const usage_record *usage; /* NULL: no upstream usage (an error bridle made, a replay) */
    const char *err_class;     /* "" for a success */
    run_state final;
    const char *why;
} answer;

struct run {
    router *rt;
    int64_t input_bound; /* input_bound_tokens, once computed; 0 before */
    const run_sink *sink;
    void *sctx;
    run_state state;
    bool done_called;
    char id[32];
    const key_conf *key;
    run_input in;
    /* the canonical request */
    canon_request canon;
    jdoc doc;    /* the body's tokens */
    buf strings; /* canon's unescaped strings */
    /* the plan */
    const target *plan[MAX_PLAN];
    int n_plan, cur;
    const char *route_name;     /* the virtual model, or NULL */
    char route_rule[128];       /* the routing policy's rule, for x-bridle-route; "" if none */
    const model_conf *baseline; /* what savings are measured against, or NULL */
    policy_plan pplan;          /* the routing policy's plan, for the cascade */
    bool by_policy;
    request_timeouts tmo; /* this request's deadlines (config "timeouts") */
    int64_t start_us, wall_start_us, deadline_ms;
    /* admission and settlement */
    int admit_i, settle_i;
    answer ans;
    /* attempts */
    int attempts, target_attempts, ambiguous_retries;
    engine_call *call;
    upstream_request up;
    int status;                 /* upstream HTTP status of the current attempt */
    const upstream_headers *hs; /* valid until the attempt's on_done returns */
    buf body;                   /* non-2xx or non-stream body */
    bool body_too_large;
    bool cut_by_deadline; /* the attempt's total limit is the request's deadline */
    bool own_first_byte;  /* its first-byte limit is the request's, below the provider's */
    bool own_limit_hit;   /* it failed on one of the request's own limits */
    int64_t attempt_start_us, upstream_us, ttft_us;
    bool budget_exhausted; /* a retry was refused by the retry budget */
    bool shed;             /* the last target's open breaker refused the request */
    rl_hold rl;            /* its reservation in its key's and team's rate-limit windows */
    /* holds: each given back by release_holds() */
    const provider_conf *slot;    /* a call slot of this provider */
    breaker_ticket ticket;        /* the current attempt's admission by its target's breaker */
    bool ticket_live;             /* an outcome is still owed to the breaker */
    const provider_conf *granted; /* a retry granted by this provider's budget, not yet made */
    struct event timer;           /* waiting out a backoff, Retry-After or pause */
    bool timer_armed;
    /* streams */
    bool relaying; /* the upstream stream is being read */
    bool holding;  /* the cascade holds the stream back until it passes its checks */
    sse_parser *parser;
    void *sstate;
    stream_result sres;
    buf out; /* stream bytes not yet given to the sink */
    char chunk_id[80];
    /* the cascade */
    int64_t prior_cost_pusd; /* answers the cascade set aside: billed all the same */
    usage_record prior_usage;
    char cascade_check[16];
    /* what the answer says about itself */
    const target *served_by; /* a coalesced answer: the leader's target */
    usage_record served_usage;
    bool usage_estimated;   /* the provider reported no usage: counts are estimates */
    bool recorded;          /* the usage event is in the ledger */
    bool metered;           /* router/metrics.h has it */
    bool replayed;          /* answered from the idempotency store */
    bool cache_hit;         /* answered from the response cache */
    bool coalesced;         /* answered with a leader's answer */
    buf head;               /* the answer's header lines */
    char why[160];          /* the answer's reason, for logs and the sink's done */
    char ctype[128];        /* the answer's content type, once settling waits */
    usage_record ans_usage; /* the answer's usage, once settling waits */
    buf err_body;           /* an error answer's body */
    /* Idempotency-Key (db/idem.h) */
    char idem_key[256];
    char idem_owner[48];
    bool idem_held;        /* this run holds the key's claim: store or release it */
    bool idem_settled;     /* the outcome was handed to the store */
    idem_op *idem_pending; /* claim or store in flight */
    buf idem_body;         /* the answer to store (a stream as sent), here or in the cache */
    bool idem_too_big;
    /* the response cache (router/cache.h) */
    buf cache_key;            /* resp_cache_key's bytes */
    bool cache_store;         /* a miss: its answer is stored when it completes */
    int64_t cache_ttl_ms;     /* for how long */
    cache_store_op *cache_op; /* the lookup in the shared level, in flight */
    /* budgets (router/budget.h) */
    budget_hold bhold; /* the reservation: settled or given back exactly once */
    int64_t cost_pusd; /* what the usage event charges (answer_cost) */
    bool cost_known;
    /* coalescing */
    char coalesce_fp[65];
    bool leading;
    struct run *leader, *followers, *next_follower;
    struct event reap;
    struct run *next_free;
    /* run_estimate_pusd: planning only, a refusal goes here, not to a sink */
    char *est_err;
    size_t est_errlen;
    /* waiting for the ledger's spool write of its usage event */
    struct run **wait_list, *wait_next, *wait_prev;
};

static void run_finish(run *r, run_state final, int status, const char *why);
static void start_attempt(run *r);
static void admit_next(run *r);
static void settle_next(run *r);

/* ------------------------------------------------------------ states */

const char *run_state_name(run_state s)
{
    static const char *names[] = {"NEW",      "PLANNING", "ADMITTING", "CALLING", "WAITING",
                                  "RELAYING", "SETTLING", "DONE",      "FAILED"};
    return s <= RUN_FAILED ? names[s] : "?";
}

#define TO(s) (1u << (s))
#define FINAL (TO(RUN_DONE) | TO(RUN_FAILED))
/* The table of run.h: where each state may go. */
static const unsigned allowed[] = {
    [RUN_NEW] = TO(RUN_PLANNING) | FINAL,
    [RUN_PLANNING] = TO(RUN_ADMITTING) | TO(RUN_SETTLING) | FINAL,
    [RUN_ADMITTING] = TO(RUN_CALLING) | TO(RUN_SETTLING) | FINAL,
    [RUN_CALLING] = TO(RUN_CALLING) | TO(RUN_WAITING) | TO(RUN_RELAYING) | TO(RUN_SETTLING) | FINAL,
    [RUN_WAITING] = TO(RUN_CALLING) | TO(RUN_SETTLING) | FINAL,
    [RUN_RELAYING] = TO(RUN_SETTLING) | FINAL,
    [RUN_SETTLING] = FINAL,
    [RUN_DONE] = 0,
    [RUN_FAILED] = 0,
};

bool run_transition_ok(run_state from, run_state to)
{
    return from <= RUN_FAILED && to <= RUN_FAILED && (allowed[from] & TO(to));
}

static void set_state(run *r, run_state s)
{
    assert(run_transition_ok(r->state, s));
    log_debug("%s: %s -> %s", r->id, run_state_name(r->state), run_state_name(s));
    r->state = s;
}

static bool run_over(const run *r)
{
    return r->state == RUN_DONE || r->state == RUN_FAILED;
}

run_state run_get_state(const run *r)
{
    return r->state;
}

/* ------------------------------------------------------------ pool */

/* Finished runs are kept for reuse with their buffers' memory, so a run in
 * the steady state allocates almost nothing of its own. */
#define RUN_POOL_MAX 512

static run *run_alloc(router *rt)
{
    int *n;
    run **pool = router_run_pool(rt, &n);
    run *r = *pool;
    if (!r) return calloc(1, sizeof(run));
    *pool = r->next_free;
    (*n)--;
    return r;
}

static void run_destroy(run *r)
{
    jdoc_free(&r->doc);
    buf_free(&r->strings);
    upstream_request_free(&r->up);
    buf_free(&r->body);
    buf_free(&r->sres.text);
    buf_free(&r->head);
    buf_free(&r->out);
    buf_free(&r->err_body);
    buf_free(&r->idem_body);
    buf_free(&r->cache_key);
    free(r);
}

/* Keeps the buffers' memory, zeroes the rest. */
static void run_recycle(run *r)
{
    int *n;
    run **pool = router_run_pool(r->rt, &n);
    if (*n >= RUN_POOL_MAX) {
        run_destroy(r);
        return;
    }
    jdoc doc = r->doc;
    buf strings = r->strings, body = r->body, text = r->sres.text, head = r->head, out = r->out,
        err_body = r->err_body, idem_body = r->idem_body, cache_key = r->cache_key;
    upstream_request up = r->up;
    upstream_request_reset(&up);
    buf *keep[] = {&strings, &body, &text, &head, &out, &err_body, &idem_body, &cache_key};
    for (size_t i = 0; i < sizeof keep / sizeof *keep; i++)
        buf_reset(keep[i]);
    memset(r, 0, sizeof *r);
    r->doc = doc;
    r->strings = strings;
    r->body = body;
    r->sres.text = text;
    r->head = head;
    r->out = out;
    r->err_body = err_body;
    r->idem_body = idem_body;
    r->cache_key = cache_key;
    r->up = up;
    r->next_free = *pool;
    *pool = r;
    (*n)++;
}

void run_pool_free(router *rt)
{
    int *n;
    run **pool = router_run_pool(rt, &n);
    while (*pool) {
        run *r = *pool;
        *pool = r->next_free;
        run_destroy(r);
    }
    *n = 0;
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    run *r = arg;
    router_count_run(r->rt, -1);
    keyring_release(r->key); /* held since run_start */
    run_recycle(r);
}

/* ------------------------------------------------------------ helpers */

static const target *cur_target(const run *r)
{
    return r->n_plan ? r->plan[r->cur] : NULL;
}

/* The target whose answer the client gets: a coalesced copy's leader's,
 * a cached answer's, else the current candidate. */
static const target *answered_by(const run *r)
{
    return r->served_by ? r->served_by : cur_target(r);
}

/* Answered without an upstream call of its own: an idempotent replay, a
 * coalesced copy or a cached answer. It costs nothing; its baseline is
 * the call it replaced. */
static bool no_call(const run *r)
{
    return r->replayed || r->coalesced || r->cache_hit;
}

/* Idempotency keys and coalescing are per client key: one client cannot see
 * another's answers. */
static const char *scope(const run *r)
{
    return r->key ? r->key->id : "";
}

/* The route the request asked for, for per-route settings: a name in
 * $.routes, "auto" or "tier:NAME"; NULL for a model. */
static const char *route_of(const run *r)
{
    return r->route_name ? r->route_name : r->by_policy ? r->canon.model : NULL;
}

/* src into dst[n], cut to fit (the ledger's fields are bounded); snprintf
 * cost more than the rest of the event. */
static void copy_str(char *dst, size_t n, const char *src)
{
    size_t len = src ? strnlen(src, n - 1) : 0;
    memcpy(dst, src ? src : "", len);
    dst[len] = '\0';
}

static void add_usage(usage_record *to, const usage_record *u)
{
    to->input_uncached += u->input_uncached;
    to->cache_read += u->cache_read;
    to->cache_write_5m += u->cache_write_5m;
    to->cache_write_1h += u->cache_write_1h;
    to->output += u->output;
    to->reasoning += u->reasoning;
}

/* What the answer cost: nothing when no upstream call made it (a replay, a
 * coalesced copy), else the final answer's price plus the answers the
 * cascade set aside. */
static int64_t answer_cost(const run *r, const usage_record *u)
{
    if (no_call(r) || !r->n_plan) return 0;
    return pricing_cost_pusd(r->plan[r->cur]->price, u, false) + r->prior_cost_pusd;
}

/* What the same usage would have cost on the model the client asked for
 * (or, for a route, its baseline): savings are a subtraction. An answer
 * served without an upstream call (a cached answer, a coalesced copy, a
 * replay) measures against the call it replaced, the served model's price:
 * its savings are the cache's, not routing's (migration 0009). */
static int64_t baseline_cost(const run *r, const usage_record *u)
{
    if (r->baseline && !no_call(r)) return pricing_cost_pusd(&r->baseline->price, u, false);
    const target *t = answered_by(r);
    return t ? pricing_cost_pusd(t->price, u, false) : 0;
}

/* The usage of everything billed: the answer and what the cascade set aside. */
static usage_record billed_usage(const run *r, const usage_record *u)
{
    usage_record all = *u;
    if (r->prior_cost_pusd > 0 || r->prior_usage.output > 0) {
        add_usage(&all, &r->prior_usage);
        all.exact = u->exact && r->prior_usage.exact;
    }
    return all;
}

/* Fills in what the provider did not report (a cut stream, an answer
 * without a usage block): counts it did report are kept (Anthropic reports
 * the input at the start), the rest estimated at about 4 characters a
 * token from the answer's text and the prompt's. */
static void estimate_usage(run *r, usage_record *u, size_t answer_chars)
{
    if (u->exact) return;
    int64_t out_est = (int64_t)(answer_chars + 3) / 4;
    if (u->output < out_est) u->output = out_est;
    if (u->input_uncached + u->cache_read + u->cache_write_5m + u->cache_write_1h > 0) return;
    u->input_uncached =
        r->canon.embed.on ? r->canon.embed.est_tokens : (canon_prompt_chars(&r->canon) + 3) / 4;
}

/* What a stream's answer has said so far: its text and its tool calls. */
static size_t stream_output_chars(const run *r)
{
    return r->sres.text.len + r->sres.tool_bytes;
}

/* ------------------------------------------------------------ the ledger */

static void event_route_reason(const run *r, usage_event *ev)
{
    if (r->route_rule[0]) { /* truncated to the field, on purpose */
        buf why = BUF_INIT;
        buf_printf(&why, "%s%s%s", r->route_rule, r->cascade_check[0] ? "; escalated on " : "",
                   r->cascade_check);
        copy_str(ev->route_reason, sizeof ev->route_reason, why.data);
        buf_free(&why);
    } else if (r->replayed)
        copy_str(ev->route_reason, sizeof ev->route_reason, "idempotent replay: no upstream call");
    else if (r->cache_hit)
        copy_str(ev->route_reason, sizeof ev->route_reason, "response cache hit: no upstream call");
    else if (r->coalesced)
        copy_str(ev->route_reason, sizeof ev->route_reason,
                 "coalesced with an identical request in flight: no upstream call");
    else if (r->route_name)
        snprintf(ev->route_reason, sizeof ev->route_reason, "route %s, candidate %d", r->route_name,
                 r->cur + 1);
    else if (r->n_plan)
        copy_str(ev->route_reason, sizeof ev->route_reason, "the model requested");
}

static void json_member(buf *b, const char *name, const char *v)
{
    buf_printf(b, ",\"%s\":", name);
    if (v && *v)
        buf_append_json_str(b, v, strlen(v));
    else
        buf_append_str(b, "null");
}

/* The access log's line for the request (config access_log): who, what,
 * where it went, how it ended, what it used and cost, how long it took.
 * The key's id and team, never the key. */
static void access_line(const run *r, const metrics_sample *x)
{
    buf b = BUF_INIT;
    buf_append_str(&b, "\"request_id\":");
    buf_append_json_str(&b, r->id, strlen(r->id));
    json_member(&b, "key", r->key ? r->key->id : NULL);
    json_member(&b, "team", r->canon.team);
    json_member(&b, "requested_model", x->request_model);
    json_member(&b, "route", route_of(r));
    json_member(&b, "model", x->response_model);
    json_member(&b, "provider", x->provider);
    json_member(&b, "cache", r->cache_hit ? "hit" : r->cache_store ? "miss" : NULL);
    char cost[48];
    util_format_pusd(x->cost_pusd, 12, cost, sizeof cost);
    buf_printf(&b,
               ",\"status\":%d,\"attempts\":%d,\"streamed\":%s,\"input_tokens\":%lld,"
               "\"output_tokens\":%lld,\"cost_usd\":%s,\"latency_ms\":%.3f,\"ttft_ms\":",
               x->status, r->attempts, r->canon.stream ? "true" : "false",
               (long long)x->input_tokens, (long long)x->output_tokens, cost,
               (double)x->duration_us / 1e3);
    if (x->ttft_us >= 0)
        buf_printf(&b, "%.3f", (double)x->ttft_us / 1e3);
    else
        buf_append_str(&b, "null");
    log_access(b.data, b.len);
    buf_free(&b);
}

/* The request for GET /metrics, once (with or without a ledger). `all`:
 * its billed usage, NULL when no answer reported any. */
static void meter(run *r, int status, const usage_record *all)
{
    if (r->metered) return;
    r->metered = true;
    const target *t = answered_by(r);
    metrics_sample x = {
        .request_model = r->n_plan && r->canon.model ? r->canon.model : "",
        .response_model = t ? t->model : "",
        .provider = t ? t->provider->name : "",
        .status = status,
        .upstream_usage = all && !no_call(r) && r->attempts > 0,
        .embeddings = r->canon.embed.on,
        .input_tokens =
            all ? all->input_uncached + all->cache_read + all->cache_write_5m + all->cache_write_1h
                : 0,
        .output_tokens = all ? all->output : 0,
        .cost_pusd = r->cost_pusd,
        .duration_us = util_now_us() - r->start_us,
        .ttft_us = r->ttft_us,
    };
    metrics_record(router_metrics(r->rt), &x);
    if (config_access_log(router_config(r->rt))) access_line(r, &x);
}

void run_event_usage(usage_event *ev, const usage_record *u)
{
    ev->input_tokens = u->input_uncached;
    ev->cache_read_tokens = u->cache_read;
    ev->cache_write_tokens = u->cache_write_5m + u->cache_write_1h;
    ev->output_tokens = u->output;
    ev->reasoning_tokens = u->reasoning;
    ev->usage_exact = u->exact;
}

/* The request's usage event: who, what, where it went and how it ended
 * (status, err_class) with `all`, its billed usage, priced. */
static void fill_event(const run *r, usage_event *ev, int status, const char *err_class,
                       const usage_record *all)
{
    memset(ev, 0, sizeof *ev);
    memcpy(ev->event_id, r->id + 4, 24); /* the request id's 24 hex digits + 8 of time */
    uint32_t secs = (uint32_t)(r->wall_start_us / 1000000);
    for (int i = 31; i >= 24; i--, secs >>= 4)
        ev->event_id[i] = "0123456789abcdef"[secs & 15];
    ev->event_id[32] = '\0';
    ev->ts_us = r->wall_start_us;
    copy_str(ev->key_id, sizeof ev->key_id, r->key ? r->key->id : NULL);
    copy_str(ev->team, sizeof ev->team, r->canon.team);
    copy_str(ev->end_user, sizeof ev->end_user, r->canon.user);
    copy_str(ev->agent, sizeof ev->agent, r->canon.agent);
    copy_str(ev->task, sizeof ev->task, r->canon.task);
    copy_str(ev->feature, sizeof ev->feature, r->canon.feature);
    copy_str(ev->requested_model, sizeof ev->requested_model, r->canon.model);
    const target *t = answered_by(r);
    if (t) {
        copy_str(ev->provider, sizeof ev->provider, t->provider->name);
        copy_str(ev->model, sizeof ev->model, t->model);
        copy_str(ev->tier, sizeof ev->tier,
                 t->price->tier ? pricing_tier_name(t->price->tier) : "");
    }
    event_route_reason(r, ev);
    ev->cache_hit = no_call(r);
    ev->streamed = r->canon.stream;
    ev->status = status;
    copy_str(ev->error_class, sizeof ev->error_class, err_class);
    ev->attempts = r->attempts;
    run_event_usage(ev, all);
    ev->cost_pusd = r->cost_pusd; /* priced above, from the same usage */
    ev->baseline_cost_pusd = baseline_cost(r, all);
    ev->latency_us = util_now_us() - r->start_us;
    ev->ttft_us = r->ttft_us;
    ev->upstream_us = r->upstream_us;
    copy_str(ev->batch_id, sizeof ev->batch_id, r->in.batch_id);
}

/* Hands the request's usage event to the ledger, once. True when it was
 * staged now: the spool write comes at the end of the loop pass. */
static bool record_usage(run *r, int status, const char *err_class, const usage_record *u)
{
    ledger *lg = router_ledger(r->rt);
    usage_record none = {.exact = true};
    usage_record all = billed_usage(r, u ? u : &none);
    if (!r->cost_known) { /* what the budgets settle, with or without a ledger */
        r->cost_known = true;
        r->cost_pusd = answer_cost(r, u ? u : &none);
    }
    meter(r, status, u ? &all : NULL);
    if (r->recorded || !lg) return false;
    r->recorded = true;
    usage_event ev;
    fill_event(r, &ev, status, err_class, &all);
    if (ledger_record(lg, &ev) == 0) return true;
    log_error("%s: the usage event could not be written to the spool (logged above)", r->id);
    return false;
}

/* ------------------------------------------------------------ headers */

static void add_common_headers(run *r)
{
    buf *h = &r->head;
    buf_add_header(h, "x-request-id", r->id);
    char n[24], *digits = util_u64_digits((uint64_t)r->attempts, n + sizeof n - 1);
    n[sizeof n - 1] = '\0';
    buf_add_header(h, "x-bridle-attempts", digits);
    const target *t = answered_by(r);
    if (t) {
        buf_add_header(h, "x-bridle-provider", t->provider->name);
        buf_add_header(h, "x-bridle-model", t->model);
    }
    if (r->route_rule[0] && r->cascade_check[0]) {
        char rule[200];
        snprintf(rule, sizeof rule, "%s; escalated: the cheaper answer failed the %s check",
                 r->route_rule, r->cascade_check);
        buf_add_header(h, "x-bridle-route", rule);
    } else if (r->route_rule[0])
        buf_add_header(h, "x-bridle-route", r->route_rule);
    else if (r->route_name)
        buf_add_header(h, "x-bridle-route", r->route_name);
    if (r->cache_hit || r->cache_store)
        buf_add_header(h, "x-bridle-cache", r->cache_hit ? "hit" : "miss");
}

static void cost_headers(run *r, const usage_record *u)
{
    int64_t cost = answer_cost(r, u);
    char s[48];
    util_format_pusd(cost, 12, s, sizeof s);
    /* trim trailing zeros but keep at least one decimal */
    size_t n = strlen(s);
    while (n > 2 && s[n - 1] == '0' && s[n - 2] != '.')
        s[--n] = '\0';
    buf_add_header(&r->head, "x-bridle-cost-usd", s);
    /* the baseline would have answered once: the final answer's usage */
    util_format_pusd(baseline_cost(r, u) - cost, 6, s, sizeof s);
    buf_add_header(&r->head, "x-bridle-savings-usd", s);
    if (r->usage_estimated) buf_add_header(&r->head, "x-bridle-usage", "estimated");
}

/* ------------------------------------------------------------ the answer */

/* Settles, then delivers `a`: every whole answer and every stream's end
 * goes through here. */
static void answer_with(run *r, const answer *a)
{
    r->ans = *a;
    /* the reason may live on the caller's stack; settling may wait */
    copy_str(r->why, sizeof r->why, a->why);
    r->ans.why = r->why;
    r->settle_i = 0;
    set_state(r, RUN_SETTLING);
    settle_next(r);
}

static void answer_body(run *r, int status, const char *body, size_t len, const usage_record *u,
                        const char *err_class, run_state final, const char *why)
{
    answer a = {status, "application/json", body, len, u, err_class, final, why};
    answer_with(r, &a);
}

/* An error answer bridle makes itself, in the sink's shape. */
static void run_fail(run *r, int status, const char *type, const char *code, const char *param,
                     const char *message, bool should_retry)
{
    if (r->est_err) {
        snprintf(r->est_err, r->est_errlen, "%s", message);
        return;
    }
    add_common_headers(r);
    /* said both ways: the OpenAI SDKs obey it over their own status rules */
    buf_add_header(&r->head, "x-should-retry", should_retry ? "true" : "false");
    buf_reset(&r->err_body);
    if (r->sink->error_body)
        r->sink->error_body(r->sctx, &r->err_body, type, code, param, message);
    else
        provider_openai_error_json(&r->err_body, type, code, param, message);
    answer_body(r, status, r->err_body.data, r->err_body.len, NULL, code && *code ? code : type,
                RUN_FAILED, message);
}

static void coalesce_answer(run *leader, const answer *a);

/* x-ratelimit-{limit,remaining,reset}-{requests,tokens} for a key with a
 * rate limit (its own or its team's), on every answer. */
static void rate_limit_headers(run *r)
{
    if (!ratelimit_applies(r->key)) return;
    rl_status st;
    ratelimit_status(router_ratelimit(r->rt), r->key, &r->rl, util_now_ms(), &st);
    ratelimit_add_headers(&st, &r->head);
}

/* The last step of settling: the sink gets the answer. */
static void deliver(run *r)
{
    const answer *a = &r->ans;
    if (a->body) {
        rate_limit_headers(r);
        r->sink->head(r->sctx, a->status, a->content_type, &r->head, false);
        r->sink->chunk(r->sctx, a->body, a->len);
        coalesce_answer(r, a);
    } else if (r->out.len) {
        r->sink->chunk(r->sctx, r->out.data, r->out.len);
        buf_reset(&r->out);
    }
    run_finish(r, a->final, a->status, a->why);
}

/* ------------------------------------------------------------ settlement steps */

typedef enum { STEP_NEXT, STEP_WAIT, STEP_ANSWERED } step_result;

typedef struct run_step {
    const char *name;
    step_result (*fn)(run *r);
} run_step;

/* The run joins (or leaves) one of the router's lists of runs waiting for
 * the spool write. */
static void spool_wait_join(run *r, run **list)
{
    r->wait_list = list;
    r->wait_prev = NULL;
    r->wait_next = *list;
    if (*list) (*list)->wait_prev = r;
    *list = r;
}

static void spool_wait_leave(run *r)
{
    if (!r->wait_list) return;
    if (r->wait_prev)
        r->wait_prev->wait_next = r->wait_next;
    else
        *r->wait_list = r->wait_next;
    if (r->wait_next) r->wait_next->wait_prev = r->wait_prev;
    r->wait_list = NULL;
}

/* Settling is about to wait: the answer's body, content type and usage may live
 * in what another callback frees or reuses meanwhile (an engine call's
 * buffer, a leader's answer, an idempotency result), so the run keeps
 * copies. */
static void keep_answer(run *r)
{
    answer *a = &r->ans;
    if (a->body && a->body != r->idem_body.data) {
        buf_reset(&r->idem_body);
        buf_append(&r->idem_body, a->body, a->len);
        a->body = r->idem_body.data ? r->idem_body.data : "";
    }
    if (a->content_type && a->content_type != r->ctype) {
        copy_str(r->ctype, sizeof r->ctype, a->content_type);
        a->content_type = r->ctype;
    }
    if (a->usage && a->usage != &r->ans_usage) { /* coalesced followers are priced from it */
        r->ans_usage = *a->usage;
        a->usage = &r->ans_usage;
    }
}

/* The answer waits until its usage event is in the spool (in the page
 * cache: a kill of the process cannot lose it). The ledger writes every
 * event of a loop pass in one pwrite at the end of the pass, then calls
 * run_spool_written. */
static step_result settle_usage_event(run *r)
{
    if (!record_usage(r, r->ans.status, r->ans.err_class, r->ans.usage)) return STEP_NEXT;
    keep_answer(r);
    spool_wait_join(r, router_spool_waiters(r->rt, false));
    return STEP_WAIT;
}

void run_spool_written(void *ctx)
{
    router *rt = ctx;
    run **waiting = router_spool_waiters(rt, false), **resuming = router_spool_waiters(rt, true);
    /* Runs that join while these resume (a coalesced follower's answer)
     * wait for the next write. */
    while (*waiting) {
        run *r = *waiting;
        spool_wait_leave(r);
        spool_wait_join(r, resuming);
    }
    while (*resuming) {
        run *r = *resuming;
        spool_wait_leave(r);
        r->settle_i++;
        settle_next(r);
    }
}

/* The reservation becomes the cost the usage event charges; the rest goes
 * back to the budgets' local slack. */
static step_result settle_budget(run *r)
{
    budget_settle(router_budgets(r->rt), &r->bhold, r->cost_known ? r->cost_pusd : 0);
    return STEP_NEXT;
}

static void on_idem_stored(void *ctx, const idem_result *res)
{
    run *r = ctx;
    r->idem_pending = NULL;
    r->settle_i++;
    settle_next(r);
}

/* A run that holds an Idempotency-Key stores a final outcome (2xx, and the
 * 4xx a retry cannot change) before the client gets it, so any later
 * request with the key, here or on another gateway, gets this answer. A
 * stream is stored as it was sent, complete ones only. Other outcomes free
 * the key (release_holds). */
static step_result settle_idempotency(run *r)
{
    const answer *a = &r->ans;
    if (!r->idem_held) return STEP_NEXT;
    idem_store *st = router_idem(r->rt);
    if (!a->body) {
        if (a->final != RUN_DONE || r->idem_too_big) return STEP_NEXT;
        r->idem_settled = true; /* replays get the same stream; not awaited */
        idem_store_result(st, scope(r), r->idem_key, r->idem_owner, 200, "text/event-stream",
                          r->idem_body.data ? r->idem_body.data : "", r->idem_body.len, NULL, NULL);
        return STEP_NEXT;
    }
    int s = a->status;
    bool storable = (s >= 200 && s < 300) || s == 400 || s == 404 || s == 413 || s == 422;
    if (!storable) return STEP_NEXT;
    keep_answer(r); /* it must outlive the store */
    r->idem_settled = true;
    r->idem_pending = idem_store_result(st, scope(r), r->idem_key, r->idem_owner, s,
                                        a->content_type, a->body, a->len, on_idem_stored, r);
    if (r->idem_pending) return STEP_WAIT;
    r->idem_settled = false;
    return STEP_NEXT;
}

/* Tokens and cost the request used, for its rate limits: nothing for an
 * answer no upstream call made (a replay, a coalesced copy). */
static void rate_limit_settle(run *r, const usage_record *u)
{
    if (!r->rl.held) return;
    int64_t tokens = 0, cost = 0;
    if (!no_call(r)) {
        usage_record none = {.exact = true};
        usage_record all = billed_usage(r, u ? u : &none);
        tokens = all.input_uncached + all.cache_read + all.cache_write_5m + all.cache_write_1h +
                 all.output; /* output includes reasoning */
        cost = answer_cost(r, u ? u : &none);
    }
    ratelimit_settle(router_ratelimit(r->rt), &r->rl, util_now_ms(), tokens, cost);
}

/* The reservation made at admission becomes what the answer used. */
static step_result settle_rate_limit(run *r)
{
    rate_limit_settle(r, r->ans.usage);
    return STEP_NEXT;
}

/* A miss's complete answer goes into the response cache: a whole 200
 * body as sent, or a stream as the body it adds up to. Errors, cut
 * streams and answers the cascade set aside never get here as RUN_DONE. */
static step_result settle_cache(run *r)
{
    const answer *a = &r->ans;
    resp_cache *c = router_cache(r->rt);
    if (!r->cache_store || !c || a->final != RUN_DONE || a->status != 200 || !a->usage)
        return STEP_NEXT;
    if (r->coalesced) return STEP_NEXT; /* its leader stored it */
    cache_answer ca = {a->body, a->len, cur_target(r), *a->usage, r->usage_estimated};
    buf whole = BUF_INIT;
    if (!a->body) {
        if (r->idem_too_big ||
            resp_cache_completion_of(r->idem_body.data, r->idem_body.len, a->usage, &whole) != 0) {
            buf_free(&whole);
            return STEP_NEXT;
        }
        ca.body = whole.data;
        ca.len = whole.len;
    }
    resp_cache_put(c, &r->cache_key, &ca, util_now_ms() + r->cache_ttl_ms);
    cache_store *shared = router_cache_store(r->rt);
    if (shared) {
        const usage_record *u = &ca.usage;
        cache_store_usage su = {u->input_uncached, u->cache_read,     u->cache_write_5m,
                                u->cache_write_1h, u->output,         u->reasoning,
                                u->exact,          ca.usage_estimated};
        cache_store_put(shared, r->cache_key.data, ca.body, ca.len, ca.served_by->model, &su,
                        r->cache_ttl_ms);
    }
    buf_free(&whole);
    return STEP_NEXT;
}

/* In order. The budget settles right after the usage event, in the same
 * loop pass: before the ledger can have shipped that event. */
static const run_step settle_steps[] = {
    {"rate_limit", settle_rate_limit}, {"usage_event", settle_usage_event},
    {"budget", settle_budget},         {"idempotency", settle_idempotency},
    {"cache", settle_cache},
};

static void settle_next(run *r)
{
    int n = (int)(sizeof settle_steps / sizeof *settle_steps);
    for (; r->settle_i < n; r->settle_i++)
        if (settle_steps[r->settle_i].fn(r) == STEP_WAIT) return;
    deliver(r);
}

/* ------------------------------------------------------------ holds and the exit */

static void coalesce_end(run *r);

static void breaker_settle(run *r, breaker_outcome outcome)
{
    if (!r->ticket_live) return;
    breaker *b = router_breaker(r->rt, r->plan[r->cur]);
    r->ticket_live = false;
    if (b) breaker_record(b, util_now_ms(), &r->ticket, outcome, router_random(r->rt));
}

static void slot_release(run *r)
{
    if (!r->slot) return;
    router_slot_release(r->rt, r->slot);
    r->slot = NULL;
}

/* Gives back everything the run holds; each line is a no-op when nothing
 * of its kind is held. */
static void release_holds(run *r)
{
    spool_wait_leave(r);
    if (r->cache_op) {
        cache_store_cancel(r->cache_op);
        r->cache_op = NULL;
    }
    if (r->idem_pending) {
        idem_cancel(r->idem_pending);
        r->idem_pending = NULL;
    }
    if (r->idem_held && !r->idem_settled) /* an outcome a retry may better: free the key */
        idem_release(router_idem(r->rt), scope(r), r->idem_key, r->idem_owner);
    r->idem_held = false;
    if (r->rl.held) /* a request that ends unsettled gives back what it reserved */
        ratelimit_settle(router_ratelimit(r->rt), &r->rl, util_now_ms(), 0, 0);
    coalesce_end(r);
    /* a run that ends without its settlement step (the client left, a
     * failure): the cost recorded, if any, else the whole reservation back */
    budget_settle(router_budgets(r->rt), &r->bhold, r->cost_known ? r->cost_pusd : 0);
    breaker_settle(r, BREAKER_ABANDONED);
    if (r->timer_armed) {
        evtimer_del(&r->timer);
        r->timer_armed = false;
    }
    if (r->granted) {
        retry_budget_refund(router_budget(r->rt, r->granted), util_now_ms());
        r->granted = NULL;
    }
    if (r->call) {
        engine_call_cancel(r->call);
        r->call = NULL;
    }
    slot_release(r);
}

static void stream_close(run *r);

/* The one exit. The run is recycled on the next loop pass, never inside a
 * callback that still stands on it. */
static void run_finish(run *r, run_state final, int status, const char *why)
{
    if (run_over(r)) return;
    set_state(r, final);
    release_holds(r);
    stream_close(r);
    log_debug("%s: %s model=%s attempts=%d %lld us: %s", r->id,
              final == RUN_DONE ? "done" : "failed", r->canon.model ? r->canon.model : "-",
              r->attempts, (long long)(util_now_us() - r->start_us), why);
    if (!r->done_called) {
        r->done_called = true;
        run_outcome o = {final, status, why};
        r->sink->done(r->sctx, &o);
    }
    evtimer_assign(&r->reap, router_base(r->rt), on_reap, r);
    struct timeval zero = {0, 0};
    evtimer_add(&r->reap, &zero);
}

void run_cancel(run *r)
{
    if (!r || run_over(r) || r->done_called) return;
    if (r->attempts) { /* the provider may bill what it did */
        usage_record u = r->sres.usage;
        estimate_usage(r, &u, stream_output_chars(r));
        record_usage(r, 499, "client_closed", &u);
        rate_limit_settle(r, &u);
    } else
        record_usage(r, 499, "client_closed", NULL);
    run_finish(r, RUN_FAILED, 499, "the client closed the connection");
}

/* ------------------------------------------------------------ planning */

/* The budgets a request is charged to (router/budget.h). */
static void budget_request_of(const run *r, budget_request *req)
{
    memset(req, 0, sizeof *req);
    if (r->key) {
        req->key_id = r->key->id;
        req->key_limits = r->key->lim.budget_pusd;
        if (r->key->team_cfg) {
            req->team = r->key->team_cfg->name;
            req->team_limits = r->key->team_cfg->lim.budget_pusd;
        }
    }
    req->total_limits = config_budgets(router_config(r->rt))->total.budget_pusd;
    req->ts_us = r->wall_start_us;
}

/* The highest share spent among the key's and its team's budgets, or -1;
 * *team says the team's was higher. */
static int spend_share(const run *r, bool *team)
{
    budget_request req;
    budget_request_of(r, &req);
    return budget_share_pct(router_budgets(r->rt), &req, team);
}

/* A plan whose every candidate was skipped (providers/params.h): a 400
 * naming the parameter the first of them could not take. */
static void fail_unfit(run *r, const char *what, const target *first)
{
    params_refusal why;
    if (!params_target_refuses(&r->canon, first, &why)) { /* cannot happen: it was skipped */
        run_fail(r, 400, "invalid_request_error", "unsupported_parameter", NULL, what, false);
        return;
    }
    char msg[900];
    snprintf(msg, sizeof msg, "%s. The first skipped, %s: %s", what, first->model, why.message);
    run_fail(r, 400, "invalid_request_error", why.code, why.param, msg, false);
}

/* "auto" and "tier:NAME": the routing policy (router/policy.h) picks the
 * cheapest healthy candidates that fit, with escalation tiers after them. */
static int plan_by_policy(run *r)
{
    const bridle_config *cfg = router_config(r->rt);
    if (!config_policy(cfg)) {
        run_fail(r, 503, "server_error", "no_routing_policy", "model",
                 "This gateway has no routing policy for \"auto\" or \"tier:NAME\": add a "
                 "\"routing\" section to its config, or name a model (GET /v1/models)",
                 false);
        return -1;
    }
    int n_models;
    policy_model *models = router_policy_models(r->rt, &n_models);
    policy_request pr = {
        .model = r->canon.model,
        .task = r->canon.task,
        .tier_header = r->in.tier,
        .prompt_chars = (int64_t)r->canon.body_len, /* the body bounds the text from above */
        .max_tokens = r->canon.max_tokens,
        .json_mode = r->canon.json_mode,
        .needs = r->canon.needs,
        .refused_dialects = params_refused_dialects(&r->canon),
    };
    pr.spend_share_pct = spend_share(r, &pr.team_budget);
    policy_plan plan;
    char err[256];
    policy_result rc =
        policy_plan_request(config_policy(cfg), models, n_models, &pr, &plan, err, sizeof err);
    if (rc == POLICY_UNFIT) {
        fail_unfit(r, err, &config_model(cfg, plan.skipped[0])->target);
        return -1;
    }
    if (rc != POLICY_OK) {
        bool bad = rc == POLICY_BAD_TIER;
        run_fail(r, bad ? 400 : 503, bad ? "invalid_request_error" : "server_error",
                 bad ? "invalid_tier" : "no_candidate", bad ? "model" : NULL, err, !bad);
        return -1;
    }
    for (int i = 0; i < plan.n && r->n_plan < MAX_PLAN; i++)
        r->plan[r->n_plan++] = &config_model(cfg, plan.cand[i].model_index)->target;
    r->pplan = plan;
    r->by_policy = true;
    r->canon.model_chosen = true;
    if (plan.n_skipped)
        snprintf(r->route_rule, sizeof r->route_rule, "%.90s; skipped %d that cannot take it",
                 plan.rule, plan.n_skipped);
    else
        snprintf(r->route_rule, sizeof r->route_rule, "%s", plan.rule);
    if (plan.baseline_index >= 0) r->baseline = config_model(cfg, plan.baseline_index);
    r->canon.max_tokens = plan.max_tokens_applied; /* policy_output_cap() */
    /* the client's own reasoning control wins over the task's cap */
    if (plan.thinking_cap > 0 && !r->canon.reasoning_set)
        r->canon.thinking_budget = plan.thinking_cap;
    return 0;
}

static int plan_model(run *r, const model_conf *m)
{
    r->baseline = m;
    if (!m->enabled) {
        char msg[300];
        snprintf(msg, sizeof msg,
                 "The model '%s' is configured but its provider (%s) is disabled: a required "
                 "environment variable such as its API key is not set",
                 m->name, m->target.provider->name);
        run_fail(r, 503, "server_error", "provider_unavailable", "model", msg, false);
        return -1;
    }
    params_refusal why;
    if (params_target_refuses(&r->canon, &m->target, &why)) {
        run_fail(r, 400, "invalid_request_error", why.code, why.param, why.message, false);
        return -1;
    }
    r->plan[r->n_plan++] = &m->target;
    r->canon.max_tokens = policy_output_cap(config_policy(router_config(r->rt)), r->canon.task,
                                            false, r->canon.max_tokens, NULL);
    return 0;
}

static int plan_route(run *r, const route_conf *rc)
{
    r->route_name = rc->name;
    r->canon.model_chosen = true;
    r->baseline = rc->baseline;
    const target *skipped = NULL;
    int n_skipped = 0;
    for (int i = 0; i < rc->n_candidates && r->n_plan < MAX_PLAN; i++) {
        const target *t = &rc->candidates[i]->target;
        if (!rc->candidates[i]->enabled) continue;
        if (params_target_refuses(&r->canon, t, NULL)) { /* a candidate that cannot take it */
            if (!n_skipped++) skipped = t;
            continue;
        }
        r->plan[r->n_plan++] = t;
    }
    r->canon.max_tokens = policy_output_cap(config_policy(router_config(r->rt)), r->canon.task,
                                            rc->cap_default, r->canon.max_tokens, NULL);
    if (n_skipped)
        snprintf(r->route_rule, sizeof r->route_rule,
                 "route %.60s: skipped %d candidate%s that cannot take it", rc->name, n_skipped,
                 n_skipped == 1 ? "" : "s");
    if (r->n_plan) return 0;
    if (skipped) {
        char err[160];
        snprintf(err, sizeof err,
                 "route \"%.60s\": none of its candidate models can take this "
                 "request",
                 rc->name);
        fail_unfit(r, err, skipped);
        return -1;
    }
    run_fail(r, 503, "server_error", "provider_unavailable", "model",
             "None of this route's candidate models has an enabled provider", false);
    return -1;
}

/* A key with a list of models (key_conf.models) may ask only for those
 * models or routes, or "auto" / "tier:NAME" when listed: else 403. */
static int check_allowed_model(run *r)
{
    const key_conf *k = r->key;
    if (!k || !k->n_models) return 0;
    for (int i = 0; i < k->n_models; i++)
        if (strcmp(k->models[i], r->canon.model) == 0) return 0;
    char msg[600];
    int n = snprintf(msg, sizeof msg, "This key may not use the model '%.100s': it may use ",
                     r->canon.model);
    for (int i = 0; i < k->n_models && n > 0 && (size_t)n < sizeof msg; i++)
        n += snprintf(msg + n, sizeof msg - (size_t)n, "%s'%.100s'", i ? ", " : "", k->models[i]);
    run_fail(r, 403, "permission_error", "model_not_allowed", "model", msg, false);
    return -1;
}

/* Embeddings name an embedding model or a route of them: "auto" and tiers
 * route chat requests only. */
static int plan_no_embedding_model(run *r)
{
    const char *model = r->canon.model;
    bool routed = strcmp(model, "auto") == 0 || strncmp(model, "tier:", 5) == 0;
    char msg[400];
    snprintf(msg, sizeof msg,
             routed ? "'%.100s' routes chat requests only: for embeddings name an embedding model "
                      "or a route of them (GET /v1/models lists the models this gateway serves)"
                    : "The model '%.100s' does not exist on this gateway: name an embedding model "
                      "or a route of them (GET /v1/models lists the models this gateway serves)",
             model);
    run_fail(r, routed ? 400 : 404, "invalid_request_error",
             routed ? "invalid_model" : "model_not_found", "model", msg, false);
    return -1;
}

/* Chat goes to chat models and embeddings to embedding models: the other
 * kind is a 400 that says where to send it. Inputs given as token ids go
 * only to candidates whose dialect takes them. */
static int check_operation(run *r)
{
    bool embed = r->canon.embed.on;
    if (r->plan[0]->price->embedding != embed) {
        static const char *const what[2][2] = {
            {"The model '%.100s' is an embedding model: send it to POST /v1/embeddings, or name a "
             "chat model here (GET /v1/models lists the models this gateway serves)",
             "The route '%.100s' lists embedding models: send it to POST /v1/embeddings, or name "
             "a chat model here (GET /v1/models lists the models this gateway serves)"},
            {"The model '%.100s' is a chat model, not an embedding model: send it to POST "
             "/v1/chat/completions, or name an embedding model here (GET /v1/models lists the "
             "models this gateway serves)",
             "The route '%.100s' lists chat models, not embedding models: send it to POST "
             "/v1/chat/completions, or name an embedding model here (GET /v1/models lists the "
             "models this gateway serves)"}};
        char msg[400];
        snprintf(msg, sizeof msg, what[embed][r->route_name != NULL], r->canon.model);
        run_fail(r, 400, "invalid_request_error", "invalid_model", "model", msg, false);
        return -1;
    }
    if (!embed || !r->canon.embed.token_ids) return 0;
    int n = 0;
    for (int i = 0; i < r->n_plan; i++)
        if (r->plan[i]->provider->ops->embed->token_ids) r->plan[n++] = r->plan[i];
    if ((r->n_plan = n) > 0) return 0;
    run_fail(r, 400, "invalid_request_error", "invalid_value", "input",
             "This model takes text only (token ids are a tokenizer's, and only OpenAI-compatible "
             "hosts take them): send \"input\" as a string or a list of strings",
             false);
    return -1;
}

/* The candidates in order, then the deadlines (they depend on the route the
 * plan took: a route of $.routes, or the policy's "auto" / "tier:NAME"). */
static int make_plan(run *r)
{
    const bridle_config *cfg = router_config(r->rt);
    const char *model = r->canon.model;
    if (check_allowed_model(r) != 0) return -1;
    const model_conf *m = config_find_model(cfg, model);
    const route_conf *rc = m ? NULL : config_find_route(cfg, model);
    int rv;
    if (!m && !rc && r->canon.embed.on) /* "auto", tiers and unknown names */
        return plan_no_embedding_model(r);
    if (m)
        rv = plan_model(r, m);
    else if (rc)
        rv = plan_route(r, rc);
    else if (strcmp(model, "auto") == 0 || strncmp(model, "tier:", 5) == 0)
        rv = plan_by_policy(r);
    else {
        char msg[300];
        snprintf(msg, sizeof msg,
                 "The model '%.100s' does not exist on this gateway: GET /v1/models lists the "
                 "models and routes it serves",
                 model);
        run_fail(r, 404, "invalid_request_error", "model_not_found", "model", msg, false);
        return -1;
    }
    if (rv != 0 || check_operation(r) != 0) return -1;
    config_request_timeouts(cfg, r->canon.task, route_of(r), &r->tmo);
    r->deadline_ms = r->start_us / 1000 + r->tmo.total_ms;
    return 0;
}

/* ------------------------------------------------------------ coalescing
 *
 * With resilience.coalesce, a deterministic request (temperature 0, n 1,
 * not streamed) that is byte for byte the same as one of the same client
 * key already in flight does not call the provider: it waits for that run
 * (its leader) and gets a copy of its answer. If the leader ends without a
 * whole answer (its client left), its followers go on on their own. */

/* SHA-256 (hex) of a line naming what the body is sent to, then the body
 * as sent: what makes two requests "the same" for coalescing and for an
 * Idempotency-Key. */
static void request_fingerprint(const char *what, const char *body, size_t len, char out[65])
{
    buf b = BUF_INIT;
    buf_append_str(&b, what);
    buf_append_char(&b, '\n');
    buf_append(&b, body, len);
    util_sha256_hex(b.data, b.len, out);
    buf_free(&b);
}

static step_result admit_coalescing(run *r)
{
    if (!r->canon.deterministic || !config_resilience(router_config(r->rt))->coalesce)
        return STEP_NEXT;
    /* the task and tier headers change the plan and the cap: part of "the same" */
    char what[512];
    snprintf(what, sizeof what, "%s\t%s\t%s", scope(r), r->in.task ? r->in.task : "",
             r->in.tier ? r->in.tier : "");
    request_fingerprint(what, r->in.body, r->in.body_len, r->coalesce_fp);
    run *l = router_coalesce_find(r->rt, r->coalesce_fp);
    if (l) {
        r->leader = l;
        r->next_follower = l->followers;
        l->followers = r;
        return STEP_WAIT;
    }
    r->leading = router_coalesce_add(r->rt, r->coalesce_fp, r);
    return STEP_NEXT;
}

/* A follower gets the leader's answer as its own, marked as a copy: the
 * leader's provider and model, its tokens, and a cost of 0 (the leader's
 * event carries the bill). */
static void follower_answer(run *f, const run *leader, const answer *a)
{
    f->coalesced = true;
    f->served_by = cur_target(leader);
    add_common_headers(f);
    buf_add_header(&f->head, "x-bridle-coalesced", "true");
    const usage_record *u = NULL;
    if (a->usage) {
        f->served_usage = billed_usage(leader, a->usage);
        u = &f->served_usage;
        f->usage_estimated = leader->usage_estimated;
        cost_headers(f, u);
    }
    answer_body(f, a->status, a->body, a->len, u, a->status < 400 ? "" : "coalesced_error",
                a->status < 400 ? RUN_DONE : RUN_FAILED,
                "answered with an identical request's answer");
}

static void coalesce_answer(run *leader, const answer *a)
{
    run *f;
    while ((f = leader->followers)) {
        leader->followers = f->next_follower;
        f->leader = NULL;
        follower_answer(f, leader, a);
    }
}

/* r ends: a follower leaves its leader's list; a leader leaves the table
 * and lets whoever still waits go on on their own. */
static void coalesce_end(run *r)
{
    if (r->leader) {
        for (run **p = &r->leader->followers; *p; p = &(*p)->next_follower)
            if (*p == r) {
                *p = r->next_follower;
                break;
            }
        r->leader = NULL;
    }
    if (!r->leading) return;
    r->leading = false;
    router_coalesce_remove(r->rt, r->coalesce_fp, r);
    run *f;
    while ((f = r->followers)) {
        r->followers = f->next_follower;
        f->leader = NULL;
        f->admit_i++; /* past its coalescing step */
        admit_next(f);
    }
}

/* ------------------------------------------------------------ idempotency */

/* The stored answer, as it was first sent (a stream too, in one piece). */
static void replay(run *r, const idem_result *res)
{
    r->replayed = true;
    add_common_headers(r);
    buf_add_header(&r->head, "Idempotent-Replayed", "true");
    buf_reset(&r->idem_body); /* the body must outlive settling */
    buf_append(&r->idem_body, res->body, res->body_len);
    answer a = {res->status,
                res->content_type,
                r->idem_body.data ? r->idem_body.data : "",
                r->idem_body.len,
                NULL,
                "",
                RUN_DONE,
                "replayed for its Idempotency-Key"};
    answer_with(r, &a);
}

static void on_idem_claim(void *ctx, const idem_result *res)
{
    run *r = ctx;
    r->idem_pending = NULL;
    switch (res->outcome) {
    case IDEM_CLAIMED:
        r->idem_held = true;
        snprintf(r->idem_owner, sizeof r->idem_owner, "%s", res->owner);
        r->admit_i++;
        admit_next(r);
        return;
    case IDEM_REPLAY:
        replay(r, res);
        return;
    case IDEM_MISMATCH:
        run_fail(r, 422, "invalid_request_error", "idempotency_key_reused", NULL,
                 "This Idempotency-Key was already used with a different request body; a key "
                 "names one request: send a new key with a new request",
                 false);
        return;
    case IDEM_IN_PROGRESS:
        buf_add_header(&r->head, "retry-after", "1");
        run_fail(r, 409, "invalid_request_error", "idempotency_key_in_use", NULL,
                 "A request with this Idempotency-Key is still being processed; retry after it "
                 "finishes to get its answer",
                 true);
        return;
    default: {
        char msg[400];
        snprintf(msg, sizeof msg,
                 "The gateway cannot check this Idempotency-Key right now (%s); retry shortly",
                 res->error ? res->error : "no answer from the database");
        run_fail(r, 503, "server_error", "idempotency_unavailable", NULL, msg, true);
    }
    }
}

/* Claims the request's Idempotency-Key (db/idem): the fingerprint is the
 * SHA-256 of method, path and body as sent (a retry resends the same
 * bytes). Without a database the header is ignored. */
static step_result admit_idempotency(run *r)
{
    idem_store *st = router_idem(r->rt);
    if (!r->in.idempotency_keys || !st) return STEP_NEXT;
    if (r->in.idempotency_keys > 1) {
        run_fail(r, 400, "invalid_request_error", "invalid_idempotency_key", NULL,
                 "Send at most one Idempotency-Key header", false);
        return STEP_ANSWERED;
    }
    if (idem_parse_key(r->in.idempotency_key, r->idem_key, sizeof r->idem_key) != 0) {
        run_fail(r, 400, "invalid_request_error", "invalid_idempotency_key", NULL,
                 "The Idempotency-Key header must be 1 to 255 printable ASCII characters, as a "
                 "quoted string (\"...\") or a bare token without spaces",
                 false);
        return STEP_ANSWERED;
    }
    char fp[65];
    request_fingerprint(r->in.what, r->in.body, r->in.body_len, fp);
    bool wait = config_idempotency(router_config(r->rt))->wait;
    r->idem_pending =
        idem_claim(st, scope(r), r->idem_key, fp, wait, r->deadline_ms, on_idem_claim, r);
    if (r->idem_pending) return STEP_WAIT;
    run_fail(r, 503, "server_error", "out_of_memory", NULL,
             "The gateway is out of memory; retry shortly", true);
    return STEP_ANSWERED;
}

/* ------------------------------------------------------------ budgets */

static bool any_limit(const int64_t *lim)
{
    for (int p = 0; lim && p < N_PERIODS; p++)
        if (lim[p] > 0) return true;
    return false;
}

/* An upper bound of what one call to t can cost: every byte of the body a
 * token (no tokenizer makes fewer bytes than tokens of text; the JSON
 * around the messages outweighs the chat template's few tokens a message;
 * images by URL are added, input_bound_tokens),
 * at the dearest input rate (plain, or a cache write), and max_tokens of
 * output. Long-context re-pricing comes with pricing_cost_pusd. */
static int64_t call_bound_pusd(const model_price *p, int64_t in, int64_t out)
{
    if (!p) return 0;
    usage_record u = {.input_uncached = in, .output = out}; /* 0 write price = input's */
    if (p->cache_write_5m > p->input && p->cache_write_5m >= p->cache_write_1h)
        u = (usage_record){.cache_write_5m = in, .output = out};
    else if (p->cache_write_1h > p->input)
        u = (usage_record){.cache_write_1h = in, .output = out};
    return pricing_cost_pusd(p, &u, false);
}

/* An image given by URL costs tokens its bytes do not show: at most about
 * 1,600 (Anthropic, 1.15 megapixels), 1,105 (gpt-4o high detail) or 2,488
 * (OpenAI's patch-based models) a picture, whatever its size. */
#define IMAGE_TOKENS_MAX 3000
#define TOOLS_TOKENS_MAX 1000

/* Computed once per run (a budget and a rate limit both ask). */
static int64_t input_bound_tokens(run *r)
{
    if (r->input_bound) return r->input_bound;
    int64_t in = (int64_t)r->in.body_len;
    const char *p = r->in.body, *end = p ? p + r->in.body_len : NULL;
    static const char tag[] = "\"image_url\"";
    while (p && (p = memmem(p, (size_t)(end - p), tag, sizeof tag - 1))) {
        in += IMAGE_TOKENS_MAX;
        p += sizeof tag - 1;
    }
    /* tools add a system prompt of their own (Anthropic: about 350 tokens) */
    if (r->in.body && memmem(r->in.body, r->in.body_len, "\"tools\"", 7)) in += TOOLS_TOKENS_MAX;
    return r->input_bound = in > 0 ? in : 1;
}

/* max_tokens as capped, else the provider's default or
 * DEFAULT_OUTPUT_BOUND. */
static int64_t output_cap_tokens(const run *r)
{
    const provider_conf *p = r->n_plan ? r->plan[0]->provider : NULL;
    if (r->canon.embed.on) return 0; /* vectors are not tokens: input only */
    if (r->canon.max_tokens > 0) return r->canon.max_tokens;
    return p && p->default_max_tokens > 0 ? p->default_max_tokens : DEFAULT_OUTPUT_BOUND;
}

/* The cap plus the thinking budget where it is extra. */
static int64_t output_bound_tokens(const run *r)
{
    int64_t out = output_cap_tokens(r);
    return r->canon.thinking_budget > 0 ? out + r->canon.thinking_budget : out;
}

/* E up to candidate `upto` of the plan: the dearest of them (a failed
 * attempt is not billed, one answer is); with the cascade every answer set
 * aside is billed too, so their sum. Reserved for candidate 0 at admission,
 * raised before an attempt on a dearer one (start_attempt). */
static int64_t reservation_pusd(run *r, int upto)
{
    int64_t in = input_bound_tokens(r), out = output_bound_tokens(r);
    int64_t max = 0, sum = 0;
    for (int i = 0; i <= upto && i < r->n_plan; i++) {
        int64_t c = call_bound_pusd(r->plan[i]->price, in, out);
        sum += c;
        if (c > max) max = c;
    }
    const policy *pol = config_policy(router_config(r->rt));
    return r->by_policy && pol && policy_cascade_enabled(pol) ? sum : max;
}

static void budget_refused(run *r, budget_status st)
{
    if (st == BUDGET_EXCEEDED) {
        run_fail(r, 429, "budget_exceeded", "budget_exceeded", NULL, r->bhold.message, false);
        return;
    }
    char ra[16];
    snprintf(ra, sizeof ra, "%d", r->bhold.retry_after_s > 0 ? r->bhold.retry_after_s : 1);
    buf_add_header(&r->head, "retry-after", ra);
    run_fail(r, 503, "server_error", "budget_unavailable", NULL, r->bhold.message, true);
}

static void on_budget(void *ctx, budget_status st)
{
    run *r = ctx;
    if (st != BUDGET_OK) {
        budget_refused(r, st);
        return;
    }
    r->admit_i++;
    admit_next(r);
}

/* Reserves E on the request's budgets: from this process's lease when it
 * has enough, else after one lease call (router/budget.h). After the
 * coalescing and idempotency steps: a copy or a replay costs nothing. */
static step_result admit_budget(run *r)
{
    budget_request req;
    budget_request_of(r, &req);
    bool key = r->key && any_limit(req.key_limits), team = any_limit(req.team_limits);
    if (!key && !team && !any_limit(req.total_limits)) return STEP_NEXT;
    if (r->canon.max_tokens < 0) /* never unbounded: the bound reserved is sent */
        r->canon.max_tokens = output_cap_tokens(r);
    if (r->in.budget_held) return STEP_NEXT; /* its batch reserved the whole plan's bound */
    req.amount_pusd = reservation_pusd(r, 0);
    budget_status st = budget_reserve(router_budgets(r->rt), &r->bhold, &req, on_budget, r);
    if (st == BUDGET_OK) return STEP_NEXT;
    if (st == BUDGET_WAIT) return STEP_WAIT;
    budget_refused(r, st);
    return STEP_ANSWERED;
}

/* ------------------------------------------------------------ the response cache */

enum { CC_NO_STORE = 1, CC_NO_CACHE = 2 };

/* The no-store and no-cache directives of a Cache-Control header value
 * (comma-separated, any case). */
static int cache_control_flags(const char *value)
{
    int flags = 0;
    for (const char *p = value; p && *p;) {
        p += strspn(p, " \t,");
        size_t len = strcspn(p, ",");
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len == 8 && strncasecmp(p, "no-store", 8) == 0) flags |= CC_NO_STORE;
        if (len == 8 && strncasecmp(p, "no-cache", 8) == 0) flags |= CC_NO_CACHE;
        p += strcspn(p, ",");
    }
    return flags;
}

/* A hit: the stored answer as this client asked for it (the same body, or
 * the stream it adds up to), at no cost, with the usage it saved. False
 * when the entry cannot be replayed that way (then it is a miss). */
static bool cache_replay(run *r, const cache_answer *c)
{
    buf_reset(&r->idem_body); /* the answer must outlive the entry while settling */
    if (!r->canon.stream)
        buf_append(&r->idem_body, c->body, c->len);
    else if (resp_cache_stream_of(c->body, c->len, r->canon.include_usage, &r->idem_body) != 0) {
        buf_reset(&r->idem_body);
        return false;
    }
    r->cache_hit = true;
    r->served_by = c->served_by;
    r->served_usage = c->usage;
    r->usage_estimated = c->usage_estimated;
    add_common_headers(r);
    if (r->canon.stream) buf_add_header(&r->head, "Cache-Control", "no-cache");
    cost_headers(r, &r->served_usage);
    answer a = {200,
                r->canon.stream ? "text/event-stream" : "application/json",
                r->idem_body.data ? r->idem_body.data : "",
                r->idem_body.len,
                &r->served_usage,
                "",
                RUN_DONE,
                "answered from the response cache"};
    answer_with(r, &a);
    return true;
}

/* An answer from the shared level: kept in memory too (for what is left
 * of its TTL, at most this request's), then replayed. False when this
 * gateway does not serve the model that answered. */
static bool shared_replay(run *r, const cache_store_row *row)
{
    const model_conf *m = config_find_model(router_config(r->rt), row->model);
    if (!m) return false;
    const cache_store_usage *su = &row->usage;
    cache_answer a = {row->body,
                      row->len,
                      &m->target,
                      {su->input_uncached, su->cache_read, su->cache_write_5m, su->cache_write_1h,
                       su->output, su->reasoning, su->exact},
                      su->estimated};
    int64_t ttl = row->ttl_left_ms < r->cache_ttl_ms ? row->ttl_left_ms : r->cache_ttl_ms;
    resp_cache_put(router_cache(r->rt), &r->cache_key, &a, util_now_ms() + ttl);
    return cache_replay(r, &a);
}

/* The shared level answered (row NULL: a miss, or no answer in time). */
static void on_shared(void *ctx, const cache_store_row *row)
{
    run *r = ctx;
    r->cache_op = NULL;
    if (row && shared_replay(r, row)) return;
    r->cache_store = true;
    r->admit_i++; /* past the cache step */
    admit_next(r);
}

/* Answers from the response cache when the request is deterministic
 * (temperature 0, or none on a model cache.deterministic_models names) or
 * opts in (x-bridle-cache: on), and n is 1. Cache-Control: no-store skips
 * the cache; no-cache skips the lookup but stores the new answer. */
static step_result admit_cache(run *r)
{
    resp_cache *c = router_cache(r->rt);
    const bridle_config *cfg = router_config(r->rt);
    const char *opt = r->in.cache_opt;
    if (!c || r->canon.n != 1) return STEP_NEXT;
    if (opt && strcasecmp(opt, "on") != 0 && strcasecmp(opt, "off") != 0) {
        run_fail(r, 400, "invalid_request_error", "invalid_cache_header", NULL,
                 "The x-bridle-cache header takes \"on\" (cache this request's answer even "
                 "though it samples) or \"off\" (skip the response cache)",
                 false);
        return STEP_ANSWERED;
    }
    const target *t = cur_target(r);
    bool deterministic =
        r->canon.deterministic || r->canon.temperature_zero ||
        (!r->canon.temperature_set && config_cache_deterministic_model(cfg, t->index));
    bool on = opt && strcasecmp(opt, "on") == 0, off = opt && !on;
    int cc = cache_control_flags(r->in.cache_control);
    if ((!deterministic && !on) || off || (cc & CC_NO_STORE)) return STEP_NEXT;
    int64_t ttl_s = config_cache_ttl_s(cfg, r->canon.task, route_of(r));
    if (ttl_s <= 0) return STEP_NEXT;
    bool team = config_cache(cfg)->team_scope && r->key && r->key->team;
    resp_cache_key(&r->canon, team, team ? r->key->team : scope(r), t->model, output_cap_tokens(r),
                   &r->cache_key);
    r->cache_ttl_ms = ttl_s * 1000;
    cache_answer hit;
    if (!(cc & CC_NO_CACHE)) {
        if (resp_cache_get(c, &r->cache_key, util_now_ms(), &hit) && cache_replay(r, &hit))
            return STEP_ANSWERED;
        cache_store *shared = router_cache_store(r->rt);
        if (shared && (r->cache_op = cache_store_get(shared, r->cache_key.data, on_shared, r)))
            return STEP_WAIT;
    }
    r->cache_store = true;
    return STEP_NEXT;
}

/* ------------------------------------------------------------ admission steps */

/* A request the ledger could not record is not served. */
static step_result admit_usage_log(run *r)
{
    ledger *lg = router_ledger(r->rt);
    if (!lg || ledger_can_accept(lg)) return STEP_NEXT;
    run_fail(r, 503, "server_error", "usage_log_full", NULL,
             "The gateway cannot record usage right now (its local usage log is full because the "
             "database has been unreachable); retry later",
             true);
    return STEP_ANSWERED;
}

/* ------------------------------------------------------------ rate limits */

static const char *const rl_what[RL_N_KINDS] = {"requests per minute (RPM)",
                                                "tokens per hour (TPH)", "cost per hour"};
static const char *const rl_type[RL_N_KINDS] = {"requests", "tokens", "cost"};

static void rl_amount(rl_kind kind, int64_t v, char *out, size_t n)
{
    if (kind != RL_COST) {
        snprintf(out, n, "%lld", (long long)v);
        return;
    }
    out[0] = '$';
    util_format_pusd(v, 6, out + 1, n - 1);
}

/* A 429 in OpenAI's shape, with Retry-After (whole seconds, rounded up)
 * and retry-after-ms; no upstream call, no database query. */
static void rate_limit_refuse(run *r, const rl_refusal *w)
{
    char limit[40], used[40], asked[40], msg[700];
    rl_amount(w->kind, w->limit, limit, sizeof limit);
    rl_amount(w->kind, w->used, used, sizeof used);
    rl_amount(w->kind, w->asked, asked, sizeof asked);
    const char *scope_name = w->team ? "team" : "key";
    if (w->too_large && w->kind == RL_REQUESTS) { /* a limit below N */
        snprintf(msg, sizeof msg,
                 "The rate limit of %s \"%.64s\" on %s (%s) is below the number of gateway "
                 "instances sharing it (%d), so each admits none: raise the limit to at least %d",
                 scope_name, w->name, rl_what[w->kind], limit, w->n, w->n);
        run_fail(r, 429, rl_type[w->kind], "rate_limit_exceeded", NULL, msg, false);
        return;
    }
    if (w->too_large) {
        char share[40];
        rl_amount(w->kind, w->limit / (w->n > 0 ? w->n : 1), share, sizeof share);
        snprintf(
            msg, sizeof msg,
            "Request too large for %s \"%.64s\" on %s: it may use up to %s (its body's bytes "
            "as tokens, images and tools, plus max_tokens %lld), more than the %s allowed per hour "
            "(%s on each of %d gateway instance(s)). Lower max_tokens or send a smaller "
            "request.",
            scope_name, w->name, rl_what[w->kind], asked, (long long)output_cap_tokens(r), limit,
            share, w->n);
        run_fail(r, 429, rl_type[w->kind], "rate_limit_exceeded", NULL, msg, false);
        return;
    }
    char wait[48], n[24];
    ratelimit_format_duration(w->retry_ms, wait, sizeof wait);
    bool minute = w->kind == RL_REQUESTS;
    int len =
        snprintf(msg, sizeof msg,
                 "Rate limit reached for %s \"%.64s\" on %s: limit %s, used %s in "
                 "the last %s",
                 scope_name, w->name, rl_what[w->kind], limit, used, minute ? "minute" : "hour");
    if (!minute && len > 0 && (size_t)len < sizeof msg)
        len += snprintf(msg + len, sizeof msg - (size_t)len, ", requested %s", asked);
    if (len > 0 && (size_t)len < sizeof msg)
        len += snprintf(msg + len, sizeof msg - (size_t)len, ". Try again in %s.", wait);
    if (w->n > 1 && len > 0 && (size_t)len < sizeof msg)
        snprintf(msg + len, sizeof msg - (size_t)len,
                 " (%d gateway instances share this limit, each admitting %s of it.)", w->n,
                 (rl_amount(w->kind, w->limit / w->n, n, sizeof n), n));
    char *s = util_u64_digits((uint64_t)((w->retry_ms + 999) / 1000), n + sizeof n - 1);
    n[sizeof n - 1] = '\0';
    buf_add_header(&r->head, "Retry-After", s);
    s = util_u64_digits((uint64_t)w->retry_ms, n + sizeof n - 1);
    buf_add_header(&r->head, "retry-after-ms", s);
    run_fail(r, 429, rl_type[w->kind], "rate_limit_exceeded", NULL, msg, true);
}

/* Requests per minute, tokens and cost per hour, the key's and its team's
 * (router/ratelimit.h). Tokens and cost are reserved at an upper bound
 * (the body's bytes as input tokens, the output cap as output, priced on
 * the dearest candidate of the plan) and settled to the actual. */
static step_result admit_rate_limit(run *r)
{
    if (!ratelimit_applies(r->key)) return STEP_NEXT;
    /* the same upper bound as a budget's (the whole plan: any candidate may answer) */
    int64_t in = input_bound_tokens(r), out = output_bound_tokens(r), est_pusd = 0;
    const team_conf *t = r->key->team_cfg;
    if (r->key->lim.pusd_per_hour > 0 || (t && t->lim.pusd_per_hour > 0))
        est_pusd = reservation_pusd(r, r->n_plan - 1);
    rl_refusal why;
    if (ratelimit_admit(router_ratelimit(r->rt), r->key, util_now_ms(), in + out, est_pusd, &r->rl,
                        &why))
        return STEP_NEXT;
    rate_limit_refuse(r, &why);
    return STEP_ANSWERED;
}

/* In order. A step goes on (STEP_NEXT), answers the run itself
 * (STEP_ANSWERED), or waits (STEP_WAIT) and later resumes the run past
 * itself (admit_i++, admit_next). The rate limit comes first: a refusal
 * there costs nothing. The budget reservation comes after the idempotency
 * and coalescing steps: a replay, a cached answer or a copy costs
 * nothing. */
static const run_step admit_steps[] = {
    {"usage_log", admit_usage_log},     {"rate_limit", admit_rate_limit},
    {"idempotency", admit_idempotency}, {"cache", admit_cache},
    {"coalescing", admit_coalescing},   {"budget", admit_budget},
};

static void admit_next(run *r)
{
    int n = (int)(sizeof admit_steps / sizeof *admit_steps);
    for (; r->admit_i < n; r->admit_i++)
        if (admit_steps[r->admit_i].fn(r) != STEP_NEXT) return;
    start_attempt(r);
}

/* ------------------------------------------------------------ upstream errors */

static void fail_upstream(run *r, const upstream_error *e)
{
    const target *t = cur_target(r);
    char msg[700];
    snprintf(msg, sizeof msg, "%s (provider %s, model %s)", e->message, t->provider->name,
             t->model);
    if (e->retry_after_ms > 0 && e->cls == ERRCLASS_RETRYABLE) {
        char ra[24];
        snprintf(ra, sizeof ra, "%lld", (long long)((e->retry_after_ms + 999) / 1000));
        buf_add_header(&r->head, "retry-after", ra);
    }
    run_fail(r, e->client_status ? e->client_status : 502, e->type[0] ? e->type : "api_error",
             e->code, NULL, msg,
             e->cls == ERRCLASS_RETRYABLE && !e->quota_exhausted && !r->budget_exhausted &&
                 !r->shed);
}

/* The request's total timeout ran out. Not the provider's fault: a short
 * per-task deadline must not open a breaker that longer requests share. */
static void fail_deadline(run *r)
{
    breaker_settle(r, BREAKER_ABANDONED);
    const target *t = cur_target(r);
    char msg[500];
    int64_t took = (util_now_us() - r->start_us) / 1000;
    snprintf(msg, sizeof msg,
             "The request did not finish within its total timeout of %lld ms (%s): %lld ms "
             "elapsed over %d attempt%s, the last one to provider %s, model %s",
             (long long)r->tmo.total_ms, r->tmo.total_from, (long long)took, r->attempts,
             r->attempts == 1 ? "" : "s", t->provider->name, t->model);
    run_fail(r, 504, "timeout_error", "request_timeout", NULL, msg, false);
}

/* Did this attempt end because the request's own deadline passed? */
static bool deadline_cut(const run *r, const engine_result *res)
{
    return res->timed_out && !res->first_byte_late && r->cut_by_deadline &&
           util_now_ms() >= r->deadline_ms;
}

/* ------------------------------------------------------------ retries */

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    run *r = arg;
    r->timer_armed = false;
    r->granted = NULL; /* the retry is being made */
    if (!run_over(r)) start_attempt(r);
}

/* Waits wait_ms, then attempts the current candidate again. */
static void wait_then_attempt(run *r, int64_t wait_ms)
{
    set_state(r, RUN_WAITING);
    evtimer_assign(&r->timer, router_base(r->rt), on_timer, r);
    struct timeval tv = util_ms_timeval(wait_ms);
    evtimer_add(&r->timer, &tv);
    r->timer_armed = true;
}

static void fail_over(run *r)
{
    r->cur++;
    r->target_attempts = 0;
    start_attempt(r);
}

/* When the target's rate-limit pause ends (a 429's Retry-After), or 0 when
 * it is not paused, or its breaker is open anyway. */
static int64_t paused_until(const breaker *b, int64_t now)
{
    if (!b) return 0;
    breaker_snapshot sn;
    breaker_get_snapshot(b, now, &sn);
    return sn.state != BREAKER_OPEN && sn.paused_until_ms > now ? sn.paused_until_ms : 0;
}

/* After a failed attempt: settles the breaker (4xx and 429 never count
 * against it; a 429 pauses the target for everyone), then retries the same
 * target after a backoff or Retry-After, fails over to the next candidate,
 * or gives up (reliability.md §2.5; router/retry.h). Returns true when
 * another attempt is under way. */
static bool recover(run *r, const upstream_error *e)
{
    int64_t now = util_now_ms();
    breaker *b = router_breaker(r->rt, r->plan[r->cur]);
    bool client_error = r->status >= 400 && r->status < 500;
    if (r->status == 429 && e->retry_after_ms > 0 && b) breaker_pause(b, now + e->retry_after_ms);
    breaker_settle(r, client_error       ? BREAKER_NEUTRAL
                      : r->own_limit_hit ? BREAKER_ABANDONED
                                         : BREAKER_FAILURE);
    r->own_limit_hit = false;
    retry_budget *rb = router_budget(r->rt, r->plan[r->cur]->provider);
    const resilience_conf *rc = config_resilience(router_config(r->rt));
    retry_input in = {
        .cls = e->cls,
        .quota_exhausted = e->quota_exhausted,
        .attempt = r->target_attempts > 0 ? r->target_attempts : 1,
        .max_attempts = rc->retries ? (int)rc->max_attempts : 1,
        .max_wait_ms = rc->max_wait_ms,
        .backoff_base_ms = rc->backoff_base_ms,
        .backoff_cap_ms = rc->backoff_cap_ms,
        .ambiguous_retries = r->ambiguous_retries,
        .retry_after_ms = e->retry_after_ms,
        .deadline_left_ms = r->deadline_ms - now,
        .streamed = r->relaying,
        .has_alternative = r->cur + 1 < r->n_plan,
        .budget_exhausted = !retry_budget_would_allow(rb, now),
        .rnd = router_random(r->rt),
    };
    retry_decision d;
    retry_decide(&in, &d);
    const target *t = r->plan[r->cur];
    /* Another candidate answers sooner than a backoff: prefer it. */
    if (d.action == RETRY_SAME_AFTER && in.has_alternative) d.action = RETRY_FAIL_OVER;
    if (d.action == RETRY_SAME_AFTER && !retry_budget_allow(rb, now)) d.action = RETRY_GIVE_UP;
    if (in.budget_exhausted && d.action == RETRY_GIVE_UP && e->cls != ERRCLASS_FATAL)
        r->budget_exhausted = true;
    if (e->cls == ERRCLASS_AMBIGUOUS && d.action != RETRY_GIVE_UP) r->ambiguous_retries++;
    switch (d.action) {
    case RETRY_SAME_AFTER: {
        /* never wake before a 429's pause ends (an open breaker sheds) */
        int64_t wait = d.wait_ms, until = paused_until(b, now);
        if (until > now + wait) wait = until - now;
        log_info("%s: %s/%s failed (%s); retrying in %lld ms (%s)", r->id, t->provider->name,
                 t->model, e->message, (long long)wait, d.reason);
        r->granted = t->provider;
        wait_then_attempt(r, wait);
        return true;
    }
    case RETRY_FAIL_OVER:
        log_info("%s: %s/%s failed (%s); failing over to %s/%s (%s)", r->id, t->provider->name,
                 t->model, e->message, r->plan[r->cur + 1]->provider->name,
                 r->plan[r->cur + 1]->model, d.reason);
        fail_over(r);
        return true;
    default:
        log_debug("%s: giving up: %s", r->id, d.reason);
        return false;
    }
}

/* The current candidate's breaker refuses it. A pause (a 429's Retry-After)
 * that ends within resilience.max_wait_ms and the deadline is sat out when
 * no other candidate remains; an open breaker, or a longer pause, moves to
 * the next candidate, or sheds the request: a client retry before
 * Retry-After would be refused too, and its SDK's retries would multiply
 * ours (reliability.md §2.2). Returns false when the breaker lets it in. */
static bool refused_by_breaker(run *r)
{
    const target *t = r->plan[r->cur];
    breaker *b = router_breaker(r->rt, t);
    int64_t now = util_now_ms();
    if (!b || breaker_allow(b, now, &r->ticket)) {
        r->ticket_live = b != NULL;
        return false;
    }
    bool paused = paused_until(b, now) > 0;
    int64_t at = breaker_retry_at_ms(b, now);
    int64_t wait = at > now ? at - now : 1;
    bool last = r->cur + 1 >= r->n_plan;
    const resilience_conf *rc = config_resilience(router_config(r->rt));
    if (paused && last && rc->retries && wait <= rc->max_wait_ms && now + wait < r->deadline_ms) {
        log_info("%s: %s/%s is paused by a rate limit; waiting %lld ms", r->id, t->provider->name,
                 t->model, (long long)wait);
        wait_then_attempt(r, wait + 1); /* +1: the timer's clock may run a little early */
        return true;
    }
    r->status = 0;
    if (!last) {
        log_info("%s: %s/%s is %s; trying %s/%s", r->id, t->provider->name, t->model,
                 paused ? "paused by a rate limit" : "open", r->plan[r->cur + 1]->provider->name,
                 r->plan[r->cur + 1]->model);
        fail_over(r);
        return true;
    }
    upstream_error e = {.cls = ERRCLASS_RETRYABLE, .retry_after_ms = wait};
    if (paused) {
        provider_error_set(&e, ERRCLASS_RETRYABLE, 429, "rate_limit_error", "rate_limited");
        snprintf(e.message, sizeof e.message,
                 "Provider %s is rate-limiting model %s: it asked for a pause of %lld ms more "
                 "(Retry-After), %s",
                 t->provider->name, t->model, (long long)wait,
                 rc->retries ? "longer than this gateway waits (resilience.max_wait_ms)"
                             : "and this gateway does not wait (resilience.retries is off)");
    } else {
        provider_error_set(&e, ERRCLASS_RETRYABLE, 503, "server_error", "circuit_open");
        snprintf(e.message, sizeof e.message,
                 "Provider %s is failing for model %s and is being rested (circuit breaker open)",
                 t->provider->name, t->model);
        r->shed = true;
    }
    fail_upstream(r, &e);
    return true;
}

/* ------------------------------------------------------------ streams */

/* Bytes for the client's stream: kept in r->out until flushed, and (for an
 * Idempotency-Key) in the copy to store, as they are emitted. */
static void emit(run *r, const char *data, size_t len)
{
    buf_append(&r->out, data, len);
    if ((r->idem_held || r->cache_store) && !r->idem_too_big) {
        if (r->idem_body.len + len > IDEM_STREAM_MAX)
            r->idem_too_big = true;
        else
            buf_append(&r->idem_body, data, len);
    }
}

/* Remembers the stream's chunk id (from the first chunk) for the usage chunk. */
static void remember_chunk_id(run *r, const char *json, size_t len)
{
    const char *p = memmem(json, len < 64 ? len : 64, "\"id\":\"", 6);
    if (!p) return;
    p += 6;
    const char *end = memchr(p, '"', (size_t)(json + len - p));
    if (end && (size_t)(end - p) < sizeof r->chunk_id) memcpy(r->chunk_id, p, (size_t)(end - p));
}

static void emit_chunk(void *ctx, const char *json, size_t len)
{
    run *r = ctx;
    if (!r->chunk_id[0]) remember_chunk_id(r, json, len);
    if (r->ttft_us < 0) r->ttft_us = util_now_us() - r->start_us;
    emit(r, "data: ", 6);
    emit(r, json, len);
    emit(r, "\n\n", 2);
}

static void flush_out(run *r)
{
    if (!r->out.len || r->holding || r->state != RUN_RELAYING) return;
    r->sink->chunk(r->sctx, r->out.data, r->out.len);
    buf_reset(&r->out);
}

static int on_stream_event(void *ctx, const stream_event *ev)
{
    run *r = ctx;
    const provider_ops *ops = r->plan[r->cur]->provider->ops;
    stream_sink sink = {r, emit_chunk};
    if (ops->stream_event(r->sstate, ev, &r->sres, &sink) < 0 || r->sres.failed) return 1;
    return 0;
}

/* The stream's state: parser, the dialect's translator, the output. */
static void stream_open(run *r)
{
    const target *t = r->plan[r->cur];
    r->relaying = true;
    r->parser = sse_parser_new(t->provider->ops->framing, 0);
    r->sstate = t->provider->ops->stream_new ? t->provider->ops->stream_new(&r->canon, t) : NULL;
}

static void stream_close(run *r)
{
    if (!r->relaying) return;
    const target *t = r->plan[r->cur];
    if (r->parser) sse_parser_free(r->parser);
    if (r->sstate && t->provider->ops->stream_free) t->provider->ops->stream_free(r->sstate);
    r->parser = NULL;
    r->sstate = NULL;
    r->relaying = false;
    buf text = r->sres.text;
    buf_reset(&text);
    memset(&r->sres, 0, sizeof r->sres);
    r->sres.text = text;
    r->chunk_id[0] = '\0';
    r->ttft_us = -1;
    buf_reset(&r->out);
    buf_reset(&r->idem_body); /* a held stream set aside was never sent */
    r->idem_too_big = false;
}

/* The response head: from here on the client is committed to this answer. */
static void stream_start_reply(run *r)
{
    set_state(r, RUN_RELAYING);
    add_common_headers(r);
    buf_add_header(&r->head, "Cache-Control", "no-cache");
    rate_limit_headers(r);
    r->sink->head(r->sctx, 200, "text/event-stream", &r->head, true);
}

/* Where the cascade goes from the current candidate (for a streamed
 * request: if streams are cascaded): a plan index, or -1. */
static int cascade_next(const run *r)
{
    if (!r->by_policy) return -1;
    const policy *pol = config_policy(router_config(r->rt));
    bool on = r->canon.stream ? policy_cascade_streams(pol) : policy_cascade_enabled(pol);
    if (!on) return -1;
    int next = policy_escalation_index(pol, &r->pplan, r->cur);
    return next >= 0 && next < r->n_plan ? next : -1;
}

static void begin_relay(run *r)
{
    stream_open(r);
    /* A cheaper tier's stream is held back when the cascade could still
     * escalate: the client must not see an answer that is then replaced. */
    r->holding = cascade_next(r) >= 0;
    if (!r->holding) stream_start_reply(r);
}

static void on_upstream_headers(void *ctx, int status, const upstream_headers *hs)
{
    run *r = ctx;
    r->status = status;
    r->hs = hs;
    if (r->canon.stream && status >= 200 && status < 300) begin_relay(r);
}

static void on_upstream_data(void *ctx, const char *data, size_t len)
{
    run *r = ctx;
    if (r->relaying) {
        if (!r->sres.failed) sse_parser_feed(r->parser, data, len, on_stream_event, r);
        flush_out(r);
        return;
    }
    if (r->body.len + len > MAX_UPSTREAM_BODY) {
        r->body_too_large = true; /* keep reading; on_done reports it */
        return;
    }
    buf_append(&r->body, data, len);
}

static void emit_stream_error(run *r, const char *type, const char *message)
{
    buf b = BUF_INIT;
    provider_openai_error_json(&b, type, NULL, NULL, message);
    emit_chunk(r, b.data, b.len);
    buf_free(&b);
}

static void emit_usage_chunk(run *r)
{
    const stream_result *s = &r->sres;
    buf b = BUF_INIT;
    if (!r->chunk_id[0]) snprintf(r->chunk_id, sizeof r->chunk_id, "chatcmpl-%s", r->id + 4);
    buf_printf(&b,
               "{\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":%lld,\"model\":",
               r->chunk_id, (long long)time(NULL));
    const char *m = r->plan[r->cur]->model;
    buf_append_json_str(&b, m, strlen(m));
    buf_printf(&b,
               ",\"choices\":[],\"usage\":{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,"
               "\"total_tokens\":%lld,\"prompt_tokens_details\":{\"cached_tokens\":%lld},"
               "\"completion_tokens_details\":{\"reasoning_tokens\":%lld}}}",
               (long long)s->prompt_tokens, (long long)s->completion_tokens,
               (long long)(s->prompt_tokens + s->completion_tokens), (long long)s->usage.cache_read,
               (long long)s->usage.reasoning);
    emit_chunk(r, b.data, b.len);
    buf_free(&b);
}

static void escalate(run *r, int next, const char *check, const usage_record *u);

/* A held stream ended: escalate when it failed a check (or did not
 * finish), else let the client have it all at once and go on. */
static bool held_stream_escalates(run *r)
{
    int next = cascade_next(r); /* held only when there is one */
    bool complete = r->sres.done && !r->sres.failed;
    const char *check = !complete ? "complete"
                                  : policy_cascade_failed_check(
                                        config_policy(router_config(r->rt)), r->sres.finish_reason,
                                        r->sres.text.data ? r->sres.text.data : "",
                                        r->sres.text.len, r->canon.json_mode);
    if (check && next >= 0) {
        usage_record u = r->sres.usage;
        estimate_usage(r, &u, stream_output_chars(r));
        breaker_settle(r, complete ? BREAKER_SUCCESS : BREAKER_FAILURE);
        r->holding = false;
        stream_close(r);
        escalate(r, next, check, &u);
        return true;
    }
    r->holding = false;
    r->ttft_us = util_now_us() - r->start_us; /* the first bytes leave now */
    stream_start_reply(r);
    flush_out(r);
    return false;
}

static void end_relay(run *r, const engine_result *res)
{
    if (!r->sres.failed && r->parser) sse_parser_finish(r->parser, on_stream_event, r);
    bool clean_eof = res->ok && !r->sres.failed;
    /* Usage seen before a cut or an error is partial, never final. */
    bool complete = r->sres.done || (clean_eof && r->sres.finish_reason[0]);
    if (!complete || r->sres.failed) r->sres.usage.exact = false;
    /* Gemini streams end without a terminator: a clean EOF after a finish
     * reason is complete. */
    if (clean_eof && !r->sres.done && r->sres.finish_reason[0]) r->sres.done = true;
    if (r->holding && held_stream_escalates(r)) return;
    const char *why, *err_class;
    bool ok = r->sres.done && !r->sres.failed;
    if (ok) {
        if (r->canon.include_usage) emit_usage_chunk(r);
        why = "stream complete";
        err_class = "";
    } else if (r->sres.failed) {
        emit_stream_error(r, r->sres.error.type[0] ? r->sres.error.type : "api_error",
                          r->sres.error.message[0] ? r->sres.error.message
                                                   : "the provider sent an error mid-stream");
        why = "provider error mid-stream";
        err_class = "upstream_stream_error";
    } else if (deadline_cut(r, res)) {
        char msg[300];
        snprintf(msg, sizeof msg, "the request's total timeout of %lld ms (%s) ran out mid-stream",
                 (long long)r->tmo.total_ms, r->tmo.total_from);
        emit_stream_error(r, "timeout_error", msg);
        why = "total timeout mid-stream";
        err_class = "upstream_stream_cut";
    } else {
        char msg[300];
        snprintf(msg, sizeof msg, "the provider's stream was cut before it finished (%s)",
                 res->what ? res->what : "connection closed");
        emit_stream_error(r, "api_error", msg);
        why = "stream cut upstream";
        err_class = "upstream_stream_cut";
    }
    estimate_usage(r, &r->sres.usage, stream_output_chars(r));
    breaker_settle(r, ok                     ? BREAKER_SUCCESS
                      : deadline_cut(r, res) ? BREAKER_ABANDONED
                                             : BREAKER_FAILURE);
    emit(r, "data: [DONE]\n\n", 14);
    r->served_usage = r->sres.usage;
    answer a = {200,       "text/event-stream",        NULL, 0, &r->served_usage,
                err_class, ok ? RUN_DONE : RUN_FAILED, why};
    answer_with(r, &a);
}

/* ------------------------------------------------------------ the cascade */

/* The cheaper answer is set aside (and billed with the final one); the
 * request goes on to plan[next]. */
static void escalate(run *r, int next, const char *check, const usage_record *u)
{
    r->prior_cost_pusd += pricing_cost_pusd(r->plan[r->cur]->price, u, false);
    add_usage(&r->prior_usage, u);
    r->prior_usage.exact = u->exact;
    snprintf(r->cascade_check, sizeof r->cascade_check, "%s", check);
    log_info("%s: %s's answer failed the %s check; escalating to %s", r->id, r->plan[r->cur]->model,
             check, r->plan[next]->model);
    r->cur = next;
    r->target_attempts = 0;
    r->usage_estimated = false;
    start_attempt(r);
}

/* The bytes of the answer's tool calls (names and arguments), which the
 * model wrote as much as its text: for the usage estimate. */
static size_t answer_tool_bytes(const decoded_response *d)
{
    size_t n = 0;
    if (d->body) {
        json_object *choices, *msg, *calls;
        if (json_object_object_get_ex(d->body, "choices", &choices) &&
            json_object_object_get_ex(json_object_array_get_idx(choices, 0), "message", &msg) &&
            json_object_object_get_ex(msg, "tool_calls", &calls))
            for (size_t i = 0; i < json_object_array_length(calls); i++) {
                json_object *fn =
                    provider_json_get(json_object_array_get_idx(calls, i), "function");
                const char *name = provider_json_str(fn, "name");
                const char *args = provider_json_str(fn, "arguments");
                n += (name ? strlen(name) : 0) + (args ? strlen(args) : 0);
            }
        return n;
    }
    jdoc doc = JDOC_INIT;
    if (jdoc_parse(&doc, d->raw, d->raw_len, NULL, 0, NULL) == 0) {
        uint32_t ch = jdoc_index(&doc, jdoc_get(&doc, 0, "choices"), 0);
        uint32_t calls = jdoc_get(&doc, jdoc_get(&doc, ch, "message"), "tool_calls");
        for (uint32_t c = jdoc_first(&doc, calls); c != JT_NONE; c = jdoc_next(&doc, calls, c)) {
            uint32_t fn = jdoc_get(&doc, c, "function");
            buf tmp = BUF_INIT;
            uint32_t name = jdoc_get(&doc, fn, "name"), args = jdoc_get(&doc, fn, "arguments");
            if (jdoc_type(&doc, name) == JT_STRING) jdoc_str_append(&doc, name, &tmp);
            if (jdoc_type(&doc, args) == JT_STRING) jdoc_str_append(&doc, args, &tmp);
            n += tmp.len;
            buf_free(&tmp);
        }
    }
    jdoc_free(&doc);
    return n;
}

/* The answer's text, for the cascade's checks and the usage estimate. */
static void answer_text(const decoded_response *d, buf *out)
{
    if (d->body) {
        json_object *choices, *msg, *content;
        if (json_object_object_get_ex(d->body, "choices", &choices) &&
            json_object_object_get_ex(json_object_array_get_idx(choices, 0), "message", &msg) &&
            json_object_object_get_ex(msg, "content", &content))
            provider_content_text(content, out);
        return;
    }
    jdoc doc = JDOC_INIT;
    if (jdoc_parse(&doc, d->raw, d->raw_len, NULL, 0, NULL) == 0) {
        uint32_t ch = jdoc_index(&doc, jdoc_get(&doc, 0, "choices"), 0);
        uint32_t content = jdoc_get(&doc, jdoc_get(&doc, ch, "message"), "content");
        if (jdoc_type(&doc, content) == JT_STRING) jdoc_str_append(&doc, content, out);
    }
    jdoc_free(&doc);
}

/* The cascade (issue 5): an answer from a cheaper tier that fails a check
 * (cut by the length cap, not JSON when JSON was asked, starts with the
 * UNCERTAIN marker, empty) is set aside -- and billed -- and the request
 * goes to the tier above. Returns true when it escalated. */
static bool cascade_escalates(run *r, decoded_response *d, const buf *text)
{
    int next = r->canon.stream ? -1 : cascade_next(r);
    if (next < 0) return false;
    const char *check =
        policy_cascade_failed_check(config_policy(router_config(r->rt)), d->finish_reason,
                                    text->data ? text->data : "", text->len, r->canon.json_mode);
    if (!check) return false;
    if (d->body) json_object_put(d->body);
    escalate(r, next, check, &d->usage);
    return true;
}

/* ------------------------------------------------------------ attempts */

/* A 2xx the dialect could not read: retried at most as ambiguous. */
static void answer_unreadable(run *r, const char *err)
{
    upstream_error e = {.cls = ERRCLASS_AMBIGUOUS, .client_status = 502, .retry_after_ms = -1};
    snprintf(e.type, sizeof e.type, "api_error");
    snprintf(e.code, sizeof e.code, "upstream_malformed_response");
    snprintf(e.message, sizeof e.message, "The provider's answer could not be read: %s", err);
    if (!recover(r, &e)) fail_upstream(r, &e);
}

/* An embeddings answer, in OpenAI's list shape (providers/embeddings.h):
 * billed on its input tokens, estimated (and said so) when the provider
 * reported none. */
static void answer_embeddings(run *r)
{
    const target *t = r->plan[r->cur];
    buf out = BUF_INIT;
    usage_record u;
    char err[300] = "";
    const char *body = r->body.data ? r->body.data : "";
    if (t->provider->ops->embed->decode(&r->canon, t, body, r->body.len, &out, &u, err,
                                        sizeof err) != 0) {
        buf_free(&out);
        answer_unreadable(r, err);
        return;
    }
    breaker_settle(r, BREAKER_SUCCESS);
    r->usage_estimated = !u.exact;
    add_common_headers(r);
    r->served_usage = u;
    cost_headers(r, &r->served_usage);
    answer_body(r, 200, out.len ? out.data : body, out.len ? out.len : r->body.len,
                &r->served_usage, "", RUN_DONE, "answered");
    buf_free(&out); /* settling that waits keeps a copy (keep_answer) */
}

static void answer_decoded(run *r)
{
    const target *t = r->plan[r->cur];
    if (r->canon.embed.on) {
        answer_embeddings(r);
        return;
    }
    decoded_response d;
    memset(&d, 0, sizeof d);
    char err[300] = "";
    if (t->provider->ops->decode(&r->canon, t, r->body.data ? r->body.data : "", r->body.len, &d,
                                 err, sizeof err) != 0) {
        if (d.body) json_object_put(d.body);
        answer_unreadable(r, err);
        return;
    }
    breaker_settle(r, BREAKER_SUCCESS);
    buf text = BUF_INIT;
    if (!d.usage.exact || cascade_next(r) >= 0) answer_text(&d, &text);
    if (!d.usage.exact) { /* no usage block: bill an estimate, and say so */
        estimate_usage(r, &d.usage, text.len + answer_tool_bytes(&d));
        r->usage_estimated = true;
    }
    bool escalated = cascade_escalates(r, &d, &text);
    buf_free(&text);
    if (escalated) return;
    add_common_headers(r);
    r->served_usage = d.usage;
    cost_headers(r, &r->served_usage);
    if (d.body) {
        size_t len;
        const char *s = json_object_to_json_string_length(
            d.body, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
        answer_body(r, 200, s, len, &r->served_usage, "", RUN_DONE, "answered");
        json_object_put(d.body);
    } else {
        answer_body(r, 200, d.raw, d.raw_len, &r->served_usage, "", RUN_DONE, "answered");
    }
}

/* What went wrong with an attempt that did not answer 2xx. */
static bool attempt_error(run *r, const engine_result *res, upstream_error *e)
{
    memset(e, 0, sizeof *e);
    if (!res->ok && res->status > 0 && !res->timed_out) {
        /* it answered, then the connection broke: it may have done (and
         * billed) the work, so this is retried at most as ambiguous */
        *e =
            (upstream_error){.cls = ERRCLASS_AMBIGUOUS, .client_status = 502, .retry_after_ms = -1};
        snprintf(e->type, sizeof e->type, "api_error");
        snprintf(e->code, sizeof e->code, "upstream_incomplete_response");
        snprintf(e->message, sizeof e->message,
                 "the provider's answer (HTTP %d) was cut before it finished (%s)", res->status,
                 res->what ? res->what : "connection closed");
    } else if (res->first_byte_late && r->own_first_byte) {
        char what[200];
        snprintf(what, sizeof what, "no response within the first-byte timeout of %lld ms (%s)",
                 (long long)r->tmo.first_byte_ms, r->tmo.first_byte_from);
        provider_transport_error(what, true, e);
        r->own_limit_hit = true;
    } else if (!res->ok) {
        provider_transport_error(res->what ? res->what : "transfer failed", res->timed_out, e);
    } else if (r->body_too_large) {
        *e =
            (upstream_error){.cls = ERRCLASS_AMBIGUOUS, .client_status = 502, .retry_after_ms = -1};
        snprintf(e->type, sizeof e->type, "api_error");
        snprintf(e->message, sizeof e->message, "The provider's answer is larger than %d bytes",
                 MAX_UPSTREAM_BODY);
    } else if (res->status >= 200 && res->status < 300) {
        return false;
    } else {
        r->plan[r->cur]->provider->ops->classify(res->status, r->hs,
                                                 r->body.data ? r->body.data : "", r->body.len, e);
    }
    return true;
}

static void on_upstream_done(void *ctx, const engine_result *res)
{
    run *r = ctx;
    r->call = NULL;
    r->upstream_us += util_now_us() - r->attempt_start_us;
    slot_release(r);
    if (run_over(r)) return;
    if (r->relaying) {
        end_relay(r, res);
        return;
    }
    if (!(!res->ok && res->status > 0 && !res->timed_out) && deadline_cut(r, res)) {
        fail_deadline(r);
        return;
    }
    upstream_error e;
    if (!attempt_error(r, res, &e)) {
        answer_decoded(r);
        return;
    }
    if (!recover(r, &e)) fail_upstream(r, &e);
}

/* The provider is at its concurrency limit: like a 503 with Retry-After 1. */
static void provider_busy(run *r, const provider_conf *p)
{
    upstream_error e = {.cls = ERRCLASS_RETRYABLE, .client_status = 503, .retry_after_ms = 1000};
    snprintf(e.type, sizeof e.type, "server_error");
    snprintf(e.code, sizeof e.code, "provider_busy");
    snprintf(e.message, sizeof e.message,
             "Provider %s is at its concurrency limit (%d calls in flight); retry shortly", p->name,
             p->max_concurrency);
    if (!recover(r, &e)) fail_upstream(r, &e);
}

static void on_budget_raised(void *ctx, budget_status st)
{
    run *r = ctx;
    if (st == BUDGET_OK)
        start_attempt(r);
    else
        budget_refused(r, st);
}

/* A fail-over or an escalation to a dearer candidate first raises the
 * reservation to its bound; false when the run waits for it or was
 * answered. */
static bool budget_covers_attempt(run *r)
{
    if (!r->bhold.n) return true;
    int64_t need = reservation_pusd(r, r->cur);
    if (need <= r->bhold.amount) return true;
    budget_status st = budget_extend(router_budgets(r->rt), &r->bhold, need, on_budget_raised, r);
    if (st == BUDGET_OK) return true;
    if (st == BUDGET_WAIT)
        set_state(r, RUN_WAITING);
    else
        budget_refused(r, st);
    return false;
}

/* A batch line whose candidate takes batches is not called: the sink gets
 * the provider's request body and the usage event so far, and the answer
 * comes hours later from the provider's batch (router/pbatch.h settles
 * it at the batch price). The cascade does not apply: the line is one
 * call to its first batch-capable candidate. */
static void defer_to_batch(run *r)
{
    const target *t = r->plan[r->cur];
    char err[300] = "";
    upstream_request_reset(&r->up);
    if (t->provider->ops->encode(&r->canon, t, &r->up, err, sizeof err) != 0) {
        run_fail(r, 400, "invalid_request_error", "unsupported_request", NULL, err, false);
        return;
    }
    usage_record none = {.exact = true};
    usage_event ev;
    fill_event(r, &ev, 0, "", &none);
    ev.attempts = 1;
    run_deferral d = {t, r->up.body.data ? r->up.body.data : "", r->up.body.len, &ev,
                      r->baseline && !no_call(r) ? r->baseline->name : NULL};
    r->recorded = true; /* its event is the batch's to record */
    r->sink->defer(r->sctx, &d);
    run_finish(r, RUN_DONE, 202, "handed to a provider batch");
}

/* Encodes the request for the current candidate and starts the call. */
static void start_attempt(run *r)
{
    const target *t = r->plan[r->cur];
    const provider_conf *p = t->provider;
    set_state(r, RUN_CALLING);
    if (!budget_covers_attempt(r)) return;
    if (r->in.batch_defer && p->batch && r->sink->defer && !r->canon.embed.on) {
        defer_to_batch(r);
        return;
    }
    if (refused_by_breaker(r)) return;
    retry_budget *rb = router_budget(r->rt, p);
    if (r->target_attempts == 0) retry_budget_note_request(rb, util_now_ms());
    r->target_attempts++;
    r->status = 0;
    r->hs = NULL;
    r->body_too_large = false;
    buf_reset(&r->body);
    upstream_request_reset(&r->up);
    if (!router_slot_take(r->rt, p)) {
        provider_busy(r, p);
        return;
    }
    r->slot = p;
    char err[300] = "";
    int rc = r->canon.embed.on ? p->ops->embed->encode(&r->canon, t, &r->up, err, sizeof err)
                               : p->ops->encode(&r->canon, t, &r->up, err, sizeof err);
    if (rc != 0) {
        run_fail(r, 400, "invalid_request_error", "unsupported_request", NULL, err, false);
        return;
    }
    upstream_request_finish_headers(&r->up);
    int64_t left = r->deadline_ms - util_now_ms();
    if (left <= 0) {
        fail_deadline(r);
        return;
    }
    static const engine_callbacks cb = {on_upstream_headers, on_upstream_data, on_upstream_done};
    engine_limits lim = {left, r->tmo.connect_ms, r->tmo.first_byte_ms};
    r->cut_by_deadline = left < (p->total_timeout_ms > 0 ? p->total_timeout_ms : 600000);
    r->own_first_byte = lim.first_byte_ms > 0 && (p->first_byte_timeout_ms <= 0 ||
                                                  lim.first_byte_ms < p->first_byte_timeout_ms);
    r->attempts++;
    r->attempt_start_us = util_now_us();
    router_count_attempt(r->rt);
    r->call = engine_call_start(router_engine(r->rt), &r->up, p, &lim, &cb, r);
    if (r->call) return;
    slot_release(r);
    upstream_error e;
    provider_transport_error("could not start the upstream call", false, &e);
    if (!recover(r, &e)) fail_upstream(r, &e);
}

/* ------------------------------------------------------------ start */

/* Headers win over metadata: a proxy in front of an app can tag it. */
static void apply_attribution(run *r)
{
    if (r->in.task) r->canon.task = r->in.task;
    if (r->in.agent) r->canon.agent = r->in.agent;
    if (r->in.feature) r->canon.feature = r->in.feature;
    /* a key with a team records that team whatever metadata.team says: its
     * spend always counts against its own team's budget */
    if (r->key && r->key->team) r->canon.team = r->key->team;
    /* the key's own agent and feature when the request names none */
    if (r->key && !r->canon.agent) r->canon.agent = r->key->agent;
    if (r->key && !r->canon.feature) r->canon.feature = r->key->feature;
}

/* PLANNING: the body into the canonical request, then the plan; -1 once
 * run_fail answered. */
static int plan_request(run *r)
{
    const run_input *in = &r->in;
    canon_error cerr;
    int (*parse)(const char *, size_t, jdoc *, buf *, canon_request *, canon_error *) =
        in->embeddings ? canon_parse_embeddings : canon_parse_chat;
    if (parse(in->body ? in->body : "", in->body_len, &r->doc, &r->strings, &r->canon, &cerr) !=
        0) {
        run_fail(r, 400, "invalid_request_error", cerr.code, cerr.param, cerr.message, false);
        return -1;
    }
    r->canon.messages_api = in->messages_api;
    r->canon.anthropic_beta = in->messages_api ? in->anthropic_beta : NULL;
    apply_attribution(r);
    return make_plan(r);
}

int run_estimate_pusd(router *rt, const run_input *in, int64_t *pusd, char *err, size_t errlen)
{
    *pusd = 0;
    run *r = run_alloc(rt);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    r->rt = rt;
    r->in = *in;
    r->key = in->key;
    r->start_us = util_now_us();
    r->wall_start_us = util_wall_ms() * 1000;
    r->est_err = err;
    r->est_errlen = errlen;
    int rc = plan_request(r);
    if (rc == 0) *pusd = reservation_pusd(r, r->n_plan - 1);
    run_recycle(r); /* never started: nothing to give back */
    return rc;
}

int64_t run_batch_line_pusd(router *rt, const key_conf *key, const char *body, size_t len,
                            bool messages_api)
{
    run_input in = {.body = body,
                    .body_len = len,
                    .what = "POST /v1/chat/completions (batch)",
                    .key = key,
                    .request_id = "req_batch_estimate",
                    .messages_api = messages_api};
    int64_t pusd;
    char err[200];
    return run_estimate_pusd(rt, &in, &pusd, err, sizeof err) == 0 ? pusd : 0;
}

run *run_start(router *rt, const run_input *in, const run_sink *sink, void *ctx)
{
    run *r = run_alloc(rt);
    if (!r) {
        run_outcome o = {RUN_FAILED, 503, "out of memory"};
        sink->done(ctx, &o);
        return NULL;
    }
    router_count_run(rt, 1);
    r->rt = rt;
    r->sink = sink;
    r->sctx = ctx;
    r->in = *in;
    r->key = in->key;
    keyring_hold(r->key); /* a reload may replace its snapshot meanwhile */
    r->start_us = util_now_us();
    r->wall_start_us = util_wall_ms() * 1000 + r->start_us % 1000;
    r->ttft_us = -1;
    r->deadline_ms = r->start_us / 1000 + config_limits(router_config(rt))->request_timeout_ms;
    copy_str(r->id, sizeof r->id, in->request_id);
    set_state(r, RUN_PLANNING);
    if (plan_request(r) != 0) return NULL;
    set_state(r, RUN_ADMITTING);
    admit_next(r);
    return r->done_called ? NULL : r;
}
