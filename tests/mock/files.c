/* The OpenAI Files API (wire-formats.md section 2.1), in memory: uploads
 * for batch input, and the output and error files batches write. Also the
 * reply helpers the batch endpoints share. */
#include "tests/mock/mock.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/keyvalq_struct.h>

#define FILE_TTL_S (30L * 24 * 3600) /* batch files expire after 30 days */

struct mock_file {
    struct mock_file *next; /* newest first */
    char id[40];
    char purpose[16];
    char *filename;
    char *data;
    size_t len;
    long created;
};

static struct mock_file *files_head;

/* ---- replies shared with batch_*.c -------------------------------------- */

void api_send(struct evhttp_request *req, int status, const char *content_type, struct evbuffer *b)
{
    stats_record_status(status);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", content_type);
    evhttp_send_reply(req, status, http_reason(status), b);
}

void api_openai_error(struct evhttp_request *req, int status, const char *msg, const char *param,
                      const char *code)
{
    struct evbuffer *b = evbuffer_new();
    ADD_LIT(b, "{\"error\":{\"message\":");
    json_cstr(b, msg);
    evbuffer_add_printf(
        b, ",\"type\":\"%s\",\"param\":", status >= 500 ? "server_error" : "invalid_request_error");
    if (param)
        json_cstr(b, param);
    else
        ADD_LIT(b, "null");
    ADD_LIT(b, ",\"code\":");
    if (code)
        json_cstr(b, code);
    else
        ADD_LIT(b, "null");
    ADD_LIT(b, "}}\n");
    api_send(req, status, "application/json", b);
    evbuffer_free(b);
}

json_object *api_parse_json(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (!len) return NULL;
    const char *p = (const char *)evbuffer_pullup(in, -1);
    json_tokener *t = json_tokener_new();
    json_object *root = t ? json_tokener_parse_ex(t, p, (int)len) : NULL;
    if (root &&
        (json_tokener_get_parse_end(t) != len || !json_object_is_type(root, json_type_object))) {
        /* trailing bytes other than whitespace, or not an object */
        size_t i = json_tokener_get_parse_end(t);
        while (i < len && isspace((unsigned char)p[i]))
            i++;
        if (i != len || !json_object_is_type(root, json_type_object)) {
            json_object_put(root);
            root = NULL;
        }
    }
    if (t) json_tokener_free(t);
    return root;
}

bool api_query(struct evhttp_request *req, const char *key, char *out, size_t size)
{
    const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    struct evkeyvalq params = {0};
    bool found = false;
    if (q && evhttp_parse_query_str(q, &params) == 0) {
        const char *v = evhttp_find_header(&params, key);
        if (v) {
            snprintf(out, size, "%s", v);
            found = true;
        }
    }
    evhttp_clear_headers(&params);
    return found;
}

/* An id no other object of this process has: a prefix and 24 hex digits
 * (splitmix64 of a counter), as random-looking as the real ones. */
void api_new_id(char *out, size_t size, const char *prefix)
{
    static uint64_t seq;
    uint64_t x = ++seq * 0x9e3779b97f4a7c15ULL + (uint64_t)time(NULL);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    x ^= x >> 31;
    snprintf(out, size, "%s%016llx%08llx", prefix, (unsigned long long)x,
             (unsigned long long)(seq & 0xffffffffULL));
}

/* ---- the store ----------------------------------------------------------- */

static struct mock_file *file_find(const char *id, size_t id_len)
{
    for (struct mock_file *f = files_head; f; f = f->next)
        if (strlen(f->id) == id_len && !memcmp(f->id, id, id_len)) return f;
    return NULL;
}

const char *files_add(const char *purpose, const char *filename, char *data, size_t len)
{
    struct mock_file *f = calloc(1, sizeof(*f));
    if (!f || !(f->filename = strdup(filename))) {
        free(f);
        free(data);
        return NULL;
    }
    api_new_id(f->id, sizeof(f->id), "file-");
    snprintf(f->purpose, sizeof(f->purpose), "%s", purpose);
    f->data = data;
    f->len = len;
    f->created = (long)time(NULL);
    f->next = files_head;
    files_head = f;
    return f->id;
}

const char *files_get(const char *id, size_t *len, const char **purpose)
{
    struct mock_file *f = file_find(id, strlen(id));
    if (!f) return NULL;
    *len = f->len;
    if (purpose) *purpose = f->purpose;
    return f->data ? f->data : "";
}

static void file_free(struct mock_file *f)
{
    free(f->filename);
    free(f->data);
    free(f);
}

void files_free_all(void)
{
    while (files_head) {
        struct mock_file *f = files_head;
        files_head = f->next;
        file_free(f);
    }
}

/* ---- endpoints ----------------------------------------------------------- */

static void file_object(const struct mock_file *f, struct evbuffer *b)
{
    ADD_LIT(b, "{\"id\":");
    json_cstr(b, f->id);
    ADD_NUM(b, ",\"object\":\"file\",\"bytes\":", (long)f->len);
    ADD_NUM(b, ",\"created_at\":", f->created);
    ADD_NUM(b, ",\"expires_at\":", f->created + FILE_TTL_S);
    ADD_LIT(b, ",\"filename\":");
    json_cstr(b, f->filename);
    ADD_LIT(b, ",\"purpose\":");
    json_cstr(b, f->purpose);
    ADD_LIT(b, ",\"status\":\"processed\",\"status_details\":null}");
}

static void send_file_object(struct evhttp_request *req, const struct mock_file *f)
{
    struct evbuffer *b = evbuffer_new();
    file_object(f, b);
    ADD_LIT(b, "\n");
    api_send(req, 200, "application/json", b);
    evbuffer_free(b);
}

static const struct mp_part *mp_field(const struct mp_part *parts, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (parts[i].name_len == strlen(name) && !memcmp(parts[i].name, name, parts[i].name_len))
            return &parts[i];
    return NULL;
}

static bool ends_with(const char *s, size_t len, const char *suffix)
{
    size_t n = strlen(suffix);
    return len >= n && !memcmp(s + len - n, suffix, n);
}

/* POST /v1/files: multipart with purpose=batch and file (a .jsonl). */
static void file_upload(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
    const char *ctype = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    struct mp_part parts[8];
    int n;
    const char *err = mp_parse(ctype, body, len, parts, 8, &n);
    if (err) return api_openai_error(req, 400, err, NULL, NULL);
    const struct mp_part *purpose = mp_field(parts, n, "purpose");
    const struct mp_part *file = mp_field(parts, n, "file");
    if (!purpose)
        return api_openai_error(req, 400, "Missing required parameter: 'purpose'.", "purpose",
                                "missing_required_parameter");
    if (!file || !file->filename)
        return api_openai_error(req, 400,
                                "Missing required parameter: 'file' (a part with a filename).",
                                "file", "missing_required_parameter");
    if (purpose->len != 5 || memcmp(purpose->data, "batch", 5))
        return api_openai_error(req, 400,
                                "Invalid value for 'purpose': the mock stores only purpose "
                                "'batch' files.",
                                "purpose", "invalid_value");
    if (!ends_with(file->filename, file->filename_len, ".jsonl"))
        return api_openai_error(req, 400, "Invalid file format for Batch API. Must be .jsonl",
                                "file", NULL);
    char *data = malloc(file->len ? file->len : 1);
    char *name = strndup(file->filename, file->filename_len);
    const char *id = NULL;
    if (data && name) {
        memcpy(data, file->data, file->len);
        id = files_add("batch", name, data, file->len);
        data = NULL; /* taken over */
    }
    free(data);
    free(name);
    if (!id) return api_openai_error(req, 500, "mock: out of memory", NULL, NULL);
    send_file_object(req, files_head);
}

static void file_list(struct evhttp_request *req)
{
    struct evbuffer *b = evbuffer_new();
    ADD_LIT(b, "{\"object\":\"list\",\"data\":[");
    for (struct mock_file *f = files_head; f; f = f->next) {
        if (f != files_head) ADD_LIT(b, ",");
        file_object(f, b);
    }
    ADD_LIT(b, "],\"has_more\":false}\n");
    api_send(req, 200, "application/json", b);
    evbuffer_free(b);
}

static void file_delete(struct evhttp_request *req, struct mock_file *f)
{
    for (struct mock_file **pp = &files_head; *pp; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    struct evbuffer *b = evbuffer_new();
    ADD_LIT(b, "{\"id\":");
    json_cstr(b, f->id);
    ADD_LIT(b, ",\"object\":\"file\",\"deleted\":true}\n");
    file_free(f);
    api_send(req, 200, "application/json", b);
    evbuffer_free(b);
}

static void file_content(struct evhttp_request *req, const struct mock_file *f)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, f->data ? f->data : "", f->len); /* a copy: DELETE may free f meanwhile */
    api_send(req, 200, "application/octet-stream", b);
    evbuffer_free(b);
}

bool files_route(struct evhttp_request *req, const char *path)
{
    static const char prefix[] = "/v1/files";
    if (strncmp(path, prefix, sizeof(prefix) - 1)) return false;
    const char *rest = path + sizeof(prefix) - 1;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (!*rest) {
        if (cmd == EVHTTP_REQ_POST) return file_upload(req), true;
        if (cmd == EVHTTP_REQ_GET) return file_list(req), true;
        return false;
    }
    if (*rest != '/' || !rest[1]) return false;
    const char *id = rest + 1, *slash = strchr(id, '/');
    size_t id_len = slash ? (size_t)(slash - id) : strlen(id);
    bool content = slash && !strcmp(slash, "/content");
    if (slash && !content) return false;
    struct mock_file *f = file_find(id, id_len);
    if (!f) {
        char msg[160];
        snprintf(msg, sizeof(msg), "No such File object: %.*s", (int)(id_len > 64 ? 64 : id_len),
                 id);
        api_openai_error(req, 404, msg, "id", NULL);
    } else if (cmd == EVHTTP_REQ_GET && content) {
        file_content(req, f);
    } else if (cmd == EVHTTP_REQ_GET) {
        send_file_object(req, f);
    } else if (cmd == EVHTTP_REQ_DELETE && !content) {
        file_delete(req, f);
    } else {
        return false;
    }
    return true;
}
