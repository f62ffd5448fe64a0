/* Helpers shared by every provider adapter: building upstream requests,
 * reading response headers, and the default error classification of
 * reliability.md (status → retryable / fatal / ambiguous, and what the
 * client is told). */
#include "providers/provider.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "lib/log.h"
#include "lib/util.h"

/* ------------------------------------------------------------ upstream_request */

void upstream_request_init(upstream_request *r)
{
    memset(r, 0, sizeof *r);
}

/* curl sends header values as-is, so a CR, LF or NUL in a configured value
 * would let it inject headers (reliability.md §6). */
static bool header_part_is_safe(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0') return false;
    return true;
}

static void request_add_header_n(upstream_request *r, const char *name, size_t name_len,
                                 const char *value, size_t value_len)
{
    /* One slot stays free for the NULL terminator of headers[]. */
    int cap = (int)(sizeof r->headers / sizeof r->headers[0]) - 1;
    if (r->n_headers >= cap) {
        log_warn("upstream request: more than %d headers, dropping %.*s", cap, (int)name_len, name);
        return;
    }
    if (name_len == 0 || !header_part_is_safe(name, name_len) ||
        !header_part_is_safe(value, value_len) || memchr(name, ':', name_len)) {
        /* Never print the value: it may be a key. */
        log_warn("upstream request: dropping header %.*s with an invalid name or value",
                 (int)name_len, name);
        return;
    }
    buf_append(&r->header_store, name, name_len);
    /* "Name:" with nothing after it tells curl to drop a header it would
     * add itself (Expect:), so an empty value gets no space. */
    buf_append_char(&r->header_store, ':');
    if (value_len) {
        buf_append_char(&r->header_store, ' ');
        buf_append(&r->header_store, value, value_len);
    }
    buf_append_char(&r->header_store, '\0');
    r->n_headers++;
}

void upstream_request_add_header(upstream_request *r, const char *name, const char *value)
{
    request_add_header_n(r, name, strlen(name), value ? value : "", value ? strlen(value) : 0);
}

void upstream_request_add_bearer(upstream_request *r, const char *token)
{
    size_t n = strlen(token);
    char small[512]; /* most keys: no heap copy of the key per request */
    if (n + 7 <= sizeof small) {
        memcpy(small, "Bearer ", 7);
        memcpy(small + 7, token, n);
        request_add_header_n(r, "Authorization", 13, small, n + 7);
        return;
    }
    buf auth = BUF_INIT;
    buf_append_str(&auth, "Bearer ");
    buf_append(&auth, token, n);
    request_add_header_n(r, "Authorization", 13, auth.data, auth.len);
    buf_free(&auth);
}

void upstream_request_add_header_lines(upstream_request *r, const char **lines)
{
    for (const char **l = lines; l && *l; l++) {
        const char *colon = strchr(*l, ':');
        if (!colon) {
            log_warn("upstream request: extra header without a colon dropped");
            continue;
        }
        const char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        request_add_header_n(r, *l, (size_t)(colon - *l), v, strlen(v));
    }
}

/* headers[] is filled only here because header_store may move while
 * headers are being added. */
void upstream_request_finish_headers(upstream_request *r)
{
    const char *p = r->header_store.data;
    for (int i = 0; i < r->n_headers; i++) {
        r->headers[i] = p;
        p += strlen(p) + 1;
    }
    r->headers[r->n_headers] = NULL;
}

void upstream_request_reset(upstream_request *r)
{
    buf_reset(&r->url);
    buf_reset(&r->body);
    buf_reset(&r->header_store);
    r->n_headers = 0;
    r->headers[0] = NULL;
    r->get = false;
}

void upstream_request_free(upstream_request *r)
{
    if (!r) return;
    buf_free(&r->url);
    buf_free(&r->body);
    buf_free(&r->header_store);
    memset(r, 0, sizeof *r);
}

const char *upstream_header_get(const upstream_headers *hs, const char *name)
{
    if (!hs) return NULL;
    for (int i = 0; i < hs->n && i < (int)(sizeof hs->h / sizeof hs->h[0]); i++)
        if (hs->h[i].name && strcasecmp(hs->h[i].name, name) == 0) return hs->h[i].value;
    return NULL;
}

/* ------------------------------------------------------------ retry-after */

/* Parses a non-negative decimal number ("12", "1.5") scaled by `scale`,
 * surrounded by optional spaces. -1 for anything else. */
static int64_t parse_scaled_number(const char *s, int64_t scale)
{
    while (*s == ' ' || *s == '\t')
        s++;
    int64_t whole = 0, frac = 0, frac_div = 1;
    int digits = 0;
    for (; *s >= '0' && *s <= '9'; s++, digits++) {
        if (digits >= 12) /* more than ~30 000 years: not a real delay */
            return -1;
        whole = whole * 10 + (*s - '0');
    }
    if (*s == '.') {
        s++;
        for (int n = 0; *s >= '0' && *s <= '9'; s++, n++)
            if (n < 6) frac = frac * 10 + (*s - '0'), frac_div *= 10, digits++;
    }
    while (*s == ' ' || *s == '\t')
        s++;
    if (digits == 0 || *s) return -1;
    return whole * scale + frac * scale / frac_div;
}

/* RFC 9110 HTTP-date in any of its three forms, as ms from now (0 when it
 * is already past). -1 when it is not a date. */
static int64_t parse_http_date_ms(const char *s)
{
    static const char *const formats[] = {
        "%a, %d %b %Y %H:%M:%S GMT", /* IMF-fixdate */
        "%A, %d-%b-%y %H:%M:%S GMT", /* obsolete RFC 850 */
        "%a %b %e %H:%M:%S %Y",      /* asctime */
    };
    while (*s == ' ')
        s++;
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
        struct tm tm;
        memset(&tm, 0, sizeof tm);
        const char *end = strptime(s, formats[i], &tm);
        if (!end) continue;
        while (*end == ' ')
            end++;
        if (*end) continue;
        time_t t = timegm(&tm);
        if (t == (time_t)-1) return -1;
        int64_t delta = (int64_t)t * 1000 - util_wall_ms();
        return delta > 0 ? delta : 0;
    }
    return -1;
}

int64_t provider_retry_after_ms(const upstream_headers *hs)
{
    /* retry-after-ms wins, as in the Stainless SDKs (wire-formats §1.8). */
    const char *ms = upstream_header_get(hs, "retry-after-ms");
    if (ms) {
        int64_t v = parse_scaled_number(ms, 1);
        if (v >= 0) return v;
    }
    const char *ra = upstream_header_get(hs, "retry-after");
    if (!ra) return -1;
    int64_t v = parse_scaled_number(ra, 1000);
    if (v >= 0) return v;
    return parse_http_date_ms(ra);
}

/* ------------------------------------------------------------ classification */

void provider_error_set(upstream_error *out, error_class cls, int client_status, const char *type,
                        const char *code)
{
    out->cls = cls;
    out->client_status = client_status;
    snprintf(out->type, sizeof out->type, "%s", type);
    snprintf(out->code, sizeof out->code, "%s", code);
}

void provider_auth_headers(const provider_conf *p, upstream_request *out)
{
    bool key = p->api_key && *p->api_key;
    const char *kind = p->ops ? p->ops->kind : "";
    if (strcmp(kind, "anthropic") == 0) {
        if (key) upstream_request_add_header(out, "x-api-key", p->api_key);
        upstream_request_add_header(out, "anthropic-version", PROVIDER_ANTHROPIC_VERSION);
    } else if (key && strcmp(kind, "gemini") == 0)
        upstream_request_add_header(out, "x-goog-api-key", p->api_key);
    else if (key)
        upstream_request_add_bearer(out, p->api_key);
}

void provider_transport_error(const char *what, bool timed_out, upstream_error *out)
{
    memset(out, 0, sizeof *out);
    out->retry_after_ms = -1;
    if (timed_out) {
        provider_error_set(out, ERRCLASS_RETRYABLE, 504, "upstream_timeout", "upstream_timeout");
        snprintf(out->message, sizeof out->message, "the upstream provider timed out (%s)",
                 what ? what : "no detail");
    } else {
        provider_error_set(out, ERRCLASS_RETRYABLE, 502, "upstream_unreachable",
                           "upstream_unreachable");
        snprintf(out->message, sizeof out->message, "could not reach the upstream provider (%s)",
                 what ? what : "no detail");
    }
}

void provider_classify_status(int status, upstream_error *out)
{
    memset(out, 0, sizeof *out);
    out->retry_after_ms = -1;
    const char *what;
    switch (status) {
    case 429:
        provider_error_set(out, ERRCLASS_RETRYABLE, 429, "rate_limit_error", "rate_limit_exceeded");
        what = "rate limited";
        break;
    case 503:
    case 529:
        provider_error_set(out, ERRCLASS_RETRYABLE, 503, "server_error", "upstream_overloaded");
        what = "overloaded";
        break;
    case 408:
        provider_error_set(out, ERRCLASS_RETRYABLE, 504, "server_error", "upstream_timeout");
        what = "request timeout";
        break;
    case 500:
    case 502:
        provider_error_set(out, ERRCLASS_AMBIGUOUS, 502, "server_error", "upstream_error");
        what = "server error";
        break;
    case 504:
        provider_error_set(out, ERRCLASS_AMBIGUOUS, 504, "server_error", "upstream_timeout");
        what = "gateway timeout";
        break;
    case 400:
    case 413:
    case 422:
        provider_error_set(out, ERRCLASS_FATAL, status, "invalid_request_error", "");
        what = "request rejected";
        break;
    case 401:
    case 403:
        /* The upstream refused bridle's provider key: not the client's
         * fault, and nothing it can fix by retrying. */
        provider_error_set(out, ERRCLASS_FATAL, 502, "upstream_auth_error", "upstream_auth_error");
        snprintf(out->message, sizeof out->message,
                 "the upstream provider rejected bridle's credentials (HTTP %d); "
                 "check the provider's api_key in bridle's configuration",
                 status);
        return;
    case 404:
        provider_error_set(out, ERRCLASS_FATAL, 502, "upstream_model_not_found", "model_not_found");
        snprintf(out->message, sizeof out->message,
                 "the upstream provider answered HTTP 404: the configured upstream model name "
                 "(or base_url) is wrong");
        return;
    default:
        if (status >= 500 && status <= 599) {
            provider_error_set(out, ERRCLASS_AMBIGUOUS, 502, "server_error", "upstream_error");
            what = "server error";
        } else {
            /* Other 4xx, redirects (never followed) and nonsense: most
             * likely bridle's translation is at fault, not the client. */
            provider_error_set(out, ERRCLASS_FATAL, 502, "upstream_error", "upstream_error");
            what = "unexpected status";
        }
        break;
    }
    snprintf(out->message, sizeof out->message, "the upstream provider answered HTTP %d (%s)",
             status, what);
}

bool provider_classify_code(const char *code, upstream_error *out)
{
    if (!code || !*code) return false;
    if (strcmp(code, "insufficient_quota") == 0) {
        /* Looks like a rate limit but waiting does not help: the account
         * is out of credit. */
        provider_error_set(out, ERRCLASS_FATAL, 429, "insufficient_quota", "insufficient_quota");
        out->quota_exhausted = true;
        snprintf(out->message, sizeof out->message,
                 "the upstream provider's account has run out of quota or credit");
    } else if (strcmp(code, "rate_limit_exceeded") == 0) {
        provider_error_set(out, ERRCLASS_RETRYABLE, 429, "rate_limit_error", "rate_limit_exceeded");
    } else if (strcmp(code, "context_length_exceeded") == 0) {
        provider_error_set(out, ERRCLASS_FATAL, 400, "invalid_request_error",
                           "context_length_exceeded");
    } else if (strcmp(code, "model_not_found") == 0) {
        provider_error_set(out, ERRCLASS_FATAL, 502, "upstream_model_not_found", "model_not_found");
        snprintf(out->message, sizeof out->message,
                 "the upstream provider does not know the model: the configured upstream model "
                 "name is wrong");
    } else {
        return false;
    }
    return true;
}

void provider_error_add_detail(upstream_error *out, const char *text, size_t len)
{
    if (!text || !len || strcmp(out->type, "upstream_auth_error") == 0) return;
    size_t used = strlen(out->message);
    if (used + 3 >= sizeof out->message) return;
    size_t room = sizeof out->message - used - 3;
    if (len > room) {
        len = room;
        /* Cut before a UTF-8 continuation byte so the message stays valid. */
        while (len > 0 && ((unsigned char)text[len] & 0xC0) == 0x80)
            len--;
    }
    char *p = out->message + used;
    *p++ = ':';
    *p++ = ' ';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        /* Blank control characters: the message ends up in logs too. */
        *p++ = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
    }
    *p = '\0';
}

void provider_bad_response_error(const char *why, const char *d, size_t n, upstream_error *out)
{
    memset(out, 0, sizeof *out);
    out->retry_after_ms = -1;
    provider_error_set(out, ERRCLASS_AMBIGUOUS, 502, "upstream_error", "upstream_bad_response");
    snprintf(out->message, sizeof out->message,
             "the upstream provider sent something bridle cannot read (%s)", why ? why : "?");
    if (d) provider_error_add_detail(out, d, n > 80 ? 80 : n);
}

/* ------------------------------------------------------------ JSON helpers */

json_object *provider_parse_object(json_tokener *tok, const char *s, size_t len, char *err,
                                   size_t errlen)
{
    size_t i = 0;
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
        i++;
    if (i == len || s[i] != '{') {
        snprintf(err, errlen, "%s", i == len ? "empty body" : "not a JSON object");
        return NULL;
    }
    if (len - i > (size_t)INT32_MAX) {
        snprintf(err, errlen, "body too large");
        return NULL;
    }
    if (!tok) {
        static json_tokener *shared;
        if (!shared) shared = json_tokener_new();
        tok = shared;
    }
    json_tokener_reset(tok);
    json_object *obj = json_tokener_parse_ex(tok, s + i, (int)(len - i));
    if (!obj) {
        enum json_tokener_error e = json_tokener_get_error(tok);
        snprintf(err, errlen, "invalid JSON: %s",
                 e == json_tokener_continue ? "truncated" : json_tokener_error_desc(e));
        return NULL;
    }
    size_t end = i + json_tokener_get_parse_end(tok);
    while (end < len && (s[end] == ' ' || s[end] == '\t' || s[end] == '\r' || s[end] == '\n'))
        end++;
    if (end < len || !json_object_is_type(obj, json_type_object)) {
        json_object_put(obj);
        snprintf(err, errlen, "trailing bytes after the JSON object");
        return NULL;
    }
    return obj;
}

void provider_append_json_str(buf *b, const char *s, size_t len)
{
    buf_append_json_str(b, s, len);
}

void provider_append_json(buf *b, json_object *v)
{
    switch (json_object_get_type(v)) {
    case json_type_string:
        provider_append_json_str(b, json_object_get_string(v),
                                 (size_t)json_object_get_string_len(v));
        return;
    case json_type_object: {
        bool first = true;
        buf_append_char(b, '{');
        json_object_object_foreach(v, key, val)
        {
            if (!first) buf_append_char(b, ',');
            first = false;
            provider_append_json_str(b, key, strlen(key));
            buf_append_char(b, ':');
            provider_append_json(b, val);
        }
        buf_append_char(b, '}');
        return;
    }
    case json_type_array: {
        size_t n = json_object_array_length(v);
        buf_append_char(b, '[');
        for (size_t i = 0; i < n; i++) {
            if (i) buf_append_char(b, ',');
            provider_append_json(b, json_object_array_get_idx(v, i));
        }
        buf_append_char(b, ']');
        return;
    }
    default: {
        /* Numbers keep json-c's formatting (it remembers a parsed double's
         * original text); null and booleans are short. */
        size_t len;
        const char *s = json_object_to_json_string_length(
            v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
        buf_append(b, s, len);
        return;
    }
    }
}

bool provider_get_int(json_object *obj, const char *key, int64_t *out)
{
    json_object *v;
    if (!obj || !json_object_object_get_ex(obj, key, &v)) return false;
    if (json_object_is_type(v, json_type_int)) {
        *out = json_object_get_int64(v);
        return true;
    }
    if (!json_object_is_type(v, json_type_double)) return false;
    /* Converting NaN or an out-of-range double to int64 is undefined. */
    double d = json_object_get_double(v);
    if (!(d > -9.2e18 && d < 9.2e18)) return false;
    *out = (int64_t)d;
    return true;
}

bool provider_get_count(json_object *obj, const char *key, int64_t *out)
{
    int64_t v;
    if (!provider_get_int(obj, key, &v)) return false;
    *out = v < 0 ? 0 : v > 1000000000000LL ? 1000000000000LL : v;
    return true;
}

void provider_content_text(json_object *content, buf *out)
{
    if (json_object_is_type(content, json_type_string)) {
        buf_append(out, json_object_get_string(content),
                   (size_t)json_object_get_string_len(content));
        return;
    }
    if (!json_object_is_type(content, json_type_array)) return;
    size_t n = json_object_array_length(content);
    for (size_t i = 0; i < n; i++) {
        json_object *part = json_object_array_get_idx(content, i), *type, *text;
        if (!json_object_object_get_ex(part, "type", &type) ||
            !json_object_is_type(type, json_type_string))
            continue;
        const char *t = json_object_get_string(type);
        /* Assistant messages may carry a refusal part instead of text. */
        const char *field = strcmp(t, "text") == 0      ? "text"
                            : strcmp(t, "refusal") == 0 ? "refusal"
                                                        : NULL;
        if (field && json_object_object_get_ex(part, field, &text) &&
            json_object_is_type(text, json_type_string))
            buf_append(out, json_object_get_string(text), (size_t)json_object_get_string_len(text));
    }
}

uint32_t provider_doc_get(const jdoc *d, uint32_t obj, const char *key)
{
    uint32_t v = jdoc_get_last(d, obj, key);
    return jdoc_type(d, v) == JT_NULL ? JT_NONE : v;
}

uint32_t provider_doc_typed(const jdoc *d, uint32_t obj, const char *key, jt_type type)
{
    uint32_t v = provider_doc_get(d, obj, key);
    return jdoc_type(d, v) == type ? v : JT_NONE;
}

bool provider_doc_member_copy(const jdoc *d, uint32_t obj, const char *key, const char *as,
                              buf *out)
{
    uint32_t v = provider_doc_get(d, obj, key);
    if (v == JT_NONE) return false;
    buf_append_char(out, ',');
    provider_append_json_str(out, as, strlen(as));
    buf_append_char(out, ':');
    jdoc_json_append(d, v, out);
    return true;
}

bool provider_doc_stop_list(const jdoc *d, buf *out)
{
    uint32_t stop = provider_doc_get(d, 0, "stop");
    size_t at = out->len;
    int n = 0;
    if (jdoc_type(d, stop) == JT_STRING) {
        buf_append_char(out, '[');
        jdoc_json_append(d, stop, out);
        n = 1;
    } else if (jdoc_type(d, stop) == JT_ARRAY) {
        for (uint32_t s = jdoc_first(d, stop); s != JT_NONE; s = jdoc_next(d, stop, s)) {
            if (jdoc_type(d, s) != JT_STRING) continue;
            buf_append_char(out, n++ ? ',' : '[');
            jdoc_json_append(d, s, out);
        }
    }
    if (n == 0) {
        out->len = at;
        if (out->data) out->data[at] = '\0';
        return false;
    }
    buf_append_char(out, ']');
    return true;
}

bool provider_image_url(const jdoc *d, uint32_t part, buf *scratch, const char **url, size_t *len)
{
    uint32_t iu = provider_doc_get(d, part, "image_url");
    if (jdoc_type(d, iu) == JT_OBJECT) iu = provider_doc_get(d, iu, "url");
    if (jdoc_type(d, iu) != JT_STRING) return false;
    *url = jdoc_str_view(d, iu, scratch, len);
    return true;
}

bool provider_data_uri(const char *url, size_t len, size_t *type_len, const char **data)
{
    if (len < 5 || memcmp(url, "data:", 5) != 0) return false;
    const char *semi = memmem(url, len, ";base64,", 8);
    const char *comma = memchr(url, ',', len);
    if (!semi || semi != comma - 7 || semi == url + 5) return false;
    *type_len = (size_t)(semi - url - 5);
    *data = semi + 8;
    return true;
}

uint32_t provider_doc_call_name(const jdoc *d, uint32_t msgs, uint32_t before, uint32_t id,
                                bool assistant_only)
{
    uint32_t found = JT_NONE;
    for (uint32_t m = jdoc_first(d, msgs); m != JT_NONE && m != before; m = jdoc_next(d, msgs, m)) {
        if (assistant_only && !jdoc_str_eq(d, provider_doc_get(d, m, "role"), "assistant"))
            continue;
        uint32_t calls = provider_doc_typed(d, m, "tool_calls", JT_ARRAY);
        for (uint32_t c = jdoc_first(d, calls); c != JT_NONE; c = jdoc_next(d, calls, c))
            if (jdoc_str_same(d, provider_doc_get(d, c, "id"), id))
                found = provider_doc_get(d, provider_doc_get(d, c, "function"), "name");
    }
    return found;
}

bool provider_one_tool_call(const canon_request *req)
{
    return req && req->doc &&
           jdoc_type(req->doc, provider_doc_get(req->doc, 0, "parallel_tool_calls")) == JT_FALSE;
}

uint32_t provider_doc_allowed_tools(const jdoc *d)
{
    uint32_t tc = provider_doc_get(d, 0, "tool_choice");
    if (!jdoc_str_eq(d, provider_doc_get(d, tc, "type"), "allowed_tools")) return JT_NONE;
    return provider_doc_typed(d, tc, "allowed_tools", JT_OBJECT);
}

bool provider_doc_tool_offered(const jdoc *d, uint32_t allowed, uint32_t tool)
{
    if (allowed == JT_NONE) return true;
    uint32_t name = provider_doc_get(d, provider_doc_get(d, tool, "function"), "name");
    uint32_t list = provider_doc_typed(d, allowed, "tools", JT_ARRAY);
    for (uint32_t a = jdoc_first(d, list); a != JT_NONE; a = jdoc_next(d, list, a))
        if (jdoc_str_same(d, provider_doc_get(d, provider_doc_get(d, a, "function"), "name"), name))
            return true;
    return false;
}

void provider_doc_tool_id_append(const jdoc *d, uint32_t id, buf *scratch, buf *out)
{
    size_t len;
    const char *s = jdoc_str_view(d, id, scratch, &len);
    const char *sig = memmem(s, len, PROVIDER_THOUGHT_SEP, sizeof PROVIDER_THOUGHT_SEP - 1);
    if (sig && sig > s) len = (size_t)(sig - s);
    buf_append_char(out, '"');
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-';
        buf_append_char(out, ok ? c : '_');
    }
    if (len == 0) buf_append_char(out, '_'); /* an empty id matches no pattern either */
    buf_append_char(out, '"');
}

void provider_doc_content_text(const jdoc *d, uint32_t content, buf *out)
{
    if (jdoc_type(d, content) == JT_STRING) {
        jdoc_str_append(d, content, out);
        return;
    }
    if (jdoc_type(d, content) != JT_ARRAY) return;
    for (uint32_t part = jdoc_first(d, content); part != JT_NONE;
         part = jdoc_next(d, content, part)) {
        uint32_t type = provider_doc_get(d, part, "type");
        /* Assistant messages may carry a refusal part instead of text. */
        const char *field = jdoc_str_eq(d, type, "text")      ? "text"
                            : jdoc_str_eq(d, type, "refusal") ? "refusal"
                                                              : NULL;
        uint32_t text = field ? provider_doc_get(d, part, field) : JT_NONE;
        if (jdoc_type(d, text) == JT_STRING) jdoc_str_append(d, text, out);
    }
}

bool provider_doc_int(const jdoc *d, uint32_t v, int64_t *out)
{
    if (jdoc_int64(d, v, out)) return true;
    double x;
    /* Converting NaN or an out-of-range double to int64 is undefined. */
    if (!jdoc_double(d, v, &x) || !(x > -9.2e18 && x < 9.2e18)) return false;
    *out = (int64_t)x;
    return true;
}

json_object *provider_json_get(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (!o || !json_object_is_type(o, json_type_object)) return NULL;
    json_object_object_get_ex(o, key, &v);
    return v;
}

const char *provider_json_str(json_object *o, const char *key)
{
    json_object *v = provider_json_get(o, key);
    return json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

json_object *provider_json_typed(json_object *o, const char *key, json_type type)
{
    json_object *v = provider_json_get(o, key);
    return json_object_is_type(v, type) ? v : NULL;
}

json_object *provider_usage_json(const usage_record *r, int64_t prompt_tokens)
{
    json_object *u = json_object_new_object(), *pd = json_object_new_object(),
                *cd = json_object_new_object();
    json_object_object_add(u, "prompt_tokens", json_object_new_int64(prompt_tokens));
    json_object_object_add(u, "completion_tokens", json_object_new_int64(r->output));
    json_object_object_add(u, "total_tokens", json_object_new_int64(prompt_tokens + r->output));
    json_object_object_add(pd, "cached_tokens", json_object_new_int64(r->cache_read));
    if (r->cache_write_5m + r->cache_write_1h > 0)
        json_object_object_add(pd, "cache_write_tokens",
                               json_object_new_int64(r->cache_write_5m + r->cache_write_1h));
    json_object_object_add(u, "prompt_tokens_details", pd);
    json_object_object_add(cd, "reasoning_tokens", json_object_new_int64(r->reasoning));
    json_object_object_add(u, "completion_tokens_details", cd);
    return u;
}

/* The efforts a client may name (wire-formats §1.2) and the nominal budget
 * each stands for where a dialect takes tokens, not an effort: low, medium
 * and high are the scale the task caps use too (provider_reasoning_effort).
 * xhigh and max stay at 16384, under every reasoning model's largest
 * budget (Gemini 2.5 Flash stops at 24576); none and minimal ask for none. */
static const struct {
    const char *name;
    int64_t budget;
} efforts[] = {
    {"none", 0},     {"minimal", 0},   {"low", 1024},  {"medium", 4096},
    {"high", 16384}, {"xhigh", 16384}, {"max", 16384},
};
#define N_EFFORTS (sizeof efforts / sizeof efforts[0])

bool provider_effort_budget(const char *effort, int64_t *budget)
{
    for (size_t i = 0; effort && i < N_EFFORTS; i++)
        if (strcmp(effort, efforts[i].name) == 0) {
            *budget = efforts[i].budget;
            return true;
        }
    return false;
}

const char *provider_effort_names(void)
{
    static char names[96];
    if (names[0]) return names;
    size_t at = 0;
    for (size_t i = 0; i < N_EFFORTS; i++)
        at += (size_t)snprintf(names + at, sizeof names - at, "%s%s", efforts[i].name,
                               i + 2 < N_EFFORTS   ? ", "
                               : i + 1 < N_EFFORTS ? " or "
                                                   : "");
    return names;
}

bool provider_reasons(const target *t)
{
    return t && t->price && t->price->reasoning;
}

int64_t provider_thinking_budget(const canon_request *req, const target *t)
{
    if (!req || req->reasoning_set || req->thinking_budget <= 0) return 0;
    return provider_reasons(t) ? req->thinking_budget : 0;
}

/* The budget the client's own control stands for: reasoning_effort, else
 * reasoning.effort, else an Anthropic-style thinking object (disabled = 0,
 * enabled = its budget_tokens); -1 when it names no budget. canon checked
 * the efforts and refused duplicates of these keys. */
static int64_t client_budget(const jdoc *d)
{
    int64_t b = -1;
    uint32_t effort = provider_doc_get(d, 0, "reasoning_effort");
    if (jdoc_type(d, effort) != JT_STRING)
        effort = provider_doc_get(d, provider_doc_get(d, 0, "reasoning"), "effort");
    if (jdoc_type(d, effort) == JT_STRING) {
        buf name = BUF_INIT;
        jdoc_str_append(d, effort, &name);
        bool known = provider_effort_budget(name.data, &b);
        buf_free(&name);
        return known ? b : -1;
    }
    uint32_t th = provider_doc_get(d, 0, "thinking");
    uint32_t type = provider_doc_get(d, th, "type");
    if (jdoc_str_eq(d, type, "disabled")) return 0;
    if (jdoc_str_eq(d, type, "enabled") &&
        provider_doc_int(d, provider_doc_get(d, th, "budget_tokens"), &b) && b >= 0)
        return b;
    return -1;
}

int64_t provider_reasoning_budget(const canon_request *req, const target *t)
{
    if (!req) return -1;
    if (!provider_reasons(t)) {
        if (req->reasoning_set)
            log_debug("%s does not reason: the client's reasoning control is not sent",
                      t && t->model ? t->model : "the model");
        return -1;
    }
    if (req->reasoning_set) return req->doc ? client_budget(req->doc) : -1;
    return req->thinking_budget > 0 ? req->thinking_budget : -1;
}

const char *provider_reasoning_effort(int64_t budget)
{
    /* the table's highest budget that fits (its first name: high, not max);
     * its lowest when none does */
    size_t best = N_EFFORTS;
    for (size_t i = 0; i < N_EFFORTS; i++) {
        int64_t b = efforts[i].budget;
        if (b > 0 && (best == N_EFFORTS || (b <= budget && b > efforts[best].budget))) best = i;
    }
    return efforts[best].name;
}

void provider_openai_error_json(buf *b, const char *type, const char *code, const char *param,
                                const char *message)
{
    buf_append_str(b, "{\"error\":{\"message\":");
    buf_append_json_str(b, message, strlen(message));
    buf_append_str(b, ",\"type\":");
    buf_append_json_str(b, type, strlen(type));
    buf_append_str(b, ",\"param\":");
    if (param && *param)
        buf_append_json_str(b, param, strlen(param));
    else
        buf_append_str(b, "null");
    buf_append_str(b, ",\"code\":");
    if (code && *code)
        buf_append_json_str(b, code, strlen(code));
    else
        buf_append_str(b, "null");
    buf_append_str(b, "}}");
}

int provider_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* Same-role messages share the open turn (Anthropic requires user and
 * assistant to alternate; Gemini's tool answers form one user turn). */
buf *provider_turn_item(provider_turns *t)
{
    if (t->system) {
        if (t->sys.len) buf_append_char(&t->sys, ',');
        return &t->sys;
    }
    if (t->turn != t->role) {
        if (t->turn) buf_append_str(t->b, "]}");
        buf_append_str(t->b, t->n_turns++ ? ",{\"role\":\"" : "{\"role\":\"");
        buf_append_str(t->b, t->role);
        buf_append_str(t->b, "\",\"");
        buf_append_str(t->b, t->items);
        buf_append_str(t->b, "\":[");
        t->turn = t->role;
        t->n_items = 0;
    }
    if (t->n_items++) buf_append_char(t->b, ',');
    return t->b;
}

int provider_tool_args_append(const jdoc *d, uint32_t args, size_t i, jdoc *parsed, buf *scratch,
                              buf *out, char *err, size_t errlen)
{
    size_t len = 0;
    jt_type type = jdoc_type(d, args);
    if (type == JT_OBJECT) { /* OpenAI wants a string; an object means the same */
        jdoc_json_append(d, args, out);
        return 0;
    }
    if (type != JT_STRING && type != JT_ABSENT && type != JT_NULL)
        return provider_fail(err, errlen,
                             "tool_calls[%zu].function.arguments must be a string holding a JSON "
                             "object",
                             i);
    const char *s = type == JT_STRING ? jdoc_str_view(d, args, scratch, &len) : NULL;
    if (len == 0) {
        buf_append_str(out, "{}");
        return 0;
    }
    char why[96] = "not a JSON object";
    if (jdoc_parse(parsed, s, len, why, sizeof why, NULL) != 0 || jdoc_type(parsed, 0) != JT_OBJECT)
        return provider_fail(
            err, errlen, "tool_calls[%zu].function.arguments is not a JSON object (%s)", i, why);
    jdoc_json_append(parsed, 0, out);
    return 0;
}
