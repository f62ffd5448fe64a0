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

/* ---- multipart/form-data ------------------------------------------------- */

static const char *find_ci(const char *s, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (!strncasecmp(s + i, needle, n)) return s + i;
    return NULL;
}

/* The boundary of a Content-Type value, quoted or not (1-70 characters). */
static bool mp_boundary(const char *ctype, char out[72])
{
    if (!ctype || strncasecmp(ctype, "multipart/form-data", 19)) return false;
    const char *b = find_ci(ctype, strlen(ctype), "boundary=");
    if (!b) return false;
    b += 9;
    size_t n = 0;
    if (*b == '"') {
        for (b++; b[n] && b[n] != '"'; n++)
            ;
    } else {
        while (b[n] && b[n] != ';' && !isspace((unsigned char)b[n]))
            n++;
    }
    if (n < 1 || n > 70) return false;
    memcpy(out, b, n);
    out[n] = '\0';
    return true;
}

/* A parameter (name="..." or filename="...") of a Content-Disposition value
 * that ends at `end`; the value stays in place. */
static bool mp_param(const char *s, const char *end, const char *key, const char **v, size_t *vlen)
{
    size_t klen = strlen(key);
    for (const char *p = s; p + klen + 2 <= end; p++) {
        if ((p == s || p[-1] == ';' || p[-1] == ' ') && !strncasecmp(p, key, klen) &&
            p[klen] == '=' && p[klen + 1] == '"') {
            const char *q = memchr(p + klen + 2, '"', (size_t)(end - p - klen - 2));
            if (!q) return false;
            *v = p + klen + 2;
            *vlen = (size_t)(q - *v);
            return true;
        }
    }
    return false;
}

/* One part's headers [h, hend): its form-data name and filename. */
static const char *mp_headers(const char *h, const char *hend, struct mp_part *part)
{
    while (h < hend) {
        const char *eol = memmem(h, (size_t)(hend - h), "\r\n", 2);
        if (!eol) eol = hend;
        if ((size_t)(eol - h) > 20 && !strncasecmp(h, "content-disposition:", 20)) {
            const char *v = h + 20;
            while (v < eol && *v == ' ')
                v++;
            if ((size_t)(eol - v) < 9 || strncasecmp(v, "form-data", 9))
                return "a part's Content-Disposition is not form-data";
            if (!mp_param(v, eol, "name", &part->name, &part->name_len))
                return "a part's Content-Disposition has no name";
            mp_param(v, eol, "filename", &part->filename, &part->filename_len);
        }
        h = eol + 2;
    }
    return part->name ? NULL : "a part has no Content-Disposition header";
}

const char *mp_parse(const char *ctype, const char *body, size_t len, struct mp_part *parts,
                     int max, int *n)
{
    char bnd[72], delim[76];
    if (!mp_boundary(ctype, bnd))
        return "the body must be multipart/form-data with a boundary (Content-Type)";
    int dlen = snprintf(delim, sizeof(delim), "--%s", bnd);
    const char *end = body + len;
    const char *p = memmem(body, len, delim, (size_t)dlen);
    *n = 0;
    if (!p) return "the multipart body has no boundary line";
    for (;;) {
        p += dlen;
        if (end - p >= 2 && !memcmp(p, "--", 2)) return NULL; /* the closing boundary */
        if (end - p < 2 || memcmp(p, "\r\n", 2)) return "a boundary line does not end in CRLF";
        p += 2;
        const char *hend = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!hend) return "a part's headers do not end";
        if (*n == max) return "too many parts";
        struct mp_part *part = &parts[*n];
        memset(part, 0, sizeof(*part));
        const char *err = mp_headers(p, hend, part);
        if (err) return err;
        part->data = hend + 4;
        /* the part ends at CRLF + the delimiter */
        const char *q = part->data;
        const char *next = NULL;
        while ((q = memmem(q, (size_t)(end - q), delim, (size_t)dlen)) != NULL) {
            if (q - part->data >= 2 && q[-2] == '\r' && q[-1] == '\n') {
                next = q;
                break;
            }
            q++;
        }
        if (!next) return "the multipart body does not end with its closing boundary";
        part->len = (size_t)(next - 2 - part->data);
        (*n)++;
        p = next;
    }
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
