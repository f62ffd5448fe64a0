/* bridle-mock entry point: command line, listener, signals and routing. */
#include "tests/mock/mock.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#define DEFAULT_LISTEN "127.0.0.1:18181"
#define LISTEN_BACKLOG 4096 /* evhttp_bind_socket would use 128 */
#define IDLE_TIMEOUT_S 600  /* long enough for hang= and trickle_ms= tests */

struct event_base *mock_base;

static void send_json(struct evhttp_request *req, int status, struct evbuffer *b)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, status, http_reason(status), b);
}

/* Replies to a request outside the generation path, counting its status. */
static void send_counted(struct evhttp_request *req, int status, struct evbuffer *b)
{
    stats_record_status(status);
    send_json(req, status, b);
}

static void not_found(struct evhttp_request *req, const char *path, bool counted)
{
    struct evbuffer *b = evbuffer_new();
    ADD_LIT(b, "{\"error\":{\"message\":\"mock: no route for ");
    json_cstr(b, path); /* quoted; good enough for a message */
    ADD_LIT(b, "\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":null}}\n");
    if (counted)
        send_counted(req, 404, b);
    else
        send_json(req, 404, b);
    evbuffer_free(b);
}

static void list_models(struct evhttp_request *req)
{
    static const char *const ids[] = {"gpt-4o-mini",       "gpt-4o",           "gpt-5-mini",
                                      "claude-sonnet-4-5", "gemini-2.5-flash", "llama3.2"};
    struct evbuffer *b = evbuffer_new();
    ADD_LIT(b, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
        evbuffer_add_printf(b,
                            "%s{\"id\":\"%s\",\"object\":\"model\",\"created\":1700000000,"
                            "\"owned_by\":\"bridle-mock\"}",
                            i ? "," : "", ids[i]);
    ADD_LIT(b, "]}\n");
    send_counted(req, 200, b);
    evbuffer_free(b);
}

static void list_tags(struct evhttp_request *req)
{
    static const char *const names[] = {"llama3.2:latest", "qwen2.5:0.5b"};
    struct evbuffer *b = evbuffer_new();
    ADD_LIT(b, "{\"models\":[");
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        evbuffer_add_printf(b,
                            "%s{\"name\":\"%s\",\"model\":\"%s\",\"modified_at\":"
                            "\"2026-01-01T00:00:00Z\",\"size\":1000000,\"digest\":\"sha256:mock\","
                            "\"details\":{\"format\":\"gguf\",\"family\":\"mock\"}}",
                            i ? "," : "", names[i], names[i]);
    ADD_LIT(b, "]}\n");
    send_counted(req, 200, b);
    evbuffer_free(b);
}

/* ---- control endpoints (/_mock/...) -------------------------------------- */

static void control_reply(struct evhttp_request *req, int status, const char *body)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "%s\n", body);
    send_json(req, status, b);
    evbuffer_free(b);
}

/* POST /_mock/faults {"model": "x"|"*", "count": N, "directives": "k=v,..."} */
static void control_add_fault(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    char *txt = malloc(len + 1);
    if (!txt) return control_reply(req, 500, "{\"error\":\"out of memory\"}");
    evbuffer_copyout(in, txt, len);
    txt[len] = '\0';
    json_object *root = json_tokener_parse(txt), *v;
    free(txt);
    const char *model = "*", *dirs = NULL;
    int count = 1;
    if (root && json_object_object_get_ex(root, "model", &v)) model = json_object_get_string(v);
    if (root && json_object_object_get_ex(root, "count", &v)) count = json_object_get_int(v);
    if (root && json_object_object_get_ex(root, "directives", &v)) dirs = json_object_get_string(v);
    if (!dirs || count < 1 || faults_add(model, count, dirs) < 0)
        control_reply(req, 400, "{\"error\":\"need {model, count>=1, directives}\"}");
    else
        control_reply(req, 200, "{\"ok\":true}");
    json_object_put(root);
}

static int query_int(struct evhttp_request *req, const char *key, int dflt)
{
    const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    struct evkeyvalq params = {0};
    int v = dflt;
    if (q && evhttp_parse_query_str(q, &params) == 0) {
        const char *s = evhttp_find_header(&params, key);
        if (s) v = atoi(s);
    }
    evhttp_clear_headers(&params);
    return v;
}

/* POST /_mock/batch {"processing_ms":N, "fail_create":STATUS, "expire":true} */
static void control_batch(struct evhttp_request *req, struct evbuffer *b)
{
    json_object *root = api_parse_json(req);
    const char *err = batch_control(root, b);
    json_object_put(root);
    if (!err) return send_json(req, 200, b);
    struct evbuffer *e = evbuffer_new();
    ADD_LIT(e, "{\"error\":");
    json_cstr(e, err);
    ADD_LIT(e, "}\n");
    send_json(req, 400, e);
    evbuffer_free(e);
}

static void control(struct evhttp_request *req, const char *path)
{
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    struct evbuffer *b = evbuffer_new();
    if (cmd == EVHTTP_REQ_GET && !strcmp(path, "/_mock/stats")) {
        stats_render(b, mock_in_flight());
        send_json(req, 200, b);
    } else if (cmd == EVHTTP_REQ_GET && !strcmp(path, "/_mock/last")) {
        int n = query_int(req, "n", 1);
        stats_render_last(b, n < 1 ? 1 : n > 64 ? 64 : n);
        send_json(req, 200, b);
    } else if (cmd == EVHTTP_REQ_POST && !strcmp(path, "/_mock/faults")) {
        control_add_fault(req);
    } else if (cmd == EVHTTP_REQ_GET && !strcmp(path, "/_mock/faults")) {
        faults_render(b);
        send_json(req, 200, b);
    } else if (cmd == EVHTTP_REQ_DELETE && !strcmp(path, "/_mock/faults")) {
        faults_clear();
        control_reply(req, 200, "{\"ok\":true}");
    } else if (cmd == EVHTTP_REQ_POST && !strcmp(path, "/_mock/reset")) {
        faults_clear();
        stats_reset();
        batch_reset();
        control_reply(req, 200, "{\"ok\":true}");
    } else if (cmd == EVHTTP_REQ_POST && !strcmp(path, "/_mock/batch")) {
        control_batch(req, b);
    } else if (cmd == EVHTTP_REQ_GET && !strcmp(path, "/_mock/batch")) {
        batch_knobs_render(b);
        send_json(req, 200, b);
    } else if (cmd == EVHTTP_REQ_GET && !strcmp(path, "/_mock/batch_lines")) {
        batch_lines_render(b, query_int(req, "repeated", 0) == 1);
        send_json(req, 200, b);
    } else {
        not_found(req, path, false);
    }
    evbuffer_free(b);
}

/* ---- routing ------------------------------------------------------------- */

/* /v1beta/models/{model}:generateContent or :streamGenerateContent */
static bool route_gemini(struct evhttp_request *req, const char *path)
{
    static const char prefix[] = "/v1beta/models/";
    if (strncmp(path, prefix, sizeof(prefix) - 1)) return false;
    const char *model = path + sizeof(prefix) - 1;
    const char *colon = strrchr(model, ':');
    if (!colon || colon == model || colon - model >= MOCK_MODEL_MAX) return false;
    bool stream = !strcmp(colon + 1, "streamGenerateContent");
    bool embed = !strcmp(colon + 1, "embedContent"),
         batch = !strcmp(colon + 1, "batchEmbedContents"),
         batch_gen = !strcmp(colon + 1, "batchGenerateContent");
    if (!stream && !embed && !batch && !batch_gen && strcmp(colon + 1, "generateContent"))
        return false;
    char name[MOCK_MODEL_MAX];
    memcpy(name, model, (size_t)(colon - model));
    name[colon - model] = '\0';
    if (batch_gen)
        batch_gemini_create(req, name);
    else if (embed || batch)
        mock_handle_embeddings(req, D_GEMINI, name, batch);
    else
        mock_handle_generation(req, D_GEMINI, name, stream);
    return true;
}

static void route(struct evhttp_request *req, const char *path)
{
    bool post = evhttp_request_get_command(req) == EVHTTP_REQ_POST;
    bool get = evhttp_request_get_command(req) == EVHTTP_REQ_GET;
    if (post && !strcmp(path, "/v1/chat/completions"))
        mock_handle_generation(req, D_OPENAI, NULL, false);
    else if (post && !strcmp(path, "/v1/messages"))
        mock_handle_generation(req, D_ANTHROPIC, NULL, false);
    else if (post && !strcmp(path, "/api/chat"))
        mock_handle_generation(req, D_OLLAMA, NULL, false);
    else if (post && !strcmp(path, "/v1/embeddings"))
        mock_handle_embeddings(req, D_OPENAI, NULL, false);
    else if (post && !strcmp(path, "/api/embed"))
        mock_handle_embeddings(req, D_OLLAMA, NULL, false);
    else if (post && route_gemini(req, path))
        return;
    else if (files_route(req, path) || batch_openai_route(req, path) ||
             batch_anthropic_route(req, path) || batch_gemini_route(req, path))
        return;
    else if (get && !strcmp(path, "/v1/models"))
        list_models(req);
    else if (get && !strcmp(path, "/api/tags"))
        list_tags(req);
    else
        not_found(req, path, true);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    if (evhttp_request_get_uri(req) == NULL) {
        /* libevent re-delivers a request it failed on with its URI cleared
         * and expects a reply; drop whatever we held for it. */
        mock_forget_req(req);
        evhttp_send_error(req, 400, NULL);
        return;
    }
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (!path || !*path) path = "/";
    if (!strncmp(path, "/_mock/", 7)) {
        control(req, path);
        return;
    }
    stats_record_request(req, path);
    route(req, path);
}

/* ---- start-up and shut-down ---------------------------------------------- */

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    event_base_loopexit(mock_base, NULL);
}

/* Prints the bound address (the real port when asked for port 0). */
static void announce(struct evconnlistener *lev)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    getsockname(evconnlistener_get_fd(lev), (struct sockaddr *)&ss, &len);
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
        port = ntohs(s6->sin6_port);
        printf("bridle-mock listening on [%s]:%d\n", host, port);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        port = ntohs(s4->sin_port);
        printf("bridle-mock listening on %s:%d\n", host, port);
    }
    fflush(stdout);
}

static const char *parse_args(int argc, char **argv)
{
    const char *listen = DEFAULT_LISTEN;
    for (int i = 1; i < argc; i++) {
        char *end = NULL;
        long ms = 0;
        if (!strcmp(argv[i], "--listen") && i + 1 < argc) {
            listen = argv[++i];
        } else if (!strcmp(argv[i], "--batch-ms") && i + 1 < argc &&
                   (ms = strtol(argv[i + 1], &end, 10)) >= 0 && ms <= 86400000 && !*end) {
            batch_set_default_ms((int)ms);
            i++;
        } else {
            fprintf(stderr,
                    "usage: %s [--listen HOST:PORT] [--batch-ms N]   (defaults %s, 500: a "
                    "batch's processing time in ms)\n",
                    argv[0], DEFAULT_LISTEN);
            exit(2);
        }
    }
    return listen;
}

/* HOST:PORT or [V6]:PORT; unlike evutil_parse_sockaddr_port, port 0 (any
 * free port) is allowed so tests can avoid port clashes. */
static int parse_listen(const char *listen, struct sockaddr_storage *ss, int *len)
{
    char host[128];
    const char *colon = strrchr(listen, ':');
    if (!colon || (size_t)(colon - listen) >= sizeof(host)) return -1;
    int hlen = (int)(colon - listen);
    if (hlen >= 2 && listen[0] == '[' && listen[hlen - 1] == ']')
        snprintf(host, sizeof(host), "%.*s", hlen - 2, listen + 1);
    else
        snprintf(host, sizeof(host), "%.*s", hlen, listen);
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || port < 0 || port > 65535) return -1;
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        *len = sizeof(*s4);
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*s6);
    } else {
        return -1;
    }
    return 0;
}

static struct evhttp *http_start(const char *listen)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (parse_listen(listen, &ss, &len) < 0) {
        fprintf(stderr, "bridle-mock: bad --listen address '%s' (want HOST:PORT)\n", listen);
        return NULL;
    }
    struct evconnlistener *lev =
        evconnlistener_new_bind(mock_base, NULL, NULL, LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE,
                                LISTEN_BACKLOG, (struct sockaddr *)&ss, len);
    if (!lev) {
        perror("bridle-mock: bind");
        return NULL;
    }
    struct evhttp *http = evhttp_new(mock_base);
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_DELETE |
                                         EVHTTP_REQ_PUT | EVHTTP_REQ_HEAD);
    evhttp_set_timeout(http, IDLE_TIMEOUT_S);
    evhttp_set_gencb(http, on_request, NULL);
    evhttp_bind_listener(http, lev); /* evhttp now owns the listener */
    announce(lev);
    return http;
}

int main(int argc, char **argv)
{
    const char *listen = parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    mock_base = event_base_new();
    struct evhttp *http = mock_base ? http_start(listen) : NULL;
    if (!http) return 1;
    struct event *sigterm = evsignal_new(mock_base, SIGTERM, on_signal, NULL);
    struct event *sigint = evsignal_new(mock_base, SIGINT, on_signal, NULL);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);

    event_base_dispatch(mock_base);

    mock_free_all(); /* before evhttp_free, which frees the requests we point at */
    batch_free_all();
    files_free_all();
    evhttp_free(http);
    event_free(sigterm);
    event_free(sigint);
    faults_clear();
    stats_free();
    event_base_free(mock_base);
    libevent_global_shutdown();
    return 0;
}
