#include "server/canon.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int invalid(canon_error *err, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int invalid(canon_error *err, const char *param, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    snprintf(err->code, sizeof err->code, "%s", code ? code : "");
    return -1;
}

static const char *tname(json_object *o)
{
    return o ? json_type_to_name(json_object_get_type(o)) : "null";
}

static bool is_role(const char *r)
{
    static const char *const roles[] = {"system", "developer", "user", "assistant", "tool", "function", NULL};
    for (const char *const *p = roles; *p; p++)
        if (strcmp(*p, r) == 0)
            return true;
    return false;
}

static int check_parts(json_object *content, size_t i, canon_error *err)
{
    size_t n = json_object_array_length(content);
    for (size_t j = 0; j < n; j++) {
        json_object *part = json_object_array_get_idx(content, j), *type;
        char param[96];
        snprintf(param, sizeof param, "messages[%zu].content[%zu]", i, j);
        if (!json_object_is_type(part, json_type_object) ||
            !json_object_object_get_ex(part, "type", &type) ||
            !json_object_is_type(type, json_type_string))
            return invalid(err, param, "invalid_type",
                           "%s must be an object with a string \"type\", like {\"type\": \"text\", "
                           "\"text\": \"...\"}",
                           param);
    }
    return 0;
}

static int check_message(json_object *m, size_t i, canon_error *err)
{
    char param[96];
    snprintf(param, sizeof param, "messages[%zu]", i);
    if (!json_object_is_type(m, json_type_object))
        return invalid(err, param, "invalid_type",
                       "%s must be an object like {\"role\": \"user\", \"content\": \"Hello\"}, got %s",
                       param, tname(m));
    json_object *role, *content;
    snprintf(param, sizeof param, "messages[%zu].role", i);
    if (!json_object_object_get_ex(m, "role", &role))
        return invalid(err, param, "missing_required_parameter", "%s is missing: say who speaks "
                       "(system, developer, user, assistant or tool)", param);
    if (!json_object_is_type(role, json_type_string) || !is_role(json_object_get_string(role)))
        return invalid(err, param, "invalid_value",
                       "%s must be one of system, developer, user, assistant, tool; got %s", param,
                       json_object_to_json_string_ext(role, JSON_C_TO_STRING_PLAIN));
    const char *r = json_object_get_string(role);
    snprintf(param, sizeof param, "messages[%zu].content", i);
    bool has = json_object_object_get_ex(m, "content", &content);
    if (!has || content == NULL) {
        json_object *tc;
        if (strcmp(r, "assistant") == 0 && json_object_object_get_ex(m, "tool_calls", &tc))
            return 0;
        return invalid(err, param, "missing_required_parameter",
                       "%s is missing: a %s message needs content (a string or a list of parts)",
                       param, r);
    }
    if (json_object_is_type(content, json_type_string))
        return 0;
    if (json_object_is_type(content, json_type_array))
        return check_parts(content, i, err);
    return invalid(err, param, "invalid_type",
                   "%s must be a string or a list of content parts, got %s", param, tname(content));
}

static int check_messages(json_object *root, canon_request *out, canon_error *err)
{
    json_object *msgs;
    if (!json_object_object_get_ex(root, "messages", &msgs))
        return invalid(err, "messages", "missing_required_parameter",
                       "\"messages\" is missing: send the conversation as a list, like "
                       "[{\"role\": \"user\", \"content\": \"Hello\"}]");
    if (!json_object_is_type(msgs, json_type_array))
        return invalid(err, "messages", "invalid_type", "\"messages\" must be a list of messages, got %s",
                       tname(msgs));
    size_t n = json_object_array_length(msgs);
    if (n == 0)
        return invalid(err, "messages", "empty_array",
                       "\"messages\" is empty: send at least one message");
    for (size_t i = 0; i < n; i++)
        if (check_message(json_object_array_get_idx(msgs, i), i, err))
            return -1;
    out->messages = msgs;
    return 0;
}

/* An optional integer field in [lo, hi]; *out untouched when absent. */
static int opt_int(json_object *root, const char *key, int64_t lo, int64_t hi, int64_t *out,
                   canon_error *err)
{
    json_object *v;
    if (!json_object_object_get_ex(root, key, &v) || v == NULL)
        return 0;
    if (!json_object_is_type(v, json_type_int))
        return invalid(err, key, "invalid_type", "\"%s\" must be an integer, got %s", key, tname(v));
    int64_t x = json_object_get_int64(v);
    if (x < lo || x > hi)
        return invalid(err, key, "invalid_value", "\"%s\" must be between %lld and %lld, got %lld", key,
                       (long long)lo, (long long)hi, (long long)x);
    *out = x;
    return 0;
}

static int opt_number(json_object *root, const char *key, double lo, double hi, canon_error *err)
{
    json_object *v;
    if (!json_object_object_get_ex(root, key, &v) || v == NULL)
        return 0;
    if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
        return invalid(err, key, "invalid_type", "\"%s\" must be a number, got %s", key, tname(v));
    double x = json_object_get_double(v);
    if (x < lo || x > hi)
        return invalid(err, key, "invalid_value", "\"%s\" must be between %g and %g, got %g", key, lo,
                       hi, x);
    return 0;
}

static int opt_string(json_object *root, const char *key, const char **out, canon_error *err)
{
    json_object *v;
    if (!json_object_object_get_ex(root, key, &v) || v == NULL)
        return 0;
    if (!json_object_is_type(v, json_type_string))
        return invalid(err, key, "invalid_type", "\"%s\" must be a string, got %s", key, tname(v));
    *out = json_object_get_string(v);
    return 0;
}

static int check_stream(json_object *root, canon_request *out, canon_error *err)
{
    json_object *v, *so;
    if (json_object_object_get_ex(root, "stream", &v) && v != NULL) {
        if (!json_object_is_type(v, json_type_boolean))
            return invalid(err, "stream", "invalid_type", "\"stream\" must be true or false, got %s",
                           tname(v));
        out->stream = json_object_get_boolean(v);
    }
    if (!json_object_object_get_ex(root, "stream_options", &so) || so == NULL)
        return 0;
    if (!out->stream)
        return invalid(err, "stream_options", "invalid_value",
                       "\"stream_options\" is only allowed when \"stream\" is true");
    if (!json_object_is_type(so, json_type_object))
        return invalid(err, "stream_options", "invalid_type", "\"stream_options\" must be an object");
    if (json_object_object_get_ex(so, "include_usage", &v) && v != NULL) {
        if (!json_object_is_type(v, json_type_boolean))
            return invalid(err, "stream_options.include_usage", "invalid_type",
                           "\"stream_options.include_usage\" must be true or false");
        out->include_usage = json_object_get_boolean(v);
    }
    return 0;
}

static int check_metadata(json_object *root, canon_request *out, canon_error *err)
{
    json_object *md;
    if (!json_object_object_get_ex(root, "metadata", &md) || md == NULL)
        return 0;
    if (!json_object_is_type(md, json_type_object))
        return invalid(err, "metadata", "invalid_type",
                       "\"metadata\" must be an object of string values, got %s", tname(md));
    json_object_object_foreach(md, key, val)
    {
        char param[96];
        snprintf(param, sizeof param, "metadata.%.60s", key);
        if (!json_object_is_type(val, json_type_string))
            return invalid(err, param, "invalid_type", "%s must be a string, got %s", param, tname(val));
        if (strcmp(key, "task") == 0)
            out->task = json_object_get_string(val);
        else if (strcmp(key, "agent") == 0)
            out->agent = json_object_get_string(val);
        else if (strcmp(key, "feature") == 0)
            out->feature = json_object_get_string(val);
        else if (strcmp(key, "team") == 0)
            out->team = json_object_get_string(val);
    }
    return 0;
}

static int check_response_format(json_object *root, canon_request *out, canon_error *err)
{
    json_object *rf, *type;
    if (!json_object_object_get_ex(root, "response_format", &rf) || rf == NULL)
        return 0;
    if (!json_object_is_type(rf, json_type_object) || !json_object_object_get_ex(rf, "type", &type) ||
        !json_object_is_type(type, json_type_string))
        return invalid(err, "response_format", "invalid_type",
                       "\"response_format\" must be an object like {\"type\": \"json_object\"}");
    const char *t = json_object_get_string(type);
    if (strcmp(t, "text") && strcmp(t, "json_object") && strcmp(t, "json_schema"))
        return invalid(err, "response_format.type", "invalid_value",
                       "\"response_format.type\" must be text, json_object or json_schema, got \"%s\"", t);
    out->json_mode = strcmp(t, "text") != 0;
    return 0;
}

static int check_fields(json_object *root, canon_request *out, canon_error *err)
{
    json_object *model;
    if (!json_object_object_get_ex(root, "model", &model))
        return invalid(err, "model", "missing_required_parameter",
                       "\"model\" is missing: name a model (GET /v1/models lists them) or a route "
                       "such as \"auto\"");
    if (!json_object_is_type(model, json_type_string) || json_object_get_string_len(model) == 0)
        return invalid(err, "model", "invalid_type", "\"model\" must be a non-empty string, got %s",
                       tname(model));
    out->model = json_object_get_string(model);
    if (check_messages(root, out, err) || check_stream(root, out, err) ||
        check_metadata(root, out, err) || check_response_format(root, out, err))
        return -1;
    int64_t mt = -1, mct = -1, n = 1;
    if (opt_int(root, "max_tokens", 1, 100000000, &mt, err) ||
        opt_int(root, "max_completion_tokens", 1, 100000000, &mct, err) ||
        opt_int(root, "n", 1, 128, &n, err) || opt_number(root, "temperature", 0, 2, err) ||
        opt_number(root, "top_p", 0, 1, err) || opt_number(root, "presence_penalty", -2, 2, err) ||
        opt_number(root, "frequency_penalty", -2, 2, err) || opt_string(root, "user", &out->user, err))
        return -1;
    out->max_tokens = mct >= 0 ? mct : mt;
    return 0;
}

int canon_parse_chat(json_tokener *tok, const char *body, size_t len, canon_request *out,
                     canon_error *err)
{
    memset(out, 0, sizeof *out);
    out->max_tokens = -1;
    if (len == 0)
        return invalid(err, NULL, "invalid_json",
                       "the request body is empty: send a JSON object with \"model\" and \"messages\"");
    json_tokener_reset(tok);
    json_object *root = json_tokener_parse_ex(tok, body, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    while (root && end < len && (body[end] == ' ' || body[end] == '\n' || body[end] == '\r' || body[end] == '\t'))
        end++;
    if (!root || jerr != json_tokener_success || end != len) {
        json_object_put(root);
        if (jerr == json_tokener_continue || (jerr == json_tokener_success && !root))
            return invalid(err, NULL, "invalid_json",
                           "the request body is not valid JSON: it ends early (after %zu bytes)", len);
        return invalid(err, NULL, "invalid_json",
                       "the request body is not valid JSON: %s at byte %zu",
                       jerr == json_tokener_success ? "unexpected data after the object"
                                                    : json_tokener_error_desc(jerr),
                       end);
    }
    if (!json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        return invalid(err, NULL, "invalid_type",
                       "the request body must be a JSON object with \"model\" and \"messages\"");
    }
    out->root = root;
    if (check_fields(root, out, err)) {
        json_object_put(root);
        out->root = NULL;
        return -1;
    }
    return 0;
}
