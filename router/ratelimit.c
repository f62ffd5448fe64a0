/* Rate limits: sliding windows per key and team (router/ratelimit.h). */
#include "router/ratelimit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/util.h"

#define RL_SLOTS 61 /* the current bucket and the 60 before it */
#define SWEEP_EVERY_MS 60000
#define IDLE_MS (62 * 60000) /* past the last touch, every window is empty */

static const int64_t unit_ms[RL_N_KINDS] = {1000, 60000, 60000};

/* One sliding window: slot[b % RL_SLOTS] counts bucket b for b in
 * (head - RL_SLOTS, head]; sum is their total. */
typedef struct rl_window {
    int64_t head;
    int64_t first; /* buckets before it are empty: where looking for the oldest starts */
    int64_t sum;
    int64_t slot[RL_SLOTS];
} rl_window;

typedef struct rl_entry {
    struct rl_entry *next;
    uint64_t hash;
    int64_t last_ms;
    int holds; /* runs holding a reservation here: never freed meanwhile */
    bool team;
    int64_t limit[RL_N_KINDS]; /* as last seen, for health */
    rl_window w[RL_N_KINDS];
    char name[];
} rl_entry;

struct ratelimiter {
    rl_entry **tab;
    size_t nb; /* buckets, a power of 2 */
    int count;
    int n; /* instances */
    int64_t last_sweep_ms;
    bool full_logged;
};

/* ------------------------------------------------------------ windows */

static int64_t bucket_of(int64_t now_ms, rl_kind k)
{
    return util_floor_div(now_ms, unit_ms[k]);
}

static void win_roll(rl_window *w, int64_t b)
{
    if (b <= w->head) return;
    if (b - w->head >= RL_SLOTS) {
        memset(w->slot, 0, sizeof w->slot);
        w->sum = 0;
    } else
        for (int64_t i = w->head + 1; i <= b; i++) {
            int64_t *s = &w->slot[i % RL_SLOTS];
            w->sum -= *s;
            *s = 0;
        }
    w->head = b;
}

static void win_add(rl_window *w, int64_t v)
{
    w->slot[w->head % RL_SLOTS] += v;
    w->sum += v;
}

/* Takes back up to v from bucket b if it is still in the window. */
static void win_take(rl_window *w, int64_t b, int64_t v)
{
    if (b > w->head || b <= w->head - RL_SLOTS || v <= 0) return;
    int64_t *s = &w->slot[b % RL_SLOTS];
    int64_t d = *s < v ? *s : v;
    *s -= d;
    w->sum -= d;
}

/* Milliseconds until the window (rolled to now) has dropped at least
 * `need` from its oldest buckets; bucket b leaves when bucket b + RL_SLOTS
 * begins. 0 when need <= 0. */
static int64_t win_wait(rl_window *w, rl_kind k, int64_t now_ms, int64_t need)
{
    if (need <= 0) return 0;
    int64_t dropped = 0, b = w->head - RL_SLOTS + 1;
    if (w->first > b) b = w->first;
    int i = (int)(b % RL_SLOTS);
    for (; b < w->head; b++) {
        dropped += w->slot[i];
        if (!dropped)
            w->first = b + 1; /* empty so far: the next look starts after it */
        else if (dropped >= need)
            break;
        if (++i == RL_SLOTS) i = 0;
    }
    int64_t ms = (b + RL_SLOTS) * unit_ms[k] - now_ms;
    return ms > 0 ? ms : 1;
}

/* ------------------------------------------------------------ the table */

static uint64_t hash_name(bool team, const char *s)
{
    uint64_t h = 1469598103934665603ULL ^ (team ? 't' : 'k');
    h *= 1099511628211ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

ratelimiter *ratelimit_new(void)
{
    ratelimiter *rl = calloc(1, sizeof *rl);
    if (!rl) return NULL;
    rl->nb = 64;
    rl->n = 1;
    if (!(rl->tab = calloc(rl->nb, sizeof *rl->tab))) {
        free(rl);
        return NULL;
    }
    return rl;
}

void ratelimit_free(ratelimiter *rl)
{
    if (!rl) return;
    for (size_t i = 0; i < rl->nb; i++)
        while (rl->tab[i]) {
            rl_entry *e = rl->tab[i];
            rl->tab[i] = e->next;
            free(e);
        }
    free(rl->tab);
    free(rl);
}

void ratelimit_set_instances(ratelimiter *rl, int n)
{
    rl->n = n < 1 ? 1 : n;
}

int ratelimit_instances(const ratelimiter *rl)
{
    return rl->n;
}

int ratelimit_entries(const ratelimiter *rl)
{
    return rl->count;
}

static rl_entry *find(const ratelimiter *rl, bool team, const char *name, uint64_t h)
{
    for (rl_entry *e = rl->tab[h & (rl->nb - 1)]; e; e = e->next)
        if (e->hash == h && e->team == team && strcmp(e->name, name) == 0) return e;
    return NULL;
}

static void grow(ratelimiter *rl)
{
    size_t nb = rl->nb * 2;
    rl_entry **tab = calloc(nb, sizeof *tab);
    if (!tab) return; /* longer chains, still correct */
    for (size_t i = 0; i < rl->nb; i++)
        while (rl->tab[i]) {
            rl_entry *e = rl->tab[i];
            rl->tab[i] = e->next;
            e->next = tab[e->hash & (nb - 1)];
            tab[e->hash & (nb - 1)] = e;
        }
    free(rl->tab);
    rl->tab = tab;
    rl->nb = nb;
}

static rl_entry *get(ratelimiter *rl, bool team, const char *name, int64_t now_ms)
{
    uint64_t h = hash_name(team, name);
    rl_entry *e = find(rl, team, name, h);
    if (e) return e;
    if (rl->count >= RL_MAX_ENTRIES) {
        ratelimit_sweep(rl, now_ms);
        if (rl->count >= RL_MAX_ENTRIES) {
            if (!rl->full_logged)
                log_warn("rate limits: %d keys and teams are tracked, the most allowed; new ones "
                         "go unlimited until idle ones are freed",
                         rl->count);
            rl->full_logged = true;
            return NULL;
        }
    }
    size_t len = strlen(name);
    if (!(e = calloc(1, sizeof *e + len + 1))) return NULL;
    memcpy(e->name, name, len + 1);
    e->hash = h;
    e->team = team;
    e->last_ms = now_ms;
    for (int k = 0; k < RL_N_KINDS; k++)
        e->w[k].head = bucket_of(now_ms, k);
    if ((size_t)rl->count >= rl->nb * 2) grow(rl);
    e->next = rl->tab[h & (rl->nb - 1)];
    rl->tab[h & (rl->nb - 1)] = e;
    rl->count++;
    return e;
}

void ratelimit_sweep(ratelimiter *rl, int64_t now_ms)
{
    rl->last_sweep_ms = now_ms;
    for (size_t i = 0; i < rl->nb; i++)
        for (rl_entry **p = &rl->tab[i]; *p;) {
            rl_entry *e = *p;
            if (e->holds == 0 && now_ms - e->last_ms > IDLE_MS) {
                *p = e->next;
                free(e);
                rl->count--;
            } else
                p = &e->next;
        }
    if (rl->count < RL_MAX_ENTRIES) rl->full_logged = false;
}

/* ------------------------------------------------------------ admission */

static int64_t lim_of(const spend_limits *l, rl_kind k)
{
    return k == RL_REQUESTS ? l->rpm : k == RL_TOKENS ? l->tokens_per_hour : l->pusd_per_hour;
}

static void roll_all(rl_entry *e, int64_t now_ms)
{
    for (int k = 0; k < RL_N_KINDS; k++)
        win_roll(&e->w[k], bucket_of(now_ms, k));
    e->last_ms = now_ms;
}

bool ratelimit_admit(ratelimiter *rl, const key_conf *k, int64_t now_ms, int64_t est_tokens,
                     int64_t est_pusd, rl_hold *h, rl_refusal *why)
{
    memset(h, 0, sizeof *h);
    if (now_ms - rl->last_sweep_ms >= SWEEP_EVERY_MS) ratelimit_sweep(rl, now_ms);
    const spend_limits *L[2] = {&k->lim, k->team_cfg ? &k->team_cfg->lim : NULL};
    const char *names[2] = {k->id, k->team_cfg ? k->team_cfg->name : NULL};
    rl_entry *e[2] = {NULL, NULL};
    const int64_t asked[RL_N_KINDS] = {1, est_tokens < 0 ? 0 : est_tokens,
                                       est_pusd < 0 ? 0 : est_pusd};
    bool refused = false;
    for (int i = 0; i < 2; i++) {
        if (!L[i] || !rl_limits_any(L[i]) || !names[i]) continue;
        if (!(e[i] = get(rl, i == 1, names[i], now_ms))) continue;
        roll_all(e[i], now_ms);
        for (int kind = 0; kind < RL_N_KINDS; kind++) {
            int64_t limit = lim_of(L[i], kind);
            e[i]->limit[kind] = limit;
            if (limit <= 0) continue;
            int64_t share = limit / rl->n, used = e[i]->w[kind].sum;
            if (used + asked[kind] <= share) continue;
            bool too_large = asked[kind] > share;
            int64_t wait =
                too_large ? 0 : win_wait(&e[i]->w[kind], kind, now_ms, used + asked[kind] - share);
            /* the one that frees last; a request too large beats everything */
            if (refused && !too_large && (why->too_large || why->retry_ms >= wait)) continue;
            refused = true;
            *why = (rl_refusal){.kind = kind,
                                .team = i == 1,
                                .too_large = too_large,
                                .name = names[i],
                                .limit = limit,
                                .used = used * rl->n,
                                .asked = asked[kind],
                                .retry_ms = wait,
                                .n = rl->n};
        }
    }
    if (refused) return false;
    int64_t minute = bucket_of(now_ms, RL_TOKENS);
    for (int i = 0; i < 2; i++) {
        if (!e[i]) continue;
        win_add(&e[i]->w[RL_REQUESTS], 1);
        win_add(&e[i]->w[RL_TOKENS], asked[RL_TOKENS]);
        win_add(&e[i]->w[RL_COST], asked[RL_COST]);
        e[i]->holds++;
        h->e[i] = e[i];
    }
    h->tokens = asked[RL_TOKENS];
    h->pusd = asked[RL_COST];
    h->minute = minute;
    h->held = e[0] || e[1];
    return true;
}

void ratelimit_settle(ratelimiter *rl, rl_hold *h, int64_t now_ms, int64_t tokens, int64_t pusd)
{
    if (!h->held) return;
    for (int i = 0; i < 2; i++) {
        rl_entry *e = h->e[i];
        if (!e) continue;
        roll_all(e, now_ms);
        win_take(&e->w[RL_TOKENS], h->minute, h->tokens);
        win_take(&e->w[RL_COST], h->minute, h->pusd);
        if (tokens > 0) win_add(&e->w[RL_TOKENS], tokens);
        if (pusd > 0) win_add(&e->w[RL_COST], pusd);
        e->holds--;
    }
    memset(h, 0, sizeof *h);
}

/* ------------------------------------------------------------ status */

void ratelimit_status(ratelimiter *rl, const key_conf *k, const rl_hold *h, int64_t now_ms,
                      rl_status *st)
{
    memset(st, 0, sizeof *st);
    const spend_limits *L[2] = {&k->lim, k->team_cfg ? &k->team_cfg->lim : NULL};
    const char *names[2] = {k->id, k->team_cfg ? k->team_cfg->name : NULL};
    rl_window *chosen[RL_N_KINDS] = {NULL, NULL, NULL};
    for (int i = 0; i < 2; i++) {
        if (!L[i] || !names[i] || !rl_limits_any(L[i])) continue;
        rl_entry *e = h && h->held ? h->e[i] : NULL;
        if (!e) e = find(rl, i == 1, names[i], hash_name(i == 1, names[i]));
        if (e) roll_all(e, now_ms);
        for (int kind = 0; kind < RL_N_KINDS; kind++) {
            int64_t limit = lim_of(L[i], kind);
            if (limit <= 0) continue;
            int64_t share = limit / rl->n, used = e ? e->w[kind].sum : 0;
            int64_t rem = (share > used ? share - used : 0) * rl->n;
            if (st->has[kind] && st->remaining[kind] <= rem) continue;
            st->has[kind] = true;
            st->limit[kind] = limit;
            st->remaining[kind] = rem;
            chosen[kind] = e && used > 0 ? &e->w[kind] : NULL;
        }
    }
    for (int kind = 0; kind < RL_N_KINDS; kind++)
        if (chosen[kind]) st->reset_ms[kind] = win_wait(chosen[kind], kind, now_ms, 1);
}

/* Writes the digits of v at p; returns the end. */
static char *put_num(char *p, int64_t v)
{
    char d[24], *s = util_u64_digits((uint64_t)(v < 0 ? 0 : v), d + sizeof d);
    size_t len = (size_t)(d + sizeof d - s);
    memcpy(p, s, len);
    return p + len;
}

/* Without snprintf: this runs for every answer of a limited key. */
static size_t duration(int64_t ms, char *p)
{
    char *start = p;
    if (ms <= 0) {
        memcpy(p, "0s", 2);
        return 2;
    }
    if (ms < 1000) {
        p = put_num(p, ms);
        memcpy(p, "ms", 2);
        return (size_t)(p + 2 - start);
    }
    int64_t h = ms / 3600000, m = ms / 60000 % 60, sec = ms / 1000 % 60, frac = ms % 1000;
    if (h) {
        p = put_num(p, h);
        *p++ = 'h';
    }
    if (h || m) {
        p = put_num(p, m);
        *p++ = 'm';
    }
    p = put_num(p, sec);
    if (frac) {
        *p++ = '.';
        *p++ = (char)('0' + frac / 100);
        if (frac % 100) *p++ = (char)('0' + frac / 10 % 10);
        if (frac % 10) *p++ = (char)('0' + frac % 10);
    }
    *p++ = 's';
    return (size_t)(p - start);
}

void ratelimit_format_duration(int64_t ms, char *out, size_t n)
{
    char d[64];
    size_t len = duration(ms, d);
    if (!n) return;
    if (len >= n) len = n - 1;
    memcpy(out, d, len);
    out[len] = '\0';
}

#define PUT(p, lit) (memcpy((p), (lit), sizeof(lit) - 1), (p) + sizeof(lit) - 1)

/* The lines are written in one piece: names are constants, values digits
 * and unit letters, so nothing needs buf_add_header's checks. */
void ratelimit_add_headers(const rl_status *st, buf *head)
{
    char lines[512], *p = lines;
    if (st->has[RL_REQUESTS]) {
        p = PUT(p, "x-ratelimit-limit-requests: ");
        p = PUT(put_num(p, st->limit[RL_REQUESTS]), "\r\nx-ratelimit-remaining-requests: ");
        p = PUT(put_num(p, st->remaining[RL_REQUESTS]), "\r\nx-ratelimit-reset-requests: ");
        p += duration(st->reset_ms[RL_REQUESTS], p);
        p = PUT(p, "\r\n");
    }
    if (st->has[RL_TOKENS]) {
        p = PUT(p, "x-ratelimit-limit-tokens: ");
        p = PUT(put_num(p, st->limit[RL_TOKENS]), "\r\nx-ratelimit-remaining-tokens: ");
        p = PUT(put_num(p, st->remaining[RL_TOKENS]), "\r\nx-ratelimit-reset-tokens: ");
        p += duration(st->reset_ms[RL_TOKENS], p);
        p = PUT(p, "\r\n");
    }
    if (p > lines) buf_append(head, lines, (size_t)(p - lines));
}

/* ------------------------------------------------------------ health */

void ratelimit_health_json(ratelimiter *rl, int64_t now_ms, int max, buf *out)
{
    static const char *const kinds[RL_N_KINDS] = {"requests", "tokens", "cost_pusd"};
    buf_printf(out, "{\"instances\":%d,\"entries\":%d,\"windows\":[", rl->n, rl->count);
    int shown = 0;
    for (size_t i = 0; i < rl->nb && shown < max; i++)
        for (rl_entry *e = rl->tab[i]; e && shown < max; e = e->next) {
            roll_all(e, now_ms);
            buf_printf(out, "%s{\"scope\":\"%s\",\"id\":", shown ? "," : "",
                       e->team ? "team" : "key");
            buf_append_json_str(out, e->name, strlen(e->name));
            for (int k = 0; k < RL_N_KINDS; k++)
                buf_printf(out, ",\"%s\":{\"limit\":%lld,\"share\":%lld,\"used\":%lld}", kinds[k],
                           (long long)e->limit[k], (long long)(e->limit[k] / rl->n),
                           (long long)e->w[k].sum);
            buf_printf(out, ",\"in_flight\":%d}", e->holds);
            shown++;
        }
    buf_append_str(out, "]}");
}
