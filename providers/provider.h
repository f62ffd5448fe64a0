/* Provider adapters: the canonical request/response and the table of
 * functions every upstream dialect implements. Adding a provider is one
 * file (providers/NAME.c defining `const provider_ops NAME_ops`) and one
 * line in providers/registry.c.
 *
 * Conventions: functions returning int return 0 on success and -1 on
 * failure with a human-readable reason in the `err` buffer they are given.
 * Nothing here touches the network; the engine (providers/engine.h) does. */
#ifndef BRIDLE_PROVIDER_H
#define BRIDLE_PROVIDER_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/buf.h"
#include "lib/jtok.h"
#include "providers/pricing.h"

/* ------------------------------------------------------------ canonical request */

/* An embeddings request (POST /v1/embeddings), as validated: where its
 * inputs are in the doc and what it asks for. */
typedef struct canon_embed {
    bool on;            /* this is an embeddings request */
    uint32_t input;     /* the "input" token of doc */
    bool single;        /* one input: a string, or one list of token ids (input itself) */
    bool token_ids;     /* the inputs are lists of token ids, not strings */
    int64_t n;          /* how many inputs */
    bool base64;        /* encoding_format "base64": each vector as base64 of float32s */
    int64_t dimensions; /* "dimensions", -1 when unset */
    int64_t est_tokens; /* an estimate for a provider that reports no usage: each text's
                           bytes / 4 rounded up (at least 1), or the token ids counted */
} canon_embed;

/* The client's request after validation (router/canon.c): its body, parsed
 * once into tokens (doc), and the fields bridle reads. Every dialect
 * encodes from doc: the OpenAI one forwards the body key by key, the
 * translating ones copy the client's values from it; none parses the body
 * again. Strings point into the request's own storage. */
typedef struct canon_request {
    const char *body; /* the client's body bytes, as received */
    size_t body_len;
    const jdoc *doc;   /* body tokenized (lib/jtok.h); messages is a validated array: every
                          item has a string role and content that is a string, an array of
                          parts, or null */
    const char *model; /* "model" as the client sent it */
    bool stream;
    bool include_usage;    /* stream_options.include_usage */
    int64_t max_tokens;    /* max_completion_tokens, else max_tokens; -1 when unset */
    bool json_mode;        /* response_format.type is json_object or json_schema */
    bool deterministic;    /* temperature 0, n 1, not streamed: may share an identical call */
    bool temperature_set;  /* "temperature" was sent */
    bool temperature_zero; /* ... and is 0 */
    int64_t n;             /* choices asked for: "n", 1 when unset */
    const char *user;      /* "user" or NULL */
    const char *task, *agent, *feature, *team; /* metadata / x-bridle-* headers, or NULL */
    bool model_chosen;  /* bridle chose the model (a route or the routing policy), not the client */
    bool reasoning_set; /* the client set its own reasoning control (reasoning_effort,
                           reasoning or thinking): it wins over any thinking budget,
                           and the budget dialects translate it
                           (provider_reasoning_budget) */
    const char *anthropic_beta; /* the client's anthropic-beta header (Messages way in), for
                                   an Anthropic target; NULL when none */
    bool messages_api;          /* it came in as an Anthropic Messages request (router/messages.h):
                                   the OpenAI dialect leaves out its extension members, and the
                                   Anthropic one answers with its thinking blocks */
    int64_t thinking_budget;    /* reasoning tokens the routing policy allows (thinking_caps);
                                   0 = none. Sent only to reasoning models, each dialect in its
                                   own form (provider_thinking_budget) */
    unsigned needs;             /* the capabilities it needs (CAP_* of providers/params.h) */
    canon_embed embed;          /* POST /v1/embeddings (canon_parse_embeddings); zero for chat */
} canon_request;

/* ------------------------------------------------------------ targets */

typedef struct provider_ops provider_ops;

/* A configured provider endpoint (router/config.c owns these). */
typedef struct provider_conf {
    const char *name;           /* config key, e.g. "openai" */
    const provider_ops *ops;    /* the dialect */
    const char *base_url;       /* e.g. "https://api.openai.com/v1", no trailing slash */
    const char *api_key;        /* resolved secret or NULL; never log it */
    const char **extra_headers; /* NULL-terminated "Name: value" lines, or NULL */
    /* OpenAI-compatible hosts differ in small ways; options per host: */
    bool use_max_completion_tokens; /* send max_completion_tokens (OpenAI) instead of max_tokens */
    bool stream_usage;              /* host honours stream_options.include_usage */
    int64_t default_max_tokens;     /* for dialects that require a cap (Anthropic) */
    bool
        prompt_cache_auto; /* place prompt-cache breakpoints (Anthropic) when the client set none */
    bool prompt_cache_1h;  /* ... with a 1-hour TTL, else 5 minutes */
    int connect_timeout_ms, first_byte_timeout_ms, idle_timeout_ms, total_timeout_ms;
    int max_concurrency;
    int index;  /* position in the config, for per-provider runtime state */
    bool batch; /* batch lines go to its batch API (router/pbatch.h), at the batch price */
} provider_conf;

/* One concrete place to send a request: a provider and the model name it
 * knows, with that model's prices. */
typedef struct target {
    const provider_conf *provider;
    const char *model;          /* bridle's name for the model (client-facing) */
    const char *upstream_model; /* the name the provider knows it by */
    const model_price *price;
    unsigned caps; /* what the model can do (CAP_* of providers/params.h) */
    int index;     /* its model's position in the config, for per-target runtime state */
} target;

/* ------------------------------------------------------------ upstream I/O */

typedef struct upstream_request {
    buf url;                 /* absolute URL */
    buf body;                /* request body */
    const char *headers[16]; /* "Name: value" lines owned by header_store, NULL-terminated */
    int n_headers;
    buf header_store; /* backing storage for headers[] (NUL-separated) */
    bool get; /* a GET without a body (a provider batch's status, its results), not a POST */
} upstream_request;

void upstream_request_init(upstream_request *r);
/* Adds a header line "Name: value" (copied). */
void upstream_request_add_header(upstream_request *r, const char *name, const char *value);
/* Authorization: Bearer token. */
void upstream_request_add_bearer(upstream_request *r, const char *token);
/* Makes headers[] point into header_store; call once after the last add. */
void upstream_request_finish_headers(upstream_request *r);
void upstream_request_free(upstream_request *r);
/* Empties r for another encode, keeping its buffers' memory. */
void upstream_request_reset(upstream_request *r);

/* Response headers as received, names lower-cased. */
typedef struct upstream_headers {
    int n;
    struct {
        char *name;
        char *value;
    } h[48];
} upstream_headers;

/* The value of header `name` (lower-case), or NULL. */
const char *upstream_header_get(const upstream_headers *hs, const char *name);

/* ------------------------------------------------------------ outcomes */

typedef enum {
    ERRCLASS_NONE = 0,
    ERRCLASS_RETRYABLE, /* 429, 503, 529, timeouts, connection failures */
    ERRCLASS_FATAL,     /* 400, 401, 403, 404, content policy, context too long */
    ERRCLASS_AMBIGUOUS, /* 500 and kin: retry once, carefully */
} error_class;

/* An upstream failure, classified and translated into what the client gets. */
typedef struct upstream_error {
    error_class cls;
    int64_t retry_after_ms; /* from retry-after-ms / Retry-After / RetryInfo; -1 if none */
    int client_status;      /* HTTP status for the client (OpenAI conventions, §9) */
    char type[48];          /* OpenAI error type, e.g. "invalid_request_error" */
    char code[48];          /* OpenAI error code or "" */
    char message[512];      /* what happened, in words; no secrets */
    bool quota_exhausted;   /* insufficient_quota: not a rate limit */
} upstream_error;

/* A decoded non-streamed answer. */
typedef struct decoded_response {
    json_object *body; /* an OpenAI chat.completion object; owned by caller */
    const char *raw;   /* or, when body is NULL: the upstream bytes to relay as they are */
    size_t raw_len;
    usage_record usage;     /* exact when the provider reported usage */
    char finish_reason[24]; /* OpenAI value */
    int64_t prompt_tokens;  /* for the client-facing usage block */
    int64_t completion_tokens;
} decoded_response;

/* One event of a streamed answer, as framed by providers/sse.h: SSE
 * messages (event name + joined data lines) or NDJSON lines (event NULL). */
typedef struct stream_event {
    const char *event; /* SSE "event:" value or NULL */
    const char *data;  /* SSE data (lines joined by \n) or one NDJSON line */
    size_t data_len;
} stream_event;

/* Where a stream decoder sends its output. */
typedef struct stream_sink {
    void *ctx;
    /* One OpenAI chat.completion.chunk JSON object, serialised, without the
     * "data: " prefix. The sink frames it as SSE for the client. */
    void (*chunk)(void *ctx, const char *json, size_t len);
} stream_sink;

/* What a stream has told us so far; the decoder updates it. */
typedef struct stream_result {
    usage_record usage;    /* latest known usage; usage.exact once reported */
    int64_t prompt_tokens; /* for the usage chunk */
    int64_t completion_tokens;
    char finish_reason[24]; /* "" until known */
    bool done;              /* the provider said the stream is complete */
    bool failed;            /* the provider sent an error event */
    upstream_error error;   /* when failed */
    buf text;               /* the answer text so far (for cascade checks) */
    size_t tool_bytes;      /* tool calls' names and arguments so far (for estimates) */
} stream_result;

typedef enum { FRAMING_SSE, FRAMING_NDJSON } stream_framing;

/* ------------------------------------------------------------ the table */

struct provider_ops {
    const char *kind; /* "openai", "anthropic", "gemini", "ollama" */
    stream_framing framing;
    /* Builds the upstream call for `req` to `t`. The client's stream flag
     * decides the upstream one. Returns 0, or -1 with err set (e.g. a
     * message shape this dialect cannot express). */
    int (*encode)(const canon_request *req, const target *t, upstream_request *out, char *err,
                  size_t errlen);

    /* Decodes a complete 2xx body. Returns 0, or -1 with err set when the
     * body is not what the dialect promises (malformed JSON, no choices). */
    int (*decode)(const canon_request *req, const target *t, const char *body, size_t len,
                  decoded_response *out, char *err, size_t errlen);

    /* Per-stream decoder state: created before the first event, freed after
     * the last. May return NULL if the dialect needs no state. */
    void *(*stream_new)(const canon_request *req, const target *t);
    void (*stream_free)(void *state);
    /* Decodes one event. Emits zero or more OpenAI chunks to sink and
     * updates res. Returns 0, or -1 when the event is garbage (res->failed
     * set with an error). Usage chunks are NOT emitted to the sink; the
     * caller adds the usage chunk itself when the client asked for it. */
    int (*stream_event)(void *state, const stream_event *ev, stream_result *res,
                        const stream_sink *sink);

    /* Classifies a non-2xx answer (status, headers, body possibly empty or
     * not JSON) into out. Never fails. */
    void (*classify)(int status, const upstream_headers *hs, const char *body, size_t len,
                     upstream_error *out);

    /* Maps this dialect's usage JSON object to a usage record. */
    usage_record (*usage_map)(json_object *usage);

    /* Embeddings in this dialect (providers/embeddings.h), or NULL when it
     * has none (Anthropic). Errors go through classify above. */
    const struct embed_ops *embed;
};

/* The registry: every dialect bridle speaks. */
const provider_ops *provider_find(const char *kind);
/* NULL-terminated list, for help texts. */
const provider_ops *const *provider_all(void);

/* Shared helpers for adapters (providers/common.c). */

/* The anthropic-version every call to Anthropic names (§3.1). */
#define PROVIDER_ANTHROPIC_VERSION "2023-06-01"
/* The provider's credentials, as its dialect sends them: Anthropic's
 * x-api-key and anthropic-version, Gemini's x-goog-api-key, else a Bearer
 * token (none when it has no key: local hosts run without one). For the
 * calls outside a dialect's own encode (embeddings, batch APIs). */
void provider_auth_headers(const provider_conf *p, upstream_request *out);

/* Classifies transport failures (no HTTP status): connect refused, reset,
 * timeouts. `what` names the failure for the message. */
void provider_transport_error(const char *what, bool timed_out, upstream_error *out);
/* Parses Retry-After (seconds or HTTP-date) and retry-after-ms; -1 if none. */
int64_t provider_retry_after_ms(const upstream_headers *hs);
/* Fills an upstream_error from status alone with the default rules of
 * reliability.md (used by classify implementations as a base). */
void provider_classify_status(int status, upstream_error *out);
/* json-c conveniences for decoding answers: obj[key], NULL when o
 * is not an object or the key is absent (or not of the type asked). */
json_object *provider_json_get(json_object *o, const char *key);
const char *provider_json_str(json_object *o, const char *key);
json_object *provider_json_typed(json_object *o, const char *key, json_type type);
/* An OpenAI `usage` object for a usage record; cache_write_tokens only
 * when there were any. */
json_object *provider_usage_json(const usage_record *r, int64_t prompt_tokens);
/* OpenAI's error JSON {"error":{"message","type","param","code"}}, appended
 * to b: the canonical shape of every error bridle answers (a NULL or empty
 * code or param is null). */
void provider_openai_error_json(buf *b, const char *type, const char *code, const char *param,
                                const char *message);
/* Sets the class, client status, type and code of an error. */
void provider_error_set(upstream_error *out, error_class cls, int client_status, const char *type,
                        const char *code);

/* The reasoning efforts a client may name (reasoning_effort,
 * reasoning.effort): true with the nominal token budget the effort stands
 * for (none and minimal 0, low 1024, medium 4096, high, xhigh and max
 * 16384: docs/config.md), false for a name that is not one of them. */
bool provider_effort_budget(const char *effort, int64_t *budget);
/* Those names as a list for messages: "none, minimal, ... or max". */
const char *provider_effort_names(void);
/* Whether t's model reasons: its price card or models.NAME.reasoning. */
bool provider_reasons(const target *t);
/* The policy's thinking budget to add for t: req->thinking_budget when the
 * model reasons (its price card or models.NAME.reasoning) and the client
 * did not set its own reasoning control; else 0 (add nothing). For OpenAI,
 * which forwards the client's own control as it came. */
int64_t provider_thinking_budget(const canon_request *req, const target *t);
/* The reasoning budget for the dialects that take tokens (Anthropic,
 * Gemini), read from req->doc: the client's own control (its effort's
 * nominal budget, or thinking.budget_tokens; 0 = it asked for none), else
 * the policy's budget; -1 (send nothing) when t does not reason or neither
 * names a budget. Each dialect applies its own limits to it. */
int64_t provider_reasoning_budget(const canon_request *req, const target *t);
/* OpenAI's reasoning_effort (also Ollama's think level) for a budget: the
 * highest effort whose nominal budget fits under it, since the cap is a
 * ceiling: < 4096 "low", < 16384 "medium", else "high" (the same table as
 * provider_effort_budget). */
const char *provider_reasoning_effort(int64_t budget);

/* Concatenated text of an OpenAI message content (string or parts), for
 * answers decoded with json-c. */
void provider_content_text(json_object *content, buf *out);
/* The same for a content value of the client's request (token `content`
 * of d): a string, or the text and refusal parts of a list; nothing for
 * other types. */
void provider_doc_content_text(const jdoc *d, uint32_t content, buf *out);
/* jtok readers for the client's request that see what json-c saw: a null
 * member is absent and a repeated key's last value wins (the translating
 * dialects build the upstream body, so there is no copy a provider could
 * read differently). obj[key] or JT_NONE when absent or null, ... */
uint32_t provider_doc_get(const jdoc *d, uint32_t obj, const char *key);
/* ... or JT_NONE unless it has `type`. */
uint32_t provider_doc_typed(const jdoc *d, uint32_t obj, const char *key, jt_type type);
/* Appends ,"as":<obj[key] as the client wrote it (jdoc_json_append)> when
 * obj[key] is present and not null; says whether it did. */
bool provider_doc_member_copy(const jdoc *d, uint32_t obj, const char *key, const char *as,
                              buf *out);
/* Appends the request's "stop" as a list of its strings (a bare string is
 * a list of one); false, appending nothing, when there are none. */
bool provider_doc_stop_list(const jdoc *d, buf *out);
/* The URL of an image_url part (image_url a string, or image_url.url),
 * unescaped (jdoc_str_view with scratch); false when there is none. */
bool provider_image_url(const jdoc *d, uint32_t part, buf *scratch, const char **url, size_t *len);
/* Splits data:<media type>;base64,<data>: the media type is url + 5 for
 * *type_len bytes, the data runs from *data to url + len. False when url is
 * not of that form (or the media type is empty). */
bool provider_data_uri(const char *url, size_t len, size_t *type_len, const char **data);
/* The function.name token of the latest tool call with id `id` (a string
 * token) in the messages before `before` (a message token, or JT_NONE for
 * all), only in assistant messages when assistant_only; JT_NONE if none. */
uint32_t provider_doc_call_name(const jdoc *d, uint32_t msgs, uint32_t before, uint32_t id,
                                bool assistant_only);
/* A number token as an integer: an int, or a double (truncated) inside
 * int64; false for anything else (v may be JT_NONE). */
bool provider_doc_int(const jdoc *d, uint32_t v, int64_t *out);
/* Whether the client asked for one tool call at most (parallel_tool_calls
 * false). Dialects that cannot say so upstream (Gemini, Ollama) keep the
 * first call of an answer, so the conversation the client sends back stays
 * one call and one result. */
bool provider_one_tool_call(const canon_request *req);
/* tool_choice {"type":"allowed_tools","allowed_tools":{mode, tools}}
 * (OpenAI's subset of the request's tools): the allowed_tools object, or
 * JT_NONE for any other tool_choice. */
uint32_t provider_doc_allowed_tools(const jdoc *d);
/* Whether the function tool `tool` (a tools[] item) may be offered: always,
 * unless tool_choice is allowed_tools (`allowed`, from the call above) and
 * does not name it. Dialects without such a subset send only these. */
bool provider_doc_tool_offered(const jdoc *d, uint32_t allowed, uint32_t tool);
/* Where a tool call id that bridle gave a Gemini call carries the call's
 * thoughtSignature (gemini.c): "<id>__thought__<signature>". */
#define PROVIDER_THOUGHT_SEP "__thought__"
/* Appends the tool call id token `id` as a JSON string for a provider that
 * takes ids of [a-zA-Z0-9_-] only (Anthropic): without a Gemini thought
 * signature, every other byte as '_'. The same id always maps the same
 * way, so a call and its result still match. */
void provider_doc_tool_id_append(const jdoc *d, uint32_t id, buf *scratch, buf *out);

/* Adds every "Name: value" line of a NULL-terminated list (a provider's
 * extra_headers; NULL is fine). Lines without a colon are dropped. */
void upstream_request_add_header_lines(upstream_request *r, const char **lines);
/* Refines an error already filled by provider_classify_status with an
 * error code or type in OpenAI's vocabulary (insufficient_quota,
 * rate_limit_exceeded, context_length_exceeded, model_not_found, ...).
 * Returns true when the code was one of those. */
bool provider_classify_code(const char *code, upstream_error *out);
/* Appends ": <text>" (what the upstream said) to out->message, with control
 * characters blanked and cut at a UTF-8 boundary to fit. Does nothing when
 * out is an upstream auth failure: that text may echo part of bridle's key. */
void provider_error_add_detail(upstream_error *out, const char *text, size_t len);
/* Fills out for an upstream that answered something unreadable (a stream
 * event or body that is not what its dialect promises): AMBIGUOUS, client
 * 502 "upstream_bad_response", `why` and the first bytes of d (may be NULL)
 * in the message. */
void provider_bad_response_error(const char *why, const char *d, size_t n, upstream_error *out);
/* Parses s[0..len) as exactly one JSON object (whitespace around allowed)
 * with tok, which is reset first; tok NULL uses one process-wide tokener
 * (each worker's loop is single-threaded). Returns the object (caller owns)
 * or NULL with err set. */
json_object *provider_parse_object(json_tokener *tok, const char *s, size_t len, char *err,
                                   size_t errlen);
/* Appends v serialised as compact JSON (slashes and UTF-8 unescaped): the
 * same bytes as json-c's PLAIN|NOSLASHESCAPE output (except \b and \f,
 * written as \u0008 and \u000c) at about half the cost for string-heavy
 * values such as messages, which is what the encode hot path copies. */
void provider_append_json(buf *b, json_object *v);
/* Appends s[0..len) as a JSON string literal, like buf_append_json_str but
 * copying clean stretches 8 bytes at a time. */
void provider_append_json_str(buf *b, const char *s, size_t len);
/* An integer member of obj (int or double JSON); false when absent, of
 * another type, or a double outside int64. obj may be NULL. */
bool provider_get_int(json_object *obj, const char *key, int64_t *out);
/* A token count member of obj clamped to [0, 1e12] (input is untrusted and
 * the counts are subtracted from each other); false when absent. */
bool provider_get_count(json_object *obj, const char *key, int64_t *out);

/* Appends tool call i's arguments (args: a string holding a JSON object,
 * the object itself, or nothing: {}) as the object, checked with jtok into
 * `parsed` (scratch: for unescaping). The dialects that want an object
 * (Anthropic input, Gemini args, Ollama arguments) all do this. Returns 0,
 * or -1 with err naming tool_calls[i].function.arguments. */
int provider_tool_args_append(const jdoc *d, uint32_t args, size_t i, jdoc *parsed, buf *scratch,
                              buf *out, char *err, size_t errlen);

/* Formats a reason into err (errlen bytes); returns -1, for `return
 * provider_fail(...)` in encoders. */
int provider_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Role turns with a list of items each (Anthropic's "content" blocks,
 * Gemini's "parts"), the system items kept aside in their own list, for the
 * dialects that group messages that way. */
typedef struct provider_turns {
    buf *b;            /* the body the turns are written into */
    buf sys;           /* the system items, comma-separated */
    const char *items; /* the turn's list: "content" or "parts" */
    bool system;       /* items go to sys, not to a turn */
    const char *role;  /* the role of the message being encoded */
    const char *turn;  /* the role of the open turn, or NULL */
    int n_turns, n_items;
} provider_turns;
/* Where the next item goes: after the last system item, or in the open turn
 * when it has the message's role, else in a new turn (the open one closed). */
buf *provider_turn_item(provider_turns *t);

#endif
