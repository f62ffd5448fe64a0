/*
 * bridle-mock: a deterministic, fault-injecting upstream for bridle's tests.
 *
 * One thread, one event_base, one evhttp. Every generation request becomes a
 * `mock_req` that lives until its reply is finished or its client goes away.
 * Dialect-specific output (OpenAI, Anthropic, Gemini, Ollama) is a table of
 * functions (`struct dialect_ops`); everything else is shared.
 */
#ifndef BRIDLE_MOCK_H
#define BRIDLE_MOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <json-c/json.h>

#define MOCK_TEXT_MAX 4096     /* longest content= override we keep */
#define MOCK_REPEAT_MAX 100000 /* repeat=N is capped here */
#define MOCK_MODEL_MAX 256
#define MOCK_CALLS_MAX 16 /* tool calls in one answer */

/* Per-request overrides; -1 means "not set" for every integer field. */
struct directives {
    int status;
    char code[64];
    int retry_after;
    int retry_after_ms;
    int retry_after_date;
    int should_retry; /* -1 unset, 0 false, 1 true: x-should-retry header */
    int latency_ms;
    int hang;
    int malformed;
    int cut_after;
    int trickle_ms;
    int finish_length;
    char *content; /* content=, heap-allocated; NULL when not set */
    long prompt_tokens;
    long completion_tokens;
    long cached_tokens;
    long cache_write_tokens;
    long cache_write_1h_tokens;
    long reasoning_tokens;
    int no_usage;
    int repeat;     /* the answer repeated N times, joined by one space (big answers) */
    int tool_calls; /* tool_calls=N: N calls of the request's own tools */
    int thinking;   /* thinking=1: Anthropic answers with a signed thinking block first */
    /* tool_call=NAME[:ARGS] items, in order; one source's list (the header,
     * one marker, one fault rule) replaces an earlier source's */
    char *tool_call[MOCK_CALLS_MAX];
    int n_tool_call;
    unsigned apply_gen, tool_call_gen; /* which directives_apply wrote the list */
};

/** Resets every field to "not set". */
void directives_init(struct directives *d);
/** Frees what directives_apply allocated (content=). */
void directives_free(struct directives *d);
/** Applies a "k=v,k=v" list of `len` bytes; unknown keys are ignored. */
void directives_apply(struct directives *d, const char *s, size_t len);
/** Applies every [[mock:...]] marker found in `text`. */
void directives_apply_markers(struct directives *d, const char *text, size_t len);

/* The fault queue fed by POST /_mock/faults. */
int faults_add(const char *model, int count, const char *directives);
void faults_clear(void);
/** Applies (and consumes one use of) the first rule matching `model`. */
void faults_take(const char *model, struct directives *d);
/** {"rules":[{model,count,directives}...]} */
void faults_render(struct evbuffer *out);

enum dialect { D_OPENAI, D_ANTHROPIC, D_GEMINI, D_OLLAMA };

/* The computed answer and usage of one request. */
struct usage {
    long prompt;     /* total input incl. cached */
    long completion; /* total output incl. reasoning */
    long reasoning;  /* part of completion */
    long cached;     /* cache reads, part of prompt */
    long cache_w5m;  /* cache writes (5 min TTL), part of prompt */
    long cache_w1h;  /* cache writes (1 h TTL), part of prompt */
    long words;      /* visible answer words = completion - reasoning by default */
};

/* One tool call of the answer (tools.c). */
struct mock_call {
    char *name;
    char *args; /* a JSON object, compact */
    size_t args_len;
    char id[96]; /* empty where the dialect has no call ids (Gemini, Ollama) */
};

struct mock_req {
    struct mock_req *prev, *next; /* the live list, for shutdown and in_flight */
    struct evhttp_request *req;
    const struct dialect_ops *ops;
    struct event *timer;
    struct event *peer_watch; /* notices a client leaving before we reply */
    struct directives dir;
    struct usage use;
    char model[MOCK_MODEL_MAX];
    char id[48];
    const char *answer; /* dir.content, answer_buf or answer_heap */
    char *answer_heap;  /* repeat=N: the repeated answer */
    size_t answer_len;  /* after truncation */
    char answer_buf[MOCK_MODEL_MAX + 64];
    size_t *piece_end;       /* end offset of each streamed piece */
    size_t piece_inline[16]; /* piece_end for short answers: no malloc */
    int npieces;
    struct mock_call *calls; /* tool calls answered after the text, or NULL */
    int ncalls;
    long call_tokens; /* what the calls count as output tokens */
    int tool_pieces;  /* streamed pieces after the npieces text pieces */
    int next_piece;   /* streaming progress, over text and tool pieces */
    bool stream;
    bool include_usage;
    bool length;        /* finish because of the cap (or finish=length) */
    bool waiting_close; /* a close callback on the connection points at us */
    bool batch;         /* a batch line: no HTTP request, no live counters */
    long created;       /* unix seconds */
    /* Anthropic's prompt cache, simulated (request.c): the tokens this
     * request reads from it and writes to it; -1 when it marks nothing */
    long pc_read, pc_w5m, pc_w1h;
    struct mock_embed *embed; /* an embeddings request (embeddings.c), else NULL */
    /* Gemini: generationConfig.candidateCount (1-8; 0 = 1) and, with
     * responseLogprobs, its logprobs (the alternatives per token; -1 when
     * not asked); Ollama: top_logprobs with logprobs true, the same way */
    int candidates, logprobs;
};

/*
 * One table per dialect. `error` writes the whole error body; the stream
 * hooks write frames: `open` before the first content piece, `piece` for
 * content piece k, `close` after the last (finish, usage, terminator).
 * An answer with tool calls streams `tool_npieces(m)` more pieces after the
 * text ones, written by `tool_piece` (j counts from 0).
 */
struct dialect_ops {
    const char *name;
    const char *stream_type; /* Content-Type of a streamed reply */
    void (*error)(struct mock_req *m, int status, const char *msg, struct evbuffer *out);
    void (*body)(struct mock_req *m, struct evbuffer *out);
    void (*open)(struct mock_req *m, struct evbuffer *out);
    void (*piece)(struct mock_req *m, int k, struct evbuffer *out);
    void (*close)(struct mock_req *m, struct evbuffer *out);
    int (*tool_npieces)(struct mock_req *m);
    void (*tool_piece)(struct mock_req *m, int j, struct evbuffer *out);
};

extern struct event_base *mock_base;
extern const struct dialect_ops openai_ops, anthropic_ops, gemini_ops, ollama_ops;

/* request.c: the generation request life cycle. */
void mock_handle_generation(struct evhttp_request *req, enum dialect d, const char *model_in_path,
                            bool stream_by_path);
/* An embeddings request: OpenAI /v1/embeddings, Ollama /api/embed, Gemini
 * :embedContent or (batch) :batchEmbedContents. Directives apply as for
 * generation (status=, latency_ms=, malformed=, no_usage=, prompt_tokens=). */
void mock_handle_embeddings(struct evhttp_request *req, enum dialect d, const char *model_in_path,
                            bool batch);
/* embeddings.c: reads the inputs (markers in them apply) and the usage;
 * returns an error message or NULL. */
const char *embed_prepare(struct mock_req *m, enum dialect d, json_object *root, bool batch);
/** The whole answer in m's dialect. */
void embed_body(struct mock_req *m, struct evbuffer *out);
void embed_free(struct mock_req *m);
/* The answer to one batch line (mock_answer_line). */
struct mock_answer {
    int status;     /* 200, or the error status the live request would get */
    bool malformed; /* malformed=1: the body is not JSON */
    bool has_usage; /* false for no_usage=1 and errors */
    struct usage use;
    char id[48]; /* the request id the live answer names */
};
/** Answers a batch line's body exactly as a live non-streamed request of
 *  dialect d with that body would be answered (the same text, usage and
 *  errors; its [[mock:...]] markers apply, the fault queue and the live
 *  counters do not): appends the body (answer or error JSON, ending in a
 *  newline) to `out` and returns the status. `body` stays the caller's;
 *  path_model is Gemini's model (in its path), NULL for the others. */
int mock_answer_line(enum dialect d, json_object *body, const char *path_model,
                     struct evbuffer *out, struct mock_answer *a);
/** Drops our state for a request that libevent failed on (it owns `req`). */
void mock_forget_req(struct evhttp_request *req);
void mock_free_all(void);
int mock_in_flight(void);

/* tools.c: tool calls in answers (the tool_calls= and tool_call= directives). */
/** Picks the calls this request answers with (none: m->ncalls stays 0);
 *  returns an error message for a bad tool_call= item, else NULL. */
const char *tools_prepare(struct mock_req *m, enum dialect d, json_object *root);
void tools_free(struct mock_req *m);
/** What the provider would refuse in a conversation with tool calls (an
 *  unanswered call, a result for no call, a bad id, a missing Gemini 3
 *  thought signature), as its 400 message; NULL when it is fine. */
const char *tools_check(struct mock_req *m, enum dialect d, json_object *root);
/** How many fragments call c's arguments stream in, and fragment i's bounds. */
int tools_frags(const struct mock_call *c);
void tools_frag(const struct mock_call *c, int i, size_t *start, size_t *end);
/** Splits tool piece j of a dialect that streams `per_call(c)` pieces per
 *  call into the call and the piece within it. */
int tools_locate(struct mock_req *m, int j, int (*per_call)(const struct mock_call *), int *part);

/* Shared helpers for the dialect files (request.c). */
void piece_bounds(const struct mock_req *m, int k, size_t *start, size_t *end);
const char *http_reason(int status);

/* files.c: the OpenAI Files API in memory, and replies shared with batch*.c. */
/** Routes /v1/files, /v1/files/{id} and /v1/files/{id}/content; false when
 *  the path or method is not one of them. */
bool files_route(struct evhttp_request *req, const char *path);
/** Stores a file, taking over `data` (malloc'd; freed even on failure);
 *  returns its id, valid while the file lives, or NULL (out of memory). */
const char *files_add(const char *purpose, const char *filename, char *data, size_t len);
/** A file's bytes (len in *len) and purpose, or NULL when there is none. */
const char *files_get(const char *id, size_t *len, const char **purpose);
void files_free_all(void);
/** Sends a whole reply with that Content-Type, counting its status. */
void api_send(struct evhttp_request *req, int status, const char *content_type, struct evbuffer *b);
/** Sends an OpenAI error body (type by status; param and code may be NULL). */
void api_openai_error(struct evhttp_request *req, int status, const char *msg, const char *param,
                      const char *code);
/** The request body as a JSON object, or NULL. */
json_object *api_parse_json(struct evhttp_request *req);
/** Copies query parameter `key` into out; false when absent. */
bool api_query(struct evhttp_request *req, const char *key, char *out, size_t size);
/** A fresh id: prefix + 24 hex digits, unique in this process. */
void api_new_id(char *out, size_t size, const char *prefix);

/* One part of a multipart/form-data body; pointers into the body. */
struct mp_part {
    const char *name, *filename; /* filename NULL when the part has none */
    size_t name_len, filename_len;
    const char *data;
    size_t len;
};
/** Parses `body` (len bytes) of Content-Type `ctype` into at most `max`
 *  parts (*n of them); returns NULL or what is wrong with it. */
const char *mp_parse(const char *ctype, const char *body, size_t len, struct mp_part *parts,
                     int max, int *n);

/* batch*.c: the OpenAI Batch and Anthropic Message Batches APIs (batch.h). */
/** Routes /v1/batches... (OpenAI); false when not one of its paths. */
bool batch_openai_route(struct evhttp_request *req, const char *path);
/** Routes /v1/messages/batches... (Anthropic); false when not one of its paths. */
bool batch_anthropic_route(struct evhttp_request *req, const char *path);
/** POST /v1beta/models/{model}:batchGenerateContent (Gemini's batch mode). */
void batch_gemini_create(struct evhttp_request *req, const char *model);
/** Routes /v1beta/batches/{id} and /v1beta/batches/{id}:cancel; false otherwise. */
bool batch_gemini_route(struct evhttp_request *req, const char *path);
/** --batch-ms: the processing time of a batch, and what /_mock/reset restores. */
void batch_set_default_ms(int ms);
/** POST /_mock/batch: applies the knobs in root, writes them to out; returns
 *  an error message or NULL. */
const char *batch_control(json_object *root, struct evbuffer *out);
void batch_knobs_render(struct evbuffer *out);
/** Appends ,"batch":{...} (the batch counters) inside /_mock/stats. */
void batch_stats_render(struct evbuffer *out);
/** GET /_mock/batch_lines: every custom_id's submitted and run counts. */
void batch_lines_render(struct evbuffer *out, bool repeated_only);
void batch_reset(void);
void batch_free_all(void);

/* json_out.c: fast JSON writing into an evbuffer. */
void json_str(struct evbuffer *out, const char *s, size_t len);
void json_cstr(struct evbuffer *out, const char *s);
/* Appends a string literal without going through printf. */
#define ADD_LIT(out, lit) evbuffer_add((out), "" lit, sizeof(lit) - 1)
/** Appends a decimal integer without going through printf. */
void json_long(struct evbuffer *out, long v);
/* A literal (usually `,"name":`) followed by a number. */
#define ADD_NUM(out, lit, v) (ADD_LIT(out, lit), json_long((out), (v)))
void iso8601_now(char *buf, size_t len);

/* stats.c: counters and the last-64 ring. */
void stats_record_request(struct evhttp_request *req, const char *path);
void stats_record_model(const char *model);
void stats_record_status(int status);
void stats_reset(void);
void stats_render(struct evbuffer *out, int in_flight);
void stats_render_last(struct evbuffer *out, int n);
void stats_free(void);

#endif
