/* `bridle route` and `bridle simulate`: the routing policy on the command
 * line, without calling anyone (router/policy.h).
 *
 *   bridle route --config FILE --request FILE.json [--header 'x-bridle-task: classify']
 *                [--spend-share PCT [--team-budget]] [--busy MODEL] [--down MODEL] [--json]
 *   bridle simulate --config FILE --workload FILE.jsonl [--baseline MODEL] [--json]
 *
 * A workload line is one kind of request and how often it comes:
 *   {"task": "classify", "tier": "budget", "model": "auto",
 *    "prompt_tokens": 500 | "prompt": "text", "output_tokens": 10,
 *    "count": 2000, "per": "day" | "week", "batch": true,
 *    "cached_prefix_tokens": 400, "note": "..."}
 * task, tier and model are what the request would carry (metadata.task,
 * x-bridle-tier, model: a model, a route of $.routes, "auto" or
 * "tier:NAME"; model defaults to "auto"); output_tokens is its max_tokens,
 * bounded by the task's output cap (absent: the cap, else the task's
 * typical output, as the policy prices it). Every line is routed by the
 * policy and priced on its first candidate. "batch": true marks work that
 * can wait: a share of a kind of request is two lines. It is priced at the
 * model's batch discount when the model's provider has a batch API
 * (providers.NAME.batch), as bridle's batch path would send it, else live.
 * The savings are split in order: routing (baseline -> routed), batching
 * (-> the batch lines discounted), caching (-> cached_prefix_tokens read
 * from the provider's prompt cache).
 *
 * Money is exact: a workload's cost is summed per week in integer
 * pico-dollars (a "per day" line counts 7 times), then per day = week / 7
 * and per month (30 days) = week × 30 / 7, each rounded half up to the
 * pico-dollar once. */
#include "cli/cli.h"
#include "providers/batch.h"
#include "providers/params.h"
#include "router/policy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/jtok.h"
#include "lib/util.h"
#include "providers/provider.h"
#include "router/canon.h"
#include "router/config.h"

#define MAX_MODELS 512
#define MAX_FLAGGED 32

/* ------------------------------------------------------------ shared */

static const char *arg_value(int argc, char **argv, const char *name)
{
    for (int i = 2; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return NULL;
}

static bool arg_flag(int argc, char **argv, const char *name)
{
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], name) == 0) return true;
    return false;
}

/* Every flag must be known; flags in `with_value` take the next argument. */
static bool args_valid(const char *cmd, int argc, char **argv, const char *const *with_value,
                       const char *const *bare)
{
    for (int i = 2; i < argc; i++) {
        bool ok = false;
        for (const char *const *f = with_value; *f && !ok; f++)
            if (strcmp(argv[i], *f) == 0) {
                ok = true;
                if (++i >= argc) {
                    fprintf(stderr, "bridle %s: %s needs a value\n", cmd, argv[i - 1]);
                    return false;
                }
            }
        for (const char *const *f = bare; *f && !ok; f++)
            ok = strcmp(argv[i], *f) == 0;
        if (!ok) {
            fprintf(stderr, "bridle %s: unknown argument \"%s\" (bridle %s --help)\n", cmd, argv[i],
                    cmd);
            return false;
        }
    }
    return true;
}

static char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    buf b = BUF_INIT;
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        buf_append(&b, tmp, n);
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        snprintf(err, errlen, "%s: read error", path);
        buf_free(&b);
        return NULL;
    }
    buf_append_char(&b, '\0');
    *len = b.len - 1;
    return buf_steal(&b);
}

/* The config and its raw "routing" object (a new reference, or NULL). */
static bridle_config *load_config(const char *path, json_object **routing, char *err, size_t errlen)
{
    bridle_config *c = config_load(path, err, errlen);
    json_object *r = c ? config_routing_json(c) : NULL;
    *routing = r ? json_object_get(r) : NULL;
    return c;
}

typedef struct loaded {
    bridle_config *cfg;
    json_object *routing;
    policy *pol;
    policy_model models[MAX_MODELS];
    int n_models;
} loaded;

static bool load_all(const char *cmd, const char *path, loaded *L)
{
    char err[1024];
    memset(L, 0, sizeof *L);
    L->cfg = load_config(path, &L->routing, err, sizeof err);
    if (!L->cfg) {
        fprintf(stderr, "bridle %s: %s\n", cmd, err);
        return false;
    }
    L->n_models = policy_models_from_config(L->cfg, L->models, MAX_MODELS);
    L->pol = policy_new(L->routing, L->models, L->n_models, err, sizeof err);
    if (!L->pol) {
        fprintf(stderr, "bridle %s: %s: %s\n", cmd, path, err);
        return false;
    }
    return true;
}

static void unload(loaded *L)
{
    policy_free(L->pol);
    json_object_put(L->routing);
    config_free(L->cfg);
}

static int find_model(const loaded *L, const char *name)
{
    for (int i = 0; i < L->n_models; i++)
        if (strcmp(L->models[i].name, name) == 0) return i;
    return -1;
}

/* When `model` names a route of $.routes (which the server looks up before
 * "auto" / "tier:NAME", as it does here), fills the request's route fields,
 * its candidates' indices into idx[MAX_MODELS], and returns the route. */
static const route_conf *route_of(const loaded *L, const char *model, policy_request *pr, int *idx)
{
    const route_conf *r = model ? config_find_route(L->cfg, model) : NULL;
    if (!r) return NULL;
    int n = 0;
    for (int i = 0; i < r->n_candidates && n < MAX_MODELS; i++)
        idx[n++] = find_model(L, r->candidates[i]->name);
    pr->route = r->name;
    pr->route_models = idx;
    pr->n_route_models = n;
    pr->route_cap_default = r->cap_default;
    return r;
}

/* A route measures savings against its own baseline (as the server does). */
static void route_baseline(const loaded *L, const route_conf *r, policy_plan *plan)
{
    int b = r && r->baseline ? find_model(L, r->baseline->name) : -1;
    if (!r) return;
    plan->baseline_index = b;
    plan->baseline_cost_pusd =
        b >= 0 ? policy_estimate_cost_pusd(L->models[b].price, plan->est_prompt_tokens,
                                           plan->est_output_tokens)
               : 0;
}

static const char *usd(int64_t pusd, int decimals, char *out, size_t outlen)
{
    util_format_pusd(pusd, decimals, out, outlen);
    return out;
}

/* JSON for a string (json-c does the escaping). */
static void put_jstr(buf *b, const char *s)
{
    if (!s) {
        buf_append_str(b, "null");
        return;
    }
    buf_append_json_str(b, s, strlen(s));
}

/* ------------------------------------------------------------ route */

/* How the thinking budget in cr reaches a model, read back from the body
 * its adapter would send ("" when nothing is): the adapters decide (which
 * models reason, each dialect's form and limits); this only reports. */
static void thinking_as_sent(const canon_request *cr, const target *t, char *out, size_t n)
{
    out[0] = '\0';
    if (!t->provider || !t->provider->ops) return;
    upstream_request up;
    upstream_request_init(&up);
    char err[256];
    jdoc d = JDOC_INIT;
    if (t->provider->ops->encode(cr, t, &up, err, sizeof err) == 0 &&
        jdoc_parse(&d, up.body.data, up.body.len, NULL, 0, NULL) == 0) {
        int64_t v, mt = -1;
        uint32_t eff = jdoc_get(&d, 0, "reasoning_effort");
        uint32_t gc = jdoc_get(&d, 0, "generationConfig");
        if (jdoc_int64(&d, jdoc_get(&d, jdoc_get(&d, 0, "thinking"), "budget_tokens"), &v)) {
            jdoc_int64(&d, jdoc_get(&d, 0, "max_tokens"), &mt);
            snprintf(out, n, "thinking.budget_tokens %lld (max_tokens %lld)", (long long)v,
                     (long long)mt);
        } else if (jdoc_type(&d, eff) == JT_STRING) {
            buf e = BUF_INIT;
            jdoc_str_append(&d, eff, &e);
            snprintf(out, n, "reasoning_effort %s", e.data);
            buf_free(&e);
        } else if (jdoc_int64(&d,
                              jdoc_get(&d, jdoc_get(&d, gc, "thinkingConfig"), "thinkingBudget"),
                              &v)) {
            snprintf(out, n, "generationConfig.thinkingConfig.thinkingBudget %lld", (long long)v);
        }
    }
    jdoc_free(&d);
    upstream_request_free(&up);
}

/* Why the plan skipped model idx (providers/params.h). */
static void skip_reason(const loaded *L, const canon_request *cr, int idx, params_refusal *why)
{
    memset(why, 0, sizeof *why);
    if (!params_target_refuses(cr, &config_model(L->cfg, idx)->target, why))
        snprintf(why->brief, sizeof why->brief, "cannot take this request");
}

/* "skipped   NAME  PARAM: REASON" per model the plan left out. */
static void print_skipped(FILE *f, const loaded *L, const canon_request *cr,
                          const policy_plan *plan)
{
    for (int i = 0; i < plan->n_skipped && i < POLICY_MAX_SKIPPED; i++) {
        params_refusal why;
        skip_reason(L, cr, plan->skipped[i], &why);
        fprintf(f, "skipped   %-22s %s: %s\n", L->models[plan->skipped[i]].name, why.param,
                why.brief);
    }
}

static int route_usage(FILE *f, int code)
{
    fprintf(
        f, "usage: bridle route --config FILE --request FILE.json [--header 'x-bridle-task: "
           "classify']\n"
           "                    [--header 'x-bridle-tier: heavy'] [--spend-share PCT "
           "[--team-budget]]\n"
           "                    [--busy MODEL] [--down MODEL] [--json]\n"
           "  Prints the routing decision for one chat request (an OpenAI request body) without\n"
           "  calling anyone: the plan, the rule that chose, the max_tokens the server would send\n"
           "  (the task's output cap), the estimated cost (input and output sides) and the\n"
           "  baseline's. --spend-share is the key's spend as a %% of its budget\n"
           "  (--team-budget: its team's);\n"
           "  --busy / --down mark a model at its concurrency limit / unhealthy (repeatable).\n");
    return code;
}

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    size_t i = 0;
    while (s[i] == ' ' || s[i] == '\t')
        i++;
    memmove(s, s + i, n - i + 1);
}

int route_main(int argc, char **argv)
{
    static const char *const with_value[] = {"--config", "--request", "--header", "--spend-share",
                                             "--busy",   "--down",    NULL};
    static const char *const bare[] = {"--json", "--team-budget", "--help", "-h", NULL};
    if (arg_flag(argc, argv, "--help") || arg_flag(argc, argv, "-h")) return route_usage(stdout, 0);
    if (!args_valid("route", argc, argv, with_value, bare)) return route_usage(stderr, 2);
    const char *cfg_path = arg_value(argc, argv, "--config");
    if (!cfg_path) cfg_path = getenv("BRIDLE_CONFIG");
    if (!cfg_path) cfg_path = "config/bridle.json";
    const char *req_path = arg_value(argc, argv, "--request");
    if (!req_path) {
        fprintf(stderr, "bridle route: --request FILE.json is required\n");
        return route_usage(stderr, 2);
    }
    bool as_json = arg_flag(argc, argv, "--json");

    char task_h[256] = "", tier_h[256] = "";
    int spend = -1;
    for (int i = 2; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--header") == 0) {
            const char *colon = strchr(argv[i + 1], ':');
            char name[64], value[256];
            size_t nl = colon ? (size_t)(colon - argv[i + 1]) : 0;
            if (!colon || nl >= sizeof name) {
                fprintf(stderr, "bridle route: --header wants 'Name: value' (got \"%s\")\n",
                        argv[i + 1]);
                return 2;
            }
            memcpy(name, argv[i + 1], nl);
            name[nl] = '\0';
            trim(name);
            snprintf(value, sizeof value, "%s", colon + 1);
            trim(value);
            if (strcasecmp(name, "x-bridle-task") == 0)
                snprintf(task_h, sizeof task_h, "%s", value);
            else if (strcasecmp(name, "x-bridle-tier") == 0)
                snprintf(tier_h, sizeof tier_h, "%s", value);
            else {
                fprintf(stderr,
                        "bridle route: only x-bridle-task and x-bridle-tier change routing (got "
                        "\"%s\")\n",
                        name);
                return 2;
            }
            i++;
        } else if (strcmp(argv[i], "--spend-share") == 0) {
            char *end;
            long v = strtol(argv[i + 1], &end, 10);
            if (*end || end == argv[i + 1] || v < 0 || v > 100000) {
                fprintf(stderr, "bridle route: --spend-share wants a percentage (got \"%s\")\n",
                        argv[i + 1]);
                return 2;
            }
            spend = (int)v;
            i++;
        }
    }

    loaded L;
    if (!load_all("route", cfg_path, &L)) {
        unload(&L);
        return 1;
    }
    for (int i = 2; i + 1 < argc; i++) {
        bool busy = strcmp(argv[i], "--busy") == 0, down = strcmp(argv[i], "--down") == 0;
        if (!busy && !down) continue;
        int idx = find_model(&L, argv[i + 1]);
        if (idx < 0) {
            fprintf(stderr, "bridle route: %s %s: no such model in %s\n", argv[i], argv[i + 1],
                    cfg_path);
            unload(&L);
            return 2;
        }
        if (busy)
            L.models[idx].busy = true;
        else
            L.models[idx].healthy = false;
    }

    /* The request, validated as the server would; its message text sizes the prompt. */
    char err[1024];
    size_t len;
    char *body = read_file(req_path, &len, err, sizeof err);
    if (!body) {
        fprintf(stderr, "bridle route: %s\n", err);
        unload(&L);
        return 1;
    }
    jdoc doc = JDOC_INIT;
    buf strings = BUF_INIT;
    canon_request cr;
    canon_error cerr;
    memset(&cr, 0, sizeof cr);
    int rc = 1;
    if (canon_parse_chat(body, len, &doc, &strings, &cr, &cerr) != 0) {
        fprintf(stderr, "bridle route: %s: %s%s%s\n", req_path, cerr.message,
                cerr.param[0] ? " at " : "", cerr.param);
        goto out;
    }
    const model_conf *named = config_find_model(L.cfg, cr.model);
    if (named && named->price.embedding) { /* as the server: a 400 naming the model */
        fprintf(stderr,
                "bridle route: %s is an embedding model: the gateway answers a chat request for "
                "it with 400 (it serves POST /v1/embeddings)\n",
                cr.model);
        goto out;
    }
    policy_request pr = {.model = cr.model,
                         .task = task_h[0] ? task_h : cr.task,
                         .tier_header = tier_h[0] ? tier_h : NULL,
                         .prompt_chars = canon_prompt_chars(&cr),
                         .max_tokens = cr.max_tokens,
                         .json_mode = cr.json_mode,
                         .spend_share_pct = spend,
                         .team_budget = arg_flag(argc, argv, "--team-budget"),
                         .needs = cr.needs,
                         .refused_dialects = params_refused_dialects(&cr)};
    static int route_idx[MAX_MODELS];
    const route_conf *route = route_of(&L, cr.model, &pr, route_idx);
    policy_plan plan;
    policy_result pres =
        policy_plan_request(L.pol, L.models, L.n_models, &pr, &plan, err, sizeof err);
    if (pres != POLICY_OK) {
        fprintf(stderr, "bridle route: %s\n", err);
        print_skipped(stderr, &L, &cr, &plan);
        goto out;
    }
    route_baseline(&L, route, &plan);
    /* how the output side of the estimate was reached */
    bool typical_for_task = false;
    int64_t typical = policy_typical_output(L.pol, pr.task, &typical_for_task);
    char out_from[160];
    if (plan.max_tokens_applied >= 0)
        snprintf(out_from, sizeof out_from, "the max_tokens sent");
    else if (plan.thinking_cap > 0)
        snprintf(out_from, sizeof out_from, "%s %lld + the thinking cap %lld",
                 typical_for_task ? "the task's typical_output" : "default_typical_output",
                 (long long)typical, (long long)plan.thinking_cap);
    else
        snprintf(out_from, sizeof out_from, "%s %lld",
                 typical_for_task ? "the task's typical_output" : "default_typical_output",
                 (long long)typical);
    /* the cap the task would fill in (-1 none), to say why max_tokens is what it is */
    int64_t task_cap = policy_output_cap(L.pol, pr.task, pr.route_cap_default, -1, NULL);
    const char *base = plan.baseline_index >= 0 ? L.models[plan.baseline_index].name : NULL;
    char a[48], b2[48], c2[48];
    /* the request as the server would send it: output cap, thinking budget */
    int64_t client_max_tokens = cr.max_tokens;
    cr.max_tokens = plan.max_tokens_applied; /* policy_output_cap(), as the server */
    bool thinking = plan.thinking_cap > 0 && !cr.reasoning_set;
    if (thinking) cr.thinking_budget = plan.thinking_cap;
    /* the cap, or the client's own control (which the token dialects translate) */
    bool shown = thinking || cr.reasoning_set;
    char sent[POLICY_MAX_CAND][128] = {{0}};
    for (int i = 0; shown && i < plan.n; i++)
        thinking_as_sent(&cr, &config_model(L.cfg, plan.cand[i].model_index)->target, sent[i],
                         sizeof sent[i]);
    if (as_json) {
        buf o = BUF_INIT;
        buf_append_str(&o, "{\"model\":");
        put_jstr(&o, pr.model);
        buf_append_str(&o, ",\"task\":");
        put_jstr(&o, pr.task);
        buf_append_str(&o, ",\"tier_header\":");
        put_jstr(&o, pr.tier_header);
        buf_printf(&o, ",\"tier\":\"%s\",\"rule\":", pricing_tier_name(plan.tier));
        put_jstr(&o, plan.rule);
        buf_printf(&o,
                   ",\"chosen\":\"%s\",\"n_primary\":%d,\"client_max_tokens\":%lld,"
                   "\"max_tokens_applied\":%lld,\"output_capped\":%s,\"task_output_cap\":%lld,"
                   "\"est_output_tokens\":%lld,\"est_output_from\":\"%s\","
                   "\"thinking_cap\":%lld,\"thinking_sent\":%s,\"prompt_chars\":%lld,"
                   "\"est_prompt_tokens\":%lld,\"estimated\":%s,\"json_mode\":%s,"
                   "\"batch_eligible\":%s,\"downgraded\":%s,\"est_cost_pusd\":%lld,"
                   "\"baseline_model\":",
                   L.models[plan.cand[0].model_index].name, plan.n_primary,
                   (long long)client_max_tokens, (long long)plan.max_tokens_applied,
                   plan.output_capped ? "true" : "false", (long long)task_cap,
                   (long long)plan.est_output_tokens, out_from, (long long)plan.thinking_cap,
                   thinking ? "true" : "false", (long long)pr.prompt_chars,
                   (long long)plan.est_prompt_tokens, plan.estimated ? "true" : "false",
                   pr.json_mode ? "true" : "false", plan.batch_eligible ? "true" : "false",
                   plan.downgraded ? "true" : "false", (long long)plan.est_cost_pusd);
        put_jstr(&o, base);
        buf_printf(&o, ",\"baseline_cost_pusd\":%lld,\"savings_pusd\":%lld,\"candidates\":[",
                   (long long)plan.baseline_cost_pusd,
                   (long long)(base ? plan.baseline_cost_pusd - plan.est_cost_pusd : 0));
        for (int i = 0; i < plan.n; i++) {
            const policy_candidate *k = &plan.cand[i];
            int64_t in = policy_estimate_cost_pusd(L.models[k->model_index].price,
                                                   plan.est_prompt_tokens, 0);
            buf_printf(&o,
                       "%s{\"model\":\"%s\",\"tier\":\"%s\",\"est_cost_pusd\":%lld,"
                       "\"est_input_pusd\":%lld,\"est_output_pusd\":%lld,\"reason\":",
                       i ? "," : "", L.models[k->model_index].name, pricing_tier_name(k->tier),
                       (long long)k->est_cost_pusd, (long long)in,
                       (long long)(k->est_cost_pusd - in));
            put_jstr(&o, k->reason);
            buf_append_str(&o, ",\"thinking\":");
            put_jstr(&o, sent[i][0] ? sent[i] : NULL);
            buf_append_str(&o, "}");
        }
        buf_append_str(&o, "],\"skipped\":[");
        for (int i = 0; i < plan.n_skipped && i < POLICY_MAX_SKIPPED; i++) {
            params_refusal why;
            skip_reason(&L, &cr, plan.skipped[i], &why);
            buf_append_str(&o, i ? ",{\"model\":" : "{\"model\":");
            put_jstr(&o, L.models[plan.skipped[i]].name);
            buf_append_str(&o, ",\"param\":");
            put_jstr(&o, why.param);
            buf_append_str(&o, ",\"reason\":");
            put_jstr(&o, why.brief);
            buf_append_char(&o, '}');
        }
        buf_append_str(&o, "]}\n");
        fwrite(o.data, 1, o.len, stdout);
        buf_free(&o);
    } else {
        printf("request   model %s, task %s%s, tier header %s\n", pr.model,
               pr.task ? pr.task : "(none)",
               task_h[0] ? " (x-bridle-task)"
               : pr.task ? " (metadata.task)"
                         : "",
               pr.tier_header ? pr.tier_header : "(none)");
        printf("prompt    %lld tokens (estimated from %lld characters at 4 a token)\n",
               (long long)plan.est_prompt_tokens, (long long)pr.prompt_chars);
        if (plan.output_capped && client_max_tokens >= 0)
            printf("output    max_tokens %lld (the task's cap, bounding the request's %lld)\n",
                   (long long)plan.max_tokens_applied, (long long)client_max_tokens);
        else if (plan.output_capped)
            printf("output    max_tokens %lld (the task's cap: the request set none)\n",
                   (long long)plan.max_tokens_applied);
        else if (plan.max_tokens_applied >= 0 && task_cap < 0)
            printf("output    max_tokens %lld (the request's own; no cap for the task)\n",
                   (long long)plan.max_tokens_applied);
        else if (plan.max_tokens_applied >= 0 && plan.max_tokens_applied <= task_cap)
            printf("output    max_tokens %lld (the request's own, within the task's cap of %lld)\n",
                   (long long)plan.max_tokens_applied, (long long)task_cap);
        else if (plan.max_tokens_applied >= 0)
            printf("output    max_tokens %lld (the request's own: the task's cap of %lld only "
                   "fills in a missing one, \"cap\": \"default\")\n",
                   (long long)plan.max_tokens_applied, (long long)task_cap);
        else
            printf("output    no max_tokens (none in the request, no cap for the task)\n");
        printf("estimate  %lld tokens in + %lld tokens out (%s)\n",
               (long long)plan.est_prompt_tokens, (long long)plan.est_output_tokens, out_from);
        if (thinking)
            printf("thinking  budget %lld tokens (the task's cap), sent to the models that "
                   "reason in their own form\n",
                   (long long)plan.thinking_cap);
        else if (plan.thinking_cap > 0)
            printf("thinking  budget %lld tokens (the task's cap), not sent: the request sets its "
                   "own reasoning control\n",
                   (long long)plan.thinking_cap);
        if (cr.reasoning_set)
            printf("thinking  the request's own reasoning control, in each model's form\n");
        printf("rule      %s\n", plan.rule);
        printf("plan\n");
        for (int i = 0; i < plan.n; i++) {
            const policy_candidate *k = &plan.cand[i];
            int64_t in = policy_estimate_cost_pusd(L.models[k->model_index].price,
                                                   plan.est_prompt_tokens, 0);
            char ins[48], outs[48];
            printf("  %d. %-22s %-7s est $%-12s (in $%s + out $%s)  %s\n", i + 1,
                   L.models[k->model_index].name, pricing_tier_name(k->tier),
                   usd(k->est_cost_pusd, 8, a, sizeof a), usd(in, 8, ins, sizeof ins),
                   usd(k->est_cost_pusd - in, 8, outs, sizeof outs), k->reason);
            if (shown) printf("     thinking: %s\n", sent[i][0] ? sent[i] : "none");
        }
        print_skipped(stdout, &L, &cr, &plan);
        printf("cost      est $%s on %s", usd(plan.est_cost_pusd, 8, a, sizeof a),
               L.models[plan.cand[0].model_index].name);
        if (base)
            printf("; baseline %s $%s; saves $%s", base,
                   usd(plan.baseline_cost_pusd, 8, b2, sizeof b2),
                   usd(plan.baseline_cost_pusd - plan.est_cost_pusd, 8, c2, sizeof c2));
        printf("\n");
        printf("batch     %s\n", plan.batch_eligible ? "eligible" : "no");
        if (plan.downgraded)
            printf("budget    downgraded (spend %d%% of the %s budget)\n", spend,
                   pr.team_budget ? "team's" : "key's");
    }
    rc = 0;
out:
    jdoc_free(&doc);
    buf_free(&strings);
    free(body);
    unload(&L);
    return rc;
}

/* ------------------------------------------------------------ simulate */

static int simulate_usage(FILE *f, int code)
{
    fprintf(
        f,
        "usage: bridle simulate --config FILE --workload FILE.jsonl [--baseline MODEL] "
        "[--json]\n"
        "  Routes every line of a workload with the config's policy (no calls) and prints the\n"
        "  projected cost per week, day and month (30 days) against the baseline model, by\n"
        "  task and by model. A line: {\"task\": \"classify\", \"tier\": \"budget\", "
        "\"model\": \"auto\",\n"
        "  \"prompt_tokens\": 500 or \"prompt\": \"text\", \"output_tokens\": 10, \"count\": "
        "2000,\n"
        "  \"per\": \"day\" | \"week\", \"batch\": true, \"cached_prefix_tokens\": 2000}. "
        "Baseline:\n"
        "  --baseline, else $.routing.baseline, else the most expensive model of the heavy "
        "tier.\n"
        "  \"batch\": true lines can wait: they are priced at the model's batch discount when\n"
        "  its provider has a batch API (providers.NAME.batch), else at the live price (bridle's\n"
        "  local queue). Lines with cached_prefix_tokens (a stable prefix, e.g. the system\n"
        "  prompt) are also priced with the provider's prompt cache: reads at the cached rate,\n"
        "  one write a day while requests come at least once per cache TTL, else a write every\n"
        "  request. Savings are split in that order: routing, then batching, then caching.\n");
    return code;
}

typedef __int128 wide;

static int64_t sat(wide v)
{
    return v > INT64_MAX ? INT64_MAX : v < INT64_MIN ? INT64_MIN : (int64_t)v;
}

/* num / den rounded half away from zero (den > 0). */
static int64_t div_round(wide num, wide den)
{
    return sat(num >= 0 ? (num * 2 + den) / (den * 2) : -((-num * 2 + den) / (den * 2)));
}

/* One line's week, or a group's, exact. Each price applies on top of the
 * one before it, so the savings split without overlap: baseline -> routed
 * (routing), routed -> batched (batching), batched -> cached (caching). */
typedef struct week_cost {
    int64_t requests;       /* per week */
    int64_t batch_requests; /* per week, sent through a provider's batch API */
    wide baseline;          /* everything on the baseline model, live */
    wide routed;            /* the routed model, live */
    wide batched;           /* routed, the batch lines at the batch price */
    wide cached;            /* batched, read from the prompt cache where a line has a prefix */
} week_cost;

typedef struct tally {
    char name[64];
    week_cost c;
} tally;

typedef struct tallies {
    tally *t;
    int n, cap;
} tallies;

static tally *tally_of(tallies *ts, const char *name)
{
    for (int i = 0; i < ts->n; i++)
        if (strcmp(ts->t[i].name, name) == 0) return &ts->t[i];
    if (ts->n == ts->cap) {
        ts->cap = ts->cap ? ts->cap * 2 : 16;
        ts->t = realloc(ts->t, sizeof *ts->t * (size_t)ts->cap);
        if (!ts->t) abort();
    }
    tally *t = &ts->t[ts->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    return t;
}

static void week_add(week_cost *to, const week_cost *c)
{
    to->requests += c->requests;
    to->batch_requests += c->batch_requests;
    to->baseline += c->baseline;
    to->routed += c->routed;
    to->batched += c->batched;
    to->cached += c->cached;
}

/* The shortest prefix a provider caches: the price table's figure, else
 * 1,024 tokens where the model has a cached rate at all (OpenAI's and
 * Gemini Flash's published minimum), else none. */
static int64_t min_cache_tokens(const model_price *p)
{
    if (p->min_cache_tokens > 0) return p->min_cache_tokens;
    return p->cached_input > 0 && p->cached_input < p->input ? 1024 : 0;
}

/* A week of `weekly` requests of (in, out) tokens whose first `prefix`
 * tokens are the same each time, priced with the provider's prompt cache
 * (and its batch discount when `batch`): a warm request reads the prefix
 * at the cached rate; a write pays the write rate (Anthropic 1.25x or 2x
 * input, others input). Uniform arrivals keep the cache warm when they
 * come at least once per TTL (one write a day, the cold start), else every
 * request writes; batch lines are counted the same way (the providers
 * promise no cache hits inside a batch). Without a prefix the cache can
 * take, the plain cost. */
static wide cached_week(const model_price *p, bool one_hour, int64_t in, int64_t out,
                        int64_t prefix, int64_t weekly, bool batch)
{
    usage_record plain = {.input_uncached = in, .output = out};
    if (prefix <= 0 || prefix < min_cache_tokens(p) || prefix > in)
        return (wide)pricing_cost_pusd(p, &plain, batch) * weekly;
    usage_record warm = {.input_uncached = in - prefix, .cache_read = prefix, .output = out};
    usage_record cold = {.input_uncached = in - prefix, .output = out};
    if (one_hour)
        cold.cache_write_1h = prefix;
    else
        cold.cache_write_5m = prefix;
    int64_t gap_s = weekly > 0 ? 7 * 86400 / weekly : 0, ttl_s = one_hour ? 3600 : 300;
    int64_t writes = gap_s <= ttl_s ? (weekly < 7 ? weekly : 7) : weekly; /* per week */
    return (wide)pricing_cost_pusd(p, &warm, batch) * (weekly - writes) +
           (wide)pricing_cost_pusd(p, &cold, batch) * writes;
}

/* Per day and per month (30 days) from a weekly amount, rounded half up. */
static int64_t per_day(wide week)
{
    return div_round(week, 7);
}

static int64_t per_month(wide week)
{
    return div_round(week * 30, 7);
}

static void json_money(buf *o, const char *key, wide week)
{
    buf_printf(o, "\"%s\":{\"per_week_pusd\":%lld,\"per_day_pusd\":%lld,\"per_month_pusd\":%lld}",
               key, (long long)sat(week), (long long)per_day(week), (long long)per_month(week));
}

typedef struct wl_line {
    const char *task, *tier, *model, *prompt;
    int64_t prompt_tokens, output_tokens, count, cached_prefix_tokens;
    bool weekly, batch;
} wl_line;

/* Reads one workload line into *w (strings point into obj). */
static bool parse_line(json_object *obj, wl_line *w, char *err, size_t errlen)
{
    memset(w, 0, sizeof *w);
    w->prompt_tokens = w->output_tokens = -1;
    w->count = 1;
    if (!json_object_is_type(obj, json_type_object)) {
        snprintf(err, errlen, "expected a JSON object per line");
        return false;
    }
    json_object_object_foreach(obj, key, v)
    {
        bool is_str = json_object_is_type(v, json_type_string);
        bool is_int = json_object_is_type(v, json_type_int);
        const char *s = is_str ? json_object_get_string(v) : NULL;
        int64_t n = is_int ? json_object_get_int64(v) : -1;
        if (strcmp(key, "task") == 0 && is_str && *s)
            w->task = s;
        else if (strcmp(key, "tier") == 0 && is_str && *s)
            w->tier = s;
        else if (strcmp(key, "model") == 0 && is_str && *s)
            w->model = s;
        else if (strcmp(key, "prompt") == 0 && is_str)
            w->prompt = s;
        else if (strcmp(key, "note") == 0 && is_str)
            ;
        else if (strcmp(key, "prompt_tokens") == 0 && is_int && n >= 0 && n <= 100000000)
            w->prompt_tokens = n;
        else if (strcmp(key, "output_tokens") == 0 && is_int && n >= 0 && n <= 100000000)
            w->output_tokens = n;
        else if (strcmp(key, "count") == 0 && is_int && n >= 1 && n <= 1000000000)
            w->count = n;
        else if (strcmp(key, "cached_prefix_tokens") == 0 && is_int && n >= 0 && n <= 100000000)
            w->cached_prefix_tokens = n;
        else if (strcmp(key, "per") == 0 && is_str &&
                 (strcmp(s, "day") == 0 || strcmp(s, "week") == 0))
            w->weekly = strcmp(s, "week") == 0;
        else if (strcmp(key, "batch") == 0 && json_object_is_type(v, json_type_boolean))
            w->batch = json_object_get_boolean(v);
        else {
            static const char *const known[] = {
                "task",          "tier",  "model", "prompt", "prompt_tokens",
                "output_tokens", "count", "per",   "note",   "cached_prefix_tokens",
                "batch",         NULL};
            bool k = false;
            for (const char *const *p = known; *p && !k; p++)
                k = strcmp(*p, key) == 0;
            if (!k)
                snprintf(err, errlen,
                         "\"%s\": unknown key (expected task, tier, model, prompt_tokens or "
                         "prompt, output_tokens, count, per, batch, cached_prefix_tokens, note)",
                         key);
            else
                snprintf(err, errlen, "\"%s\": %s (got %s)", key,
                         strcmp(key, "per") == 0     ? "expected \"day\" or \"week\""
                         : strcmp(key, "count") == 0 ? "expected an integer from 1"
                         : strcmp(key, "batch") == 0 ? "expected true or false"
                         : is_str || strcmp(key, "prompt_tokens") == 0 ||
                                 strcmp(key, "output_tokens") == 0 ||
                                 strcmp(key, "cached_prefix_tokens") == 0
                             ? "expected a non-negative integer"
                             : "expected a non-empty string",
                         json_object_to_json_string(v));
            return false;
        }
    }
    if ((w->prompt_tokens >= 0) == (w->prompt != NULL)) {
        snprintf(err, errlen, "give either \"prompt_tokens\" or \"prompt\" (exactly one)");
        return false;
    }
    return true;
}

/* Whether a line's requests would go through a provider's batch API: it is
 * marked "batch" and the model's provider has one (providers.NAME.batch,
 * openai, anthropic and gemini dialects). Otherwise bridle runs batch lines
 * from its local queue at the live price; *why says so ("" when batched or
 * not marked). */
static bool line_batched(const wl_line *w, const model_conf *mc, char *why, size_t n)
{
    const provider_conf *p = mc ? mc->target.provider : NULL;
    why[0] = '\0';
    if (!w->batch) return false;
    if (p && p->batch) return true;
    if (!p)
        snprintf(why, n, "%s has no enabled provider", mc ? mc->name : "the model");
    else if (provider_batch_supported(p))
        snprintf(why, n,
                 "%s is served by %s, which has no \"batch\": true (providers.%s.batch): its "
                 "lines run from bridle's local queue at the live price",
                 mc->name, p->name, p->name);
    else
        snprintf(why, n,
                 "%s is served by %s (%s), which has no batch API bridle speaks: its lines run "
                 "from the local queue at the live price",
                 mc->name, p->name, p->ops->kind);
    return false;
}

/* What the simulation adds up. */
typedef struct sim {
    loaded L;
    int base; /* the baseline model's index, or -1 */
    tallies by_task, by_model;
    week_cost total;
    buf routes; /* the "routes" JSON array's members */
    buf notes;  /* text lines: batch lines priced live, and why */
    int n_lines;
    bool any_prefix; /* some line declares cached_prefix_tokens */
    bool any_batch;  /* some line is marked "batch" */
} sim;

/* Routes and prices one parsed line (lineno for messages); false with
 * *err set when the policy refuses it. */
static bool sim_line(sim *S, const wl_line *w, int lineno, char *err, size_t errlen)
{
    loaded *L = &S->L;
    policy_request pr = {.model = w->model ? w->model : "auto",
                         .task = w->task,
                         .tier_header = w->tier,
                         .prompt_chars =
                             w->prompt ? (int64_t)strlen(w->prompt) : w->prompt_tokens * 4,
                         .max_tokens = w->output_tokens,
                         .spend_share_pct = -1};
    static int route_idx[MAX_MODELS];
    route_of(L, pr.model, &pr, route_idx);
    policy_plan plan;
    if (policy_plan_request(L->pol, L->models, L->n_models, &pr, &plan, err, errlen) != POLICY_OK)
        return false;
    int64_t in = w->prompt ? plan.est_prompt_tokens : w->prompt_tokens;
    int64_t out = plan.est_output_tokens; /* max_tokens after the cap, else typical */
    const policy_model *m = &L->models[plan.cand[0].model_index];
    const model_conf *mc = config_find_model(L->cfg, m->name);
    char why[256];
    bool batched = line_batched(w, mc, why, sizeof why);
    bool one_hour = mc && mc->target.provider && mc->target.provider->prompt_cache_1h;
    usage_record plain = {.input_uncached = in, .output = out};
    int64_t unit = policy_estimate_cost_pusd(m->price, in, out);
    int64_t batch_unit = batched ? pricing_cost_pusd(m->price, &plain, true) : unit;
    int64_t base_unit =
        S->base >= 0 ? policy_estimate_cost_pusd(L->models[S->base].price, in, out) : 0;
    int64_t weekly = w->count * (w->weekly ? 1 : 7);
    week_cost c = {.requests = weekly,
                   .batch_requests = batched ? weekly : 0,
                   .baseline = (wide)base_unit * weekly,
                   .routed = (wide)unit * weekly,
                   .batched = (wide)batch_unit * weekly,
                   .cached = cached_week(m->price, one_hour, in, out, w->cached_prefix_tokens,
                                         weekly, batched)};
    S->n_lines++;
    S->any_prefix |= w->cached_prefix_tokens > 0;
    S->any_batch |= w->batch;
    week_add(&tally_of(&S->by_task, w->task ? w->task : "(no task)")->c, &c);
    week_add(&tally_of(&S->by_model, m->name)->c, &c);
    week_add(&S->total, &c);
    if (why[0]) buf_printf(&S->notes, "note      line %d is marked batch, but %s\n", lineno, why);

    buf *r = &S->routes;
    buf_printf(r, "%s{\"line\":%d,\"task\":", S->n_lines > 1 ? "," : "", lineno);
    put_jstr(r, w->task);
    buf_printf(r,
               ",\"model\":\"%s\",\"tier\":\"%s\",\"prompt_tokens\":%lld,"
               "\"output_tokens\":%lld,\"requests_per_week\":%lld,\"unit_cost_pusd\":%lld,"
               "\"baseline_unit_cost_pusd\":%lld,\"batch\":%s,\"batched\":%s,"
               "\"batch_unit_cost_pusd\":%lld,\"batch_priced_live\":",
               m->name, pricing_tier_name(plan.tier), (long long)in, (long long)out,
               (long long)weekly, (long long)unit, (long long)base_unit,
               w->batch ? "true" : "false", batched ? "true" : "false", (long long)batch_unit);
    put_jstr(r, why[0] ? why : NULL);
    buf_append_str(r, ",\"rule\":");
    put_jstr(r, plan.rule);
    buf_append_str(r, "}");
    return true;
}

/* Reads the workload and runs every line; 0, or 1 after printing why. */
static int sim_workload(sim *S, const char *wl_path)
{
    char err[1024];
    size_t len;
    char *text = read_file(wl_path, &len, err, sizeof err);
    if (!text) {
        fprintf(stderr, "bridle simulate: %s\n", err);
        return 1;
    }
    int rc = 0, lineno = 0;
    for (char *line = text, *next; line && *line && rc == 0; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        lineno++;
        char *p = line;
        while (*p == ' ' || *p == '\t' || *p == '\r')
            p++;
        if (!*p) continue;
        json_object *obj = json_tokener_parse(p);
        wl_line w;
        if (!obj) {
            fprintf(stderr, "bridle simulate: %s:%d: not valid JSON\n", wl_path, lineno);
            rc = 1;
        } else if (!parse_line(obj, &w, err, sizeof err) ||
                   !sim_line(S, &w, lineno, err, sizeof err)) {
            fprintf(stderr, "bridle simulate: %s:%d: %s\n", wl_path, lineno, err);
            rc = 1;
        }
        json_object_put(obj);
    }
    if (rc == 0 && S->n_lines == 0) {
        fprintf(stderr, "bridle simulate: %s: no workload lines\n", wl_path);
        rc = 1;
    }
    free(text);
    return rc;
}

/* "savings_by": what routing, batching and caching each take off, in that
 * order (their sum is baseline - cached). */
static void json_savings_by(buf *o, const week_cost *c)
{
    buf_append_str(o, ",\"savings_by\":{");
    json_money(o, "routing", c->baseline - c->routed);
    buf_append_str(o, ",");
    json_money(o, "batching", c->routed - c->batched);
    buf_append_str(o, ",");
    json_money(o, "caching", c->batched - c->cached);
    buf_append_str(o, "}");
}

/* The money of one group (the whole workload or one task or model). */
static void json_week(buf *o, const sim *S, const week_cost *c)
{
    buf_printf(o, "\"requests_per_week\":%lld,\"batch_requests_per_week\":%lld,",
               (long long)c->requests, (long long)c->batch_requests);
    json_money(o, "routed", c->routed);
    buf_append_str(o, ",");
    json_money(o, "baseline", c->baseline);
    if (S->any_batch) {
        buf_append_str(o, ",");
        json_money(o, "routed_with_batch", c->batched);
    }
    if (S->any_prefix) {
        buf_append_str(o, ",");
        json_money(o, "routed_with_prompt_cache", c->cached);
    }
    buf_append_str(o, ",");
    json_money(o, "projected", c->cached);
    json_savings_by(o, c);
}

static void print_json(const sim *S, const char *cfg_path, const char *wl_path,
                       const char *base_name, const char *base_from)
{
    buf o = BUF_INIT;
    buf_append_str(&o, "{\"config\":");
    put_jstr(&o, cfg_path);
    buf_append_str(&o, ",\"workload\":");
    put_jstr(&o, wl_path);
    buf_append_str(&o, ",\"baseline_model\":");
    put_jstr(&o, base_name);
    buf_append_str(&o, ",\"baseline_from\":");
    put_jstr(&o, base_name ? base_from : NULL);
    buf_printf(&o, ",\"lines\":%d,", S->n_lines);
    json_week(&o, S, &S->total);
    buf_append_str(&o, ",");
    json_money(&o, "savings", S->total.baseline - S->total.routed);
    for (int k = 0; k < 2; k++) {
        const tallies *ts = k ? &S->by_model : &S->by_task;
        buf_printf(&o, ",\"%s\":[", k ? "by_model" : "by_task");
        for (int i = 0; i < ts->n; i++) {
            buf_printf(&o, "%s{\"%s\":", i ? "," : "", k ? "model" : "task");
            put_jstr(&o, ts->t[i].name);
            buf_append_str(&o, ",");
            json_week(&o, S, &ts->t[i].c);
            buf_append_str(&o, "}");
        }
        buf_append_str(&o, "]");
    }
    buf_append_str(&o, ",\"routes\":[");
    buf_append(&o, S->routes.data ? S->routes.data : "", S->routes.len);
    buf_append_str(&o, "]}\n");
    fwrite(o.data, 1, o.len, stdout);
    buf_free(&o);
}

/* One table row; the batch and cache columns only when the workload uses them. */
static void print_tally_row(const sim *S, const tally *t, bool with_baseline)
{
    const week_cost *c = &t->c;
    char w[48], d[48], m[48], bm[48], bs[48], cs[48];
    printf("  %-24s %9lld  %14s %14s %14s", t->name, (long long)c->requests,
           usd(sat(c->routed), 6, w, sizeof w), usd(per_day(c->routed), 6, d, sizeof d),
           usd(per_month(c->routed), 6, m, sizeof m));
    if (with_baseline) printf(" %15s", usd(per_month(c->baseline), 6, bm, sizeof bm));
    if (S->any_batch)
        printf(" %11lld %18s", (long long)c->batch_requests,
               usd(per_month(c->routed - c->batched), 6, bs, sizeof bs));
    if (S->any_prefix) printf(" %17s", usd(per_month(c->batched - c->cached), 6, cs, sizeof cs));
    printf("\n");
}

static void print_table_head(const sim *S, const char *what, bool with_baseline)
{
    printf("\n  %-24s %9s  %14s %14s %14s", what, "req/week", "routed/week", "routed/day",
           "routed/month");
    if (with_baseline) printf(" %15s", "baseline/month");
    if (S->any_batch) printf(" %11s %18s", "batch/week", "batching saves/mo");
    if (S->any_prefix) printf(" %17s", "caching saves/mo");
    printf("\n");
}

static void print_total(const char *label, wide week, const char *tail)
{
    char a[48], b[48], c[48];
    printf("%s $%s/week  $%s/day  $%s/month%s\n", label, usd(sat(week), 6, a, sizeof a),
           usd(per_day(week), 6, b, sizeof b), usd(per_month(week), 6, c, sizeof c), tail);
}

/* "$1.500000", or "-$1.500000" for a saving that costs (a prompt cache
 * written more often than read). */
static const char *dollars(int64_t pusd, char *out, size_t n)
{
    char v[48];
    usd(pusd < 0 ? -pusd : pusd, 6, v, sizeof v);
    snprintf(out, n, "%s$%s", pusd < 0 ? "-" : "", v);
    return out;
}

/* "12.3%" of whole (one decimal, truncated), "0.0%" when whole is 0. */
static const char *share(wide part, wide whole, char *out, size_t n)
{
    int64_t bp = whole > 0 ? (int64_t)(part * 1000 / whole) : 0;
    snprintf(out, n, "%s%lld.%lld%%", bp < 0 && bp > -10 ? "-" : "", (long long)(bp / 10),
             (long long)(bp < 0 ? -bp % 10 : bp % 10));
    return out;
}

static void print_text(const sim *S, const char *cfg_path, const char *wl_path,
                       const char *base_name, const char *base_from)
{
    const week_cost *T = &S->total;
    char a[64], b[64], c[64], d[64], p[32], tail[192];
    printf("workload  %s: %d lines, %lld requests a week\n", wl_path, S->n_lines,
           (long long)T->requests);
    printf("config    %s\n", cfg_path);
    if (base_name)
        printf("baseline  %s (%s)\n", base_name, base_from);
    else
        printf("baseline  none (no heavy model and no $.routing.baseline)\n");
    print_table_head(S, "by task", true);
    for (int i = 0; i < S->by_task.n; i++)
        print_tally_row(S, &S->by_task.t[i], true);
    print_table_head(S, "by model", false);
    for (int i = 0; i < S->by_model.n; i++)
        print_tally_row(S, &S->by_model.t[i], false);
    printf("\n");
    if (S->notes.len) printf("%s\n", S->notes.data);
    print_total("routed   ", T->routed, "");
    if (base_name) {
        snprintf(tail, sizeof tail, "  (everything on %s)", base_name);
        print_total("baseline ", T->baseline, tail);
        wide saved = T->baseline - T->routed;
        printf("savings   $%s/month (%s)\n", usd(per_month(saved < 0 ? 0 : saved), 6, d, sizeof d),
               share(saved, T->baseline, p, sizeof p));
    }
    if (S->any_batch) {
        snprintf(tail, sizeof tail,
                 "  (routed; %lld requests a week through a provider's batch API at its discount)",
                 (long long)T->batch_requests);
        print_total("with batching ", T->batched, tail);
    }
    if (S->any_prefix)
        print_total("with the prompt cache ", T->cached,
                    S->any_batch ? "  (routed and batched, the lines' cached_prefix_tokens read "
                                   "from the provider's cache)"
                                 : "  (routed, the lines' cached_prefix_tokens read from the "
                                   "provider's cache)");
    if (base_name && (S->any_batch || S->any_prefix))
        printf("saved     %s/month by routing, %s by batching, %s by caching: %s/month in all "
               "(%s of the baseline)\n",
               dollars(per_month(T->baseline - T->routed), a, sizeof a),
               dollars(per_month(T->routed - T->batched), b, sizeof b),
               dollars(per_month(T->batched - T->cached), c, sizeof c),
               dollars(per_month(T->baseline - T->cached), d, sizeof d),
               share(T->baseline - T->cached, T->baseline, p, sizeof p));
}

int simulate_main(int argc, char **argv)
{
    static const char *const with_value[] = {"--config", "--workload", "--baseline", NULL};
    static const char *const bare[] = {"--json", "--help", "-h", NULL};
    if (arg_flag(argc, argv, "--help") || arg_flag(argc, argv, "-h"))
        return simulate_usage(stdout, 0);
    if (!args_valid("simulate", argc, argv, with_value, bare)) return simulate_usage(stderr, 2);
    const char *cfg_path = arg_value(argc, argv, "--config");
    if (!cfg_path) cfg_path = getenv("BRIDLE_CONFIG");
    if (!cfg_path) cfg_path = "config/bridle.json";
    const char *wl_path = arg_value(argc, argv, "--workload");
    if (!wl_path) {
        fprintf(stderr, "bridle simulate: --workload FILE.jsonl is required\n");
        return simulate_usage(stderr, 2);
    }
    sim S;
    memset(&S, 0, sizeof S);
    if (!load_all("simulate", cfg_path, &S.L)) {
        unload(&S.L);
        return 1;
    }
    S.base = policy_baseline_index(S.L.pol);
    const char *base_from = "the most expensive model of the heavy tier";
    json_object *rb;
    if (S.L.routing && json_object_object_get_ex(S.L.routing, "baseline", &rb))
        base_from = "$.routing.baseline";
    const char *flag = arg_value(argc, argv, "--baseline");
    if (flag) {
        S.base = find_model(&S.L, flag);
        base_from = "--baseline";
        if (S.base < 0) {
            fprintf(stderr, "bridle simulate: --baseline %s: no such model in %s\n", flag,
                    cfg_path);
            unload(&S.L);
            return 2;
        }
    }
    int rc = sim_workload(&S, wl_path);
    const char *base_name = S.base >= 0 ? S.L.models[S.base].name : NULL;
    if (rc == 0 && arg_flag(argc, argv, "--json"))
        print_json(&S, cfg_path, wl_path, base_name, base_from);
    else if (rc == 0)
        print_text(&S, cfg_path, wl_path, base_name, base_from);
    buf_free(&S.routes);
    buf_free(&S.notes);
    free(S.by_task.t);
    free(S.by_model.t);
    unload(&S.L);
    return rc;
}
