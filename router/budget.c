/* Hard budgets with local leases (router/budget.h). */
#include "router/budget.h"

#include <event2/event_struct.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/log.h"
#include "lib/util.h"

#define BUCKETS 256
#define SWEEP_EVERY 5       /* syncs */
#define RATE_WINDOW_MS 2000 /* a slice is about this much of a budget's recent use */
#define MIN_SLICE_REQUESTS 4

static const char *const scope_names[] = {"key", "team", "total"};
static const char *const period_names[] = {"day", "week", "month"};
static const char *const period_words[] = {"daily", "weekly", "monthly"};

/* One budget in one period. */
typedef struct bentry {
    budget_item it; /* scope, id, period, start, limit */
    budget_period period;
    int64_t avail;          /* leased, not reserved (may go below 0 when a cost beat its bound) */
    int64_t reserved;       /* in flight */
    int64_t unshipped;      /* settled, not yet committed by the ledger */
    int64_t spent;          /* settled spend in the database (all gateways), as last read */
    bool known;             /* spent was read at least once */
    bool used;              /* reserved on since the last sync */
    int64_t valid_until_ms; /* the lease (as last renewed) is safe to use until then */
    int64_t win_start_ms, win_cur, win_prev; /* reservations, for the slice size */
    int64_t refused_need;                    /* lease refused_gen refused this much */
    int64_t refused_gen;
    int refs; /* holds that point at it (not freed while > 0) */
    struct bentry *next, *hnext;
} bentry;

struct budget {
    struct event_base *base;
    budget_store *store;
    budget_options opt;
    bentry *hash[BUCKETS];
    bentry *all;
    int64_t n_entries;
    int64_t created_wall_us;
    char previous[96];            /* the previous run's instance (budget_take_over) */
    budget_hold *q_head, *q_tail; /* waiting for a lease, FIFO */
    int64_t n_waiting;
    /* the lease call in flight */
    bool leasing;
    budget_item *lease_items;
    bentry **lease_entries;
    int lease_n;
    int64_t lease_sent_ms;
    int64_t lease_gen, serving_gen; /* the lease call's number; the one being served */
    /* the sync in flight */
    bool syncing, sync_due;
    budget_item *sync_items;
    bentry **sync_entries;
    int sync_n;
    int64_t sync_sent_ms;
    int syncs;
    bool processing;
    bool draining, drain_sent; /* budget_drain: the last sync, leases given back */
    void (*drain_done)(void *ctx);
    void *drain_ctx;
    struct event sync_ev;
    bool sync_armed;
    budget_stats st;
};

static int64_t now_ms(const budget *b)
{
    return b->opt.now_ms ? b->opt.now_ms() : util_now_ms();
}

static int64_t wall_ms(const budget *b)
{
    return b->opt.wall_ms ? b->opt.wall_ms() : util_wall_ms();
}

/* ------------------------------------------------------------ periods */

int64_t budget_period_start(budget_period p, int64_t t)
{
    int64_t day = util_floor_div(t, 86400);
    if (p == PERIOD_DAY) return day * 86400;
    if (p == PERIOD_WEEK) /* 1970-01-01 was a Thursday: Monday is 3 days before */
        return (day - ((day % 7 + 7 + 3) % 7)) * 86400;
    int64_t y, m, d;
    util_civil_from_days(day, &y, &m, &d);
    return util_days_from_civil(y, m, 1) * 86400;
}

int64_t budget_period_end(budget_period p, int64_t start)
{
    if (p == PERIOD_DAY) return start + 86400;
    if (p == PERIOD_WEEK) return start + 7 * 86400;
    int64_t y, m, d;
    util_civil_from_days(util_floor_div(start, 86400), &y, &m, &d);
    return util_days_from_civil(m == 12 ? y + 1 : y, m == 12 ? 1 : m + 1, 1) * 86400;
}

/* ------------------------------------------------------------ entries */

static unsigned hash_of(int scope, const char *id, int period, int64_t start)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *s = id; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    h = (h ^ (uint64_t)(scope * 3 + period)) * 1099511628211ULL;
    h = (h ^ (uint64_t)start) * 1099511628211ULL;
    return (unsigned)(h % BUCKETS);
}

static bentry *entry_find(const budget *b, int scope, const char *id, int period, int64_t start)
{
    for (bentry *e = b->hash[hash_of(scope, id, period, start)]; e; e = e->hnext)
        if (e->it.start_s == start && e->period == (budget_period)period &&
            e->it.scope == scope_names[scope] && strcmp(e->it.id, id) == 0)
            return e;
    return NULL;
}

static bentry *entry_get(budget *b, int scope, const char *id, int period, int64_t start)
{
    bentry *e = entry_find(b, scope, id, period, start);
    if (e) return e;
    if (!(e = calloc(1, sizeof *e))) return NULL;
    e->it.scope = scope_names[scope];
    snprintf(e->it.id, sizeof e->it.id, "%s", id);
    e->it.period = period_names[period];
    e->it.start_s = start;
    e->period = (budget_period)period;
    unsigned hb = hash_of(scope, id, period, start);
    e->hnext = b->hash[hb];
    b->hash[hb] = e;
    e->next = b->all;
    b->all = e;
    b->n_entries++;
    return e;
}

static void entry_forget(budget *b, bentry *e)
{
    int scope = e->it.scope == scope_names[0] ? 0 : e->it.scope == scope_names[1] ? 1 : 2;
    for (bentry **p = &b->hash[hash_of(scope, e->it.id, e->period, e->it.start_s)]; *p;
         p = &(*p)->hnext)
        if (*p == e) {
            *p = e->hnext;
            break;
        }
    for (bentry **p = &b->all; *p; p = &(*p)->next)
        if (*p == e) {
            *p = e->next;
            break;
        }
    b->n_entries--;
    free(e);
}

static int64_t entry_held(const bentry *e)
{
    int64_t h = e->avail + e->reserved + e->unshipped;
    return h > 0 ? h : 0;
}

/* Reservations in the last RATE_WINDOW_MS or so. */
static int64_t entry_recent(budget *b, bentry *e, int64_t add)
{
    int64_t now = now_ms(b);
    if (now - e->win_start_ms >= RATE_WINDOW_MS) {
        e->win_prev = now - e->win_start_ms >= 2 * RATE_WINDOW_MS ? 0 : e->win_cur;
        e->win_cur = 0;
        e->win_start_ms = now;
    }
    e->win_cur += add;
    return e->win_prev > e->win_cur ? e->win_prev : e->win_cur;
}

/* ------------------------------------------------------------ reserving */

static bool fits(const budget *b, const budget_hold *h)
{
    int64_t now = now_ms(b);
    for (int i = 0; i < h->n; i++) {
        const bentry *e = h->e[i];
        if (e->avail < h->ask) return false;
        if (h->ask > 0 && now >= e->valid_until_ms) return false; /* the lease may be gone */
    }
    return true;
}

static void take(budget *b, budget_hold *h)
{
    for (int i = 0; i < h->n; i++) {
        bentry *e = h->e[i];
        e->avail -= h->ask;
        e->reserved += h->ask;
        e->used = true;
        entry_recent(b, e, h->ask);
    }
    h->amount += h->ask;
    h->ask = 0;
    h->reserved = true;
}

static void fmt_usd(int64_t pusd, char *out, size_t n)
{
    /* cents when whole, else up to 6 decimals without trailing zeros */
    util_format_pusd(pusd, 6, out, n);
    size_t len = strlen(out);
    char *dot = strchr(out, '.');
    while (dot && len > (size_t)(dot - out) + 3 && out[len - 1] == '0')
        out[--len] = '\0';
}

static void say_exceeded(budget *b, budget_hold *h, const bentry *e)
{
    char lim[32], spent[32], cost[32], at[32];
    fmt_usd(e->it.limit_pusd, lim, sizeof lim);
    /* spent as PostgreSQL last said: adding this process's unshipped costs
     * would count twice those whose batch committed before that read but
     * whose acknowledgement this loop has not handled yet (T7 once showed
     * "$1.44 spent" of a $1.00 budget that way) */
    fmt_usd(e->spent, spent, sizeof spent);
    fmt_usd(h->amount + h->ask, cost, sizeof cost);
    int64_t end = budget_period_end(e->period, e->it.start_s);
    time_t te = (time_t)end;
    struct tm tm;
    gmtime_r(&te, &tm);
    strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%SZ", &tm);
    int64_t left = end - wall_ms(b) / 1000;
    if (left < 0) left = 0;
    char in[48];
    if (left >= 86400)
        snprintf(in, sizeof in, "%lldd %lldh", (long long)(left / 86400),
                 (long long)(left % 86400 / 3600));
    else
        snprintf(in, sizeof in, "%lldh %lldm", (long long)(left / 3600),
                 (long long)(left % 3600 / 60));
    char who[100];
    if (e->it.scope == scope_names[2])
        snprintf(who, sizeof who, "the gateway's total");
    else
        snprintf(who, sizeof who, "%s \"%.64s\"", e->it.scope, e->it.id);
    snprintf(h->message, sizeof h->message,
             "Budget exceeded: %s %s budget of $%s is used up ($%s spent, this request may cost up "
             "to $%s); it resets at %s (in %s). Ask for fewer tokens (max_tokens), use a cheaper "
             "model, or raise the budget",
             who, period_words[e->period], lim, spent, cost, at, in);
    h->retry_after_s = (int)(left > 0 ? left : 1);
}

static void say_unavailable(budget *b, budget_hold *h, const char *why)
{
    snprintf(h->message, sizeof h->message,
             "The gateway cannot check this request against its budgets right now (%s); retry "
             "shortly",
             why ? why : "the database is unreachable");
    h->retry_after_s = 1;
}

static void q_push(budget *b, budget_hold *h)
{
    h->next = NULL;
    h->waiting = true;
    if (b->q_tail)
        b->q_tail->next = h;
    else
        b->q_head = h;
    b->q_tail = h;
    b->n_waiting++;
}

static void q_remove(budget *b, budget_hold *h)
{
    budget_hold *prev = NULL;
    for (budget_hold *w = b->q_head; w; prev = w, w = w->next)
        if (w == h) {
            if (prev)
                prev->next = h->next;
            else
                b->q_head = h->next;
            if (b->q_tail == h) b->q_tail = prev;
            b->n_waiting--;
            break;
        }
    h->waiting = false;
    h->next = NULL;
}

static void on_lease(void *ctx, const char *error);
static void start_sync(budget *b);
static void drain_finish(budget *b);

/* Asks for what the queue's head is missing, and a slice more. 0: asked
 * (or nothing to ask); -1: the store cannot be asked. */
static int start_lease(budget *b)
{
    budget_hold *h = b->q_head;
    if (!h || b->leasing || b->syncing) return 0;
    int n = 0;
    int64_t now = now_ms(b);
    for (int i = 0; i < h->n; i++) {
        bentry *e = h->e[i];
        bool stale = now >= e->valid_until_ms;
        if (e->avail >= h->ask && !stale) continue;
        /* a lease not renewed in time may have been swept: what it had is gone */
        if (stale && e->avail > 0) e->avail = 0;
        int64_t need = h->ask - e->avail;
        if (need < 0) need = 0;
        /* the waiters behind it on the same budget are served from the grant */
        int64_t queued = 0;
        for (budget_hold *w = b->q_head; w; w = w->next)
            for (int j = 0; j < w->n; j++)
                if (w->e[j] == e) queued += w->ask;
        int64_t want = entry_recent(b, e, 0);
        if (want < MIN_SLICE_REQUESTS * h->ask) want = MIN_SLICE_REQUESTS * h->ask;
        if (want < queued) want = queued;
        if (b->opt.lease_max_pusd > 0 && want > b->opt.lease_max_pusd) want = b->opt.lease_max_pusd;
        if (want < need) want = need;
        b->lease_entries[n] = e;
        budget_item *it = &b->lease_items[n++];
        *it = e->it;
        it->need_pusd = need;
        it->want_pusd = want;
        it->held_pusd = entry_held(e); /* corrects the row first: no cost counted twice */
        it->unshipped_pusd = e->unshipped < it->held_pusd ? e->unshipped : it->held_pusd;
        it->granted_pusd = it->spent_pusd = it->total_held_pusd = 0;
    }
    if (!n) return 0;
    b->lease_n = n;
    b->lease_sent_ms = now;
    if (b->store->ops->lease(b->store, b->opt.instance, b->lease_items, n, b->opt.lease_ttl_ms,
                             on_lease, b) != 0)
        return -1;
    b->leasing = true;
    b->lease_gen++;
    b->st.lease_calls++;
    return 0;
}

/* Whether the last lease refused a budget that h needs at least as much of. */
static const bentry *refused_for(const budget *b, const budget_hold *h)
{
    for (int i = 0; i < h->n; i++) {
        const bentry *e = h->e[i];
        if (b->serving_gen && e->refused_gen == b->serving_gen &&
            h->ask - (e->avail > 0 ? e->avail : 0) >= e->refused_need)
            return e;
    }
    return NULL;
}

/* Serves the queue in order after a lease (error: it failed). */
static void serve_queue(budget *b, const char *error)
{
    if (b->processing) return;
    b->processing = true;
    budget_hold *h;
    while ((h = b->q_head)) {
        budget_status st;
        const bentry *no;
        if (fits(b, h)) {
            take(b, h);
            b->st.lease_admits++;
            st = BUDGET_OK;
        } else if ((no = refused_for(b, h))) {
            say_exceeded(b, h, no);
            b->st.refused++;
            st = BUDGET_EXCEEDED;
        } else if (error) {
            if (b->opt.fail_open) {
                st = BUDGET_OK; /* admitted without a reservation */
            } else {
                say_unavailable(b, h, error);
                b->st.unavailable++;
                st = BUDGET_UNAVAILABLE;
            }
        } else {
            /* still short: lease again for it (FIFO: the rest wait behind it),
             * after a sync that is due (they share the connection) */
            if (b->sync_due) start_sync(b);
            if (b->syncing) break;
            if (start_lease(b) == 0 && b->leasing) break;
            if (b->syncing) break;
            error = "the database is unreachable";
            continue;
        }
        q_remove(b, h);
        h->ask = 0;
        h->cb(h->ctx, st); /* may settle, release or reserve again */
    }
    b->processing = false;
    if (!b->leasing && b->sync_due) start_sync(b);
    if (b->draining && !b->syncing && !b->leasing) drain_finish(b); /* nothing to send */
    if (b->q_head && !b->leasing && !b->syncing && start_lease(b) != 0)
        serve_queue(b, "the database is unreachable");
}

static void on_lease(void *ctx, const char *error)
{
    budget *b = ctx;
    b->leasing = false;
    int64_t gen = b->lease_gen;
    if (error) {
        log_warn("budgets: a lease could not be taken: %s", error);
    } else {
        int64_t valid = b->lease_sent_ms + b->opt.lease_ttl_ms * 3 / 4;
        for (int i = 0; i < b->lease_n; i++) {
            bentry *e = b->lease_entries[i];
            const budget_item *it = &b->lease_items[i];
            e->avail += it->granted_pusd;
            e->spent = it->spent_pusd;
            e->known = true;
            e->valid_until_ms = valid; /* the row was set and renewed, granted or not */
            if (it->granted_pusd == 0) {
                e->refused_need = it->need_pusd;
                e->refused_gen = gen;
            }
        }
    }
    b->serving_gen = gen;
    serve_queue(b, error);
    b->serving_gen = 0;
}

static void add_scope(budget *b, budget_hold *h, int scope, const char *id, const int64_t *lim,
                      int64_t ts_s)
{
    if (!lim) return;
    for (int p = 0; p < N_PERIODS; p++) {
        if (lim[p] <= 0 || h->n >= BUDGET_MAX_PER_REQUEST) continue;
        bentry *e = entry_get(b, scope, id ? id : "", p, budget_period_start(p, ts_s));
        if (!e) continue;
        e->it.limit_pusd = lim[p]; /* the limit as it is now (keys reload) */
        e->refs++;
        h->e[h->n++] = e;
    }
}

/* Takes h->ask now, or queues h for a lease. */
static budget_status ask(budget *b, budget_hold *h, void (*cb)(void *ctx, budget_status st),
                         void *ctx)
{
    h->cb = cb;
    h->ctx = ctx;
    if (fits(b, h)) {
        take(b, h);
        b->st.local_admits++;
        return BUDGET_OK;
    }
    q_push(b, h);
    if (b->leasing || b->syncing || b->processing || b->q_head != h) return BUDGET_WAIT;
    if (start_lease(b) == 0) return BUDGET_WAIT;
    q_remove(b, h);
    h->ask = 0;
    if (b->opt.fail_open) return BUDGET_OK;
    say_unavailable(b, h, "the database is unreachable");
    b->st.unavailable++;
    return BUDGET_UNAVAILABLE;
}

budget_status budget_reserve(budget *b, budget_hold *h, const budget_request *req,
                             void (*cb)(void *ctx, budget_status st), void *ctx)
{
    memset(h, 0, offsetof(budget_hold, message));
    h->message[0] = '\0';
    int64_t ts_s = util_floor_div(req->ts_us, 1000000);
    if (req->key_id) add_scope(b, h, 0, req->key_id, req->key_limits, ts_s);
    if (req->team) add_scope(b, h, 1, req->team, req->team_limits, ts_s);
    add_scope(b, h, 2, "", req->total_limits, ts_s);
    if (!h->n) return BUDGET_OK;
    h->ask = req->amount_pusd > 0 ? req->amount_pusd : 0;
    return ask(b, h, cb, ctx);
}

budget_status budget_extend(budget *b, budget_hold *h, int64_t total_pusd,
                            void (*cb)(void *ctx, budget_status st), void *ctx)
{
    if (!h->n || total_pusd <= h->amount || h->waiting) return BUDGET_OK;
    h->ask = total_pusd - h->amount;
    return ask(b, h, cb, ctx);
}

void budget_settle(budget *b, budget_hold *h, int64_t cost_pusd)
{
    if (h->waiting) q_remove(b, h);
    h->ask = 0;
    if (cost_pusd < 0) cost_pusd = 0;
    for (int i = 0; i < h->n; i++) {
        bentry *e = h->e[i];
        if (h->reserved) {
            e->reserved -= h->amount;
            e->avail += h->amount - cost_pusd;
            if (b->opt.local) {
                if (b->store->ops->charge) b->store->ops->charge(b->store, &e->it, cost_pusd);
                e->spent += cost_pusd;
            } else
                e->unshipped += cost_pusd;
        }
        e->refs--;
    }
    h->reserved = false;
    h->n = 0; /* done with: a second call is a no-op */
}

void budget_release(budget *b, budget_hold *h)
{
    budget_settle(b, h, 0);
}

void budget_shipped(void *ctx, const usage_event *ev)
{
    budget *b = ctx;
    /* an earlier process's event (spool replay): its cost was never ours;
     * a batch line's was its batch's (migrations/0014), never unshipped here */
    if (!b || b->n_entries == 0 || ev->cost_pusd <= 0 || ev->ts_us < b->created_wall_us ||
        ev->batch_id[0])
        return;
    int64_t ts_s = util_floor_div(ev->ts_us, 1000000), start[N_PERIODS];
    for (int p = 0; p < N_PERIODS; p++)
        start[p] = budget_period_start(p, ts_s);
    const char *ids[3] = {ev->key_id, ev->team, ""};
    for (int s = 0; s < 3; s++) {
        if (s < 2 && !ids[s][0]) continue;
        for (int p = 0; p < N_PERIODS; p++) {
            bentry *e = entry_find(b, s, ids[s], p, start[p]);
            if (!e) continue;
            int64_t c = ev->cost_pusd < e->unshipped ? ev->cost_pusd : e->unshipped;
            e->unshipped -= c;
            e->spent += c; /* committed: the database's spent has it now */
        }
    }
}

int budget_share_pct(const budget *b, const budget_request *req, bool *team)
{
    *team = false;
    int best = -1;
    int64_t ts_s = util_floor_div(req->ts_us, 1000000);
    for (int s = 0; s < 2; s++) {
        const char *id = s ? req->team : req->key_id;
        const int64_t *lim = s ? req->team_limits : req->key_limits;
        if (!id || !lim) continue;
        for (int p = 0; p < N_PERIODS; p++) {
            if (lim[p] <= 0) continue;
            const bentry *e = entry_find(b, s, id, p, budget_period_start(p, ts_s));
            if (!e || !e->known) continue;
            int64_t per = lim[p] / 100 > 0 ? lim[p] / 100 : 1;
            int64_t pct = (e->spent + e->unshipped) / per;
            int v = pct > 1000 ? 1000 : (int)pct;
            if (v > best) {
                best = v;
                *team = s == 1;
            }
        }
    }
    return best;
}

/* ------------------------------------------------------------ sync */

static void drain_finish(budget *b)
{
    void (*done)(void *) = b->drain_done;
    b->drain_done = NULL;
    if (done) done(b->drain_ctx);
}

static void on_sync(void *ctx, const char *error)
{
    budget *b = ctx;
    b->syncing = false;
    if (error) {
        log_warn("budgets: syncing %d leases failed: %s", b->sync_n, error);
    } else {
        int64_t valid = b->sync_sent_ms + b->opt.lease_ttl_ms * 3 / 4;
        int64_t now_s = wall_ms(b) / 1000;
        for (int i = 0; i < b->sync_n; i++) {
            bentry *e = b->sync_entries[i];
            const budget_item *it = &b->sync_items[i];
            e->spent = it->spent_pusd;
            e->known = true;
            e->valid_until_ms = valid;
            /* spent past what the lease assumed (a cost above its bound, spend
             * recorded by hand): what would go over the limit is not used */
            int64_t room = e->it.limit_pusd - e->spent - e->unshipped - e->reserved;
            if (e->avail > room) e->avail = room > 0 ? room : 0;
            bool past = budget_period_end(e->period, e->it.start_s) <= now_s;
            if (it->held_pusd == 0 && entry_held(e) == 0 && past && e->refs == 0)
                entry_forget(b, e);
        }
    }
    b->sync_n = 0;
    if (b->drain_sent) {
        drain_finish(b);
        return;
    }
    serve_queue(b, NULL); /* waiters that fit now, or the lease they wait for */
}

static void start_sync(budget *b)
{
    if (b->leasing || b->syncing || !b->n_entries) {
        b->sync_due = b->leasing; /* after the lease: they share the connection */
        return;
    }
    b->sync_due = false;
    int n = 0;
    budget_item *items = realloc(b->sync_items, sizeof *items * (size_t)b->n_entries);
    if (items) b->sync_items = items;
    bentry **ents = realloc(b->sync_entries, sizeof *ents * (size_t)b->n_entries);
    if (ents) b->sync_entries = ents;
    if (!items || !ents) return;
    for (bentry *e = b->all; e; e = e->next) {
        /* idle since the last sync (or stopping): its slack goes back */
        if ((!e->used || b->draining) && e->avail > 0) e->avail = 0;
        e->used = false;
        b->sync_entries[n] = e;
        budget_item *it = &b->sync_items[n++];
        *it = e->it;
        it->held_pusd = entry_held(e);
        it->unshipped_pusd = e->unshipped < it->held_pusd ? e->unshipped : it->held_pusd;
    }
    b->sync_n = n;
    b->sync_sent_ms = now_ms(b);
    if (b->store->ops->sync(b->store, b->opt.instance, b->sync_items, n, b->opt.lease_ttl_ms,
                            on_sync, b) != 0) {
        b->sync_n = 0;
        return;
    }
    b->syncing = true;
    b->drain_sent = b->draining;
    b->st.sync_calls++;
    if (++b->syncs % SWEEP_EVERY == 0) b->store->ops->sweep(b->store, b->opt.orphan_ttl_ms);
}

void budget_sync_now(budget *b)
{
    start_sync(b);
}

void budget_drain(budget *b, void (*done)(void *ctx), void *ctx)
{
    if (!b) {
        done(ctx);
        return;
    }
    b->draining = true;
    b->drain_done = done;
    b->drain_ctx = ctx;
    if (b->leasing || b->syncing) {
        b->sync_due = true; /* once the call in flight is back */
        return;
    }
    start_sync(b);
    if (!b->syncing) drain_finish(b); /* nothing held, or the database is away */
}

static void on_sync_timer(evutil_socket_t fd, short what, void *arg)
{
    budget *b = arg;
    start_sync(b);
    if (!b->n_entries && ++b->syncs % SWEEP_EVERY == 0)
        b->store->ops->sweep(b->store, b->opt.orphan_ttl_ms);
}

/* ------------------------------------------------------------ restarts */

int budget_take_over(budget *b, const char *dir)
{
    char path[4096], tmp[4096];
    snprintf(path, sizeof path, "%s/instance", dir);
    snprintf(tmp, sizeof tmp, "%s/instance.tmp", dir);
    b->previous[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f) {
        if (fgets(b->previous, sizeof b->previous, f))
            b->previous[strcspn(b->previous, "\r\n")] = '\0';
        else
            b->previous[0] = '\0';
        fclose(f);
    }
    if (strcmp(b->previous, b->opt.instance ? b->opt.instance : "") == 0) b->previous[0] = '\0';
    f = fopen(tmp, "w");
    bool ok = f && fprintf(f, "%s\n", b->opt.instance ? b->opt.instance : "") > 0;
    if (f && fclose(f) != 0) ok = false;
    if (!ok || rename(tmp, path) != 0) {
        log_warn("budgets: cannot write %s: a restart on this spool will not release this "
                 "run's leases early (the sweep does, after budgets.orphan_ttl_ms)",
                 path);
        return -1;
    }
    if (b->previous[0])
        log_info("budgets: the previous run on this spool was %s: its leases are released once "
                 "its events are replayed",
                 b->previous);
    return 0;
}

void budget_spool_replayed(void *ctx)
{
    budget *b = ctx;
    if (!b || !b->previous[0] || !b->store->ops->release_instance) return;
    b->store->ops->release_instance(b->store, b->previous);
}

const char *budget_previous_instance(const budget *b)
{
    return b->previous;
}

/* ------------------------------------------------------------ life */

budget *budget_new(struct event_base *base, budget_store *store, const budget_options *opt)
{
    budget *b = calloc(1, sizeof *b);
    if (!b) {
        budget_store_free(store);
        return NULL;
    }
    b->base = base;
    b->store = store;
    b->opt = *opt;
    if (b->opt.lease_ttl_ms <= 0) b->opt.lease_ttl_ms = 30000;
    if (b->opt.orphan_ttl_ms <= 0) b->opt.orphan_ttl_ms = 86400000;
    b->created_wall_us = wall_ms(b) * 1000;
    b->lease_items = calloc(BUDGET_MAX_PER_REQUEST, sizeof *b->lease_items);
    b->lease_entries = calloc(BUDGET_MAX_PER_REQUEST, sizeof *b->lease_entries);
    if (!b->lease_items || !b->lease_entries) {
        budget_free(b);
        return NULL;
    }
    if (base && b->opt.sync_ms > 0) {
        event_assign(&b->sync_ev, base, -1, EV_PERSIST, on_sync_timer, b);
        struct timeval tv = util_ms_timeval(b->opt.sync_ms);
        event_add(&b->sync_ev, &tv);
        b->sync_armed = true;
    }
    return b;
}

void budget_free(budget *b)
{
    if (!b) return;
    if (b->sync_armed) event_del(&b->sync_ev);
    budget_store_free(b->store);
    while (b->all) {
        bentry *e = b->all;
        b->all = e->next;
        free(e);
    }
    free(b->lease_items);
    free(b->lease_entries);
    free(b->sync_items);
    free(b->sync_entries);
    free(b);
}

budget_stats budget_get_stats(const budget *b)
{
    budget_stats s = b->st;
    s.tracked = b->n_entries;
    s.held_pusd = 0;
    for (const bentry *e = b->all; e; e = e->next)
        s.held_pusd += entry_held(e);
    s.waiting = b->n_waiting;
    s.store_queries = b->store->queries;
    return s;
}

/* ------------------------------------------------------------ batches */

void budget_request_for_key(budget_request *req, const key_conf *key, const bridle_config *cfg)
{
    memset(req, 0, sizeof *req);
    if (key) {
        req->key_id = key->id;
        req->key_limits = key->lim.budget_pusd;
        if (key->team_cfg) {
            req->team = key->team_cfg->name;
            req->team_limits = key->team_cfg->lim.budget_pusd;
        }
    }
    req->total_limits = config_budgets(cfg)->total.budget_pusd;
    req->ts_us = util_wall_ms() * 1000;
}

int budget_request_arrays(const budget_request *req, buf out[4])
{
    const char *ids[3] = {req->key_id, req->team, ""};
    const int64_t *lims[3] = {req->key_id ? req->key_limits : NULL,
                              req->team ? req->team_limits : NULL, req->total_limits};
    budget_limit_row rows[3 * N_PERIODS];
    int n = 0;
    for (int s = 0; s < 3; s++)
        for (int p = 0; lims[s] && p < N_PERIODS; p++)
            if (lims[s][p] > 0)
                rows[n++] = (budget_limit_row){scope_names[s], ids[s], period_names[p], lims[s][p]};
    budget_limit_arrays(rows, n, out);
    return n;
}

void budget_say_batch_refused(const char *scope, const char *id, const char *period, int64_t limit,
                              int64_t spent, int64_t held, int64_t need, char *out, size_t n)
{
    char lim[32], sp[32], hd[32], left[32], cost[32], who[100];
    int64_t rest = limit - spent - held;
    fmt_usd(limit, lim, sizeof lim);
    fmt_usd(spent, sp, sizeof sp);
    fmt_usd(held, hd, sizeof hd);
    fmt_usd(rest > 0 ? rest : 0, left, sizeof left);
    fmt_usd(need, cost, sizeof cost);
    const char *words = "daily";
    for (int p = 0; p < N_PERIODS; p++)
        if (strcmp(period, period_names[p]) == 0) words = period_words[p];
    if (strcmp(scope, "total") == 0)
        snprintf(who, sizeof who, "the gateway's total");
    else
        snprintf(who, sizeof who, "%s \"%.64s\"", scope, id);
    snprintf(out, n,
             "Budget exceeded: %s %s budget of $%s cannot hold this batch, whose requests may "
             "cost up to $%s together: $%s is left ($%s spent, $%s held by requests and batches "
             "in flight). Nothing was created. Submit fewer requests, ask for fewer tokens "
             "(max_tokens), use a cheaper model, or raise the budget",
             who, words, lim, cost, left, sp, hd);
}
