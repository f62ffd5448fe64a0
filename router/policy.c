/* Routing policy: the "routing" config as data, and the plan for one
 * request (router/policy.h). */
#include "router/policy.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/jtok.h"

#define N_TIERS 5 /* indexed by model_tier; TIER_NONE unused */

enum {
    CHECK_LENGTH = 1 << 0,
    CHECK_JSON = 1 << 1,
    CHECK_UNCERTAIN = 1 << 2,
    CHECK_EMPTY = 1 << 3,
    CHECK_ALL = CHECK_LENGTH | CHECK_JSON | CHECK_UNCERTAIN | CHECK_EMPTY,
};

typedef struct task_tier {
    char *task;
    model_tier tier;
} task_tier;

typedef struct task_cap {
    char *task;
    int64_t cap;
    bool fill_only; /* output_caps {"cap": "default"}: only fills in a missing max_tokens */
} task_cap;

struct policy {
    int n_models;
    int *tier_models[N_TIERS]; /* indices into the model table, in list order */
    int n_tier[N_TIERS];
    model_tier default_tier;
    task_tier *tasks;
    int n_tasks;
    bool prefer_local;
    task_cap *output_caps;
    int n_output_caps;
    task_cap *thinking_caps;
    int n_thinking_caps;
    int64_t default_output_cap; /* -1 none */
    bool default_output_cap_fill_only;
    task_cap *typical; /* typical_output: {task: tokens} */
    int n_typical;
    int64_t default_typical_output;
    bool cascade_enabled;
    bool cascade_streams; /* streamed requests are cascaded too (their answer is held back) */
    unsigned checks;
    char *marker;
    size_t marker_len;
    model_tier escalate[N_TIERS]; /* TIER_NONE: the top */
    int downgrade_pct;            /* 0: no budget downgrade */
    model_tier downgrade_tier;
    char **batch_tasks;
    int n_batch_tasks;
    int baseline; /* -1 none */
};

static const task_tier default_tasks[] = {
    {"classify", TIER_BUDGET},
    {"summarize", TIER_BUDGET},
    {"extract", TIER_BUDGET},
    {"format", TIER_BUDGET},
    {"translate", TIER_BUDGET},
    {"code_gen", TIER_MID},
    {"analysis", TIER_MID},
    {"draft_writing", TIER_MID},
    {"code_review", TIER_MID},
    {"agent_orchestration", TIER_HEAVY},
    {"complex_reasoning", TIER_HEAVY},
    {"architecture", TIER_HEAVY},
};

/* ------------------------------------------------------------ parsing */

typedef struct pctx {
    policy *p;
    const policy_model *models;
    int n_models;
    char path[256];
    char *err;
    size_t errlen;
    bool failed;
} pctx;

static void perr(pctx *pc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void perr(pctx *pc, const char *fmt, ...)
{
    if (pc->failed) return;
    pc->failed = true;
    char what[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (pc->err && pc->errlen) snprintf(pc->err, pc->errlen, "%s: %s", pc->path, what);
}

static size_t ppush(pctx *pc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static size_t ppush(pctx *pc, const char *fmt, ...)
{
    size_t old = strlen(pc->path);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pc->path + old, sizeof pc->path - old, fmt, ap);
    va_end(ap);
    return old;
}

static void ppop(pctx *pc, size_t old)
{
    pc->path[old] = '\0';
}

static void *xcalloc(size_t n, size_t size)
{
    void *v = calloc(n ? n : 1, size);
    if (!v) abort();
    return v;
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d) abort();
    return d;
}

static const char *jtype(json_object *o)
{
    return json_type_to_name(json_object_get_type(o));
}

static bool tier_nonempty(const policy *p, model_tier t)
{
    return t > TIER_NONE && t < N_TIERS && p->n_tier[t] > 0;
}

static int find_model(const pctx *pc, const char *name)
{
    for (int i = 0; i < pc->n_models; i++)
        if (pc->models[i].name && strcmp(pc->models[i].name, name) == 0) return i;
    return -1;
}

/* A tier name at the current path. */
static bool parse_tier_value(pctx *pc, json_object *v, model_tier *out)
{
    if (!json_object_is_type(v, json_type_string)) {
        perr(pc, "expected a tier name (local, budget, mid or heavy), got %s", jtype(v));
        return false;
    }
    if (!pricing_tier_parse(json_object_get_string(v), out)) {
        perr(pc, "unknown tier \"%s\" (expected local, budget, mid or heavy)",
             json_object_get_string(v));
        return false;
    }
    return true;
}

/* A tier that must have models, at the current path. */
static bool parse_used_tier(pctx *pc, json_object *v, model_tier *out)
{
    if (!parse_tier_value(pc, v, out)) return false;
    if (!tier_nonempty(pc->p, *out)) {
        perr(pc, "tier \"%s\" has no models (list some in $.routing.tiers.%s)",
             pricing_tier_name(*out), pricing_tier_name(*out));
        return false;
    }
    return true;
}

static bool parse_int(pctx *pc, json_object *v, int64_t lo, int64_t hi, int64_t *out)
{
    if (!json_object_is_type(v, json_type_int)) {
        perr(pc, "expected an integer from %lld to %lld, got %s", (long long)lo, (long long)hi,
             jtype(v));
        return false;
    }
    int64_t n = json_object_get_int64(v);
    if (n < lo || n > hi) {
        perr(pc, "expected an integer from %lld to %lld (got %lld)", (long long)lo, (long long)hi,
             (long long)n);
        return false;
    }
    *out = n;
    return true;
}

static bool parse_bool(pctx *pc, json_object *v, bool *out)
{
    if (!json_object_is_type(v, json_type_boolean)) {
        perr(pc, "expected true or false, got %s", jtype(v));
        return false;
    }
    *out = json_object_get_boolean(v);
    return true;
}

static bool expect_object(pctx *pc, json_object *v)
{
    if (json_object_is_type(v, json_type_object)) return true;
    perr(pc, "expected an object, got %s", jtype(v));
    return false;
}

static bool expect_array(pctx *pc, json_object *v)
{
    if (json_object_is_type(v, json_type_array)) return true;
    perr(pc, "expected a list, got %s", jtype(v));
    return false;
}

/* Rejects keys not in `known` (NULL-terminated): a typo must not pass. */
static void check_keys(pctx *pc, json_object *obj, const char *const *known, const char *which)
{
    json_object_object_foreach(obj, key, val)
    {
        (void)val;
        bool ok = false;
        for (const char *const *k = known; *k && !ok; k++)
            ok = strcmp(*k, key) == 0;
        if (!ok) {
            size_t old = ppush(pc, ".%s", key);
            perr(pc, "unknown key (expected %s)", which);
            ppop(pc, old);
            return;
        }
    }
}

static void parse_tiers(pctx *pc, json_object *tiers)
{
    policy *p = pc->p;
    if (!tiers) { /* each model's own price-table tier, in table order */
        for (int t = TIER_BUDGET; t < N_TIERS; t++)
            p->tier_models[t] = xcalloc((size_t)pc->n_models, sizeof(int));
        for (int i = 0; i < pc->n_models; i++) {
            model_tier t = pc->models[i].tier;
            if (t > TIER_NONE && t < N_TIERS) p->tier_models[t][p->n_tier[t]++] = i;
        }
        return;
    }
    size_t old = ppush(pc, ".tiers");
    if (!expect_object(pc, tiers)) {
        ppop(pc, old);
        return;
    }
    json_object_object_foreach(tiers, name, list)
    {
        size_t o2 = ppush(pc, ".%s", name);
        model_tier t;
        if (!pricing_tier_parse(name, &t)) {
            perr(pc, "unknown tier (expected local, budget, mid or heavy)");
        } else if (expect_array(pc, list)) {
            size_t n = json_object_array_length(list);
            free(p->tier_models[t]);
            p->tier_models[t] = xcalloc(n, sizeof(int));
            p->n_tier[t] = 0;
            for (size_t i = 0; i < n && !pc->failed; i++) {
                json_object *item = json_object_array_get_idx(list, i);
                size_t o3 = ppush(pc, "[%zu]", i);
                int idx = -1;
                if (!json_object_is_type(item, json_type_string))
                    perr(pc, "expected a model name, got %s", jtype(item));
                else if ((idx = find_model(pc, json_object_get_string(item))) < 0)
                    perr(pc, "no model named \"%s\" in $.models", json_object_get_string(item));
                for (int j = 0; j < p->n_tier[t] && !pc->failed; j++)
                    if (p->tier_models[t][j] == idx)
                        perr(pc, "\"%s\" is listed twice", json_object_get_string(item));
                if (!pc->failed) p->tier_models[t][p->n_tier[t]++] = idx;
                ppop(pc, o3);
            }
        }
        ppop(pc, o2);
        if (pc->failed) break;
    }
    ppop(pc, old);
}

static void parse_tasks(pctx *pc, json_object *tasks)
{
    policy *p = pc->p;
    size_t old = ppush(pc, ".tasks");
    if (!tasks) {
        size_t n = sizeof default_tasks / sizeof default_tasks[0];
        p->tasks = xcalloc(n, sizeof *p->tasks);
        for (size_t i = 0; i < n && !pc->failed; i++) {
            if (!tier_nonempty(p, default_tasks[i].tier))
                perr(pc,
                     "not given, and the default maps %s to tier \"%s\", which has no "
                     "models: list some in $.routing.tiers.%s or give $.routing.tasks",
                     default_tasks[i].task, pricing_tier_name(default_tasks[i].tier),
                     pricing_tier_name(default_tasks[i].tier));
            p->tasks[p->n_tasks].task = xstrdup(default_tasks[i].task);
            p->tasks[p->n_tasks++].tier = default_tasks[i].tier;
        }
        ppop(pc, old);
        return;
    }
    if (expect_object(pc, tasks)) {
        p->tasks = xcalloc((size_t)json_object_object_length(tasks), sizeof *p->tasks);
        json_object_object_foreach(tasks, task, val)
        {
            size_t o2 = ppush(pc, ".%s", task);
            model_tier t;
            if (!*task)
                perr(pc, "a task name cannot be empty");
            else if (parse_used_tier(pc, val, &t)) {
                p->tasks[p->n_tasks].task = xstrdup(task);
                p->tasks[p->n_tasks++].tier = t;
            }
            ppop(pc, o2);
            if (pc->failed) break;
        }
    }
    ppop(pc, old);
}

/* An output cap at the current path: N, or {"max": N, "cap": "bound" |
 * "default"} ("bound", the default: the cap bounds the request's own
 * max_tokens; "default": it only fills in a missing one). */
static bool parse_output_cap(pctx *pc, json_object *v, int64_t *cap, bool *fill_only)
{
    *fill_only = false;
    if (!json_object_is_type(v, json_type_object) && !json_object_is_type(v, json_type_string))
        return parse_int(pc, v, 1, 100000000, cap); /* says "expected an integer" */
    if (!json_object_is_type(v, json_type_object)) {
        perr(pc,
             "expected a number of tokens, or {\"max\": N, \"cap\": \"bound\" or \"default\"}, "
             "got %s",
             jtype(v));
        return false;
    }
    static const char *const known[] = {"max", "cap", NULL};
    check_keys(pc, v, known, "max or cap");
    json_object *x;
    size_t old = ppush(pc, ".max");
    if (pc->failed) {
    } else if (!json_object_object_get_ex(v, "max", &x))
        perr(pc, "required: the cap in tokens");
    else
        parse_int(pc, x, 1, 100000000, cap);
    ppop(pc, old);
    old = ppush(pc, ".cap");
    if (!pc->failed && json_object_object_get_ex(v, "cap", &x)) {
        const char *s = json_object_is_type(x, json_type_string) ? json_object_get_string(x) : "";
        if (strcmp(s, "default") == 0)
            *fill_only = true;
        else if (strcmp(s, "bound") != 0)
            perr(pc,
                 "expected \"bound\" (the cap bounds the request's max_tokens) or \"default\" "
                 "(it only fills in a missing max_tokens), got %s",
                 json_object_to_json_string(x));
    }
    ppop(pc, old);
    return !pc->failed;
}

/* {task: N}; with_mode: output_caps, whose values may also be
 * {"max": N, "cap": ...} (parse_output_cap). */
static void parse_caps(pctx *pc, json_object *caps, const char *key, int64_t lo, bool with_mode,
                       task_cap **out, int *n_out)
{
    if (!caps) return;
    size_t old = ppush(pc, ".%s", key);
    if (expect_object(pc, caps)) {
        *out = xcalloc((size_t)json_object_object_length(caps), sizeof **out);
        json_object_object_foreach(caps, task, val)
        {
            size_t o2 = ppush(pc, ".%s", task);
            int64_t cap;
            bool fill_only = false;
            if (with_mode ? parse_output_cap(pc, val, &cap, &fill_only)
                          : parse_int(pc, val, lo, 100000000, &cap)) {
                (*out)[*n_out].task = xstrdup(task);
                (*out)[*n_out].fill_only = fill_only;
                (*out)[(*n_out)++].cap = cap;
            }
            ppop(pc, o2);
            if (pc->failed) break;
        }
    }
    ppop(pc, old);
}

static void parse_escalate_to(pctx *pc, json_object *esc)
{
    policy *p = pc->p;
    if (!esc) { /* the default ladder, skipping steps to an empty tier */
        static const model_tier up[N_TIERS] = {
            [TIER_LOCAL] = TIER_BUDGET, [TIER_BUDGET] = TIER_MID, [TIER_MID] = TIER_HEAVY};
        for (int t = 0; t < N_TIERS; t++)
            p->escalate[t] = tier_nonempty(p, up[t]) ? up[t] : TIER_NONE;
        return;
    }
    size_t old = ppush(pc, ".escalate_to");
    if (!expect_object(pc, esc)) {
        ppop(pc, old);
        return;
    }
    json_object_object_foreach(esc, from, val)
    {
        size_t o2 = ppush(pc, ".%s", from);
        model_tier f, t;
        if (!pricing_tier_parse(from, &f))
            perr(pc, "unknown tier (expected local, budget, mid or heavy)");
        else if (parse_used_tier(pc, val, &t))
            p->escalate[f] = t;
        ppop(pc, o2);
        if (pc->failed) break;
    }
    /* A cycle would make the cascade escalate for ever. */
    for (int start = 1; start < N_TIERS && !pc->failed; start++) {
        model_tier seen[N_TIERS + 1];
        int n = 0;
        for (model_tier t = (model_tier)start; t != TIER_NONE && n <= N_TIERS; t = p->escalate[t]) {
            bool again = false;
            for (int i = 0; i < n; i++)
                again = again || seen[i] == t;
            seen[n++] = t;
            if (again) {
                char chain[128] = "";
                size_t len = 0;
                for (int i = 0; i < n && len < sizeof chain; i++)
                    len += (size_t)snprintf(chain + len, sizeof chain - len, "%s%s",
                                            i ? " -> " : "", pricing_tier_name(seen[i]));
                perr(pc, "a cycle: %s", chain);
                break;
            }
        }
    }
    ppop(pc, old);
}

static void parse_cascade(pctx *pc, json_object *c)
{
    policy *p = pc->p;
    p->checks = CHECK_ALL;
    p->marker = xstrdup("UNCERTAIN");
    p->cascade_streams = true;
    if (!c) {
        parse_escalate_to(pc, NULL);
        return;
    }
    size_t old = ppush(pc, ".cascade");
    static const char *const known[] = {"enabled",     "checks",  "uncertain_marker",
                                        "escalate_to", "streams", NULL};
    if (!expect_object(pc, c)) {
        ppop(pc, old);
        return;
    }
    check_keys(pc, c, known, "enabled, checks, uncertain_marker, escalate_to or streams");
    json_object *v;
    p->cascade_enabled = true;
    if (json_object_object_get_ex(c, "enabled", &v)) {
        size_t o2 = ppush(pc, ".enabled");
        parse_bool(pc, v, &p->cascade_enabled);
        ppop(pc, o2);
    }
    if (json_object_object_get_ex(c, "streams", &v)) {
        size_t o2 = ppush(pc, ".streams");
        parse_bool(pc, v, &p->cascade_streams);
        ppop(pc, o2);
    }
    if (!pc->failed && json_object_object_get_ex(c, "checks", &v)) {
        size_t o2 = ppush(pc, ".checks");
        if (expect_array(pc, v)) {
            p->checks = 0;
            for (size_t i = 0; i < json_object_array_length(v) && !pc->failed; i++) {
                json_object *item = json_object_array_get_idx(v, i);
                const char *s =
                    json_object_is_type(item, json_type_string) ? json_object_get_string(item) : "";
                size_t o3 = ppush(pc, "[%zu]", i);
                if (strcmp(s, "length") == 0)
                    p->checks |= CHECK_LENGTH;
                else if (strcmp(s, "json") == 0)
                    p->checks |= CHECK_JSON;
                else if (strcmp(s, "uncertain") == 0)
                    p->checks |= CHECK_UNCERTAIN;
                else if (strcmp(s, "empty") == 0)
                    p->checks |= CHECK_EMPTY;
                else
                    perr(pc, "expected one of length, json, uncertain, empty (got %s)",
                         json_object_to_json_string(item));
                ppop(pc, o3);
            }
        }
        ppop(pc, o2);
    }
    if (!pc->failed && json_object_object_get_ex(c, "uncertain_marker", &v)) {
        size_t o2 = ppush(pc, ".uncertain_marker");
        if (!json_object_is_type(v, json_type_string) || !*json_object_get_string(v))
            perr(pc, "expected a non-empty string, like \"UNCERTAIN\"");
        else {
            free(p->marker);
            p->marker = xstrdup(json_object_get_string(v));
        }
        ppop(pc, o2);
    }
    ppop(pc, old);
    if (!pc->failed) {
        old = ppush(pc, ".cascade");
        parse_escalate_to(pc, json_object_object_get_ex(c, "escalate_to", &v) ? v : NULL);
        ppop(pc, old);
    }
}

static void parse_downgrade(pctx *pc, json_object *d)
{
    if (!d) return;
    policy *p = pc->p;
    size_t old = ppush(pc, ".budget_downgrade");
    static const char *const known[] = {"share_pct", "to_tier", NULL};
    if (expect_object(pc, d)) {
        check_keys(pc, d, known, "share_pct or to_tier");
        json_object *v;
        int64_t pct = 0;
        size_t o2 = ppush(pc, ".share_pct");
        if (!json_object_object_get_ex(d, "share_pct", &v))
            perr(pc, "required: the share of the budget (percent, 1 to 1000) past which "
                     "requests are downgraded");
        else if (parse_int(pc, v, 1, 1000, &pct))
            p->downgrade_pct = (int)pct;
        ppop(pc, o2);
        o2 = ppush(pc, ".to_tier");
        if (pc->failed) {
        } else if (!json_object_object_get_ex(d, "to_tier", &v))
            perr(pc, "required: the tier over-budget requests go to");
        else
            parse_used_tier(pc, v, &p->downgrade_tier);
        ppop(pc, o2);
    }
    ppop(pc, old);
}

static void parse_batch_tasks(pctx *pc, json_object *b)
{
    if (!b) return;
    policy *p = pc->p;
    size_t old = ppush(pc, ".batch_tasks");
    if (expect_array(pc, b)) {
        size_t n = json_object_array_length(b);
        p->batch_tasks = xcalloc(n, sizeof *p->batch_tasks);
        for (size_t i = 0; i < n && !pc->failed; i++) {
            json_object *item = json_object_array_get_idx(b, i);
            if (!json_object_is_type(item, json_type_string) || !*json_object_get_string(item)) {
                size_t o2 = ppush(pc, "[%zu]", i);
                perr(pc, "expected a task name, got %s", json_object_to_json_string(item));
                ppop(pc, o2);
            } else
                p->batch_tasks[p->n_batch_tasks++] = xstrdup(json_object_get_string(item));
        }
    }
    ppop(pc, old);
}

static int64_t price_weight(const model_price *m)
{
    return m ? m->input + m->output : 0;
}

static void parse_baseline(pctx *pc, json_object *b)
{
    policy *p = pc->p;
    p->baseline = -1;
    if (b) {
        size_t old = ppush(pc, ".baseline");
        if (!json_object_is_type(b, json_type_string))
            perr(pc, "expected a model name, got %s", jtype(b));
        else if ((p->baseline = find_model(pc, json_object_get_string(b))) < 0)
            perr(pc, "no model named \"%s\" in $.models", json_object_get_string(b));
        ppop(pc, old);
        return;
    }
    /* The most expensive heavy model; without heavy ones, of every tier. */
    for (int pass = 0; pass < 2 && p->baseline < 0; pass++)
        for (int t = pass ? TIER_BUDGET : TIER_HEAVY; t < (pass ? N_TIERS : TIER_HEAVY + 1); t++)
            for (int i = 0; i < p->n_tier[t]; i++) {
                int idx = p->tier_models[t][i];
                if (p->baseline < 0 || price_weight(pc->models[idx].price) >
                                           price_weight(pc->models[p->baseline].price))
                    p->baseline = idx;
            }
}

policy *policy_new(json_object *routing, const policy_model *models, int n_models, char *err,
                   size_t errlen)
{
    policy *p = xcalloc(1, sizeof *p);
    p->n_models = n_models;
    p->default_tier = TIER_MID;
    p->prefer_local = true;
    p->default_output_cap = -1;
    p->default_typical_output = POLICY_DEFAULT_TYPICAL_OUTPUT;
    p->baseline = -1;
    pctx pc = {.p = p,
               .models = models,
               .n_models = n_models,
               .path = "$.routing",
               .err = err,
               .errlen = errlen};
    if (err && errlen) err[0] = '\0';
    if (routing && !json_object_is_type(routing, json_type_object))
        perr(&pc, "expected an object, got %s", jtype(routing));
    if (n_models < 0 || (n_models > 0 && !models)) perr(&pc, "no model table");
    json_object *r = pc.failed ? NULL : routing;
    static const char *const known[] = {"default_tier",
                                        "tasks",
                                        "tiers",
                                        "prefer_local",
                                        "output_caps",
                                        "thinking_caps",
                                        "cascade",
                                        "budget_downgrade",
                                        "batch_tasks",
                                        "baseline",
                                        "default_output_cap",
                                        "typical_output",
                                        "default_typical_output",
                                        NULL};
    if (r)
        check_keys(&pc, r, known,
                   "default_tier, tasks, tiers, prefer_local, output_caps, default_output_cap, "
                   "typical_output, default_typical_output, thinking_caps, cascade, "
                   "budget_downgrade, batch_tasks or baseline");
    json_object *v;
#define GET(key) (r && json_object_object_get_ex(r, key, &v) ? v : NULL)
    if (!pc.failed) parse_tiers(&pc, GET("tiers"));
    if (!pc.failed && GET("default_tier")) {
        size_t old = ppush(&pc, ".default_tier");
        parse_used_tier(&pc, v, &p->default_tier);
        ppop(&pc, old);
    } else if (!pc.failed && !tier_nonempty(p, p->default_tier)) {
        size_t old = ppush(&pc, ".default_tier");
        perr(&pc, "not given, and the default (mid) has no models: name a tier that has some");
        ppop(&pc, old);
    }
    if (!pc.failed) parse_tasks(&pc, GET("tasks"));
    if (!pc.failed && GET("prefer_local")) {
        size_t old = ppush(&pc, ".prefer_local");
        parse_bool(&pc, v, &p->prefer_local);
        ppop(&pc, old);
    }
    if (!pc.failed)
        parse_caps(&pc, GET("output_caps"), "output_caps", 1, true, &p->output_caps,
                   &p->n_output_caps);
    if (!pc.failed)
        parse_caps(&pc, GET("thinking_caps"), "thinking_caps", 0, false, &p->thinking_caps,
                   &p->n_thinking_caps);
    if (!pc.failed)
        parse_caps(&pc, GET("typical_output"), "typical_output", 0, false, &p->typical,
                   &p->n_typical);
    if (!pc.failed && GET("default_output_cap")) {
        size_t old = ppush(&pc, ".default_output_cap");
        parse_output_cap(&pc, v, &p->default_output_cap, &p->default_output_cap_fill_only);
        ppop(&pc, old);
    }
    if (!pc.failed && GET("default_typical_output")) {
        size_t old = ppush(&pc, ".default_typical_output");
        parse_int(&pc, v, 0, 100000000, &p->default_typical_output);
        ppop(&pc, old);
    }
    if (!pc.failed) parse_cascade(&pc, GET("cascade"));
    if (!pc.failed) parse_downgrade(&pc, GET("budget_downgrade"));
    if (!pc.failed) parse_batch_tasks(&pc, GET("batch_tasks"));
    if (!pc.failed) parse_baseline(&pc, GET("baseline"));
#undef GET
    if (pc.failed) {
        policy_free(p);
        return NULL;
    }
    p->marker_len = strlen(p->marker);
    return p;
}

void policy_free(policy *p)
{
    if (!p) return;
    for (int t = 0; t < N_TIERS; t++)
        free(p->tier_models[t]);
    for (int i = 0; i < p->n_tasks; i++)
        free(p->tasks[i].task);
    free(p->tasks);
    for (int i = 0; i < p->n_output_caps; i++)
        free(p->output_caps[i].task);
    free(p->output_caps);
    for (int i = 0; i < p->n_thinking_caps; i++)
        free(p->thinking_caps[i].task);
    free(p->thinking_caps);
    for (int i = 0; i < p->n_typical; i++)
        free(p->typical[i].task);
    free(p->typical);
    for (int i = 0; i < p->n_batch_tasks; i++)
        free(p->batch_tasks[i]);
    free(p->batch_tasks);
    free(p->marker);
    free(p);
}

/* ------------------------------------------------------------ lookups */

model_tier policy_task_tier(const policy *p, const char *task)
{
    if (!p || !task) return TIER_NONE;
    for (int i = 0; i < p->n_tasks; i++)
        if (strcmp(p->tasks[i].task, task) == 0) return p->tasks[i].tier;
    return TIER_NONE;
}

static const task_cap *task_cap_find(const task_cap *caps, int n, const char *task)
{
    if (!task || !*task) return NULL;
    for (int i = 0; i < n; i++)
        if (strcmp(caps[i].task, task) == 0) return &caps[i];
    return NULL;
}

static int64_t task_cap_of(const task_cap *caps, int n, const char *task)
{
    const task_cap *c = task_cap_find(caps, n, task);
    return c ? c->cap : -1;
}

int64_t policy_output_cap(const policy *p, const char *task, bool route_cap_default,
                          int64_t client_max_tokens, bool *applied)
{
    int64_t client = client_max_tokens >= 0 ? client_max_tokens : -1, cap = -1;
    bool fill_only = route_cap_default;
    const task_cap *tc = p ? task_cap_find(p->output_caps, p->n_output_caps, task) : NULL;
    if (tc) {
        cap = tc->cap;
        fill_only = fill_only || tc->fill_only;
    } else if (p) {
        cap = p->default_output_cap;
        fill_only = fill_only || p->default_output_cap_fill_only;
    }
    int64_t out = client < 0 ? cap : !fill_only && cap >= 0 && cap < client ? cap : client;
    if (applied) *applied = out != client;
    return out;
}

int64_t policy_typical_output(const policy *p, const char *task, bool *for_task)
{
    const task_cap *tc = p ? task_cap_find(p->typical, p->n_typical, task) : NULL;
    if (for_task) *for_task = tc != NULL;
    return tc ? tc->cap : p ? p->default_typical_output : POLICY_DEFAULT_TYPICAL_OUTPUT;
}

const int *policy_tier_models(const policy *p, model_tier tier, int *n)
{
    if (!p || tier <= TIER_NONE || tier >= N_TIERS) {
        *n = 0;
        return NULL;
    }
    *n = p->n_tier[tier];
    return p->tier_models[tier];
}

int policy_baseline_index(const policy *p)
{
    return p ? p->baseline : -1;
}

bool policy_escalate_tier(const policy *p, model_tier from, model_tier *to)
{
    if (!p || from <= TIER_NONE || from >= N_TIERS || p->escalate[from] == TIER_NONE) return false;
    *to = p->escalate[from];
    return true;
}

int policy_escalation_index(const policy *p, const policy_plan *plan, int from)
{
    model_tier to;
    if (!plan || from < 0 || from >= plan->n ||
        !policy_escalate_tier(p, plan->cand[from].tier, &to))
        return -1;
    for (int i = from + 1; i < plan->n; i++)
        if (plan->cand[i].tier == to) return i;
    return -1;
}

int64_t policy_estimate_cost_pusd(const model_price *price, int64_t prompt_tokens,
                                  int64_t output_tokens)
{
    /* Uncached input and output, no batch, under any long-context threshold:
     * every factor of pricing_cost_pusd is 100 % and the cost is tokens ×
     * price, in 64 bits when nothing can overflow (always, for a plan's
     * estimate). Planning prices every model of a tier: 128-bit arithmetic
     * and a division per model were a third of its instructions. */
    if (price && prompt_tokens >= 0 && prompt_tokens <= INT32_MAX && output_tokens >= 0 &&
        output_tokens <= INT32_MAX && price->input >= 0 && price->input <= INT32_MAX &&
        price->output >= 0 && price->output <= INT32_MAX &&
        (price->long_ctx_threshold <= 0 || prompt_tokens <= price->long_ctx_threshold))
        return prompt_tokens * price->input + output_tokens * price->output;
    usage_record u = {.input_uncached = prompt_tokens, .output = output_tokens};
    return pricing_cost_pusd(price, &u, false);
}

/* ------------------------------------------------------------ planning */

/* snprintf into a fixed field; names and numbers are bounded, and a long
 * one is cut rather than overflowing (vsnprintf: no truncation warnings for
 * text that is meant to be cut). */
static void fmt_into(char *dst, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fmt_into(char *dst, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, size, fmt, ap);
    va_end(ap);
}

/* The same for plain strings, NULL-terminated, cut the same way: the texts
 * every plan writes (a reason per candidate, the rule). vsnprintf cost more
 * than choosing the candidates (bench/routing/routing_bench.sh, callgrind). */
static void cat_into(char *dst, size_t size, ...) __attribute__((sentinel));
static void cat_into(char *dst, size_t size, ...)
{
    if (!size) return;
    size_t n = 0;
    va_list ap;
    va_start(ap, size);
    for (const char *s; (s = va_arg(ap, const char *)) != NULL;) {
        size_t len = strlen(s);
        if (len > size - 1 - n) len = size - 1 - n;
        memcpy(dst + n, s, len);
        n += len;
    }
    va_end(ap);
    dst[n] = '\0';
}

/* Decimal text of n, in digits (12 bytes hold any int). */
static const char *int_text(char *digits, int n)
{
    char *p = digits + 11;
    unsigned v = n < 0 ? 0u - (unsigned)n : (unsigned)n;
    *p = '\0';
    do
        *--p = (char)('0' + v % 10);
    while (v /= 10);
    if (n < 0) *--p = '-';
    return p;
}

typedef struct plan_ctx {
    const policy *p;
    const policy_request *req;
    const policy_model *models;
    policy_plan *out;
    int64_t prompt, output;                 /* estimated tokens */
    policy_candidate tail[POLICY_MAX_CAND]; /* busy local models, appended last */
    int n_tail;
    /* why the first group's models were left out, for the error message */
    int n_listed, n_off, n_sick, n_small;
} plan_ctx;

static bool fits(const plan_ctx *pl, const policy_model *m)
{
    if (m->context_window <= 0) return true;
    return pl->prompt + pl->output <= m->context_window;
}

/* A model that cannot take the request (policy_request.needs,
 * refused_dialects), recorded once in out->skipped. */
static bool unfit(const policy_request *req, const policy_model *m, policy_plan *out, int idx)
{
    bool off = (req->needs & ~m->caps) ||
               (m->dialect >= 0 && m->dialect < 32 && (req->refused_dialects >> m->dialect & 1u));
    if (!off) return false;
    for (int i = 0; i < out->n_skipped && i < POLICY_MAX_SKIPPED; i++)
        if (out->skipped[i] == idx) return true;
    if (out->n_skipped < POLICY_MAX_SKIPPED) out->skipped[out->n_skipped] = idx;
    out->n_skipped++;
    return true;
}

static bool planned(const plan_ctx *pl, int idx)
{
    for (int i = 0; i < pl->out->n; i++)
        if (pl->out->cand[i].model_index == idx) return true;
    for (int i = 0; i < pl->n_tail; i++)
        if (pl->tail[i].model_index == idx) return true;
    return false;
}

/* Appends a tier's eligible models to the plan, cheapest first (local
 * first with prefer_local; ties keep list order), at most `limit` and as
 * many as the plan has room for; busy local models go to the tail. `how`
 * starts each reason ("budget", "escalation mid", "over budget: local").
 * Returns how many it appended; *eligible (may be NULL) receives how many
 * were eligible. */
static int add_tier(plan_ctx *pl, model_tier t, const char *how, bool count, int limit,
                    int *eligible)
{
    const policy *p = pl->p;
    int room = POLICY_MAX_CAND - pl->out->n;
    if (room > limit) room = limit;
    /* A full plan takes nothing more, not even a busy local model (add_tail
     * appends only while there is room): an escalation tier after a tier
     * that filled the plan is not even priced. */
    if (room <= 0 && !count) {
        if (eligible) *eligible = 0;
        return 0;
    }
    /* the `room` best so far, in order; candidates (with their 96-byte
     * reasons) are written only for those that make the plan */
    struct {
        int64_t cost;
        int idx;
        bool local_first;
    } best[POLICY_MAX_CAND];
    int n = 0, n_ok = 0;
    for (int i = 0; i < p->n_tier[t]; i++) {
        int idx = p->tier_models[t][i];
        const policy_model *m = &pl->models[idx];
        if (count) pl->n_listed++;
        if (m->enabled && unfit(pl->req, m, pl->out, idx)) continue;
        if (!m->enabled || !m->healthy || !fits(pl, m)) {
            if (count) {
                pl->n_off += !m->enabled;
                pl->n_sick += m->enabled && !m->healthy;
                pl->n_small += m->enabled && m->healthy;
            }
            continue;
        }
        if (planned(pl, idx)) continue;
        n_ok++;
        int64_t cost = policy_estimate_cost_pusd(m->price, pl->prompt, pl->output);
        if (m->local && m->busy) {
            if (pl->n_tail < POLICY_MAX_CAND) {
                policy_candidate *c = &pl->tail[pl->n_tail++];
                *c = (policy_candidate){.model_index = idx, .tier = t, .est_cost_pusd = cost};
                cat_into(c->reason, sizeof c->reason, how,
                         ": local but busy, so last (cloud first)", NULL);
            }
            continue;
        }
        /* insertion after every equal: a stable top-`room` selection */
        bool lf = p->prefer_local && m->local;
        int at = n;
        while (at > 0 && ((lf && !best[at - 1].local_first) ||
                          (lf == best[at - 1].local_first && cost < best[at - 1].cost)))
            at--;
        if (at >= room) continue;
        int keep = n < room ? n : room - 1; /* entries that survive the shift */
        memmove(&best[at + 1], &best[at], sizeof best[0] * (size_t)(keep - at));
        best[at].cost = cost;
        best[at].idx = idx;
        best[at].local_first = lf;
        n = keep + 1;
    }
    /* "HOW #N by estimated cost" differs only in N (one digit): written
     * once, then copied with its digit set (unless the cut dropped it). */
    _Static_assert(POLICY_MAX_CAND < 10, "the rank in a reason is one digit");
    char by_cost[sizeof pl->out->cand[0].reason];
    size_t digit = strlen(how) + 2, by_cost_len = 0;
    if (n > 1) {
        cat_into(by_cost, sizeof by_cost, how, " #0 by estimated cost", NULL);
        by_cost_len = strlen(by_cost);
    }
    for (int i = 0; i < n; i++) {
        policy_candidate *c = &pl->out->cand[pl->out->n++];
        c->model_index = best[i].idx;
        c->tier = t;
        c->est_cost_pusd = best[i].cost;
        char num[12];
        if (best[i].local_first)
            cat_into(c->reason, sizeof c->reason, how, " #", int_text(num, i + 1),
                     ": local first (prefer_local)", NULL);
        else if (i == 0)
            cat_into(c->reason, sizeof c->reason, how, " #1: cheapest estimate that fits", NULL);
        else {
            memcpy(c->reason, by_cost, by_cost_len + 1);
            if (digit < by_cost_len) c->reason[digit] = (char)('1' + i);
        }
    }
    if (eligible) *eligible = n_ok;
    return n;
}

static void add_tail(plan_ctx *pl)
{
    for (int i = 0; i < pl->n_tail && pl->out->n < POLICY_MAX_CAND; i++)
        pl->out->cand[pl->out->n++] = pl->tail[i];
    pl->n_tail = 0;
}

/* The tier's candidates then its escalation tiers'. Each escalation tier
 * keeps at least one place: a tier with many models must not fill the plan
 * and leave the cascade (and failover upward) nowhere to go. Returns the
 * primary count. */
static int plan_tier(plan_ctx *pl, model_tier tier, bool escalate, int *eligible)
{
    pl->out->n = 0;
    pl->n_tail = 0;
    model_tier chain[N_TIERS];
    int n_chain = 0;
    bool seen[N_TIERS] = {false};
    seen[tier] = true;
    for (model_tier t = pl->p->escalate[tier]; escalate && t != TIER_NONE && !seen[t];
         t = pl->p->escalate[t]) {
        seen[t] = true;
        if (pl->p->n_tier[t] > 0) chain[n_chain++] = t;
    }
    int primary =
        add_tier(pl, tier, pricing_tier_name(tier), true, POLICY_MAX_CAND - n_chain, eligible);
    for (int i = 0; i < n_chain; i++) {
        char how[32];
        cat_into(how, sizeof how, "escalation ", pricing_tier_name(chain[i]), NULL);
        /* the places the tiers after this one keep */
        add_tier(pl, chain[i], how, false, POLICY_MAX_CAND - pl->out->n - (n_chain - 1 - i), NULL);
    }
    add_tail(pl);
    return primary;
}

/* A client-supplied name, safe inside a header value: printable ASCII, at
 * most 40 characters. */
static void safe_name(const char *s, char *out, size_t outlen)
{
    size_t n = 0;
    for (; s && *s && n + 1 < outlen && n < 40; s++)
        out[n++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
    out[n] = '\0';
}

static policy_result plan_fail(policy_plan *out, policy_result r, char *err, size_t errlen,
                               const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static policy_result plan_fail(policy_plan *out, policy_result r, char *err, size_t errlen,
                               const char *fmt, ...)
{
    out->n = 0;
    out->n_primary = 0;
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return r;
}

policy_result policy_plan_request(const policy *p, const policy_model *models, int n_models,
                                  const policy_request *req, policy_plan *out, char *err,
                                  size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->max_tokens_applied = -1;
    out->thinking_cap = -1;
    out->baseline_index = -1;
    if (err && errlen) err[0] = '\0';
    if (!p || !req || n_models != p->n_models)
        return plan_fail(out, POLICY_NO_CANDIDATE, err, errlen,
                         "routing: the model table changed since the policy was built");

    /* 1. output cap and prompt estimate */
    const char *task = req->task && *req->task ? req->task : NULL;
    out->max_tokens_applied =
        policy_output_cap(p, task, req->route_cap_default, req->max_tokens, &out->output_capped);
    out->thinking_cap = task_cap_of(p->thinking_caps, p->n_thinking_caps, task);
    /* The output priced and fitted: what max_tokens lets through, else the
     * task's typical answer plus the thinking it is given. */
    out->est_output_tokens = out->max_tokens_applied >= 0
                                 ? out->max_tokens_applied
                                 : policy_typical_output(p, task, NULL) +
                                       (out->thinking_cap > 0 ? out->thinking_cap : 0);
    int64_t chars = req->prompt_chars > 0 ? req->prompt_chars : 0;
    out->est_prompt_tokens = chars / 4 + (chars % 4 != 0);
    out->estimated = true;
    for (int i = 0; task && i < p->n_batch_tasks; i++)
        out->batch_eligible = out->batch_eligible || strcmp(p->batch_tasks[i], task) == 0;

    plan_ctx pl = {.p = p,
                   .req = req,
                   .models = models,
                   .out = out,
                   .prompt = out->est_prompt_tokens,
                   .output = out->est_output_tokens};
    char tname[48];
    safe_name(task, tname, sizeof tname);

    /* 2. which tier, or which model */
    const char *model = req->model && *req->model ? req->model : "auto";
    model_tier tier = TIER_NONE;
    char why[96];
    if (req->route) {
        /* a route of $.routes: its enabled candidates, in its order (the
         * server's plan for it) */
        char name[48];
        safe_name(req->route, name, sizeof name);
        for (int i = 0; i < req->n_route_models && out->n < POLICY_MAX_CAND; i++) {
            int idx = req->route_models[i];
            if (idx < 0 || idx >= n_models || !models[idx].enabled) continue;
            const policy_model *m = &models[idx];
            if (unfit(req, m, out, idx)) continue;
            policy_candidate *c = &out->cand[out->n++];
            c->model_index = idx;
            c->tier = m->tier;
            c->est_cost_pusd = policy_estimate_cost_pusd(m->price, pl.prompt, pl.output);
            fmt_into(c->reason, sizeof c->reason, "route %s #%d%s", name, out->n,
                     !m->healthy     ? " (unhealthy)"
                     : !fits(&pl, m) ? " (prompt + output exceed its context window)"
                                     : "");
        }
        if (out->n == 0 && out->n_skipped)
            return plan_fail(out, POLICY_UNFIT, err, errlen,
                             "route \"%s\": none of its candidate models can take this request",
                             name);
        if (out->n == 0)
            return plan_fail(out, POLICY_NO_CANDIDATE, err, errlen,
                             "route \"%s\": none of its candidate models has an enabled provider",
                             name);
        out->n_primary = out->n;
        out->tier = models[out->cand[0].model_index].tier;
        fmt_into(out->rule, sizeof out->rule, "route %s: its candidates in order", name);
    } else if (strncmp(model, "tier:", 5) == 0) {
        char name[48];
        safe_name(model + 5, name, sizeof name);
        if (!pricing_tier_parse(model + 5, &tier))
            return plan_fail(out, POLICY_BAD_TIER, err, errlen,
                             "model \"tier:%s\": unknown tier (expected tier:local, tier:budget, "
                             "tier:mid or tier:heavy)",
                             name);
        cat_into(why, sizeof why, "model tier:", pricing_tier_name(tier), NULL);
    } else if (strcmp(model, "auto") == 0) {
        if (req->tier_header && *req->tier_header) {
            char name[48];
            safe_name(req->tier_header, name, sizeof name);
            if (!pricing_tier_parse(req->tier_header, &tier))
                return plan_fail(out, POLICY_BAD_TIER, err, errlen,
                                 "x-bridle-tier: unknown tier \"%s\" (expected local, budget, mid "
                                 "or heavy)",
                                 name);
            cat_into(why, sizeof why, "x-bridle-tier ", pricing_tier_name(tier), NULL);
        } else if (task && (tier = policy_task_tier(p, task)) != TIER_NONE) {
            cat_into(why, sizeof why, "task ", tname, " -> tier ", pricing_tier_name(tier), NULL);
        } else {
            tier = p->default_tier;
            if (task)
                cat_into(why, sizeof why, "task ", tname, " unmapped: default tier ",
                         pricing_tier_name(tier), NULL);
            else
                cat_into(why, sizeof why, "no task: default tier ", pricing_tier_name(tier), NULL);
        }
    } else {
        int idx = -1;
        for (int i = 0; i < n_models && idx < 0; i++)
            if (models[i].name && strcmp(models[i].name, model) == 0) idx = i;
        char name[48];
        safe_name(model, name, sizeof name);
        if (idx < 0)
            return plan_fail(out, POLICY_UNKNOWN_MODEL, err, errlen,
                             "no model named \"%s\" (nor \"auto\" or \"tier:NAME\")", name);
        const policy_model *m = &models[idx];
        policy_candidate *c = &out->cand[out->n++];
        c->model_index = idx;
        c->tier = m->tier;
        c->est_cost_pusd = policy_estimate_cost_pusd(m->price, pl.prompt, pl.output);
        bool off = m->enabled && unfit(req, m, out, idx);
        fmt_into(c->reason, sizeof c->reason, "asked by name%s",
                 off             ? " (cannot take this request)"
                 : !m->enabled   ? " (no provider enabled)"
                 : !m->healthy   ? " (unhealthy)"
                 : !fits(&pl, m) ? " (prompt + cap exceed its context window)"
                                 : "");
        out->n_primary = 1;
        out->tier = m->tier;
        fmt_into(out->rule, sizeof out->rule, "model %s asked by name", name);
    }

    /* 3. candidates of the tier, then of the escalation tiers */
    if (tier != TIER_NONE) {
        out->tier = tier;
        int eligible = 0;
        out->n_primary = plan_tier(&pl, tier, true, &eligible);
        char num[12];
        if (out->n_primary > 0)
            cat_into(out->rule, sizeof out->rule, why, ": cheapest of ", int_text(num, eligible),
                     " that fit",
                     p->prefer_local && models[out->cand[0].model_index].local ? ", local first"
                                                                               : "",
                     NULL);
        else if (out->n > 0)
            cat_into(out->rule, sizeof out->rule, why, ": none fit, falling back to ",
                     pricing_tier_name(out->cand[0].tier), NULL);
    }

    /* 4. budget downgrade */
    if (!req->route && p->downgrade_pct > 0 && req->spend_share_pct >= p->downgrade_pct) {
        policy_plan keep = *out;
        char how[48];
        fmt_into(how, sizeof how, "over budget: %s", pricing_tier_name(p->downgrade_tier));
        out->n = 0;
        pl.n_tail = 0;
        int n = add_tier(&pl, p->downgrade_tier, how, false, POLICY_MAX_CAND, NULL);
        add_tail(&pl);
        size_t len = strlen(keep.rule);
        if (out->n > 0) {
            out->n_primary = n;
            out->tier = p->downgrade_tier;
            out->downgraded = true;
            fmt_into(out->rule + len, sizeof out->rule - len, "; over %sbudget (%d%% >= %d%%): %s",
                     req->team_budget ? "the team " : "", req->spend_share_pct, p->downgrade_pct,
                     pricing_tier_name(p->downgrade_tier));
        } else {
            *out = keep;
            fmt_into(out->rule + len, sizeof out->rule - len,
                     "; over %sbudget but no %s model fits: kept",
                     req->team_budget ? "the team " : "", pricing_tier_name(p->downgrade_tier));
        }
    }

    if (out->n == 0 && out->n_skipped) {
        char tn[16];
        fmt_into(tn, sizeof tn, "%s", pricing_tier_name(tier));
        int n_skipped = out->n_skipped;
        policy_result r = plan_fail(out, POLICY_UNFIT, err, errlen,
                                    "tier %s: none of its models (nor an escalation tier's) can "
                                    "take this request (%d skipped)",
                                    tn, n_skipped);
        out->n_skipped = n_skipped;
        return r;
    }
    if (out->n == 0) {
        char tn[16];
        fmt_into(tn, sizeof tn, "%s", pricing_tier_name(tier));
        return plan_fail(out, POLICY_NO_CANDIDATE, err, errlen,
                         "tier %s: no model can take this request (%d listed: %d without an "
                         "enabled provider, %d unhealthy, %d with a context window under %lld "
                         "tokens), and no escalation tier could either",
                         tn, pl.n_listed, pl.n_off, pl.n_sick, pl.n_small,
                         (long long)(pl.prompt + pl.output));
    }

    /* 5. estimates */
    out->est_cost_pusd = out->cand[0].est_cost_pusd;
    out->baseline_index = p->baseline;
    if (p->baseline >= 0)
        out->baseline_cost_pusd =
            policy_estimate_cost_pusd(models[p->baseline].price, pl.prompt, pl.output);
    return POLICY_OK;
}

/* ------------------------------------------------------------ cascade */

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* One JSON value and nothing but white space around it. lib/jtok, not
 * json-c: json-c 0.16 accepts {'a': 1} even in strict mode, and a
 * Python-dict answer is exactly what a cheap model gets wrong. */
static bool parses_as_json(const char *s, size_t len)
{
    jdoc d = JDOC_INIT;
    char msg[8];
    size_t pos;
    bool ok = jdoc_parse(&d, s, len, msg, sizeof msg, &pos) == 0;
    jdoc_free(&d);
    return ok;
}

const char *policy_cascade_failed_check(const policy *p, const char *finish_reason,
                                        const char *answer_text, size_t len, bool json_mode)
{
    if (!p || !p->cascade_enabled) return NULL;
    /* Tool calls are what the model chose to do, not a text to grade: no
     * text is their normal shape, and a dearer model would only call too. */
    if (finish_reason && strcmp(finish_reason, "tool_calls") == 0) return NULL;
    if (!answer_text) len = 0;
    if ((p->checks & CHECK_LENGTH) && finish_reason && strcmp(finish_reason, "length") == 0)
        return "length";
    size_t start = 0;
    while (start < len && is_space(answer_text[start]))
        start++;
    if ((p->checks & CHECK_EMPTY) && start == len) return "empty";
    if ((p->checks & CHECK_UNCERTAIN) && len - start >= p->marker_len &&
        memcmp(answer_text + start, p->marker, p->marker_len) == 0)
        return "uncertain";
    if ((p->checks & CHECK_JSON) && json_mode &&
        !parses_as_json(answer_text ? answer_text : "", len))
        return "json";
    return NULL;
}

bool policy_cascade_should_escalate(const policy *p, const char *finish_reason,
                                    const char *answer_text, size_t len, bool json_mode)
{
    return policy_cascade_failed_check(p, finish_reason, answer_text, len, json_mode) != NULL;
}

bool policy_cascade_enabled(const policy *p)
{
    return p && p->cascade_enabled;
}

bool policy_cascade_streams(const policy *p)
{
    return p && p->cascade_enabled && p->cascade_streams;
}
