/* One chat request, from the validated body to the last byte sent.
 *
 * States: ROUTING -> CALLING -> (RELAYING | REPLYING) -> DONE, or FAILED.
 * Every change goes through chat_set_state(). The request owns its canon
 * request, its upstream request and buffers; chat_finish() is its one exit
 * and always says why. */
#include "server/chat.h"

#include <event2/buffer.h>
#include <event2/event_struct.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "lib/util.h"
#include "providers/sse.h"
#include "router/canon.h"
#include "db/idem.h"
#include "db/ledger.h"
#include "router/breaker.h"
#include "router/policy.h"
#include "router/retry.h"
#include "server/http.h"

#define MAX_PLAN 8
#define MAX_UPSTREAM_BODY (64 << 20)

typedef enum {
    CHAT_ROUTING,
    CHAT_CALLING,
    CHAT_RELAYING,
    CHAT_REPLYING,
    CHAT_DONE,
    CHAT_FAILED
} chat_state;

typedef struct chat {
    app *a;
    struct evhttp_request *req;
    chat_state state;
    char id[32];
    const key_conf *key;
    canon_request canon;
    jdoc doc;    /* the body's tokens */
    buf strings; /* canon's unescaped strings */
    const target *plan[MAX_PLAN];
    int n_plan, cur, attempts;
    const char *route_name; /* the virtual model, or NULL */
    const char *tier_header;
    char route_rule[128];       /* the routing policy's rule, for x-bridle-route; "" if none */
    const model_conf *baseline; /* what savings are measured against (set by the plan), or NULL */
    policy_plan pplan;          /* the routing policy's plan, for the cascade */
    bool by_policy;
    int64_t prior_cost_pusd; /* answers the cascade set aside: billed all the same */
    usage_record prior_usage;
    char cascade_check[16]; /* the check that escalated, for x-bridle-route */
    engine_call *call;
    upstream_request up;
    int status;                 /* upstream HTTP status of the current attempt */
    const upstream_headers *hs; /* valid until the attempt's on_done returns */
    buf body;                   /* non-2xx or non-stream body */
    bool relaying;              /* the upstream stream is being read (and relayed) */
    bool holding;               /* the cascade holds the stream back until it passes its checks */
    sse_parser *parser;
    void *sstate;
    stream_result sres;
    struct evbuffer *out;
    bool client_gone;
    bool body_too_large;
    char chunk_id[80];
    int64_t start_us, deadline_ms;
    request_timeouts tmo;     /* this request's deadlines (config "timeouts") */
    bool cut_by_deadline;     /* the attempt's total limit is the request's deadline */
    bool own_first_byte;      /* its first-byte limit is the request's, below the provider's */
    bool own_limit_hit;       /* it failed on one of the request's own limits */
    int64_t wall_start_us;    /* for the event's timestamp */
    int64_t attempt_start_us; /* current attempt */
    int64_t upstream_us;      /* all attempts so far */
    int64_t ttft_us;          /* first chunk to the client; -1 until then */
    bool recorded;            /* the usage event is in the ledger */
    breaker_ticket ticket;    /* the current attempt's admission by its target's breaker */
    bool ticket_live;         /* an outcome is still owed to the breaker */
    int target_attempts;      /* attempts on the current candidate */
    int ambiguous_retries;
    bool budget_exhausted; /* a retry was refused by the retry budget */
    bool shed;             /* the last target's open breaker refused the request */
    struct event retry_ev; /* waiting out a backoff or Retry-After */
    bool retry_armed;
    struct event reap;
    struct chat *next_free; /* in the app's pool */
    /* Idempotency-Key (db/idem.h) */
    char idem_key[256];    /* "" when the request has none */
    char idem_owner[48];   /* the claim's token while this request holds the key */
    bool idem_held;        /* this request runs for the key: store or release it */
    bool idem_settled;     /* the outcome was handed to the store */
    bool replayed;         /* answered from the store: no upstream call */
    idem_op *idem_pending; /* claim or store in flight: cancelled if the request ends */
    buf idem_body;         /* the answer to store (the stream as sent, for streams) */
    bool idem_too_big;
    int idem_status;
    chat_state idem_final;
    const char *idem_why;
    /* coalescing (resilience.coalesce) */
    char coalesce_fp[65];       /* set while leading or following */
    bool leading;               /* registered as the call identical requests share */
    struct chat *leader;        /* following it */
    struct chat *followers;     /* leading: who waits for this request's answer */
    struct chat *next_follower; /* in the leader's list */
    struct chat *next_leader;   /* in the app's bucket */
    bool coalesced;             /* answered with the leader's answer */
    buf head;                   /* the reply's own header lines (http_head_add) */
} chat;

static void chat_finish(chat *c, chat_state final, const char *why);
static bool held_stream_escalates(chat *c);
static void coalesce_end(chat *c);
static void coalesce_answer(chat *leader, int status, const char *body, size_t len);

static void estimate_usage(chat *c, usage_record *u);
static void breaker_settle(chat *c, breaker_outcome outcome);
static void record_usage(chat *c, int status, const char *err_class, const usage_record *u);

static void chat_set_state(chat *c, chat_state s)
{
    static const char *names[] = {"ROUTING", "CALLING", "RELAYING", "REPLYING", "DONE", "FAILED"};
    log_debug("%s: %s -> %s", c->id, names[c->state], names[s]);
    c->state = s;
}

/* ------------------------------------------------------------ exit */

/* Finished requests are kept for reuse with their buffers' memory, so a
 * request in the steady state allocates almost nothing of its own. */
#define CHAT_POOL_MAX 512

static chat *chat_alloc(app *a)
{
    chat *c = a->chat_pool;
    if (!c) return calloc(1, sizeof(chat));
    a->chat_pool = c->next_free;
    a->chat_pool_n--;
    return c;
}

static void chat_destroy(chat *c)
{
    jdoc_free(&c->doc);
    buf_free(&c->strings);
    upstream_request_free(&c->up);
    buf_free(&c->body);
    buf_free(&c->sres.text);
    buf_free(&c->head);
    free(c);
}

static void chat_recycle(chat *c)
{
    app *a = c->a;
    if (a->chat_pool_n >= CHAT_POOL_MAX || a->draining) {
        chat_destroy(c);
        return;
    }
    jdoc doc = c->doc;
    buf strings = c->strings, body = c->body, text = c->sres.text, head = c->head;
    upstream_request up = c->up;
    upstream_request_reset(&up);
    buf_reset(&strings);
    buf_reset(&body);
    buf_reset(&text);
    buf_reset(&head);
    memset(c, 0, sizeof *c);
    c->doc = doc;
    c->strings = strings;
    c->body = body;
    c->sres.text = text;
    c->head = head;
    c->up = up;
    c->next_free = a->chat_pool;
    a->chat_pool = c;
    a->chat_pool_n++;
}

void chat_pool_free(app *a)
{
    while (a->chat_pool) {
        chat *c = a->chat_pool;
        a->chat_pool = c->next_free;
        a->chat_pool_n = a->chat_pool_n > 0 ? a->chat_pool_n - 1 : 0;
        chat_destroy(c);
    }
}

static void chat_free(chat *c)
{
    buf_free(&c->idem_body);
    if (c->parser) sse_parser_free(c->parser);
    if (c->sstate && c->plan[c->cur]->provider->ops->stream_free)
        c->plan[c->cur]->provider->ops->stream_free(c->sstate);
    if (c->out) evbuffer_free(c->out);
    if (c->client_gone) /* evhttp handed the request to us when the connection died */
        evhttp_request_free(c->req);
    c->a->in_flight--;
    chat_recycle(c);
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    chat_free(arg);
}

/* Idempotency keys are per client key: one client cannot see another's. */
static const char *idem_scope(const chat *c)
{
    return c->key ? c->key->id : "";
}

/* The one exit: releases everything, on the next loop pass when called
 * from a callback that is still standing on the request. */
static void chat_finish(chat *c, chat_state final, const char *why)
{
    if (c->state == CHAT_DONE || c->state == CHAT_FAILED) return;
    if (!c->recorded && c->a->ledger) { /* the client left first: the provider may still bill */
        usage_record u = c->sres.usage;
        if (c->attempts) estimate_usage(c, &u);
        record_usage(c, 499, "client_closed", c->attempts ? &u : NULL);
    }
    chat_set_state(c, final);
    if (c->idem_pending) {
        idem_cancel(c->idem_pending);
        c->idem_pending = NULL;
    }
    if (c->idem_held && !c->idem_settled) /* an outcome a retry may better: free the key */
        idem_release(c->a->idem, idem_scope(c), c->idem_key, c->idem_owner);
    coalesce_end(c);
    breaker_settle(c, BREAKER_ABANDONED); /* a no-op when already settled */
    if (c->retry_armed) {
        evtimer_del(&c->retry_ev);
        c->retry_armed = false;
    }
    if (c->call) {
        engine_call_cancel(c->call);
        c->call = NULL;
    }
    if (!c->client_gone) http_unwatch_client(c->a, c->req);
    int64_t us = util_now_us() - c->start_us;
    log_debug("%s: %s model=%s attempts=%d %lld us: %s", c->id,
              final == CHAT_DONE ? "done" : "failed", c->canon.model ? c->canon.model : "-",
              c->attempts, (long long)us, why);
    evtimer_assign(&c->reap, c->a->base, on_reap, c);
    struct timeval zero = {0, 0};
    evtimer_add(&c->reap, &zero);
}

static void on_client_gone(void *arg)
{
    chat *c = arg;
    c->client_gone = true;
    chat_finish(c, CHAT_FAILED, "the client closed the connection");
}

/* ------------------------------------------------------------ replies */

static void add_common_headers(chat *c)
{
    buf *h = &c->head;
    http_head_add(h, "x-request-id", c->id);
    char n[16];
    snprintf(n, sizeof n, "%d", c->attempts);
    http_head_add(h, "x-bridle-attempts", n);
    if (c->n_plan > 0) {
        const target *t = c->plan[c->cur];
        http_head_add(h, "x-bridle-provider", t->provider->name);
        http_head_add(h, "x-bridle-model", t->model);
    }
    if (c->route_rule[0] && c->cascade_check[0]) {
        char rule[200];
        snprintf(rule, sizeof rule, "%s; escalated: the cheaper answer failed the %s check",
                 c->route_rule, c->cascade_check);
        http_head_add(h, "x-bridle-route", rule);
    } else if (c->route_rule[0])
        http_head_add(h, "x-bridle-route", c->route_rule);
    else if (c->route_name)
        http_head_add(h, "x-bridle-route", c->route_name);
}

/* Every whole reply of a chat goes out here, with the header lines
 * collected in c->head. */
static void chat_reply(chat *c, int status, const char *content_type, const char *body, size_t len)
{
    http_head_flush(c->req, &c->head);
    http_reply(c->a, c->req, status, content_type, body, len);
}

static void copy_str(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : "");
}

/* What the same usage would have cost on the model the client asked for
 * (or, for a route, its baseline): savings are a subtraction. */
static int64_t baseline_cost(chat *c, const usage_record *u)
{
    if (c->baseline) return pricing_cost_pusd(&c->baseline->price, u, false);
    return c->n_plan ? pricing_cost_pusd(c->plan[c->cur]->price, u, false) : 0;
}

/* Writes the request's usage event to the ledger: called once, before the
 * last byte of the response leaves, so a client never holds an answer
 * whose event could be lost. */
static void record_usage(chat *c, int status, const char *err_class, const usage_record *u)
{
    if (c->recorded || !c->a->ledger) return;
    c->recorded = true;
    usage_event ev;
    memset(&ev, 0, sizeof ev);
    memcpy(ev.event_id, c->id + 4, 24); /* the request id's 24 hex digits + 8 of time */
    snprintf(ev.event_id + 24, sizeof ev.event_id - 24, "%08llx",
             (unsigned long long)(c->wall_start_us / 1000000) & 0xffffffffULL);
    ev.ts_us = c->wall_start_us;
    copy_str(ev.key_id, sizeof ev.key_id, c->key ? c->key->id : NULL);
    copy_str(ev.team, sizeof ev.team, c->canon.team);
    copy_str(ev.end_user, sizeof ev.end_user, c->canon.user);
    copy_str(ev.agent, sizeof ev.agent, c->canon.agent);
    copy_str(ev.task, sizeof ev.task, c->canon.task);
    copy_str(ev.feature, sizeof ev.feature, c->canon.feature);
    copy_str(ev.requested_model, sizeof ev.requested_model, c->canon.model);
    if (c->n_plan) {
        const target *t = c->plan[c->cur];
        copy_str(ev.provider, sizeof ev.provider, t->provider->name);
        copy_str(ev.model, sizeof ev.model, t->model);
        copy_str(ev.tier, sizeof ev.tier, t->price->tier ? pricing_tier_name(t->price->tier) : "");
    }
    if (c->route_rule[0]) { /* truncated to the field, on purpose */
        buf why = BUF_INIT;
        buf_printf(&why, "%s%s%s", c->route_rule, c->cascade_check[0] ? "; escalated on " : "",
                   c->cascade_check);
        copy_str(ev.route_reason, sizeof ev.route_reason, why.data);
        buf_free(&why);
    } else if (c->route_name)
        snprintf(ev.route_reason, sizeof ev.route_reason, "route %s, candidate %d", c->route_name,
                 c->cur + 1);
    else if (c->n_plan)
        copy_str(ev.route_reason, sizeof ev.route_reason, "the model requested");
    else if (c->replayed)
        copy_str(ev.route_reason, sizeof ev.route_reason, "idempotent replay: no upstream call");
    else if (c->coalesced)
        copy_str(ev.route_reason, sizeof ev.route_reason,
                 "coalesced with an identical request in flight: no upstream call");
    ev.cache_hit = c->replayed || c->coalesced;
    ev.streamed = c->canon.stream;
    ev.status = status;
    copy_str(ev.error_class, sizeof ev.error_class, err_class);
    ev.attempts = c->attempts;
    usage_record none = {.exact = true}, all;
    if (!u) u = &none;
    const usage_record *final = u;
    if (c->prior_cost_pusd > 0 || c->prior_usage.output > 0) { /* a cascade: both calls */
        all = *u;
        all.input_uncached += c->prior_usage.input_uncached;
        all.cache_read += c->prior_usage.cache_read;
        all.output += c->prior_usage.output;
        all.reasoning += c->prior_usage.reasoning;
        all.exact = u->exact && c->prior_usage.exact;
        u = &all;
    }
    ev.input_tokens = u->input_uncached;
    ev.cache_read_tokens = u->cache_read;
    ev.cache_write_tokens = u->cache_write_5m + u->cache_write_1h;
    ev.output_tokens = u->output;
    ev.reasoning_tokens = u->reasoning;
    ev.usage_exact = u->exact;
    ev.cost_pusd = (c->n_plan ? pricing_cost_pusd(c->plan[c->cur]->price, final, false) : 0) +
                   c->prior_cost_pusd;
    ev.baseline_cost_pusd = baseline_cost(c, u);
    ev.latency_us = util_now_us() - c->start_us;
    ev.ttft_us = c->ttft_us;
    ev.upstream_us = c->upstream_us;
    if (ledger_record(c->a->ledger, &ev) != 0)
        log_error("%s: the usage event could not be written to the spool (logged above)", c->id);
}

static void on_idem_stored(void *ctx, const idem_result *r)
{
    chat *c = ctx;
    c->idem_pending = NULL;
    chat_reply(c, c->idem_status, "application/json", c->idem_body.data, c->idem_body.len);
    chat_finish(c, c->idem_final, c->idem_why);
}

/* The last reply of a request that sends one whole body. A request that
 * holds an Idempotency-Key stores a final outcome first (2xx, and the 4xx
 * a retry cannot change), so any later request with the key, here or on
 * another gateway, gets this answer; other outcomes free the key
 * (chat_finish). */
static void send_final(chat *c, int status, const char *body, size_t len, chat_state final,
                       const char *why)
{
    bool storable = (status >= 200 && status < 300) || status == 400 || status == 404 ||
                    status == 413 || status == 422;
    if (c->idem_held && storable) {
        buf_reset(&c->idem_body);
        buf_append(&c->idem_body, body, len);
        c->idem_status = status;
        c->idem_final = final;
        c->idem_why = why;
        c->idem_settled = true;
        c->idem_pending =
            idem_store_result(c->a->idem, idem_scope(c), c->idem_key, c->idem_owner, status,
                              "application/json", body, len, on_idem_stored, c);
        if (c->idem_pending) return;
        c->idem_settled = false;
    }
    chat_reply(c, status, "application/json", body, len);
    coalesce_answer(c, status, body, len);
    chat_finish(c, final, why);
}

static void reply_error(chat *c, int status, const char *type, const char *code, const char *param,
                        const char *message, bool should_retry)
{
    record_usage(c, status, code && *code ? code : type, NULL);
    if (c->client_gone) {
        chat_finish(c, CHAT_FAILED, message);
        return;
    }
    add_common_headers(c);
    buf b = BUF_INIT;
    http_error_json(&b, type, code, param, message);
    /* said both ways: the OpenAI SDKs obey it over their own status rules */
    http_head_add(&c->head, "x-should-retry", should_retry ? "true" : "false");
    send_final(c, status, b.data, b.len, CHAT_FAILED, message);
    buf_free(&b);
}

static void reply_upstream_error(chat *c, const upstream_error *e)
{
    char msg[700];
    snprintf(msg, sizeof msg, "%s (provider %s, model %s)", e->message,
             c->plan[c->cur]->provider->name, c->plan[c->cur]->model);
    if (e->retry_after_ms > 0 && e->cls == ERRCLASS_RETRYABLE) {
        char ra[24];
        snprintf(ra, sizeof ra, "%lld", (long long)((e->retry_after_ms + 999) / 1000));
        http_head_add(&c->head, "retry-after", ra);
    }
    reply_error(c, e->client_status ? e->client_status : 502, e->type[0] ? e->type : "api_error",
                e->code, NULL, msg,
                e->cls == ERRCLASS_RETRYABLE && !e->quota_exhausted && !c->budget_exhausted &&
                    !c->shed);
}

/* The request's total timeout ran out. Not the provider's fault: a short
 * per-task deadline must not open a breaker that longer requests share. */
static void reply_deadline(chat *c)
{
    breaker_settle(c, BREAKER_ABANDONED);
    char msg[500];
    int64_t took = (util_now_us() - c->start_us) / 1000;
    snprintf(msg, sizeof msg,
             "The request did not finish within its total timeout of %lld ms (%s): %lld ms "
             "elapsed over %d attempt%s, the last one to provider %s, model %s",
             (long long)c->tmo.total_ms, c->tmo.total_from, (long long)took, c->attempts,
             c->attempts == 1 ? "" : "s", c->plan[c->cur]->provider->name, c->plan[c->cur]->model);
    reply_error(c, 504, "timeout_error", "request_timeout", NULL, msg, false);
}

/* Did this attempt end because the request's own deadline passed? */
static bool deadline_cut(chat *c, const engine_result *r)
{
    return r->timed_out && !r->first_byte_late && c->cut_by_deadline &&
           util_now_ms() >= c->deadline_ms;
}

static void cost_header(chat *c, const usage_record *u)
{
    int64_t cost = pricing_cost_pusd(c->plan[c->cur]->price, u, false) + c->prior_cost_pusd;
    char s[48];
    util_format_pusd(cost, 12, s, sizeof s);
    /* trim trailing zeros but keep at least one decimal */
    size_t n = strlen(s);
    while (n > 2 && s[n - 1] == '0' && s[n - 2] != '.')
        s[--n] = '\0';
    http_head_add(&c->head, "x-bridle-cost-usd", s);
    util_format_pusd(baseline_cost(c, u) - cost, 6, s, sizeof s);
    http_head_add(&c->head, "x-bridle-savings-usd", s);
}

/* ------------------------------------------------------------ planning */

/* Month-to-date spend as a % of a budget, or -1 (no budget, not known). */
static int share_pct(int64_t spent, int64_t budget_pusd)
{
    if (budget_pusd <= 0 || spent < 0) return -1;
    int64_t pct = spent / (budget_pusd / 100 > 0 ? budget_pusd / 100 : 1);
    return pct > 1000 ? 1000 : (int)pct;
}

/* The higher of the key's and its team's spend shares, or -1; *team says
 * the team's was higher. */
static int spend_share(chat *c, bool *team)
{
    *team = false;
    if (!c->a->ledger || !c->key) return -1;
    int key = share_pct(ledger_key_spend_pusd(c->a->ledger, c->key->id), c->key->budget_pusd);
    const team_conf *t = c->key->team_cfg;
    int of_team = t ? share_pct(ledger_team_spend_pusd(c->a->ledger, t->name), t->budget_pusd) : -1;
    *team = of_team > key;
    return *team ? of_team : key;
}

/* What the policy knows of each model's state. Breakers change state over
 * milliseconds, so their view is refreshed once per millisecond (a target
 * that opened since is still skipped at attempt time); "busy" matters only
 * for local models and changes with every call, so it is read each time. */
static void refresh_policy_models(app *a)
{
    int64_t now = util_now_ms();
    bool health = now != a->pmodels_health_ms;
    a->pmodels_health_ms = now;
    for (int i = 0; i < a->n_pmodels; i++) {
        policy_model *pm = &a->pmodels[i];
        if (health)
            pm->healthy = !a->breakers || breaker_get_state(a->breakers[i], now) != BREAKER_OPEN;
        if (pm->local) {
            const model_conf *m = config_model(a->cfg, i);
            pm->busy = m->enabled && a->provider_inflight[m->target.provider->index] >=
                                         m->target.provider->max_concurrency;
        }
    }
}

/* "auto" and "tier:NAME": the routing policy (router/policy.h) picks the
 * cheapest healthy candidates that fit, with escalation tiers after them. */
static int plan_by_policy(chat *c)
{
    app *a = c->a;
    if (!config_policy(a->cfg)) {
        reply_error(c, 503, "server_error", "no_routing_policy", "model",
                    "This gateway has no routing policy for \"auto\" or \"tier:NAME\": add a "
                    "\"routing\" section to its config, or name a model (GET /v1/models)",
                    false);
        return -1;
    }
    refresh_policy_models(a);
    policy_request pr = {
        .model = c->canon.model,
        .task = c->canon.task,
        .tier_header = c->tier_header,
        .prompt_chars = (int64_t)c->canon.body_len, /* the body bounds the text from above */
        .max_tokens = c->canon.max_tokens,
        .json_mode = c->canon.json_mode,
    };
    pr.spend_share_pct = spend_share(c, &pr.team_budget);
    policy_plan plan;
    char err[256];
    policy_result pr_rc = policy_plan_request(config_policy(a->cfg), a->pmodels, a->n_pmodels, &pr,
                                              &plan, err, sizeof err);
    if (pr_rc != POLICY_OK) {
        bool bad = pr_rc == POLICY_BAD_TIER;
        reply_error(c, bad ? 400 : 503, bad ? "invalid_request_error" : "server_error",
                    bad ? "invalid_tier" : "no_candidate", bad ? "model" : NULL, err, !bad);
        return -1;
    }
    for (int i = 0; i < plan.n && c->n_plan < MAX_PLAN; i++)
        c->plan[c->n_plan++] = &config_model(a->cfg, plan.cand[i].model_index)->target;
    c->pplan = plan;
    c->by_policy = true;
    c->canon.model_chosen = true;
    snprintf(c->route_rule, sizeof c->route_rule, "%s", plan.rule);
    if (plan.baseline_index >= 0) c->baseline = config_model(a->cfg, plan.baseline_index);
    if (plan.output_capped) c->canon.max_tokens = plan.max_tokens_applied;
    /* the client's own reasoning control wins over the task's cap */
    if (plan.thinking_cap > 0 && !c->canon.reasoning_set)
        c->canon.thinking_budget = plan.thinking_cap;
    return 0;
}

static int make_plan(chat *c)
{
    bridle_config *cfg = c->a->cfg;
    const model_conf *m = config_find_model(cfg, c->canon.model);
    if (m) {
        c->baseline = m;
        if (!m->enabled) {
            char msg[300];
            snprintf(msg, sizeof msg,
                     "The model '%s' is configured but its provider (%s) is disabled: a "
                     "required environment variable such as its API key is not set",
                     m->name, m->target.provider->name);
            reply_error(c, 503, "server_error", "provider_unavailable", "model", msg, false);
            return -1;
        }
        c->plan[c->n_plan++] = &m->target;
        return 0;
    }
    const route_conf *r = config_find_route(cfg, c->canon.model);
    if (r) {
        c->route_name = r->name;
        c->canon.model_chosen = true;
        c->baseline = r->baseline;
        for (int i = 0; i < r->n_candidates && c->n_plan < MAX_PLAN; i++)
            if (r->candidates[i]->enabled) c->plan[c->n_plan++] = &r->candidates[i]->target;
        if (c->n_plan == 0) {
            reply_error(c, 503, "server_error", "provider_unavailable", "model",
                        "None of this route's candidate models has an enabled provider", false);
            return -1;
        }
        return 0;
    }
    if (strcmp(c->canon.model, "auto") == 0 || strncmp(c->canon.model, "tier:", 5) == 0)
        return plan_by_policy(c);
    char msg[300];
    snprintf(msg, sizeof msg,
             "The model '%.100s' does not exist on this gateway: GET /v1/models lists the models "
             "and routes it serves",
             c->canon.model);
    reply_error(c, 404, "invalid_request_error", "model_not_found", "model", msg, false);
    return -1;
}

/* ------------------------------------------------------------ attempts */

static void start_attempt(chat *c);

static uint64_t chat_random(chat *c)
{
    uint64_t z = (c->a->rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static breaker *target_breaker(chat *c)
{
    return c->a->breakers ? c->a->breakers[c->plan[c->cur]->index] : NULL;
}

static retry_budget *target_budget(chat *c)
{
    return c->a->budgets ? c->a->budgets[c->plan[c->cur]->provider->index] : NULL;
}

/* Tells the current target's breaker how its attempt went (exactly once). */
static void breaker_settle(chat *c, breaker_outcome outcome)
{
    if (!c->ticket_live) return;
    breaker *b = target_breaker(c);
    c->ticket_live = false;
    if (b) breaker_record(b, util_now_ms(), &c->ticket, outcome, chat_random(c));
}

static void on_retry_timer(evutil_socket_t fd, short what, void *arg)
{
    chat *c = arg;
    c->retry_armed = false;
    if (c->state != CHAT_DONE && c->state != CHAT_FAILED) start_attempt(c);
}

/* After a failed attempt: settles the breaker (4xx and 429 never count
 * against it; a 429 pauses the target for everyone), then retries the same
 * target after a backoff or Retry-After, fails over to the next candidate,
 * or gives up (reliability.md §2.5; router/retry.h). Returns true when
 * another attempt is under way. */
static bool recover(chat *c, const upstream_error *e)
{
    int64_t now = util_now_ms();
    bool client_error = c->status >= 400 && c->status < 500;
    if (c->status == 429 && e->retry_after_ms > 0 && target_breaker(c))
        breaker_pause(target_breaker(c), now + e->retry_after_ms);
    breaker_settle(c, client_error       ? BREAKER_NEUTRAL
                      : c->own_limit_hit ? BREAKER_ABANDONED
                                         : BREAKER_FAILURE);
    c->own_limit_hit = false;
    retry_budget *rb = target_budget(c);
    const resilience_conf *rc = config_resilience(c->a->cfg);
    retry_input in = {
        .cls = e->cls,
        .quota_exhausted = e->quota_exhausted,
        .attempt = c->target_attempts > 0 ? c->target_attempts : 1,
        .max_attempts = rc->retries ? (int)rc->max_attempts : 1,
        .max_wait_ms = rc->max_wait_ms,
        .backoff_base_ms = rc->backoff_base_ms,
        .backoff_cap_ms = rc->backoff_cap_ms,
        .ambiguous_retries = c->ambiguous_retries,
        .retry_after_ms = e->retry_after_ms,
        .deadline_left_ms = c->deadline_ms - now,
        .streamed = c->relaying,
        .has_alternative = c->cur + 1 < c->n_plan,
        .budget_exhausted = rb && !retry_budget_would_allow(rb, now),
        .rnd = chat_random(c),
    };
    retry_decision d;
    retry_decide(&in, &d);
    const target *t = c->plan[c->cur];
    /* Another candidate answers sooner than a backoff: prefer it. */
    if (d.action == RETRY_SAME_AFTER && in.has_alternative) d.action = RETRY_FAIL_OVER;
    if (d.action == RETRY_SAME_AFTER && rb && !retry_budget_allow(rb, now))
        d.action = RETRY_GIVE_UP;
    if (in.budget_exhausted && d.action == RETRY_GIVE_UP && e->cls != ERRCLASS_FATAL)
        c->budget_exhausted = true;
    if (e->cls == ERRCLASS_AMBIGUOUS && d.action != RETRY_GIVE_UP) c->ambiguous_retries++;
    switch (d.action) {
    case RETRY_SAME_AFTER:
        log_info("%s: %s/%s failed (%s); retrying in %lld ms (%s)", c->id, t->provider->name,
                 t->model, e->message, (long long)d.wait_ms, d.reason);
        evtimer_assign(&c->retry_ev, c->a->base, on_retry_timer, c);
        struct timeval tv = util_ms_timeval(d.wait_ms);
        evtimer_add(&c->retry_ev, &tv);
        c->retry_armed = true;
        return true;
    case RETRY_FAIL_OVER:
        log_info("%s: %s/%s failed (%s); failing over to %s/%s (%s)", c->id, t->provider->name,
                 t->model, e->message, c->plan[c->cur + 1]->provider->name,
                 c->plan[c->cur + 1]->model, d.reason);
        c->cur++;
        c->target_attempts = 0;
        start_attempt(c);
        return true;
    default:
        log_debug("%s: giving up: %s", c->id, d.reason);
        return false;
    }
}

/* Remembers the stream's chunk id (from the first chunk) for the usage chunk. */
static void remember_chunk_id(chat *c, const char *json, size_t len)
{
    const char *p = memmem(json, len < 64 ? len : 64, "\"id\":\"", 6);
    if (!p) return;
    p += 6;
    const char *end = memchr(p, '"', (size_t)(json + len - p));
    if (end && (size_t)(end - p) < sizeof c->chunk_id) memcpy(c->chunk_id, p, (size_t)(end - p));
}

static void sink_chunk(void *ctx, const char *json, size_t len)
{
    chat *c = ctx;
    if (!c->chunk_id[0]) remember_chunk_id(c, json, len);
    if (c->ttft_us < 0) c->ttft_us = util_now_us() - c->start_us;
    evbuffer_add(c->out, "data: ", 6);
    evbuffer_add(c->out, json, len);
    evbuffer_add(c->out, "\n\n", 2);
}

/* The stream as the client gets it, kept to replay for its Idempotency-Key
 * (up to a cap: a longer one is not stored, and the key is freed). */
#define IDEM_STREAM_MAX (8 << 20)

static void flush_out(chat *c)
{
    size_t n = evbuffer_get_length(c->out);
    if (n == 0 || c->client_gone || c->holding) return;
    if (c->idem_held && !c->idem_too_big) {
        if (c->idem_body.len + n > IDEM_STREAM_MAX)
            c->idem_too_big = true;
        else
            buf_append(&c->idem_body, evbuffer_pullup(c->out, -1), n);
    }
    evhttp_send_reply_chunk(c->req, c->out);
}

static int on_stream_event(void *ctx, const stream_event *ev)
{
    chat *c = ctx;
    const provider_ops *ops = c->plan[c->cur]->provider->ops;
    stream_sink sink = {c, sink_chunk};
    if (ops->stream_event(c->sstate, ev, &c->sres, &sink) < 0 || c->sres.failed) return 1;
    return 0;
}

/* The stream's state: parser, the dialect's translator, the output. */
static void stream_open(chat *c)
{
    const target *t = c->plan[c->cur];
    c->relaying = true;
    c->parser = sse_parser_new(t->provider->ops->framing, 0);
    c->sstate = t->provider->ops->stream_new ? t->provider->ops->stream_new(&c->canon, t) : NULL;
    c->out = evbuffer_new();
}

static void stream_close(chat *c)
{
    const target *t = c->plan[c->cur];
    if (c->parser) sse_parser_free(c->parser);
    if (c->sstate && t->provider->ops->stream_free) t->provider->ops->stream_free(c->sstate);
    if (c->out) evbuffer_free(c->out);
    c->parser = NULL;
    c->sstate = NULL;
    c->out = NULL;
    c->relaying = false;
    buf text = c->sres.text;
    buf_reset(&text);
    memset(&c->sres, 0, sizeof c->sres);
    c->sres.text = text;
    c->chunk_id[0] = '\0';
    c->ttft_us = -1;
}

/* The response head: from here on the client is committed to this answer. */
static void stream_start_reply(chat *c)
{
    chat_set_state(c, CHAT_RELAYING);
    struct evkeyvalq *h = evhttp_request_get_output_headers(c->req);
    add_common_headers(c);
    http_head_flush(c->req, &c->head); /* evhttp must find Content-Type: its own entry */
    evhttp_add_header(h, "Content-Type", "text/event-stream");
    evhttp_add_header(h, "Cache-Control", "no-cache");
    http_count_reply(c->a, 200);
    evhttp_send_reply_start(c->req, 200, "OK");
}

/* Where the cascade goes from the current candidate (for a streamed
 * request: if streams are cascaded): a plan index, or -1. */
static int cascade_next(chat *c)
{
    const policy *pol = config_policy(c->a->cfg);
    bool on = c->canon.stream ? policy_cascade_streams(pol) : policy_cascade_enabled(pol);
    if (!c->by_policy || !on) return -1;
    int next = policy_escalation_index(pol, &c->pplan, c->cur);
    return next >= 0 && next < c->n_plan ? next : -1;
}

/* A cheaper tier's stream is held back when the cascade could still
 * escalate: the client must not see an answer that is then replaced. */
static bool cascade_holds_stream(chat *c)
{
    return cascade_next(c) >= 0;
}

static void begin_relay(chat *c)
{
    stream_open(c);
    c->holding = cascade_holds_stream(c);
    if (!c->holding) stream_start_reply(c);
}

static void on_upstream_headers(void *ctx, int status, const upstream_headers *hs)
{
    chat *c = ctx;
    c->status = status;
    c->hs = hs;
    if (c->canon.stream && status >= 200 && status < 300 && !c->client_gone) begin_relay(c);
}

static void on_upstream_data(void *ctx, const char *data, size_t len)
{
    chat *c = ctx;
    if (c->relaying) {
        if (!c->sres.failed) sse_parser_feed(c->parser, data, len, on_stream_event, c);
        flush_out(c);
        return;
    }
    if (c->body.len + len > MAX_UPSTREAM_BODY) {
        c->body_too_large = true; /* keep reading; on_done reports it */
        return;
    }
    buf_append(&c->body, data, len);
}

/* Estimates usage when the provider did not report it (a cut stream). */
/* Fills in what the provider did not report (a cut stream, no usage
 * block): counts it did report are kept (Anthropic reports the input at the
 * start), the rest estimated at about 4 characters a token. */
static void estimate_usage(chat *c, usage_record *u)
{
    if (u->exact) return;
    int64_t out_est = (int64_t)(c->sres.text.len + 3) / 4;
    if (u->output < out_est) u->output = out_est;
    if (u->input_uncached + u->cache_read + u->cache_write_5m + u->cache_write_1h > 0) return;
    u->input_uncached = (canon_prompt_chars(&c->canon) + 3) / 4;
}

static void send_stream_error(chat *c, const char *type, const char *message)
{
    buf b = BUF_INIT;
    buf_append_str(&b, "{\"error\":{\"message\":");
    buf_append_json_str(&b, message, strlen(message));
    buf_append_str(&b, ",\"type\":");
    buf_append_json_str(&b, type, strlen(type));
    buf_append_str(&b, ",\"param\":null,\"code\":null}}");
    sink_chunk(c, b.data, b.len);
    buf_free(&b);
}

static void send_usage_chunk(chat *c)
{
    const stream_result *r = &c->sres;
    buf b = BUF_INIT;
    if (!c->chunk_id[0]) snprintf(c->chunk_id, sizeof c->chunk_id, "chatcmpl-%s", c->id + 4);
    buf_printf(&b,
               "{\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":%lld,\"model\":",
               c->chunk_id, (long long)time(NULL));
    const char *m = c->plan[c->cur]->model;
    buf_append_json_str(&b, m, strlen(m));
    buf_printf(&b,
               ",\"choices\":[],\"usage\":{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,"
               "\"total_tokens\":%lld,\"prompt_tokens_details\":{\"cached_tokens\":%lld},"
               "\"completion_tokens_details\":{\"reasoning_tokens\":%lld}}}",
               (long long)r->prompt_tokens, (long long)r->completion_tokens,
               (long long)(r->prompt_tokens + r->completion_tokens), (long long)r->usage.cache_read,
               (long long)r->usage.reasoning);
    sink_chunk(c, b.data, b.len);
    buf_free(&b);
}

static void end_relay(chat *c, const engine_result *r)
{
    if (!c->sres.failed && c->parser) sse_parser_finish(c->parser, on_stream_event, c);
    bool clean_eof = r->ok && !c->sres.failed;
    /* Usage seen before a cut or an error is partial, never final. */
    bool complete = c->sres.done || (clean_eof && c->sres.finish_reason[0]);
    if (!complete || c->sres.failed) c->sres.usage.exact = false;
    /* Gemini streams end without a terminator: a clean EOF after a finish
     * reason is complete. */
    if (clean_eof && !c->sres.done && c->sres.finish_reason[0]) c->sres.done = true;
    if (c->holding && held_stream_escalates(c)) return;
    const char *why;
    if (c->sres.done && !c->sres.failed) {
        if (c->canon.include_usage) send_usage_chunk(c);
        why = "stream complete";
    } else if (c->sres.failed) {
        send_stream_error(c, c->sres.error.type[0] ? c->sres.error.type : "api_error",
                          c->sres.error.message[0] ? c->sres.error.message
                                                   : "the provider sent an error mid-stream");
        why = "provider error mid-stream";
    } else if (deadline_cut(c, r)) {
        char msg[300];
        snprintf(msg, sizeof msg, "the request's total timeout of %lld ms (%s) ran out mid-stream",
                 (long long)c->tmo.total_ms, c->tmo.total_from);
        send_stream_error(c, "timeout_error", msg);
        why = "total timeout mid-stream";
    } else {
        char msg[300];
        snprintf(msg, sizeof msg, "the provider's stream was cut before it finished (%s)",
                 r->what ? r->what : "connection closed");
        send_stream_error(c, "api_error", msg);
        why = "stream cut upstream";
    }
    estimate_usage(c, &c->sres.usage);
    bool ok = c->sres.done && !c->sres.failed;
    breaker_settle(c, ok                   ? BREAKER_SUCCESS
                      : deadline_cut(c, r) ? BREAKER_ABANDONED
                                           : BREAKER_FAILURE);
    record_usage(c, 200,
                 ok               ? ""
                 : c->sres.failed ? "upstream_stream_error"
                                  : "upstream_stream_cut",
                 &c->sres.usage);
    evbuffer_add(c->out, "data: [DONE]\n\n", 14);
    flush_out(c);
    if (!c->client_gone) evhttp_send_reply_end(c->req);
    if (ok && c->idem_held && !c->idem_too_big && !c->client_gone) {
        c->idem_settled = true; /* stored as sent; replays get the same stream */
        idem_store_result(c->a->idem, idem_scope(c), c->idem_key, c->idem_owner, 200,
                          "text/event-stream", c->idem_body.data ? c->idem_body.data : "",
                          c->idem_body.len, NULL, NULL);
    }
    chat_finish(c, c->sres.done && !c->sres.failed ? CHAT_DONE : CHAT_FAILED, why);
}

/* The cheaper answer is set aside (and billed with the final one); the
 * request goes on to plan[next]. */
static void escalate(chat *c, int next, const char *check, const usage_record *u)
{
    c->prior_cost_pusd += pricing_cost_pusd(c->plan[c->cur]->price, u, false);
    c->prior_usage.input_uncached += u->input_uncached;
    c->prior_usage.cache_read += u->cache_read;
    c->prior_usage.output += u->output;
    c->prior_usage.reasoning += u->reasoning;
    c->prior_usage.exact = u->exact;
    snprintf(c->cascade_check, sizeof c->cascade_check, "%s", check);
    log_info("%s: %s's answer failed the %s check; escalating to %s", c->id, c->plan[c->cur]->model,
             check, c->plan[next]->model);
    c->cur = next;
    c->target_attempts = 0;
    start_attempt(c);
}

/* A held stream ended: escalate when it failed a check (or did not
 * finish), else let the client have it all at once and go on relaying. */
static bool held_stream_escalates(chat *c)
{
    int next = cascade_next(c); /* held only when there is one */
    bool complete = c->sres.done && !c->sres.failed;
    const char *check =
        !complete ? "complete"
                  : policy_cascade_failed_check(config_policy(c->a->cfg), c->sres.finish_reason,
                                                c->sres.text.data ? c->sres.text.data : "",
                                                c->sres.text.len, c->canon.json_mode);
    if (check && next >= 0) {
        usage_record u = c->sres.usage;
        estimate_usage(c, &u);
        breaker_settle(c, complete ? BREAKER_SUCCESS : BREAKER_FAILURE);
        c->holding = false;
        stream_close(c);
        escalate(c, next, check, &u);
        return true;
    }
    c->holding = false;
    c->ttft_us = util_now_us() - c->start_us; /* the first bytes leave now */
    stream_start_reply(c);
    flush_out(c);
    return false;
}

/* The answer's text, for the cascade's checks. */
static void answer_text(chat *c, const decoded_response *d, buf *out)
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
 * UNCERTAIN marker, empty) is set aside -- and billed -- and the request goes
 * to the tier above. Returns true when it escalated. */
static bool cascade_escalate(chat *c, decoded_response *d)
{
    int next = c->canon.stream ? -1 : cascade_next(c);
    if (next < 0) return false;
    buf text = BUF_INIT;
    answer_text(c, d, &text);
    const char *check =
        policy_cascade_failed_check(config_policy(c->a->cfg), d->finish_reason,
                                    text.data ? text.data : "", text.len, c->canon.json_mode);
    buf_free(&text);
    if (!check) return false;
    if (d->body) json_object_put(d->body);
    escalate(c, next, check, &d->usage);
    return true;
}

static void reply_success(chat *c)
{
    const target *t = c->plan[c->cur];
    decoded_response d;
    memset(&d, 0, sizeof d);
    char err[300] = "";
    if (t->provider->ops->decode(&c->canon, t, c->body.data ? c->body.data : "", c->body.len, &d,
                                 err, sizeof err) != 0) {
        if (d.body) json_object_put(d.body);
        upstream_error e = {.cls = ERRCLASS_AMBIGUOUS, .client_status = 502, .retry_after_ms = -1};
        snprintf(e.type, sizeof e.type, "api_error");
        snprintf(e.code, sizeof e.code, "upstream_malformed_response");
        snprintf(e.message, sizeof e.message, "The provider's answer could not be read: %s", err);
        if (!recover(c, &e)) reply_upstream_error(c, &e);
        return;
    }
    breaker_settle(c, BREAKER_SUCCESS);
    if (cascade_escalate(c, &d)) return;
    chat_set_state(c, CHAT_REPLYING);
    add_common_headers(c);
    cost_header(c, &d.usage);
    record_usage(c, 200, "", &d.usage);
    if (d.body) {
        size_t len;
        const char *s = json_object_to_json_string_length(
            d.body, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
        send_final(c, 200, s, len, CHAT_DONE, "answered");
        json_object_put(d.body);
    } else {
        send_final(c, 200, d.raw, d.raw_len, CHAT_DONE, "answered");
    }
}

static void on_upstream_done(void *ctx, const engine_result *r)
{
    chat *c = ctx;
    c->call = NULL;
    c->upstream_us += util_now_us() - c->attempt_start_us;
    const provider_ops *ops = c->plan[c->cur]->provider->ops;
    c->a->provider_inflight[c->plan[c->cur]->provider->index]--;
    if (c->client_gone || c->state == CHAT_DONE || c->state == CHAT_FAILED) return;
    if (c->relaying) {
        end_relay(c, r);
        return;
    }
    upstream_error e;
    memset(&e, 0, sizeof e);
    if (!r->ok && r->status > 0 && !r->timed_out) {
        /* it answered, then the connection broke: it may have done (and
         * billed) the work, so this is retried at most as ambiguous */
        e = (upstream_error){.cls = ERRCLASS_AMBIGUOUS, .client_status = 502, .retry_after_ms = -1};
        snprintf(e.type, sizeof e.type, "api_error");
        snprintf(e.code, sizeof e.code, "upstream_incomplete_response");
        snprintf(e.message, sizeof e.message,
                 "the provider's answer (HTTP %d) was cut before it finished (%s)", r->status,
                 r->what ? r->what : "connection closed");
    } else if (deadline_cut(c, r)) {
        reply_deadline(c);
        return;
    } else if (r->first_byte_late && c->own_first_byte) {
        char what[200];
        snprintf(what, sizeof what, "no response within the first-byte timeout of %lld ms (%s)",
                 (long long)c->tmo.first_byte_ms, c->tmo.first_byte_from);
        provider_transport_error(what, true, &e);
        c->own_limit_hit = true;
    } else if (!r->ok) {
        provider_transport_error(r->what ? r->what : "transfer failed", r->timed_out, &e);
    } else if (c->body_too_large) {
        e = (upstream_error){.cls = ERRCLASS_AMBIGUOUS, .client_status = 502, .retry_after_ms = -1};
        snprintf(e.type, sizeof e.type, "api_error");
        snprintf(e.message, sizeof e.message, "The provider's answer is larger than %d bytes",
                 MAX_UPSTREAM_BODY);
    } else if (r->status >= 200 && r->status < 300) {
        reply_success(c);
        return;
    } else {
        ops->classify(r->status, c->hs, c->body.data ? c->body.data : "", c->body.len, &e);
    }
    if (!recover(c, &e)) reply_upstream_error(c, &e);
}

/* The current candidate's breaker refuses it: skip to the next one now. */
static bool skip_open_target(chat *c)
{
    const target *t = c->plan[c->cur];
    breaker *b = target_breaker(c);
    if (!b || breaker_allow(b, util_now_ms(), &c->ticket)) {
        c->ticket_live = b != NULL;
        return false;
    }
    upstream_error e = {.cls = ERRCLASS_RETRYABLE, .client_status = 503};
    int64_t at = breaker_retry_at_ms(b, util_now_ms());
    e.retry_after_ms = at > 0 ? at - util_now_ms() : 1000;
    snprintf(e.type, sizeof e.type, "server_error");
    snprintf(e.code, sizeof e.code, "circuit_open");
    snprintf(e.message, sizeof e.message,
             "Provider %s is failing for model %s and is being rested (circuit breaker open)",
             t->provider->name, t->model);
    c->status = 0;
    if (c->cur + 1 < c->n_plan) {
        log_info("%s: %s/%s is open; trying %s/%s", c->id, t->provider->name, t->model,
                 c->plan[c->cur + 1]->provider->name, c->plan[c->cur + 1]->model);
        c->cur++;
        c->target_attempts = 0;
        start_attempt(c);
    } else {
        /* Shed: a client retry before Retry-After would be refused too, and
         * its SDK's retries would multiply ours (reliability.md §2.2). */
        c->shed = true;
        reply_upstream_error(c, &e);
    }
    return true;
}

static void start_attempt(chat *c)
{
    const target *t = c->plan[c->cur];
    chat_set_state(c, CHAT_CALLING);
    if (skip_open_target(c)) return;
    if (c->target_attempts == 0 && target_budget(c))
        retry_budget_note_request(target_budget(c), util_now_ms());
    c->target_attempts++;
    c->status = 0;
    c->hs = NULL;
    c->body_too_large = false;
    buf_reset(&c->body);
    upstream_request_reset(&c->up);
    if (c->a->provider_inflight[t->provider->index] >= t->provider->max_concurrency) {
        upstream_error e = {
            .cls = ERRCLASS_RETRYABLE, .client_status = 503, .retry_after_ms = 1000};
        snprintf(e.type, sizeof e.type, "server_error");
        snprintf(e.code, sizeof e.code, "provider_busy");
        snprintf(e.message, sizeof e.message,
                 "Provider %s is at its concurrency limit (%d calls in flight); retry shortly",
                 t->provider->name, t->provider->max_concurrency);
        if (!recover(c, &e)) reply_upstream_error(c, &e);
        return;
    }
    char err[300] = "";
    if (t->provider->ops->encode(&c->canon, t, &c->up, err, sizeof err) != 0) {
        reply_error(c, 400, "invalid_request_error", "unsupported_request", NULL, err, false);
        return;
    }
    upstream_request_finish_headers(&c->up);
    static const engine_callbacks cb = {on_upstream_headers, on_upstream_data, on_upstream_done};
    int64_t left = c->deadline_ms - util_now_ms();
    if (left <= 0) {
        reply_deadline(c);
        return;
    }
    engine_limits lim = {left, c->tmo.connect_ms, c->tmo.first_byte_ms};
    const provider_conf *p = t->provider;
    c->cut_by_deadline = left < (p->total_timeout_ms > 0 ? p->total_timeout_ms : 600000);
    c->own_first_byte = lim.first_byte_ms > 0 && (p->first_byte_timeout_ms <= 0 ||
                                                  lim.first_byte_ms < p->first_byte_timeout_ms);
    c->attempts++;
    c->attempt_start_us = util_now_us();
    c->a->stats.upstream_attempts++;
    c->call = engine_call_start(c->a->eng, &c->up, p, &lim, &cb, c);
    if (!c->call) {
        upstream_error e;
        provider_transport_error("could not start the upstream call", false, &e);
        if (!recover(c, &e)) reply_upstream_error(c, &e);
        return;
    }
    c->a->provider_inflight[t->provider->index]++;
}

/* Plans the request, then sets its deadlines (they depend on the route the
 * plan took: a route of $.routes, or the policy's "auto" / "tier:NAME") and
 * makes the first attempt. */
static void plan_and_start(chat *c)
{
    if (make_plan(c) != 0) return;
    config_request_timeouts(c->a->cfg, c->canon.task,
                            c->route_name  ? c->route_name
                            : c->by_policy ? c->canon.model
                                           : NULL,
                            &c->tmo);
    c->deadline_ms = c->start_us / 1000 + c->tmo.total_ms;
    start_attempt(c);
}

/* ------------------------------------------------------------ coalescing
 *
 * With resilience.coalesce, a deterministic request (temperature 0, n 1,
 * not streamed) that is byte for byte the same as one of the same client key
 * already in flight does not call the provider: it waits for that request
 * (its leader) and gets a copy of its answer. If the leader ends without a
 * whole answer (its client left), its followers run on their own. */

#define COALESCE_BUCKETS 1024

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

static chat **coalesce_bucket(app *a, const char *fp)
{
    if (!a->coalesce && !(a->coalesce = calloc(COALESCE_BUCKETS, sizeof *a->coalesce))) return NULL;
    char head[4] = {fp[0], fp[1], fp[2], '\0'};
    return &a->coalesce[strtoul(head, NULL, 16) % COALESCE_BUCKETS];
}

/* True when c now follows an identical request; false when it leads (or
 * coalescing cannot be used) and must run. */
static bool coalesce_join(chat *c, const char *body, size_t len)
{
    request_fingerprint(idem_scope(c), body, len, c->coalesce_fp);
    chat **bucket = coalesce_bucket(c->a, c->coalesce_fp);
    if (!bucket) return false;
    for (chat *l = *bucket; l; l = l->next_leader)
        if (strcmp(l->coalesce_fp, c->coalesce_fp) == 0) {
            c->leader = l;
            c->next_follower = l->followers;
            l->followers = c;
            return true;
        }
    c->leading = true;
    c->next_leader = *bucket;
    *bucket = c;
    return false;
}

static void follower_reply(chat *f, int status, const char *body, size_t len)
{
    f->coalesced = true;
    chat_set_state(f, CHAT_REPLYING);
    record_usage(f, status, status < 400 ? "" : "coalesced_error", NULL);
    add_common_headers(f);
    http_head_add(&f->head, "x-bridle-coalesced", "true");
    chat_reply(f, status, "application/json", body, len);
    chat_finish(f, status < 400 ? CHAT_DONE : CHAT_FAILED,
                "answered with an identical request's answer");
}

static void coalesce_answer(chat *leader, int status, const char *body, size_t len)
{
    chat *f;
    while ((f = leader->followers)) {
        leader->followers = f->next_follower;
        f->leader = NULL;
        follower_reply(f, status, body, len);
    }
}

/* c ends: a follower leaves its leader's list; a leader leaves the table
 * and lets whoever still waits run on their own. */
static void coalesce_end(chat *c)
{
    if (c->leader) {
        for (chat **p = &c->leader->followers; *p; p = &(*p)->next_follower)
            if (*p == c) {
                *p = c->next_follower;
                break;
            }
        c->leader = NULL;
    }
    if (!c->leading) return;
    c->leading = false;
    for (chat **p = coalesce_bucket(c->a, c->coalesce_fp); p && *p; p = &(*p)->next_leader)
        if (*p == c) {
            *p = c->next_leader;
            break;
        }
    chat *f;
    while ((f = c->followers)) {
        c->followers = f->next_follower;
        f->leader = NULL;
        plan_and_start(f);
    }
}

/* ------------------------------------------------------------ idempotency */

/* The stored answer, as it was first sent (the stream too, in one piece). */
static void replay(chat *c, const idem_result *r)
{
    c->replayed = true;
    chat_set_state(c, CHAT_REPLYING);
    record_usage(c, r->status, "", NULL);
    add_common_headers(c);
    http_head_add(&c->head, "Idempotent-Replayed", "true");
    chat_reply(c, r->status, r->content_type, r->body, r->body_len);
    chat_finish(c, CHAT_DONE, "replayed for its Idempotency-Key");
}

static void on_idem_claim(void *ctx, const idem_result *r)
{
    chat *c = ctx;
    c->idem_pending = NULL;
    switch (r->outcome) {
    case IDEM_CLAIMED:
        c->idem_held = true;
        snprintf(c->idem_owner, sizeof c->idem_owner, "%s", r->owner);
        plan_and_start(c);
        return;
    case IDEM_REPLAY:
        replay(c, r);
        return;
    case IDEM_MISMATCH:
        reply_error(c, 422, "invalid_request_error", "idempotency_key_reused", NULL,
                    "This Idempotency-Key was already used with a different request body; a key "
                    "names one request: send a new key with a new request",
                    false);
        return;
    case IDEM_IN_PROGRESS:
        http_head_add(&c->head, "retry-after", "1");
        reply_error(c, 409, "invalid_request_error", "idempotency_key_in_use", NULL,
                    "A request with this Idempotency-Key is still being processed; retry after "
                    "it finishes to get its answer",
                    true);
        return;
    default: {
        char msg[400];
        snprintf(msg, sizeof msg,
                 "The gateway cannot check this Idempotency-Key right now (%s); retry shortly",
                 r->error ? r->error : "no answer from the database");
        reply_error(c, 503, "server_error", "idempotency_unavailable", NULL, msg, true);
    }
    }
}

/* Fingerprint: SHA-256 of method, path and body as sent (a retry resends
 * the same bytes); the claim itself is in db/idem. */
static void idem_begin(chat *c, const request_headers *hdr, const char *body, size_t len)
{
    if (hdr->idempotency_keys > 1) {
        reply_error(c, 400, "invalid_request_error", "invalid_idempotency_key", NULL,
                    "Send at most one Idempotency-Key header", false);
        return;
    }
    if (idem_parse_key(hdr->idempotency_key, c->idem_key, sizeof c->idem_key) != 0) {
        reply_error(c, 400, "invalid_request_error", "invalid_idempotency_key", NULL,
                    "The Idempotency-Key header must be 1 to 255 printable ASCII characters, "
                    "as a quoted string (\"...\") or a bare token without spaces",
                    false);
        return;
    }
    char fp[65];
    request_fingerprint("POST /v1/chat/completions", body, len, fp);
    bool wait = config_idempotency(c->a->cfg)->wait;
    c->idem_pending = idem_claim(c->a->idem, idem_scope(c), c->idem_key, fp, wait, c->deadline_ms,
                                 on_idem_claim, c);
    if (!c->idem_pending)
        reply_error(c, 503, "server_error", "out_of_memory", NULL,
                    "The gateway is out of memory; retry shortly", true);
}

/* ------------------------------------------------------------ entry */

/* Headers win over metadata: a proxy in front of an app can tag it. */
static void parse_attribution(chat *c, const request_headers *hdr)
{
    c->tier_header = hdr->tier;
    if (hdr->task) c->canon.task = hdr->task;
    if (hdr->agent) c->canon.agent = hdr->agent;
    if (hdr->feature) c->canon.feature = hdr->feature;
    /* a key with a team records that team whatever metadata.team says: its
     * spend always counts against its own team's budget */
    if (c->key->team) c->canon.team = c->key->team;
}

void chat_handle(app *a, struct evhttp_request *req, const key_conf *key,
                 const request_headers *hdr, const char *request_id)
{
    chat *c = chat_alloc(a);
    if (!c) {
        http_reply_error(a, req, 503, "server_error", "out_of_memory", NULL,
                         "The gateway is out of memory; retry shortly", true);
        return;
    }
    a->in_flight++;
    c->a = a;
    c->req = req;
    c->key = key;
    c->start_us = util_now_us();
    c->wall_start_us = util_wall_ms() * 1000 + c->start_us % 1000;
    c->ttft_us = -1;
    c->deadline_ms = util_now_ms() + config_limits(a->cfg)->request_timeout_ms;
    memcpy(c->id, request_id, sizeof c->id);
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *body = (const char *)evbuffer_pullup(in, -1);
    canon_error cerr;
    if (canon_parse_chat(body ? body : "", len, &c->doc, &c->strings, &c->canon, &cerr) != 0) {
        reply_error(c, 400, "invalid_request_error", cerr.code, cerr.param, cerr.message, false);
        return;
    }
    parse_attribution(c, hdr);
    if (c->a->ledger && !ledger_can_accept(c->a->ledger)) {
        reply_error(c, 503, "server_error", "usage_log_full", NULL,
                    "The gateway cannot record usage right now (its local usage log is full "
                    "because the database has been unreachable); retry later",
                    true);
        return;
    }
    http_watch_client(a, req, on_client_gone, c);
    if (hdr->idempotency_keys && a->idem) {
        idem_begin(c, hdr, body ? body : "", len);
        return;
    }
    if (c->canon.deterministic && config_resilience(a->cfg)->coalesce &&
        coalesce_join(c, body ? body : "", len))
        return;
    plan_and_start(c);
}
