/* Parameter fidelity: what every dialect does with each parameter of an
 * OpenAI chat-completions request, and what a model must be able to do to
 * answer it (its capabilities).
 *
 * The rule (docs/config.md, "OpenAI parameters on other dialects"): every
 * parameter is translated, or refused with a 400 that names it, or ignored
 * because it cannot change the answer's shape (its fields, its number of
 * choices, its format, its tool calls, its log probabilities, its
 * modalities). The OpenAI-compatible dialect forwards the client's body
 * key by key, so it refuses nothing here: its host answers for itself.
 *
 * Pure: no config, no I/O. The router asks before it plans (a named model
 * that cannot answer is a 400; auto, tiers and routes skip such models). */
#ifndef BRIDLE_PARAMS_H
#define BRIDLE_PARAMS_H

#include <stdbool.h>
#include <stddef.h>

#include "providers/provider.h"

/* What a model can do (models.NAME.capabilities), and what a request needs
 * (canon_request.needs). */
enum {
    CAP_TOOLS = 1u << 0,       /* tools: a non-empty list */
    CAP_VISION = 1u << 1,      /* image_url parts in the messages */
    CAP_JSON_SCHEMA = 1u << 2, /* response_format json_schema */
    CAP_LOGPROBS = 1u << 3,    /* logprobs: true, top_logprobs > 0 */
    CAP_AUDIO = 1u << 4,       /* modalities with "audio", audio, input_audio parts */
};
#define CAP_ALL (CAP_TOOLS | CAP_VISION | CAP_JSON_SCHEMA | CAP_LOGPROBS | CAP_AUDIO)

/* "tools", "vision", "json_schema", "logprobs", "audio" for one bit. */
const char *params_cap_name(unsigned cap);
/* The bit of a capability name; false when it is none of them. */
bool params_cap_parse(const char *name, unsigned *cap);
/* The capability names as a list for messages. */
const char *params_cap_names(void);

/* A model's capabilities when its config gives none: what its dialect can
 * carry, narrowed by its name where the dialect cannot tell (audio only
 * for OpenAI models named *audio*; vision on Ollama only for models named
 * *vision* or *llava*). `upstream_model` may be NULL. */
unsigned params_default_caps(const provider_ops *ops, const char *upstream_model);

/* The capabilities a request needs, read from its tokens (d: a validated
 * chat request, as canon_parse_chat leaves it). */
unsigned params_request_needs(const jdoc *d);

/* Why a model cannot answer a request, for a 400 and for `bridle route`. */
typedef struct params_refusal {
    char param[96];    /* the parameter, e.g. "logprobs", "messages[1].content[0]" */
    char code[40];     /* "unsupported_parameter" or "model_lacks_capability" */
    char message[512]; /* what is wrong and how to fix it */
    char brief[96];    /* a short reason: "lacks logprobs", "anthropic cannot take n > 1" */
} params_refusal;

/* Whether the dialect of `ops` refuses a parameter of req (stream and all).
 * Returns true and fills *why (may be NULL) naming the first one; `model`
 * names the model in the message (may be NULL). Unknown top-level keys are
 * refused by the translating dialects, bridle's own ("bridle…",
 * "x-bridle…") are not. */
bool params_dialect_refuses(const canon_request *req, const provider_ops *ops, const char *model,
                            params_refusal *why);

/* Whether target t cannot answer req: a capability the request needs that
 * t's model lacks (t->caps), or a parameter its dialect refuses. Fills *why
 * (may be NULL). */
bool params_target_refuses(const canon_request *req, const target *t, params_refusal *why);

/* Bit i set: the i-th dialect of provider_all() refuses req. For routing,
 * which asks once per dialect, not per model. */
unsigned params_refused_dialects(const canon_request *req);
/* The index of ops in provider_all(), or -1. */
int params_dialect_index(const provider_ops *ops);

#endif
