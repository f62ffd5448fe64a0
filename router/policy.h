/* Routing policy: which models may answer a request, cheapest first.
 *
 * A policy is data. policy_new() reads the config's "routing" object
 * (docs: design.md "Configuration", issue 5) against the model table and
 * keeps only indices into that table; policy_plan_request() then turns one
 * request into an ordered candidate list without any I/O, clock or
 * allocation, so the attempt loop can walk it (fail over, cascade) without
 * knowing which rule built it.
 *
 * Pure: no config, provider or network dependency. The caller (the request
 * path, or the `route` / `simulate` CLIs in cli/route.c) passes the
 * model table, with each model's live state (enabled, healthy, busy), on
 * every call: the same array, in the same order, as given to policy_new().
 *
 * The "routing" object (every key optional; defaults in brackets):
 *
 *   default_tier      tier for a request with neither task nor tier ["mid"]
 *   tasks             {task: tier} [classify, summarize, extract, format,
 *                     translate → budget; code_gen, analysis, draft_writing,
 *                     code_review → mid; agent_orchestration,
 *                     complex_reasoning, architecture → heavy]
 *   tiers             {tier: [model, ...]}; when absent, each tier is the
 *                     models whose price-table tier it is, in table order;
 *                     when present, a tier it does not list is empty
 *   prefer_local      local models first in a tier when not busy [true]
 *   output_caps       {task: cap}; a cap is N (max output tokens) or
 *                     {"max": N, "cap": "bound" | "default"}. "bound" (and
 *                     a bare N): the request's max_tokens is lowered to N
 *                     when higher, and set to N when absent. "default": N
 *                     only fills in a missing max_tokens. A route of
 *                     $.routes with "cap": "default" makes every cap
 *                     "default" for its requests. policy_output_cap()
 *                     computes it, for every plan: auto, tier:NAME, a
 *                     named model, a route (docs/config.md "Output caps")
 *   default_output_cap  the cap (same forms) for requests whose task has
 *                     none in output_caps, and for requests with no task
 *                     [none]
 *   typical_output    {task: tokens}: how long the task's answers usually
 *                     are; prices the output side of a request that has no
 *                     max_tokens after capping [none]
 *   default_typical_output  the same for a task not in typical_output
 *                     [POLICY_DEFAULT_TYPICAL_OUTPUT, 500]
 *   thinking_caps     {task: reasoning-token budget}; the server sends it to
 *                     the models that reason, each dialect in its own form
 *                     (canon_request.thinking_budget, docs/config.md)
 *   cascade           {enabled [true when the object is present],
 *                      checks [length, json, uncertain, empty],
 *                      uncertain_marker ["UNCERTAIN"],
 *                      escalate_to {tier: tier} [local→budget, budget→mid,
 *                      mid→heavy, each only when the target has models],
 *                      streams [true]: cascade streamed requests too, holding
 *                      a cheaper tier's stream back until it passed}
 *                     escalate_to also orders the fallback tiers appended
 *                     to a plan, whether or not the cascade is enabled
 *   budget_downgrade  {share_pct, to_tier}: at spend ≥ share_pct % of the
 *                     budget, the to_tier's candidates replace the plan
 *   batch_tasks       [task, ...] marked batch-eligible
 *   baseline          the model savings are measured against [the most
 *                     expensive model (input + output price) of the heavy
 *                     tier; else of all tiers]
 *
 * Tier names are the model_tier names of providers/pricing.h: local, budget,
 * mid, heavy. */
#ifndef BRIDLE_POLICY_H
#define BRIDLE_POLICY_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "providers/pricing.h"

#define POLICY_MAX_CAND 8
#define POLICY_MAX_SKIPPED 16
/* default_typical_output when the config gives none: a typical chat answer. */
#define POLICY_DEFAULT_TYPICAL_OUTPUT 500

typedef struct policy policy;

/* One model as the router sees it. `price` must stay valid while the policy
 * is used (the config owns it). */
typedef struct policy_model {
    const char *name;
    const model_price *price;
    int64_t context_window; /* tokens; 0 = unknown, assumed to fit */
    model_tier tier;        /* from the price card; used when $.routing.tiers is absent */
    bool enabled;           /* a provider serving it is configured */
    bool healthy;           /* its breaker admits calls */
    bool busy;              /* local host at its concurrency limit */
    bool local;             /* served on this machine (Ollama, LM Studio) */
    unsigned caps;          /* what it can do (CAP_* of providers/params.h) */
    int dialect;            /* its dialect's index in provider_all(); -1 unknown */
} policy_model;

/* One request, as far as routing cares. */
typedef struct policy_request {
    const char *model;       /* as asked: a concrete model, "auto" or "tier:NAME"; NULL = "auto" */
    const char *task;        /* metadata.task or x-bridle-task, or NULL */
    const char *tier_header; /* x-bridle-tier, or NULL */
    int64_t prompt_chars;    /* characters of message text (estimate: ceil(chars / 4) tokens) */
    int64_t max_tokens;      /* the request's own output limit; -1 none */
    bool json_mode;          /* response_format json_object / json_schema */
    int spend_share_pct;     /* key's or team's spend as % of its budget; -1 unknown */
    bool team_budget;        /* spend_share_pct is the team's (x-bridle-route says so) */
    /* A route of $.routes the request names (model is its name), or NULL;
     * its candidates as indices into the model table, in its order. */
    const char *route;
    const int *route_models;
    int n_route_models;
    bool route_cap_default; /* the route says "cap": "default" */
    /* What the request asks of a model (providers/params.h): the
     * capabilities it needs, and the dialects (bit i: provider_all()[i])
     * that refuse one of its parameters. A model lacking one, or of such a
     * dialect, is skipped (policy_plan.skipped). */
    unsigned needs;
    unsigned refused_dialects;
} policy_request;

typedef struct policy_candidate {
    int model_index;       /* into the model table */
    model_tier tier;       /* the tier it was taken from (the model's own for a concrete one) */
    int64_t est_cost_pusd; /* estimated prompt + output at this model's prices */
    char reason[96];       /* why it is here, in words */
} policy_candidate;

typedef struct policy_plan {
    int n;
    policy_candidate cand[POLICY_MAX_CAND];
    int n_primary; /* cand[0..n_primary) are the chosen tier's (or the named model, or the
                      downgrade tier's); the rest are escalation tiers, then busy local models */
    int64_t max_tokens_applied; /* the max_tokens to send: policy_output_cap() of the
                                   request's own; -1 none */
    bool output_capped;         /* the policy set it or lowered it (differs from the request's) */
    int64_t thinking_cap;       /* reasoning-token budget for the task; -1 none */
    int64_t est_prompt_tokens;
    int64_t est_output_tokens; /* the output priced: max_tokens_applied, else the task's
                                  typical output + its thinking cap */
    bool estimated;            /* est_prompt_tokens is the chars/4 estimate (always, for now) */
    model_tier tier;           /* the tier chosen (after a downgrade) */
    bool batch_eligible;
    bool downgraded;                 /* the budget downgrade replaced the plan */
    char rule[128];                  /* which rule chose, in words (x-bridle-route) */
    int64_t est_cost_pusd;           /* cand[0]'s estimate */
    int baseline_index;              /* -1 when the policy has no baseline */
    int64_t baseline_cost_pusd;      /* the same tokens at the baseline's prices; 0 without one */
    int n_skipped;                   /* models left out because they cannot take the request */
    int skipped[POLICY_MAX_SKIPPED]; /* their indices, in the order met (the first 16) */
} policy_plan;

typedef enum {
    POLICY_OK = 0,
    POLICY_UNKNOWN_MODEL, /* a concrete model not in the table: 404 model_not_found */
    POLICY_BAD_TIER,      /* "tier:NAME" or x-bridle-tier names no tier: 400 */
    POLICY_NO_CANDIDATE,  /* nothing enabled, healthy and big enough: 503 */
    POLICY_UNFIT,         /* every candidate left was skipped: none can take the request
                             (policy_request.needs / refused_dialects): 400 */
} policy_result;

/* Reads `routing` (NULL: every default) against models[0..n_models).
 * Returns NULL with a message naming the JSON path in err, e.g.
 * "$.routing.tiers.budget[1]: no model named \"x\" in $.models". Config
 * errors: an unknown key or tier, a tier listing an unknown model, a task,
 * default_tier, escalate_to target or to_tier with no models, a cycle in
 * escalate_to, a cap that is not a positive integer. The policy copies what
 * it keeps; `routing` and the names may be freed afterwards, the prices
 * may not. */
policy *policy_new(json_object *routing, const policy_model *models, int n_models, char *err,
                   size_t errlen);
void policy_free(policy *p);

/* Plans `req`. models must be the table given to policy_new (same order and
 * length) with current enabled / healthy / busy flags. Fills *out (always:
 * on an error, n = 0) and returns POLICY_OK, or an error with a message in
 * err ("no model named \"x\"", "x-bridle-tier: unknown tier ...", ...).
 *
 * The rules, in order:
 *  1. Output cap: policy_output_cap(task, route_cap_default, max_tokens).
 *     Prompt: ceil(prompt_chars / 4) tokens, marked estimated. Output: the
 *     max_tokens to send, else typical_output[task] (else
 *     default_typical_output) plus the task's thinking cap. Costs (input
 *     tokens × input price + output tokens × output price, integer
 *     pico-dollars) and context fit are estimated for that prompt and
 *     output.
 *  2. A route (req->route) is its enabled candidates in its order, never
 *     downgraded (as the server plans it).
 *     A concrete model is honoured: the plan is that model alone.
 *     "auto" takes the tier from x-bridle-tier, else from tasks[task], else
 *     default_tier (an explicit tier wins over the task's). "tier:NAME"
 *     takes NAME.
 *  3. Candidates: the tier's models that are enabled, healthy, able to
 *     take the request (needs, refused_dialects) and whose
 *     context window holds prompt + cap, cheapest estimate first (ties in
 *     list order); with prefer_local, local models first. Then each
 *     escalation tier's candidates, in the same order, skipping models
 *     already planned. A busy local model goes last of all (cloud first).
 *     At most POLICY_MAX_CAND.
 *  4. Budget downgrade: spend_share_pct ≥ share_pct replaces the plan (a
 *     concrete model's too) by the to_tier's candidates, without
 *     escalation; when none of them fits, the plan stays and the rule says
 *     so.
 *  5. batch_eligible when the task is in batch_tasks; thinking_cap from
 *     thinking_caps[task]. */
policy_result policy_plan_request(const policy *p, const policy_model *models, int n_models,
                                  const policy_request *req, policy_plan *out, char *err,
                                  size_t errlen);

/* The cascade's checks on an answer from a cheaper tier. Returns the name of
 * the first check the answer fails ("length": finish_reason was "length";
 * "empty": nothing but white space; "uncertain": starts, after white space,
 * with the uncertain marker; "json": json_mode and the text is not one JSON
 * value), or NULL when it passes or the cascade is disabled. Only the
 * configured checks run; an answer of tool calls (finish_reason
 * "tool_calls") passes them all. finish_reason may be NULL. */
const char *policy_cascade_failed_check(const policy *p, const char *finish_reason,
                                        const char *answer_text, size_t len, bool json_mode);
/* policy_cascade_failed_check() != NULL. */
bool policy_cascade_should_escalate(const policy *p, const char *finish_reason,
                                    const char *answer_text, size_t len, bool json_mode);
bool policy_cascade_enabled(const policy *p);
bool policy_cascade_streams(const policy *p);

/* The tier `from` escalates to (escalate_to); false when it is the top. */
bool policy_escalate_tier(const policy *p, model_tier from, model_tier *to);
/* The index of the first candidate after `from` that belongs to the tier
 * cand[from] escalates to, or -1: where a cascade goes next. */
int policy_escalation_index(const policy *p, const policy_plan *plan, int from);

/* The baseline model's index in the table, or -1. */
int policy_baseline_index(const policy *p);
/* The tier a task maps to (TIER_NONE when the task is not in the map). */
model_tier policy_task_tier(const policy *p, const char *task);
/* The models a tier lists (indices into the table); *n receives the count. */
const int *policy_tier_models(const policy *p, model_tier tier, int *n);

/* The max_tokens to send upstream for a request of `task` (NULL: none)
 * whose own max_tokens is client_max_tokens (-1: none), the one rule for
 * every plan (auto, tier:NAME, a named model, a route): the task's cap
 * (output_caps[task], else default_output_cap) bounds the client's value
 * (the lower of the two), unless the cap or the route says "cap":
 * "default" (route_cap_default), when it only fills in a missing one.
 * Returns -1 when there is neither. *applied (may be NULL): the result
 * differs from client_max_tokens. p may be NULL (no policy: the client's
 * value). */
int64_t policy_output_cap(const policy *p, const char *task, bool route_cap_default,
                          int64_t client_max_tokens, bool *applied);
/* The typical output of a task's answer, in tokens: typical_output[task],
 * else default_typical_output. *for_task (may be NULL): the task had its own. */
int64_t policy_typical_output(const policy *p, const char *task, bool *for_task);

/* The estimated cost of prompt_tokens in + output_tokens out at a price. */
int64_t policy_estimate_cost_pusd(const model_price *price, int64_t prompt_tokens,
                                  int64_t output_tokens);

#endif
