/* bridle batch submit|status|results: the Batch API of a running gateway,
 * over HTTP (libcurl, blocking: a command-line tool).
 *
 *   bridle batch submit FILE.jsonl [--wait]   upload, create, and with --wait follow it to its
 *                                             end (a progress bar on a terminal)
 *   bridle batch status ID [--json]
 *   bridle batch results ID [--errors]        the output (or error) file to stdout
 *
 * The gateway is --url or BRIDLE_URL (default http://127.0.0.1:8080), the
 * client key --key or BRIDLE_KEY. */
#include <curl/curl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "lib/buf.h"

typedef struct gw {
    const char *url, *key;
} gw;

static size_t on_body(char *p, size_t size, size_t n, void *ctx)
{
    buf_append((buf *)ctx, p, size * n);
    return size * n;
}

/* One request; the answer's body in out. Returns the HTTP status, or -1
 * when the gateway could not be reached (a message printed). */
static long request(const gw *g, const char *method, const char *path, const char *json,
                    curl_mime *mime, buf *out)
{
    CURL *c = curl_easy_init();
    if (!c) return -1;
    char url[1024], auth[512];
    snprintf(url, sizeof url, "%s%s", g->url, path);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", g->key);
    struct curl_slist *h = curl_slist_append(NULL, auth);
    if (json) h = curl_slist_append(h, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    if (json) curl_easy_setopt(c, CURLOPT_POSTFIELDS, json);
    if (mime) curl_easy_setopt(c, CURLOPT_MIMEPOST, mime);
    buf_reset(out);
    long status = -1;
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    else
        fprintf(stderr, "bridle batch: %s: %s\n", url, curl_easy_strerror(rc));
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return status;
}

/* The answer as a JSON object, or NULL with the gateway's error printed. */
static json_object *answer(long status, const buf *b, const char *what)
{
    json_object *o = b->len ? json_tokener_parse(b->data) : NULL;
    if (status == 200 && o) return o;
    json_object *e = NULL, *m = NULL;
    if (status > 0)
        fprintf(stderr, "bridle batch: %s: HTTP %ld: %s\n", what, status,
                json_object_object_get_ex(o, "error", &e) &&
                        json_object_object_get_ex(e, "message", &m)
                    ? json_object_get_string(m)
                    : (b->data ? b->data : ""));
    json_object_put(o);
    return NULL;
}

static const char *str(json_object *o, const char *k)
{
    json_object *v;
    return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : NULL;
}

static int count(json_object *b, const char *k)
{
    json_object *rc, *v;
    if (!json_object_object_get_ex(b, "request_counts", &rc)) return 0;
    return json_object_object_get_ex(rc, k, &v) ? json_object_get_int(v) : 0;
}

static json_object *get_batch(const gw *g, const char *id)
{
    char path[160];
    snprintf(path, sizeof path, "/v1/batches/%s", id);
    buf b = BUF_INIT;
    json_object *o = answer(request(g, "GET", path, NULL, NULL, &b), &b, "status");
    buf_free(&b);
    return o;
}

static bool ended(const char *status)
{
    return status && (strcmp(status, "completed") == 0 || strcmp(status, "cancelled") == 0 ||
                      strcmp(status, "failed") == 0 || strcmp(status, "expired") == 0);
}

static void progress(json_object *b, bool tty)
{
    int total = count(b, "total"), done = count(b, "completed"), failed = count(b, "failed");
    if (!tty) return;
    int width = 30, fill = total ? (done + failed) * width / total : 0;
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    fprintf(stderr, "\r[%s] %d/%d done, %d failed  %-12s", bar, done + failed, total, failed,
            str(b, "status"));
    fflush(stderr);
}

static void print_batch(json_object *b)
{
    printf("%s  %s  %d/%d completed, %d failed", str(b, "id"), str(b, "status"),
           count(b, "completed"), count(b, "total"), count(b, "failed"));
    if (str(b, "output_file_id")) printf("  output %s", str(b, "output_file_id"));
    if (str(b, "error_file_id")) printf("  errors %s", str(b, "error_file_id"));
    printf("\n");
}

static int wait_for(const gw *g, const char *id)
{
    bool tty = isatty(2);
    for (;;) {
        json_object *b = get_batch(g, id);
        if (!b) return 1;
        progress(b, tty);
        if (ended(str(b, "status"))) {
            if (tty) fprintf(stderr, "\n");
            print_batch(b);
            int rc = strcmp(str(b, "status"), "completed") == 0 ? 0 : 1;
            json_object_put(b);
            return rc;
        }
        json_object_put(b);
        struct timespec ts = {1, 0};
        nanosleep(&ts, NULL);
    }
}

static int submit(const gw *g, const char *file, bool wait)
{
    CURL *c = curl_easy_init();
    curl_mime *mime = curl_mime_init(c);
    curl_mimepart *p = curl_mime_addpart(mime);
    curl_mime_name(p, "purpose");
    curl_mime_data(p, "batch", CURL_ZERO_TERMINATED);
    p = curl_mime_addpart(mime);
    curl_mime_name(p, "file");
    if (curl_mime_filedata(p, file) != CURLE_OK) {
        fprintf(stderr, "bridle batch: cannot read %s\n", file);
        curl_mime_free(mime);
        curl_easy_cleanup(c);
        return 1;
    }
    buf b = BUF_INIT;
    json_object *f = answer(request(g, "POST", "/v1/files", NULL, mime, &b), &b, "upload");
    curl_mime_free(mime);
    curl_easy_cleanup(c);
    int rc = 1;
    if (f) {
        char body[256];
        snprintf(body, sizeof body,
                 "{\"input_file_id\":\"%s\",\"endpoint\":\"/v1/chat/completions\","
                 "\"completion_window\":\"24h\"}",
                 str(f, "id"));
        json_object *bt = answer(request(g, "POST", "/v1/batches", body, NULL, &b), &b, "create");
        if (bt) {
            if (wait) {
                fprintf(stderr, "batch %s: %d requests\n", str(bt, "id"), count(bt, "total"));
                rc = wait_for(g, str(bt, "id"));
            } else {
                print_batch(bt);
                rc = 0;
            }
            json_object_put(bt);
        }
        json_object_put(f);
    }
    buf_free(&b);
    return rc;
}

static int results(const gw *g, const char *id, bool errors)
{
    json_object *bt = get_batch(g, id);
    if (!bt) return 1;
    const char *file = str(bt, errors ? "error_file_id" : "output_file_id");
    int rc = 1;
    if (!ended(str(bt, "status")))
        fprintf(stderr, "bridle batch: %s is %s: its results come once it has ended\n", id,
                str(bt, "status"));
    else if (!file)
        rc = 0; /* nothing of that kind */
    else {
        char path[160];
        snprintf(path, sizeof path, "/v1/files/%s/content", file);
        buf b = BUF_INIT;
        long status = request(g, "GET", path, NULL, NULL, &b);
        if (status == 200) {
            fwrite(b.data, 1, b.len, stdout);
            rc = 0;
        } else {
            answer(status, &b, "results");
        }
        buf_free(&b);
    }
    json_object_put(bt);
    return rc;
}

static int batch_usage(int code)
{
    fprintf(code ? stderr : stdout,
            "usage: bridle batch submit FILE.jsonl [--wait] | status ID [--json] | results ID "
            "[--errors]\n"
            "       [--url URL (BRIDLE_URL, default http://127.0.0.1:8080)] [--key KEY "
            "(BRIDLE_KEY)]\n");
    return code;
}

int batch_main(int argc, char **argv)
{
    gw g = {getenv("BRIDLE_URL"), getenv("BRIDLE_KEY")};
    const char *verb = NULL, *arg = NULL;
    bool wait = false, json = false, errors = false;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--url") == 0 && i + 1 < argc)
            g.url = argv[++i];
        else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
            g.key = argv[++i];
        else if (strcmp(argv[i], "--wait") == 0)
            wait = true;
        else if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (strcmp(argv[i], "--errors") == 0)
            errors = true;
        else if (strcmp(argv[i], "--help") == 0)
            return batch_usage(0);
        else if (!verb)
            verb = argv[i];
        else if (!arg)
            arg = argv[i];
        else
            return batch_usage(2);
    }
    if (!verb || !arg) return batch_usage(2);
    if (!g.url || !*g.url) g.url = "http://127.0.0.1:8080";
    if (!g.key || !*g.key) {
        fprintf(stderr, "bridle batch: no client key: pass --key or set BRIDLE_KEY\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = 2;
    if (strcmp(verb, "submit") == 0)
        rc = submit(&g, arg, wait);
    else if (strcmp(verb, "results") == 0)
        rc = results(&g, arg, errors);
    else if (strcmp(verb, "status") == 0) {
        json_object *b = get_batch(&g, arg);
        rc = b ? 0 : 1;
        if (b && json)
            printf("%s\n", json_object_to_json_string_ext(b, JSON_C_TO_STRING_PLAIN));
        else if (b)
            print_batch(b);
        json_object_put(b);
    } else
        rc = batch_usage(2);
    curl_global_cleanup();
    return rc;
}
