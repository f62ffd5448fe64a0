/* router/config: loading, defaults, ${VAR} expansion, optional providers,
 * and error messages that name the file, the JSON path and what was
 * expected. Every case writes its own temporary file under /tmp. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "providers/params.h"
#include "router/config.h"
#include "router/policy.h"

/* Names only this test uses, so nothing in the environment interferes. */
#define UNSET1 "BRIDLE_TEST_CFG_UNSET_1"
#define UNSET2 "BRIDLE_TEST_CFG_UNSET_2"
#define SETVAR "BRIDLE_TEST_CFG_SET"

#define SHA_A "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define SHA_B "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"

/* A minimal provider + model, to build valid documents around. */
#define PROV_P "\"p\": {\"kind\": \"openai\", \"base_url\": \"http://127.0.0.1:1/v1\"}"
#define MODEL_4O "\"gpt-4o\": {\"provider\": \"p\"}"

static char last_path[64];

/* Writes text to a fresh temporary file; returns its path (static). */
static const char *write_tmp(const char *text)
{
    snprintf(last_path, sizeof last_path, "/tmp/bridle-test-config-XXXXXX");
    int fd = mkstemp(last_path);
    assert_true(fd >= 0);
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t n = write(fd, text + off, len - off);
        assert_true(n > 0);
        off += (size_t)n;
    }
    close(fd);
    return last_path;
}

/* Loads text as a config file; the file is removed again. */
static bridle_config *load_text(const char *text, char *err, size_t errlen)
{
    const char *path = write_tmp(text);
    err[0] = '\0';
    bridle_config *c = config_load(path, err, errlen);
    unlink(path);
    return c;
}

static bridle_config *load_ok(const char *text)
{
    char err[1024];
    bridle_config *c = load_text(text, err, sizeof err);
    if (!c) print_error("unexpected error: %s\ninput: %s\n", err, text);
    assert_non_null(c);
    return c;
}

/* Loading must fail with a message that starts with the file name and
 * contains every given fragment (NULL-terminated list). */
static void expect_error_v(const char *text, ...)
{
    char err[1024];
    bridle_config *c = load_text(text, err, sizeof err);
    if (c) {
        print_error("expected an error, the config loaded\ninput: %s\n", text);
        config_free(c);
        fail();
    }
    char prefix[80];
    snprintf(prefix, sizeof prefix, "%s: ", last_path);
    if (strncmp(err, prefix, strlen(prefix)) != 0) {
        print_error("error does not start with the file name %s: %s\n", last_path, err);
        fail();
    }
    va_list ap;
    va_start(ap, text);
    for (const char *frag = va_arg(ap, const char *); frag; frag = va_arg(ap, const char *)) {
        if (!strstr(err, frag)) {
            print_error("error lacks \"%s\":\n  %s\n", frag, err);
            va_end(ap);
            fail();
        }
    }
    va_end(ap);
}
#define expect_error(text, ...) expect_error_v(text, __VA_ARGS__, (const char *)NULL)

/* Loading must fail with "FILE: <path>: ..." exactly. */
static void expect_error_at(const char *text, const char *json_path)
{
    char err[1024];
    bridle_config *c = load_text(text, err, sizeof err);
    if (c) {
        config_free(c);
        fail_msg("expected an error at %s, the config loaded", json_path);
    }
    char want[160];
    snprintf(want, sizeof want, "%s: %s: ", last_path, json_path);
    if (strncmp(err, want, strlen(want)) != 0)
        fail_msg("expected \"%s...\", got \"%s\"", want, err);
}

/* {"providers": {PROV_P, <providers>}, "models": {<models>}, <rest>} */
static char *doc(const char *providers, const char *models, const char *rest)
{
    static char out[4096];
    snprintf(out, sizeof out, "{\"providers\": {%s}, \"models\": {%s}%s%s}", providers, models,
             rest && *rest ? ", " : "", rest ? rest : "");
    return out;
}

static int setup_env(void **state)
{
    unsetenv(UNSET1);
    unsetenv(UNSET2);
    unsetenv(SETVAR);
    return 0;
}

/* ------------------------------------------------------------ valid configs */

static void test_minimal_valid(void **state)
{
    bridle_config *c = load_ok(doc(PROV_P, MODEL_4O, NULL));
    assert_int_equal(config_n_providers(c), 1);
    const provider_conf *p = config_provider(c, 0);
    assert_string_equal(p->name, "p");
    assert_non_null(p->ops);
    assert_string_equal(p->base_url, "http://127.0.0.1:1/v1");
    assert_null(p->api_key);
    assert_null(p->extra_headers);
    assert_int_equal(p->index, 0);
    assert_true(config_provider_enabled(c, 0));
    /* provider defaults (docs/config.md) */
    assert_false(p->use_max_completion_tokens);
    assert_true(p->stream_usage);
    assert_int_equal(p->default_max_tokens, 4096);
    assert_int_equal(p->connect_timeout_ms, 5000);
    assert_int_equal(p->first_byte_timeout_ms, 120000);
    assert_int_equal(p->idle_timeout_ms, 60000);
    assert_int_equal(p->total_timeout_ms, 600000);
    assert_int_equal(p->max_concurrency, 1024);

    assert_int_equal(config_n_models(c), 1);
    const model_conf *m = config_model(c, 0);
    assert_string_equal(m->name, "gpt-4o");
    assert_true(m->enabled);
    assert_ptr_equal(m->target.provider, p);
    assert_string_equal(m->target.model, "gpt-4o");
    assert_string_equal(m->target.upstream_model, "gpt-4o");
    assert_ptr_equal(m->target.price, &m->price);
    assert_string_equal(m->price.name, "gpt-4o");
    assert_int_equal(m->price.input, 2500000); /* table: $2.50 / Mtok */
    assert_int_equal(m->price.output, 10000000);
    assert_int_equal(m->price.cached_input, 1250000);

    assert_int_equal(config_n_routes(c), 0);
    assert_int_equal(config_n_keys(c), 0);
    assert_string_equal(config_listen(c), "127.0.0.1:8080");
    assert_string_equal(config_log_level(c), "info");
    config_free(c);
}

static void test_limit_defaults(void **state)
{
    bridle_config *c = load_ok(doc(PROV_P, MODEL_4O, NULL));
    const limits_conf *l = config_limits(c);
    assert_int_equal(l->max_body_bytes, 4194304);
    assert_int_equal(l->max_header_bytes, 16384);
    assert_int_equal(l->max_headers, 64);
    assert_int_equal(l->read_timeout_ms, 30000);
    assert_int_equal(l->request_timeout_ms, 600000);
    assert_int_equal(l->max_connections, 8192);
    config_free(c);

    /* an empty limits object keeps the defaults too; given values are kept */
    c = load_ok(doc(PROV_P, MODEL_4O, "\"limits\": {}"));
    assert_int_equal(config_limits(c)->max_headers, 64);
    config_free(c);
    c = load_ok(doc(PROV_P, MODEL_4O,
                    "\"limits\": {\"max_body_bytes\": 1024, \"max_header_bytes\": 1048576, "
                    "\"max_headers\": 8, \"read_timeout_ms\": 100, \"request_timeout_ms\": "
                    "86400000, \"max_connections\": 1}"));
    l = config_limits(c);
    assert_int_equal(l->max_body_bytes, 1024);
    assert_int_equal(l->max_header_bytes, 1048576);
    assert_int_equal(l->max_headers, 8);
    assert_int_equal(l->read_timeout_ms, 100);
    assert_int_equal(l->request_timeout_ms, 86400000);
    assert_int_equal(l->max_connections, 1);
    config_free(c);
}

static void test_provider_options(void **state)
{
    bridle_config *c = load_ok(doc("\"a\": {\"kind\": \"anthropic\", \"base_url\": "
                                   "\"https://api.example.com/v1\", \"api_key\": \"sk-1\", "
                                   "\"options\": {\"max_completion_tokens\": true, "
                                   "\"stream_usage\": false, \"default_max_tokens\": 8192}, "
                                   "\"timeouts\": {\"connect_ms\": 500, \"first_byte_ms\": 1000, "
                                   "\"idle_ms\": 2000, \"total_ms\": 3000}, "
                                   "\"max_concurrency\": 4}",
                                   "\"claude-haiku-4-5\": {\"provider\": \"a\"}", NULL));
    const provider_conf *p = config_provider(c, 0);
    assert_string_equal(p->api_key, "sk-1");
    assert_true(p->use_max_completion_tokens);
    assert_false(p->stream_usage);
    assert_int_equal(p->default_max_tokens, 8192);
    assert_int_equal(p->connect_timeout_ms, 500);
    assert_int_equal(p->first_byte_timeout_ms, 1000);
    assert_int_equal(p->idle_timeout_ms, 2000);
    assert_int_equal(p->total_timeout_ms, 3000);
    assert_int_equal(p->max_concurrency, 4);
    assert_false(p->batch); /* opt-in */
    config_free(c);
}

/* "batch": true sends batch lines to the host's batch API: openai,
 * anthropic and gemini; Ollama (none) is refused naming the path. */
static void test_provider_batch(void **state)
{
    bridle_config *c = load_ok(doc("\"o\": {\"kind\": \"openai\", \"base_url\": \"http://h/v1\", "
                                   "\"batch\": true}, \"a\": {\"kind\": \"anthropic\", "
                                   "\"base_url\": \"http://h/v1\", \"batch\": true}, "
                                   "\"n\": {\"kind\": \"openai\", \"base_url\": \"http://h/v1\", "
                                   "\"batch\": false}, \"g\": {\"kind\": \"gemini\", \"base_url\": "
                                   "\"http://h/v1beta\", \"batch\": true}",
                                   "\"gpt-4o\": {\"provider\": \"o\"}", NULL));
    assert_string_equal(config_provider(c, 2)->name, "n"); /* in the file's order */
    assert_true(config_provider(c, 0)->batch);
    assert_true(config_provider(c, 1)->batch);
    assert_false(config_provider(c, 2)->batch);
    assert_true(config_provider(c, 3)->batch);
    config_free(c);
    expect_error(
        doc("\"p\": {\"kind\": \"ollama\", \"base_url\": \"http://h\", \"batch\": true}", MODEL_4O,
            NULL),
        "$.providers.p.batch: ", "only openai, anthropic and gemini providers have a batch API",
        "(this one is ollama): remove \"batch\"");
    expect_error(doc("\"p\": {\"kind\": \"openai\", \"base_url\": \"http://h/v1\", \"batch\": 1}",
                     MODEL_4O, NULL),
                 "$.providers.p.batch: ", "expected true or false, got int");
}

/* Finds config/bridle.json from the repository root or a directory below it. */
static const char *shipped_config(void)
{
    static const char *const candidates[] = {"config/bridle.json", "../config/bridle.json",
                                             "../../config/bridle.json",
                                             "../../../config/bridle.json", NULL};
    for (const char *const *p = candidates; *p; p++)
        if (access(*p, R_OK) == 0) return *p;
    return NULL;
}

static void unset_provider_env(void)
{
    static const char *const vars[] = {"OPENAI_API_KEY",     "ANTHROPIC_API_KEY",
                                       "GEMINI_API_KEY",     "OPENAI_BASE_URL",
                                       "ANTHROPIC_BASE_URL", "GEMINI_BASE_URL",
                                       "OLLAMA_URL",         "BRIDLE_MOCK_URL",
                                       "BRIDLE_LISTEN",      NULL};
    for (const char *const *v = vars; *v; v++)
        unsetenv(*v);
}

static int provider_index(const bridle_config *c, const char *name)
{
    for (int i = 0; i < config_n_providers(c); i++)
        if (strcmp(config_provider(c, i)->name, name) == 0) return i;
    return -1;
}

static void test_shipped_config(void **state)
{
    const char *path = shipped_config();
    if (!path) {
        print_error("config/bridle.json not found from %s\n", getcwd(NULL, 0));
        fail();
    }
    unset_provider_env();
    setenv("BRIDLE_DEV_KEY_SHA256", SHA_A, 1);
    char err[1024];
    bridle_config *c = config_load(path, err, sizeof err);
    if (!c) print_error("%s\n", err);
    assert_non_null(c);

    assert_string_equal(config_listen(c), "127.0.0.1:8080");
    assert_int_equal(config_n_providers(c), 8);
    /* the optional providers need a key that is not set: disabled, not an error */
    assert_false(config_provider_enabled(c, provider_index(c, "openai")));
    assert_false(config_provider_enabled(c, provider_index(c, "anthropic")));
    assert_false(config_provider_enabled(c, provider_index(c, "gemini")));
    assert_true(config_provider_enabled(c, provider_index(c, "ollama")));
    assert_true(config_provider_enabled(c, provider_index(c, "mock")));
    assert_true(config_provider_enabled(c, provider_index(c, "mock-anthropic")));
    /* defaults from ${VAR:-default} */
    assert_string_equal(config_provider(c, provider_index(c, "openai"))->base_url,
                        "https://api.openai.com/v1");
    assert_string_equal(config_provider(c, provider_index(c, "mock"))->base_url,
                        "http://127.0.0.1:18181/v1");
    assert_string_equal(config_provider(c, provider_index(c, "mock-ollama"))->base_url,
                        "http://127.0.0.1:18181");
    assert_int_equal(config_provider(c, provider_index(c, "ollama"))->connect_timeout_ms, 500);
    assert_int_equal(config_provider(c, provider_index(c, "ollama"))->max_concurrency, 4);

    const model_conf *m = config_find_model(c, "gpt-4o-mini");
    assert_non_null(m);
    assert_true(m->enabled);
    assert_string_equal(m->target.provider->name, "mock");
    assert_int_equal(m->price.input, 150000);
    assert_int_equal(m->price.cached_input, 75000);
    assert_string_equal(config_find_model(c, "claude-haiku-4-5")->target.provider->name,
                        "mock-anthropic");
    assert_string_equal(config_find_model(c, "gemini-2.5-flash")->target.provider->name,
                        "mock-gemini");
    assert_string_equal(config_find_model(c, "llama3.2")->target.provider->name, "mock-ollama");
    assert_int_equal(config_n_models(c), 11);
    /* one embedding model, from the mock until OPENAI_API_KEY is set */
    m = config_find_model(c, "text-embedding-3-small");
    assert_true(m->enabled && m->price.embedding);
    assert_string_equal(m->target.provider->name, "mock");

    /* "auto" is the routing policy's; the shipped named route is a fallback chain */
    assert_null(config_find_route(c, "auto"));
    assert_non_null(config_policy(c));
    const route_conf *r = config_find_route(c, "cheap-fallback");
    assert_non_null(r);
    assert_int_equal(r->n_candidates, 3);
    assert_string_equal(r->candidates[0]->name, "gpt-4o-mini");
    assert_string_equal(r->candidates[1]->name, "claude-haiku-4-5");
    assert_string_equal(r->candidates[2]->name, "gemini-2.5-flash");
    assert_false(r->cap_default);
    /* the shipped caps bound what a client asks for; typical outputs price the rest */
    assert_int_equal(policy_output_cap(config_policy(c), "classify", false, 5000, NULL), 10);
    assert_true(policy_typical_output(config_policy(c), "agent_orchestration", NULL) > 0);

    assert_int_equal(config_n_keys(c), 1);
    const key_conf *k = config_find_key(c, SHA_A);
    assert_non_null(k);
    assert_string_equal(k->id, "dev");
    assert_string_equal(k->team, "dev");
    config_free(c);

    /* with the OpenAI key set, openai serves gpt-4o-mini; the others stay on the mock */
    setenv("OPENAI_API_KEY", "sk-test-openai", 1);
    c = config_load(path, err, sizeof err);
    if (!c) print_error("%s\n", err);
    assert_non_null(c);
    int oi = provider_index(c, "openai");
    assert_true(config_provider_enabled(c, oi));
    assert_string_equal(config_provider(c, oi)->api_key, "sk-test-openai");
    assert_true(config_provider(c, oi)->use_max_completion_tokens);
    assert_string_equal(config_find_model(c, "gpt-4o-mini")->target.provider->name, "openai");
    assert_string_equal(config_find_model(c, "gpt-5.5")->target.provider->name, "openai");
    assert_string_equal(config_find_model(c, "claude-haiku-4-5")->target.provider->name,
                        "mock-anthropic");
    config_free(c);

    /* all of them set */
    setenv("ANTHROPIC_API_KEY", "sk-ant", 1);
    setenv("GEMINI_API_KEY", "g-key", 1);
    c = config_load(path, err, sizeof err);
    assert_non_null(c);
    assert_true(config_provider_enabled(c, provider_index(c, "anthropic")));
    assert_true(config_provider_enabled(c, provider_index(c, "gemini")));
    assert_string_equal(config_find_model(c, "claude-opus-4-8")->target.provider->name,
                        "anthropic");
    assert_string_equal(config_find_model(c, "gemini-2.5-pro")->target.provider->name, "gemini");
    config_free(c);

    /* without the dev key's hash the key is simply absent */
    unsetenv("BRIDLE_DEV_KEY_SHA256");
    c = config_load(path, err, sizeof err);
    assert_non_null(c);
    assert_int_equal(config_n_keys(c), 0);
    assert_null(config_find_key(c, SHA_A));
    config_free(c);
    unset_provider_env();
}

/* ------------------------------------------------------------ env expansion */

static void test_env_default_and_value(void **state)
{
    bridle_config *c =
        load_ok(doc("\"p\": {\"kind\": \"openai\", \"base_url\": \"${" UNSET1
                    ":-http://d.example:9/v1}\", \"api_key\": \"k-${" UNSET2 ":-dflt}-x\"}",
                    MODEL_4O, "\"listen\": \"${" UNSET1 ":-0.0.0.0:9}\""));
    assert_string_equal(config_provider(c, 0)->base_url, "http://d.example:9/v1");
    assert_string_equal(config_provider(c, 0)->api_key, "k-dflt-x");
    assert_string_equal(config_listen(c), "0.0.0.0:9");
    config_free(c);

    setenv(SETVAR, "sk-secret", 1);
    c = load_ok(doc("\"p\": {\"kind\": \"openai\", \"base_url\": \"http://h/v1\", \"api_key\": "
                    "\"${" SETVAR ":-unused}\"}",
                    MODEL_4O, NULL));
    assert_string_equal(config_provider(c, 0)->api_key, "sk-secret");
    config_free(c);
    c = load_ok(doc("\"p\": {\"kind\": \"openai\", \"base_url\": \"http://h/v1\", \"api_key\": "
                    "\"Bearer ${" SETVAR "}\"}",
                    MODEL_4O, NULL));
    assert_string_equal(config_provider(c, 0)->api_key, "Bearer sk-secret");
    config_free(c);

    /* an empty variable counts as unset */
    setenv(SETVAR, "", 1);
    c = load_ok(doc("\"p\": {\"kind\": \"openai\", \"base_url\": \"http://h/v1\", \"api_key\": "
                    "\"${" SETVAR ":-fallback}\"}",
                    MODEL_4O, NULL));
    assert_string_equal(config_provider(c, 0)->api_key, "fallback");
    config_free(c);
    unsetenv(SETVAR);
}

static void test_required_env_unset(void **state)
{
    expect_error(doc("\"p\": {\"kind\": \"openai\", \"base_url\": \"http://h/v1\", \"api_key\": "
                     "\"${" UNSET1 "}\"}",
                     MODEL_4O, NULL),
                 "$.providers.p: ", "environment variable " UNSET1 " is not set", "optional");
    /* in a header too */
    expect_error(doc("\"p\": {\"kind\": \"openai\", \"base_url\": \"http://h/v1\", \"headers\": "
                     "{\"X-Org\": \"${" UNSET2 "}\"}}",
                     MODEL_4O, NULL),
                 "$.providers.p: ", "environment variable " UNSET2 " is not set");
}

static void test_optional_provider_disabled(void **state)
{
    bridle_config *c =
        load_ok(doc("\"opt\": {\"kind\": \"openai\", \"base_url\": \"https://api.example/v1\", "
                    "\"api_key\": \"${" UNSET1 "}\", \"optional\": true}, " PROV_P,
                    "\"gpt-4o\": {\"provider\": [\"opt\", \"p\"]}, "
                    "\"gpt-4o-mini\": {\"provider\": \"opt\"}",
                    NULL));
    assert_false(config_provider_enabled(c, 0));
    assert_true(config_provider_enabled(c, 1));
    const model_conf *m = config_find_model(c, "gpt-4o");
    assert_true(m->enabled);
    assert_string_equal(m->target.provider->name, "p");
    /* no enabled provider: the model is disabled but keeps its first provider */
    m = config_find_model(c, "gpt-4o-mini");
    assert_false(m->enabled);
    assert_non_null(m->target.provider);
    assert_string_equal(m->target.provider->name, "opt");
    config_free(c);

    /* once the variable is set, the optional provider is first choice */
    setenv(UNSET1, "sk-now-set", 1);
    c = load_ok(doc("\"opt\": {\"kind\": \"openai\", \"base_url\": \"https://api.example/v1\", "
                    "\"api_key\": \"${" UNSET1 "}\", \"optional\": true}, " PROV_P,
                    "\"gpt-4o\": {\"provider\": [\"opt\", \"p\"]}", NULL));
    assert_true(config_provider_enabled(c, 0));
    assert_string_equal(config_find_model(c, "gpt-4o")->target.provider->name, "opt");
    assert_string_equal(config_provider(c, 0)->api_key, "sk-now-set");
    config_free(c);
    unsetenv(UNSET1);
}

/* ------------------------------------------------------------ providers */

static void test_base_url_trailing_slashes(void **state)
{
    bridle_config *c = load_ok(
        doc("\"p\": {\"kind\": \"openai\", \"base_url\": \"https://api.example.com/v1///\"}, "
            "\"q\": {\"kind\": \"ollama\", \"base_url\": \"http://127.0.0.1:11434/\"}",
            MODEL_4O, NULL));
    assert_string_equal(config_provider(c, 0)->base_url, "https://api.example.com/v1");
    assert_string_equal(config_provider(c, 1)->base_url, "http://127.0.0.1:11434");
    config_free(c);
}

static void test_extra_headers(void **state)
{
    setenv(SETVAR, "tenant-7", 1);
    bridle_config *c =
        load_ok(doc("\"p\": {\"kind\": \"openai\", \"base_url\": \"http://h/v1\", \"headers\": "
                    "{\"X-Org\": \"acme\", \"X-Tenant\": \"${" SETVAR "}\", \"X-Env\": \"${" UNSET1
                    ":-dev}\"}}",
                    MODEL_4O, NULL));
    const char **h = config_provider(c, 0)->extra_headers;
    assert_non_null(h);
    assert_string_equal(h[0], "X-Org: acme");
    assert_string_equal(h[1], "X-Tenant: tenant-7");
    assert_string_equal(h[2], "X-Env: dev");
    assert_null(h[3]);
    config_free(c);
    unsetenv(SETVAR);

    expect_error(doc("\"p\": {\"kind\": \"openai\", \"base_url\": \"http://h/v1\", \"headers\": "
                     "{\"X-Num\": 5}}",
                     MODEL_4O, NULL),
                 "$.providers.p.headers.X-Num: ", "expected a string header value, got int");
}

/* The response cache's section and the prompt-cache options (issue 14). */
static void test_cache_section(void **state)
{
    bridle_config *c = load_ok(doc(PROV_P, MODEL_4O, NULL));
    const cache_conf *k = config_cache(c);
    assert_false(k->enabled);
    assert_int_equal(k->max_bytes, 64 << 20);
    assert_int_equal(k->ttl_s, 3600);
    assert_false(k->team_scope);
    assert_false(k->shared);
    assert_true(config_provider(c, 0)->prompt_cache_auto);
    assert_false(config_provider(c, 0)->prompt_cache_1h);
    config_free(c);
    c = load_ok(doc("\"p\": {\"kind\": \"anthropic\", \"base_url\": \"http://h/v1\", \"options\": "
                    "{\"prompt_cache\": \"off\", \"prompt_cache_ttl\": \"1h\"}}",
                    MODEL_4O,
                    "\"routes\": {\"r\": {\"candidates\": [\"gpt-4o\"]}}, \"cache\": {\"enabled\": "
                    "true, \"max_mb\": 8, \"ttl_s\": 60, \"scope\": \"team\", \"tasks\": "
                    "{\"faq\": 86400, \"chat\": 0}, \"routes\": {\"r\": 5, \"auto\": 0}, "
                    "\"deterministic_models\": [\"gpt-4o\"]}"));
    k = config_cache(c);
    assert_true(k->enabled);
    assert_int_equal(k->max_bytes, 8 << 20);
    assert_true(k->team_scope);
    assert_int_equal(config_cache_ttl_s(c, "faq", "r"), 86400); /* the task wins */
    assert_int_equal(config_cache_ttl_s(c, "chat", NULL), 0);
    assert_int_equal(config_cache_ttl_s(c, NULL, "r"), 5);
    assert_int_equal(config_cache_ttl_s(c, "other", "auto"), 0);
    assert_int_equal(config_cache_ttl_s(c, NULL, NULL), 60);
    assert_true(config_cache_deterministic_model(c, 0));
    assert_false(config_cache_deterministic_model(c, 1));
    assert_false(config_provider(c, 0)->prompt_cache_auto);
    assert_true(config_provider(c, 0)->prompt_cache_1h);
    config_free(c);
    expect_error_at(doc(PROV_P, MODEL_4O, "\"cache\": {\"scope\": \"org\"}"), "$.cache.scope");
    expect_error_at(doc(PROV_P, MODEL_4O, "\"cache\": {\"ttl\": 5}"), "$.cache.ttl");
    expect_error_at(doc(PROV_P, MODEL_4O, "\"cache\": {\"tasks\": {\"x\": -1}}"),
                    "$.cache.tasks.x");
    expect_error_at(doc(PROV_P, MODEL_4O, "\"cache\": {\"routes\": {\"nope\": 5}}"),
                    "$.cache.routes.nope");
    expect_error(doc(PROV_P, MODEL_4O, "\"cache\": {\"deterministic_models\": [\"gpt-5\"]}"),
                 "$.cache.deterministic_models", "item 0", "\"gpt-5\"");
    expect_error(doc(PROV_P, MODEL_4O, "\"cache\": {\"shared\": true}"), "$.cache.shared",
                 "database.url");
    expect_error_at(doc("\"p\": {\"kind\": \"anthropic\", \"base_url\": \"http://h/v1\", "
                        "\"options\": {\"prompt_cache\": \"always\"}}",
                        MODEL_4O, NULL),
                    "$.providers.p.options.prompt_cache");
    expect_error_at(doc(PROV_P, MODEL_4O, "\"metrics\": {\"allow\": [\"10.0.0.0/8\", \"nope\"]}"),
                    "$.metrics.allow[1]");
    expect_error_at(doc(PROV_P, MODEL_4O, "\"metrics\": {\"allow\": \"10.0.0.0/8\"}"),
                    "$.metrics.allow");
    expect_error_at(doc("\"p\": {\"kind\": \"anthropic\", \"base_url\": \"http://h/v1\", "
                        "\"options\": {\"prompt_cache_ttl\": \"2h\"}}",
                        MODEL_4O, NULL),
                    "$.providers.p.options.prompt_cache_ttl");
}

static void test_provider_errors(void **state)
{
    expect_error(doc("\"p\": {\"kind\": \"openai\", \"base_url\": \"http://h/v1\", \"apikey\": "
                     "\"x\"}",
                     MODEL_4O, NULL),
                 "$.providers.p.apikey: ", "unknown key");
    expect_error(doc("\"p\": {\"kind\": \"opnai\", \"base_url\": \"http://h/v1\"}", MODEL_4O, NULL),
                 "$.providers.p.kind: ",
                 "expected one of openai, anthropic, gemini, ollama (got \"opnai\")");
    expect_error(doc("\"p\": {\"base_url\": \"http://h/v1\"}", MODEL_4O, NULL),
                 "$.providers.p.kind: ", "required string is missing");
    expect_error(doc("\"p\": {\"kind\": 1, \"base_url\": \"http://h/v1\"}", MODEL_4O, NULL),
                 "$.providers.p.kind: ", "expected a string, got int");
    expect_error(doc("\"p\": {\"kind\": \"openai\", \"base_url\": \"ftp://h/v1\"}", MODEL_4O, NULL),
                 "$.providers.p.base_url: ", "expected an http:// or https:// URL",
                 "(got \"ftp://h/v1\")");
    expect_error(
        doc("\"p\": {\"kind\": \"openai\", \"base_url\": \"api.openai.com/v1\"}", MODEL_4O, NULL),
        "$.providers.p.base_url: ", "http://");
    expect_error(doc("\"p\": {\"kind\": \"openai\"}", MODEL_4O, NULL),
                 "$.providers.p.base_url: ", "required string is missing");
    expect_error(doc("\"p\": [1]", MODEL_4O, NULL),
                 "$.providers.p: ", "expected an object, got array");
    expect_error("{\"models\": {}}", "$.providers: ", "required object is missing");
    expect_error("{\"providers\": [], \"models\": {}}",
                 "$.providers: ", "expected an object, got array");
    expect_error(doc("\"p\": {\"kind\": \"openai\", \"base_url\": \"http://h\", \"optional\": "
                     "\"yes\"}",
                     MODEL_4O, NULL),
                 "$.providers.p.optional: ", "expected true or false, got string");
    expect_error(doc("\"p\": {\"kind\": \"openai\", \"base_url\": \"http://h\", \"timeouts\": "
                     "{\"connect_ms\": 0}}",
                     MODEL_4O, NULL),
                 "$.providers.p.timeouts.connect_ms: ", "expected an integer from 1 to 600000",
                 "got 0");
    expect_error(doc("\"p\": {\"kind\": \"openai\", \"base_url\": \"http://h\", \"options\": "
                     "{\"stream_usage\": true, \"max_tokens\": 5}}",
                     MODEL_4O, NULL),
                 "$.providers.p.options.max_tokens: ", "unknown key");
    expect_error(
        doc("\"p\": {\"kind\": \"openai\", \"base_url\": \"http://h\", \"max_concurrency\": "
            "0}",
            MODEL_4O, NULL),
        "$.providers.p.max_concurrency: ", "expected an integer from 1 to 1000000");
}

/* ------------------------------------------------------------ document level */

static void test_invalid_json(void **state)
{
    /* the error is on line 3 */
    expect_error("{\n  \"providers\": {\n    \"p\": {,\n  }\n}\n", "line 3: invalid JSON");
    expect_error("{\"providers\": {}, \"models\": {},}", "line 1: invalid JSON");
    /* a comment is not JSON (strict mode) */
    expect_error("{\n// comment\n}", "line 2: invalid JSON");
    /* a missing file names the file */
    char err[512];
    assert_null(config_load("/tmp/bridle-test-config-does-not-exist.json", err, sizeof err));
    assert_non_null(strstr(err, "/tmp/bridle-test-config-does-not-exist.json: cannot open"));
}

static void test_truncated_json(void **state)
{
    /* end of file inside the document: still a load error, with a line */
    expect_error("{\n\"providers\": {\n", "line ", "invalid JSON");
    expect_error("", "invalid JSON");
}

static void test_top_level_not_object(void **state)
{
    expect_error("[1, 2]", "$: expected a JSON object at the top");
    expect_error("\"providers\" ", "$: expected a JSON object at the top");
}

static void test_unknown_top_level_key(void **state)
{
    expect_error(doc(PROV_P, MODEL_4O, "\"modles\": {}"), "$.modles: ", "unknown key");
    /* "$schema" and "database" are known */
    bridle_config *c = load_ok(doc(PROV_P, MODEL_4O, "\"$schema\": \"x\", \"database\": {}"));
    config_free(c);
}

static void test_log_level(void **state)
{
    bridle_config *c = load_ok(doc(PROV_P, MODEL_4O, "\"log_level\": \"debug\""));
    assert_string_equal(config_log_level(c), "debug");
    config_free(c);
    expect_error(doc(PROV_P, MODEL_4O, "\"log_level\": \"verbose\""),
                 "$.log_level: ", "expected debug, info, warn or error");
}

/* ------------------------------------------------------------ limits */

static void test_limits_errors(void **state)
{
    expect_error(doc(PROV_P, MODEL_4O, "\"limits\": {\"max_headers\": 5}"),
                 "$.limits.max_headers: ", "expected an integer from 8 to 1000, got 5");
    expect_error(doc(PROV_P, MODEL_4O, "\"limits\": {\"max_body_bytes\": 1023}"),
                 "$.limits.max_body_bytes: ", "expected an integer from 1024 to 1073741824",
                 "got 1023");
    expect_error(doc(PROV_P, MODEL_4O, "\"limits\": {\"max_connections\": 1000001}"),
                 "$.limits.max_connections: ", "from 1 to 1000000, got 1000001");
    expect_error(doc(PROV_P, MODEL_4O, "\"limits\": {\"read_timeout_ms\": -1}"),
                 "$.limits.read_timeout_ms: ", "got -1");
    expect_error(doc(PROV_P, MODEL_4O, "\"limits\": {\"max_body_bytes\": \"4MB\"}"),
                 "$.limits.max_body_bytes: ", "expected an integer, got string");
    expect_error(doc(PROV_P, MODEL_4O, "\"limits\": {\"request_timeout_ms\": 1.5}"),
                 "$.limits.request_timeout_ms: ", "expected an integer, got double");
    expect_error(doc(PROV_P, MODEL_4O, "\"limits\": {\"max_header_bytes\": null}"),
                 "$.limits.max_header_bytes: ", "expected an integer, got null");
    expect_error(doc(PROV_P, MODEL_4O, "\"limits\": {\"max_bodybytes\": 4096}"),
                 "$.limits.max_bodybytes: ", "unknown key");
    expect_error(doc(PROV_P, MODEL_4O, "\"limits\": 5"),
                 "$.limits: ", "expected an object, got int");
}

/* ------------------------------------------------------------ models */

/* Whether a model reasons: the price card, else models.NAME.reasoning. */
static void test_model_reasoning(void **state)
{
    bridle_config *c =
        load_ok(doc(PROV_P,
                    "\"gpt-4o\": {\"provider\": \"p\"}, \"gpt-5.5\": {\"provider\": \"p\"}, "
                    "\"gemini-2.5-flash\": {\"provider\": \"p\"}, "
                    "\"claude-haiku-4-5\": {\"provider\": \"p\"}, "
                    "\"o-local\": {\"provider\": \"p\", \"reasoning\": true, "
                    "\"prices\": {\"input\": 0, \"output\": 0}}, "
                    "\"gpt-5-plain\": {\"provider\": \"p\", \"price\": \"gpt-5\", "
                    "\"reasoning\": false}",
                    NULL));
    assert_false(config_find_model(c, "gpt-4o")->price.reasoning);
    assert_true(config_find_model(c, "gpt-5.5")->price.reasoning);
    assert_true(config_find_model(c, "gemini-2.5-flash")->price.reasoning);
    assert_true(config_find_model(c, "claude-haiku-4-5")->price.reasoning);
    assert_true(config_find_model(c, "o-local")->target.price->reasoning);
    assert_false(config_find_model(c, "gpt-5-plain")->price.reasoning);
    config_free(c);
    expect_error(doc(PROV_P, "\"gpt-4o\": {\"provider\": \"p\", \"reasoning\": \"yes\"}", NULL),
                 "$.models.gpt-4o.reasoning: ", "expected true or false");
}

/* models.NAME.kind: the price card's by default; an embedding model needs
 * only an input price and a dialect with embeddings; routes do not mix
 * kinds; "auto" never sees an embedding model. */
static void test_model_kind(void **state)
{
    bridle_config *c = load_ok(doc(PROV_P ", \"g\": {\"kind\": \"gemini\", \"base_url\": "
                                          "\"http://127.0.0.1:1/v1beta\"}",
                                   "\"gpt-4o\": {\"provider\": \"p\"}, "
                                   "\"text-embedding-3-small\": {\"provider\": \"p\"}, "
                                   "\"gemini-embedding-001\": {\"provider\": \"g\"}, "
                                   "\"mine\": {\"provider\": \"p\", \"kind\": \"embedding\", "
                                   "\"prices\": {\"input\": 0.01}}, "
                                   "\"as-chat\": {\"provider\": \"p\", \"kind\": \"chat\", "
                                   "\"price\": \"gpt-4o\"}",
                                   "\"routes\": {\"emb\": {\"candidates\": "
                                   "[\"text-embedding-3-small\", \"gemini-embedding-001\"]}}"));
    assert_false(config_find_model(c, "gpt-4o")->price.embedding);
    assert_false(config_find_model(c, "as-chat")->price.embedding);
    const model_conf *m = config_find_model(c, "text-embedding-3-small");
    assert_true(m->price.embedding);
    assert_int_equal(m->price.input, 20000);
    assert_true(config_find_model(c, "gemini-embedding-001")->target.price->embedding);
    m = config_find_model(c, "mine");
    assert_true(m->price.embedding);
    assert_int_equal(m->price.input, 10000);
    assert_int_equal(m->price.output, 0);
    assert_int_equal(config_find_route(c, "emb")->n_candidates, 2);
    policy_model pm[8];
    int n = policy_models_from_config(c, pm, 8);
    assert_int_equal(n, 5);
    for (int i = 0; i < n; i++)
        assert_true(pm[i].enabled == !config_model(c, i)->price.embedding);
    config_free(c);

    expect_error(doc(PROV_P, "\"gpt-4o\": {\"provider\": \"p\", \"kind\": \"vector\"}", NULL),
                 "$.models.gpt-4o.kind: ", "expected \"chat\" or \"embedding\"");
    expect_error(doc(PROV_P, "\"m\": {\"provider\": \"p\", \"prices\": {\"input\": 1}}", NULL),
                 "$.models.m.prices: ", "\"input\" and \"output\"");
    expect_error(doc(PROV_P,
                     "\"m\": {\"provider\": \"p\", \"kind\": \"embedding\", "
                     "\"prices\": {\"output\": 1}}",
                     NULL),
                 "$.models.m.prices: ", "an embedding model", "\"input\" price");
    expect_error(doc(PROV_P ", \"a\": {\"kind\": \"anthropic\", \"base_url\": "
                            "\"http://127.0.0.1:1/v1\"}",
                     "\"m\": {\"provider\": \"a\", \"kind\": \"embedding\", "
                     "\"prices\": {\"input\": 1}}",
                     NULL),
                 "$.models.m.kind: ", "provider a speaks anthropic", "no embeddings endpoint");
    expect_error(doc(PROV_P, MODEL_4O ", \"text-embedding-3-small\": {\"provider\": \"p\"}",
                     "\"routes\": {\"mixed\": {\"candidates\": [\"gpt-4o\", "
                     "\"text-embedding-3-small\"]}}"),
                 "$.routes.mixed.candidates[1]: ", "not both");
}

static void test_model_errors(void **state)
{
    expect_error(doc(PROV_P, "\"gpt-4o\": {\"provider\": \"nope\"}", NULL),
                 "$.models.gpt-4o.provider: ", "no provider named \"nope\" in $.providers");
    expect_error(doc(PROV_P, "\"gpt-4o\": {\"provider\": [\"p\", \"nope\"]}", NULL),
                 "$.models.gpt-4o.provider: ", "no provider named \"nope\"");
    expect_error(doc(PROV_P, "\"gpt-4o\": {}", NULL), "$.models.gpt-4o.provider: ", "required");
    expect_error(doc(PROV_P, "\"gpt-4o\": {\"provider\": 3}", NULL),
                 "$.models.gpt-4o.provider: ", "expected a provider name (string), got int");
    expect_error(doc(PROV_P, "\"my-model\": {\"provider\": \"p\"}", NULL),
                 "$.models.my-model: ", "no price",
                 "\"my-model\" is not in the built-in price table", "\"prices\"");
    expect_error(doc(PROV_P, "\"my-model\": {\"provider\": \"p\", \"price\": \"gpt-9\"}", NULL),
                 "$.models.my-model.price: ", "no model \"gpt-9\" in the built-in price table");
    expect_error(doc(PROV_P, "\"gpt-4o\": {\"provider\": \"p\", \"cost\": 1}", NULL),
                 "$.models.gpt-4o.cost: ", "unknown key");
    expect_error(doc(PROV_P, "\"gpt-4o\": 1", NULL),
                 "$.models.gpt-4o: ", "expected an object, got int");
    expect_error("{\"providers\": {" PROV_P "}}", "$.models: ", "required object is missing");
}

static void test_bad_prices(void **state)
{
    static const char *const bad[] = {"\"1e-9\"",      "\"-1\"", "\"abc\"", "\"\"", "\" 1\"",
                                      "\"0.0000001\"", "-2",     "true",    "[1]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char models[256];
        snprintf(models, sizeof models,
                 "\"my-model\": {\"provider\": \"p\", \"prices\": {\"input\": %s, \"output\": 1}}",
                 bad[i]);
        expect_error(doc(PROV_P, models, NULL), "$.models.my-model.prices.input: ",
                     "expected a price in USD per million tokens");
    }
    expect_error(doc(PROV_P,
                     "\"my-model\": {\"provider\": \"p\", \"prices\": {\"input\": 1, \"output\": "
                     "\"x\"}}",
                     NULL),
                 "$.models.my-model.prices.output: ");
    expect_error(
        doc(PROV_P, "\"my-model\": {\"provider\": \"p\", \"prices\": {\"input\": 1, \"inptu\": 1}}",
            NULL),
        "$.models.my-model.prices.inptu: ", "unknown key");
    expect_error(doc(PROV_P,
                     "\"my-model\": {\"provider\": \"p\", \"prices\": {\"input\": 1, \"tier\": "
                     "\"huge\"}}",
                     NULL),
                 "$.models.my-model.prices", "tier", "expected budget, mid, heavy or local",
                 "\"huge\"");
    expect_error(doc(PROV_P,
                     "\"my-model\": {\"provider\": \"p\", \"prices\": {\"input\": 1, "
                     "\"batch_discount_pct\": 101}}",
                     NULL),
                 "$.models.my-model.prices.batch_discount_pct: ", "from 0 to 100");
}

static void test_explicit_prices(void **state)
{
    bridle_config *c = load_ok(doc(PROV_P,
                                   "\"my-model\": {\"provider\": \"p\", \"upstream_model\": "
                                   "\"vendor/my-model-v2\", \"prices\": {\"input\": \"0.075\", "
                                   "\"output\": \"1.5\", \"tier\": \"budget\", "
                                   "\"context_window\": 32768, \"batch_discount_pct\": 50}}, "
                                   "\"cheap\": {\"provider\": \"p\", \"prices\": {\"input\": "
                                   "\"0.0028\", \"output\": 3, \"cached_input\": \"0.01\", "
                                   "\"cache_write_5m\": \"3.75\", \"cache_write_1h\": 6}}, "
                                   "\"num\": {\"provider\": \"p\", \"prices\": {\"input\": 0.075, "
                                   "\"output\": 2.5}}",
                                   NULL));
    const model_conf *m = config_find_model(c, "my-model");
    assert_non_null(m);
    assert_int_equal(m->price.input, 75000);
    assert_int_equal(m->price.output, 1500000);
    assert_int_equal(m->price.cached_input, 75000); /* defaults to input */
    assert_int_equal(m->price.tier, TIER_BUDGET);
    assert_int_equal(m->price.context_window, 32768);
    assert_int_equal(m->price.batch_discount_pct, 50);
    assert_string_equal(m->price.name, "my-model");
    assert_string_equal(m->target.model, "my-model");
    assert_string_equal(m->target.upstream_model, "vendor/my-model-v2");

    m = config_find_model(c, "cheap");
    assert_int_equal(m->price.input, 2800);
    assert_int_equal(m->price.output, 3000000);
    assert_int_equal(m->price.cached_input, 10000);
    assert_int_equal(m->price.cache_write_5m, 3750000);
    assert_int_equal(m->price.cache_write_1h, 6000000);

    /* JSON numbers are read from their source text, exactly */
    m = config_find_model(c, "num");
    assert_int_equal(m->price.input, 75000);
    assert_int_equal(m->price.output, 2500000);
    config_free(c);

    /* a table model under another name, with one price overridden */
    c = load_ok(
        doc(PROV_P,
            "\"fast\": {\"provider\": \"p\", \"upstream_model\": \"gpt-4o-mini\", \"price\": "
            "\"gpt-4o-mini\", \"prices\": {\"output\": \"0.5\"}}",
            NULL));
    m = config_find_model(c, "fast");
    assert_int_equal(m->price.input, 150000);
    assert_int_equal(m->price.cached_input, 75000);
    assert_int_equal(m->price.output, 500000);
    assert_string_equal(m->price.name, "fast");
    assert_string_equal(m->target.upstream_model, "gpt-4o-mini");
    config_free(c);
}

/* ------------------------------------------------------------ routes */

static void test_routes(void **state)
{
    bridle_config *c =
        load_ok(doc(PROV_P, MODEL_4O ", \"gpt-4o-mini\": {\"provider\": \"p\"}",
                    "\"routes\": {\"auto\": {\"candidates\": [\"gpt-4o-mini\", \"gpt-4o\"]}, "
                    "\"best\": {\"candidates\": [\"gpt-4o\"]}}"));
    assert_int_equal(config_n_routes(c), 2);
    const route_conf *r = config_find_route(c, "auto");
    assert_non_null(r);
    assert_string_equal(r->name, "auto");
    assert_int_equal(r->n_candidates, 2);
    assert_ptr_equal(r->candidates[0], config_find_model(c, "gpt-4o-mini"));
    assert_ptr_equal(r->candidates[1], config_find_model(c, "gpt-4o"));
    assert_ptr_equal(config_find_route(c, "best"), config_route(c, 1));
    assert_null(config_find_route(c, "gpt-4o"));
    assert_null(config_find_route(c, "Auto"));
    assert_null(config_find_model(c, "auto"));
    /* output caps bound a route's requests unless it says "cap": "default" */
    assert_false(r->cap_default);
    config_free(c);
    c = load_ok(doc(PROV_P, MODEL_4O,
                    "\"routes\": {\"long\": {\"candidates\": [\"gpt-4o\"], \"cap\": \"default\"}, "
                    "\"short\": {\"candidates\": [\"gpt-4o\"], \"cap\": \"bound\"}}"));
    assert_true(config_find_route(c, "long")->cap_default);
    assert_false(config_find_route(c, "short")->cap_default);
    config_free(c);
}

static void test_route_errors(void **state)
{
    expect_error(doc(PROV_P, MODEL_4O,
                     "\"routes\": {\"auto\": {\"candidates\": [\"gpt-4o\", "
                     "\"nope\"]}}"),
                 "$.routes.auto.candidates[1]: ", "expected the name of a model in $.models",
                 "\"nope\"");
    expect_error(doc(PROV_P, MODEL_4O, "\"routes\": {\"auto\": {\"candidates\": [42]}}"),
                 "$.routes.auto.candidates[0]: ", "expected the name of a model");
    expect_error(doc(PROV_P, MODEL_4O, "\"routes\": {\"gpt-4o\": {\"candidates\": [\"gpt-4o\"]}}"),
                 "$.routes.gpt-4o: ", "a route cannot have the name of a model (\"gpt-4o\")");
    expect_error(doc(PROV_P, MODEL_4O, "\"routes\": {\"auto\": {\"candidates\": []}}"),
                 "$.routes.auto.candidates: ", "expected a non-empty list of model names");
    expect_error(doc(PROV_P, MODEL_4O, "\"routes\": {\"auto\": {}}"),
                 "$.routes.auto.candidates: ", "non-empty list");
    expect_error(doc(PROV_P, MODEL_4O, "\"routes\": {\"auto\": {\"candidates\": \"gpt-4o\"}}"),
                 "$.routes.auto.candidates: ", "non-empty list");
    expect_error(doc(PROV_P, MODEL_4O,
                     "\"routes\": {\"auto\": {\"candidates\": [\"gpt-4o\"], \"strategy\": 1}}"),
                 "$.routes.auto.strategy: ", "unknown key");
    expect_error(doc(PROV_P, MODEL_4O,
                     "\"routes\": {\"auto\": {\"candidates\": [\"gpt-4o\"], \"cap\": \"soft\"}}"),
                 "$.routes.auto.cap: ", "expected \"bound\"", "or \"default\"", "\"soft\"");
    expect_error(doc(PROV_P, MODEL_4O,
                     "\"routes\": {\"auto\": {\"candidates\": [\"gpt-4o\"], \"cap\": 10}}"),
                 "$.routes.auto.cap: ", "expected a string");
}

/* ------------------------------------------------------------ timeouts */

#define TMO_ROUTES "\"routes\": {\"fast\": {\"candidates\": [\"gpt-4o\"]}}, "

static void test_timeouts(void **state)
{
    request_timeouts t;
    bridle_config *c = load_ok(doc(PROV_P, MODEL_4O, "\"limits\": {\"request_timeout_ms\": 9000}"));
    config_request_timeouts(c, "classify", NULL, &t);
    assert_int_equal(t.total_ms, 9000);
    assert_string_equal(t.total_from, "limits.request_timeout_ms");
    assert_int_equal(t.connect_ms, 0);
    assert_int_equal(t.first_byte_ms, 0);
    assert_null(t.first_byte_from);
    config_free(c);

    c = load_ok(doc(PROV_P, MODEL_4O,
                    TMO_ROUTES
                    "\"timeouts\": {\"default\": {\"total_ms\": 5000, \"connect_ms\": 700}, "
                    "\"routes\": {\"fast\": {\"total_ms\": 2000, \"first_byte_ms\": 800}, "
                    "\"auto\": {\"total_ms\": 4000}}, "
                    "\"tasks\": {\"classify\": {\"total_ms\": 300}}}"));
    config_request_timeouts(c, NULL, NULL, &t); /* the default replaces request_timeout_ms */
    assert_int_equal(t.total_ms, 5000);
    assert_string_equal(t.total_from, "timeouts.default.total_ms");
    assert_int_equal(t.connect_ms, 700);
    assert_string_equal(t.connect_from, "timeouts.default.connect_ms");
    config_request_timeouts(c, "summarize", "fast", &t); /* the route over the default */
    assert_int_equal(t.total_ms, 2000);
    assert_string_equal(t.total_from, "timeouts.routes.fast.total_ms");
    assert_int_equal(t.first_byte_ms, 800);
    assert_string_equal(t.first_byte_from, "timeouts.routes.fast.first_byte_ms");
    assert_int_equal(t.connect_ms, 700);
    config_request_timeouts(c, "classify", "fast", &t); /* the task over the route, per field */
    assert_int_equal(t.total_ms, 300);
    assert_string_equal(t.total_from, "timeouts.tasks.classify.total_ms");
    assert_int_equal(t.first_byte_ms, 800);
    config_request_timeouts(c, "Classify", "auto", &t); /* names are exact */
    assert_int_equal(t.total_ms, 4000);
    config_free(c);
}

static void test_timeout_errors(void **state)
{
    expect_error(
        doc(PROV_P, MODEL_4O, "\"timeouts\": {\"tasks\": {\"x\": {\"total_ms\": 50}}}"),
        "$.timeouts.tasks.x.total_ms: ", "expected an integer from 100 to 86400000, got 50");
    expect_error(doc(PROV_P, MODEL_4O, "\"timeouts\": {\"default\": {\"idle_ms\": 50}}"),
                 "$.timeouts.default.idle_ms: ", "unknown key");
    expect_error(doc(PROV_P, MODEL_4O, "\"timeouts\": {\"task\": {}}"),
                 "$.timeouts.task: ", "unknown key");
    expect_error(doc(PROV_P, MODEL_4O, "\"timeouts\": {\"routes\": {\"nope\": {}}}"),
                 "$.timeouts.routes.nope: ", "expected the name of a route in $.routes");
    expect_error(doc(PROV_P, MODEL_4O, "\"timeouts\": {\"tasks\": {\"x\": 300}}"),
                 "$.timeouts.tasks.x: ", "expected an object", "got int");
    expect_error(
        doc(PROV_P, MODEL_4O,
            "\"timeouts\": {\"tasks\": {\"x\": {\"total_ms\": 300, \"first_byte_ms\": 300}}}"),
        "$.timeouts.tasks.x.first_byte_ms: ", "expected less than total_ms (300)");
    expect_error(doc(PROV_P, MODEL_4O, "\"timeouts\": {\"default\": {\"connect_ms\": \"1s\"}}"),
                 "$.timeouts.default.connect_ms: ", "expected an integer, got string");
}

static void test_breaker_open_max(void **state)
{
    bridle_config *c = load_ok(doc(PROV_P, MODEL_4O, NULL));
    assert_int_equal(config_resilience(c)->breaker_open_max_ms, 60000);
    config_free(c);
    c = load_ok(doc(PROV_P, MODEL_4O,
                    "\"resilience\": {\"breaker_open_ms\": 1000, \"breaker_open_max_ms\": 4000}"));
    assert_int_equal(config_resilience(c)->breaker_open_ms, 1000);
    assert_int_equal(config_resilience(c)->breaker_open_max_ms, 4000);
    config_free(c);
    expect_error(doc(PROV_P, MODEL_4O,
                     "\"resilience\": {\"breaker_open_ms\": 5000, \"breaker_open_max_ms\": 4000}"),
                 "$.resilience.breaker_open_max_ms: ", "expected at least breaker_open_ms (5000)");
}

/* ------------------------------------------------------------ keys */

static void test_keys(void **state)
{
    bridle_config *c =
        load_ok(doc(PROV_P, MODEL_4O,
                    "\"keys\": [{\"id\": \"a\", \"sha256\": \"" SHA_A
                    "\", \"team\": \"search\"}, {\"id\": \"b\", \"sha256\": \"" SHA_B "\"}]"));
    assert_int_equal(config_n_keys(c), 2);
    const key_conf *k = config_find_key(c, SHA_A);
    assert_non_null(k);
    assert_string_equal(k->id, "a");
    assert_string_equal(k->team, "search");
    assert_string_equal(k->sha256, SHA_A);
    k = config_find_key(c, SHA_B);
    assert_non_null(k);
    assert_string_equal(k->id, "b");
    assert_null(k->team);
    assert_null(
        config_find_key(c, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdee"));
    assert_null(config_find_key(c, ""));
    config_free(c);
}

/* $.teams: a budget per team; keys point at their team's entry. */
static void test_teams(void **state)
{
    bridle_config *c =
        load_ok(doc(PROV_P, MODEL_4O,
                    "\"teams\": {\"search\": {\"budget_usd\": \"12.5\"}, \"ops\": {}}, "
                    "\"keys\": [{\"id\": \"a\", \"sha256\": \"" SHA_A
                    "\", \"team\": \"search\"}, {\"id\": \"b\", \"sha256\": \"" SHA_B
                    "\", \"team\": \"elsewhere\"}]"));
    assert_int_equal(config_n_teams(c), 2);
    const team_conf *t = config_find_team(c, "search");
    assert_non_null(t);
    assert_int_equal(t->lim.budget_pusd[PERIOD_MONTH], 12500000000000LL);
    assert_int_equal(config_find_team(c, "ops")->lim.budget_pusd[PERIOD_MONTH], 0);
    assert_null(config_find_team(c, "elsewhere"));
    assert_ptr_equal(config_find_key(c, SHA_A)->team_cfg, t);
    assert_null(config_find_key(c, SHA_B)->team_cfg); /* a team without an entry: no budget */
    config_free(c);

    expect_error(doc(PROV_P, MODEL_4O, "\"teams\": {\"search\": {\"budget_usd\": -3}}"),
                 "$.teams.search.budget_usd: ", "expected dollars, like 50");
    expect_error(doc(PROV_P, MODEL_4O, "\"teams\": {\"search\": {\"budget\": 3}}"),
                 "$.teams.search.budget: ", "unknown key");
    expect_error(doc(PROV_P, MODEL_4O, "\"teams\": {\"search\": 3}"),
                 "$.teams.search: ", "expected an object");
    expect_error(doc(PROV_P, MODEL_4O, "\"teams\": []"), "$.teams: ", "expected an object");
    expect_error(
        doc(PROV_P, MODEL_4O,
            "\"teams\": {\"a234567890123456789012345678901234567890123456789012345678901234"
            "5\": {}}"),
        "$.teams.a2345", "1 to 64 bytes");
}

static void test_key_from_unset_variable_skipped(void **state)
{
    bridle_config *c = load_ok(doc(PROV_P, MODEL_4O,
                                   "\"keys\": [{\"id\": \"ci\", \"sha256\": \"${" UNSET1 "}\"}, "
                                   "{\"id\": \"b\", \"sha256\": \"" SHA_B "\"}]"));
    assert_int_equal(config_n_keys(c), 1);
    assert_string_equal(config_find_key(c, SHA_B)->id, "b");
    config_free(c);

    setenv(UNSET1, SHA_A, 1);
    c = load_ok(
        doc(PROV_P, MODEL_4O, "\"keys\": [{\"id\": \"ci\", \"sha256\": \"${" UNSET1 "}\"}]"));
    assert_int_equal(config_n_keys(c), 1);
    assert_string_equal(config_find_key(c, SHA_A)->id, "ci");
    config_free(c);
    unsetenv(UNSET1);
}

static void test_key_errors(void **state)
{
    static const char *const bad[] = {
        /* upper case */
        "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
        /* 63 characters */
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde",
        /* 65 characters */
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0",
        /* not hex */
        "0123456789abcdeg0123456789abcdef0123456789abcdef0123456789abcdef",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char rest[256];
        snprintf(rest, sizeof rest,
                 "\"keys\": [{\"id\": \"ok\", \"sha256\": \"" SHA_A
                 "\"}, {\"id\": \"k\", \"sha256\": \"%s\"}]",
                 bad[i]);
        expect_error(doc(PROV_P, MODEL_4O, rest),
                     "$.keys[1].sha256: ", "expected 64 lower-case hex characters");
    }
    expect_error(doc(PROV_P, MODEL_4O, "\"keys\": [{\"id\": \"k\"}]"),
                 "$.keys[0].sha256: ", "required string is missing");
    expect_error(doc(PROV_P, MODEL_4O, "\"keys\": [{\"sha256\": \"" SHA_A "\"}]"),
                 "$.keys[0].id: ", "required string is missing");
    expect_error(doc(PROV_P, MODEL_4O,
                     "\"keys\": [{\"id\": \"k\", \"sha256\": \"" SHA_A "\", \"teem\": \"x\"}]"),
                 "$.keys[0].teem: ", "unknown key");
    expect_error(doc(PROV_P, MODEL_4O, "\"keys\": [\"" SHA_A "\"]"),
                 "$.keys[0]: ", "expected an object");
    expect_error(doc(PROV_P, MODEL_4O, "\"keys\": {}"), "$.keys: ", "expected a list");
}

/* Errors that name the real cause and path, and configs that must not load. */
static void test_idempotency_section(void **state)
{
    bridle_config *c = load_ok(doc(PROV_P, MODEL_4O, NULL));
    assert_true(config_idempotency(c)->wait);
    assert_int_equal(config_idempotency(c)->retention_hours, 24);
    assert_int_equal(config_idempotency(c)->connections, 2);
    config_free(c);
    c = load_ok(doc(PROV_P, MODEL_4O,
                    "\"idempotency\": {\"concurrent\": \"conflict\", \"retention_hours\": 48}"));
    assert_false(config_idempotency(c)->wait);
    assert_int_equal(config_idempotency(c)->retention_hours, 48);
    config_free(c);
    expect_error(doc(PROV_P, MODEL_4O, "\"idempotency\": {\"concurrent\": \"queue\"}"),
                 "$.idempotency.concurrent: ", "\"wait\"", "\"conflict\"", "got \"queue\"");
    expect_error_at(doc(PROV_P, MODEL_4O, "\"idempotency\": {\"connections\": 0}"),
                    "$.idempotency.connections");
    expect_error_at(doc(PROV_P, MODEL_4O, "\"idempotency\": {\"lease\": 1}"),
                    "$.idempotency.lease");
}

/* database.rollup_*: the rollup step's keys (db/rollup.h), defaults and bounds */
static void test_rollup_keys(void **state)
{
    bridle_config *c = load_ok(doc(PROV_P, MODEL_4O, NULL));
    const database_conf *d = config_database(c);
    assert_int_equal(d->rollup_interval_ms, 2000);
    assert_int_equal(d->rollup_batch, 100000);
    assert_int_equal(d->rollup_retention_days_5m, 90);
    assert_int_equal(d->rollup_retention_days_1h, 730);
    assert_int_equal(d->rollup_retention_days_1d, 0);
    config_free(c);
    c = load_ok(doc(PROV_P, MODEL_4O,
                    "\"database\": {\"rollup_interval_ms\": 0, \"rollup_batch\": 500, "
                    "\"rollup_retention_days_5m\": 7, \"rollup_retention_days_1d\": 3650}"));
    d = config_database(c);
    assert_int_equal(d->rollup_interval_ms, 0);
    assert_int_equal(d->rollup_batch, 500);
    assert_int_equal(d->rollup_retention_days_5m, 7);
    assert_int_equal(d->rollup_retention_days_1d, 3650);
    config_free(c);
    expect_error(doc(PROV_P, MODEL_4O, "\"database\": {\"rollup_interval_ms\": 50}"),
                 "$.database.rollup_interval_ms: ", "0 (off", "got 50");
    expect_error_at(doc(PROV_P, MODEL_4O, "\"database\": {\"rollup_interval_ms\": -1}"),
                    "$.database.rollup_interval_ms");
    expect_error_at(doc(PROV_P, MODEL_4O, "\"database\": {\"rollup_batch\": 0}"),
                    "$.database.rollup_batch");
    expect_error_at(doc(PROV_P, MODEL_4O, "\"database\": {\"rollup_retention_days_1h\": -3}"),
                    "$.database.rollup_retention_days_1h");
    expect_error_at(doc(PROV_P, MODEL_4O, "\"database\": {\"rollup_retention\": 3}"),
                    "$.database.rollup_retention");
}

/* database.spool_flush_ms: the spool's sync policy (db/spool.h) */
static void test_spool_flush_key(void **state)
{
    bridle_config *c = load_ok(doc(PROV_P, MODEL_4O, NULL));
    assert_int_equal(config_database(c)->spool_flush_ms, 10);
    config_free(c);
    c = load_ok(doc(PROV_P, MODEL_4O, "\"database\": {\"spool_flush_ms\": 0}"));
    assert_int_equal(config_database(c)->spool_flush_ms, 0);
    config_free(c);
    expect_error_at(doc(PROV_P, MODEL_4O, "\"database\": {\"spool_flush_ms\": 1001}"),
                    "$.database.spool_flush_ms");
    expect_error_at(doc(PROV_P, MODEL_4O, "\"database\": {\"spool_flush_ms\": -1}"),
                    "$.database.spool_flush_ms");
}

static void test_precise_errors(void **state)
{
    /* an unset ${VAR} in base_url names the variable, not "got \"\"" */
    expect_error(
        doc("\"p\": {\"kind\": \"openai\", \"base_url\": \"${" UNSET1 "}\"}", MODEL_4O, NULL),
        "$.providers.p", "environment variable " UNSET1 " is not set");
    /* ... and an optional provider whose base_url uses it is disabled, not an error */
    bridle_config *c = load_ok(doc("\"o\": {\"kind\": \"openai\", \"base_url\": \"${" UNSET1
                                   "}/v1\", \"optional\": true}, " PROV_P,
                                   MODEL_4O, NULL));
    assert_false(config_provider_enabled(c, 0));
    config_free(c);
    /* end of file inside the document says so (json-c's "continue" leaks out) */
    expect_error("{\n\"providers\": {\n", "line 3: invalid JSON: unexpected end of file");
    expect_error("", "invalid JSON: unexpected end of file");
    /* the path is not printed twice ("$: $.log_level: ") */
    expect_error_at(doc(PROV_P, MODEL_4O, "\"log_level\": \"verbose\""), "$.log_level");
    expect_error_at(doc(PROV_P, MODEL_4O, "\"keys\": {}"), "$.keys");
    /* the tier's path ends in .tier */
    expect_error(doc(PROV_P,
                     "\"my-model\": {\"provider\": \"p\", \"prices\": {\"input\": 1, \"tier\": "
                     "\"huge\"}}",
                     NULL),
                 "$.models.my-model.prices.tier: ");
    /* an unset required variable outside a provider is an error too (docs/config.md) */
    expect_error(doc(PROV_P, MODEL_4O, "\"listen\": \"${" UNSET1 "}\""), "$.listen: ", UNSET1);
    /* a model with no provider or no prices at all does not load */
    expect_error(doc(PROV_P, "\"m\": {\"provider\": [], \"prices\": {\"input\": 1}}", NULL),
                 "$.models.m.provider: ");
    expect_error(doc(PROV_P, "\"m\": {\"provider\": \"p\", \"prices\": {}}", NULL),
                 "$.models.m.prices");
}

/* "workers": a count or "auto" (0); anything else names the path. */
static void test_workers(void **state)
{
    bridle_config *c = load_ok(doc(PROV_P, "", ""));
    assert_int_equal(config_workers(c), 1);
    config_free(c);
    c = load_ok(doc(PROV_P, "", "\"workers\": 4"));
    assert_int_equal(config_workers(c), 4);
    config_free(c);
    c = load_ok(doc(PROV_P, "", "\"workers\": \"auto\""));
    assert_int_equal(config_workers(c), 0);
    config_free(c);
    expect_error(doc(PROV_P, "", "\"workers\": \"many\""), "$.workers", "\"auto\"");
    expect_error_at(doc(PROV_P, "", "\"workers\": 0"), "$.workers");
}

/* A reload keeps what only a restart can change, says so by path (never
 * the value), and lets the rest through. */
static void test_keep_restart_settings(void **state)
{
    bridle_config *old = load_ok(doc(PROV_P, "\"m\": {\"provider\": \"p\", \"price\": \"gpt-4o\"}",
                                     "\"listen\": \"127.0.0.1:1\", \"database\": {\"url\": "
                                     "\"postgresql://a/b\", \"flush_interval_ms\": 100}, "
                                     "\"limits\": {\"max_body_bytes\": 10000}, "
                                     "\"resilience\": {\"max_attempts\": 2}"));
    bridle_config *same = load_ok(doc(PROV_P, "\"m\": {\"provider\": \"p\", \"price\": \"gpt-4o\"}",
                                      "\"listen\": \"127.0.0.1:1\", \"database\": {\"url\": "
                                      "\"postgresql://a/b\", \"flush_interval_ms\": 100}, "
                                      "\"limits\": {\"max_body_bytes\": 10000}, "
                                      "\"resilience\": {\"max_attempts\": 2}"));
    assert_int_equal(config_keep_restart_settings(same, old, false), 0);
    config_free(same);
    bridle_config *nw = load_ok(doc(PROV_P,
                                    "\"m\": {\"provider\": \"p\", \"price\": \"gpt-4o\"}, "
                                    "\"m2\": {\"provider\": \"p\", \"price\": \"gpt-4o\"}",
                                    "\"listen\": \"127.0.0.1:2\", \"database\": {\"url\": "
                                    "\"postgresql://c/d\", \"flush_interval_ms\": 500}, "
                                    "\"limits\": {\"max_body_bytes\": 20000}, "
                                    "\"resilience\": {\"max_attempts\": 5}"));
    assert_int_equal(config_keep_restart_settings(nw, old, false), 4);
    config_free(old); /* nw owns what it kept */
    assert_string_equal(config_listen(nw), "127.0.0.1:1");
    assert_string_equal(config_database(nw)->url, "postgresql://a/b");
    assert_int_equal(config_database(nw)->flush_interval_ms, 100);
    assert_int_equal(config_limits(nw)->max_body_bytes, 10000);
    assert_int_equal(config_resilience(nw)->max_attempts, 5); /* reloadable */
    assert_int_equal(config_n_models(nw), 2);
    config_free(nw);
}

/* models.NAME.capabilities: the default from the dialect and the name; a
 * list replaces it; an unknown capability names its JSON path. */
static void test_model_capabilities(void **state)
{
    bridle_config *c = load_ok(doc(PROV_P,
                                   "\"gpt-4o\": {\"provider\": \"p\"}, "
                                   "\"aud\": {\"provider\": \"p\", \"upstream_model\": "
                                   "\"gpt-4o-audio-preview\", \"price\": \"gpt-4o\"}, "
                                   "\"bare\": {\"provider\": \"p\", \"price\": \"gpt-4o\", "
                                   "\"capabilities\": [\"tools\", \"audio\"]}, "
                                   "\"none\": {\"provider\": \"p\", \"price\": \"gpt-4o\", "
                                   "\"capabilities\": []}",
                                   NULL));
    assert_int_equal(config_find_model(c, "gpt-4o")->target.caps,
                     CAP_TOOLS | CAP_VISION | CAP_JSON_SCHEMA | CAP_LOGPROBS);
    assert_true(config_find_model(c, "aud")->target.caps & CAP_AUDIO);
    assert_int_equal(config_find_model(c, "bare")->target.caps, CAP_TOOLS | CAP_AUDIO);
    assert_int_equal(config_find_model(c, "none")->target.caps, 0);
    config_free(c);
    expect_error_at(doc(PROV_P,
                        "\"gpt-4o\": {\"provider\": \"p\", \"capabilities\": [\"tools\", "
                        "\"telepathy\"]}",
                        NULL),
                    "$.models.gpt-4o.capabilities[1]");
    expect_error_at(
        doc(PROV_P, "\"gpt-4o\": {\"provider\": \"p\", \"capabilities\": \"tools\"}", NULL),
        "$.models.gpt-4o.capabilities");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_minimal_valid, setup_env),
        cmocka_unit_test_setup(test_model_capabilities, setup_env),
        cmocka_unit_test_setup(test_limit_defaults, setup_env),
        cmocka_unit_test_setup(test_provider_options, setup_env),
        cmocka_unit_test_setup(test_provider_batch, setup_env),
        cmocka_unit_test_setup(test_shipped_config, setup_env),
        cmocka_unit_test_setup(test_env_default_and_value, setup_env),
        cmocka_unit_test_setup(test_required_env_unset, setup_env),
        cmocka_unit_test_setup(test_optional_provider_disabled, setup_env),
        cmocka_unit_test_setup(test_base_url_trailing_slashes, setup_env),
        cmocka_unit_test_setup(test_extra_headers, setup_env),
        cmocka_unit_test_setup(test_provider_errors, setup_env),
        cmocka_unit_test_setup(test_cache_section, setup_env),
        cmocka_unit_test_setup(test_invalid_json, setup_env),
        cmocka_unit_test_setup(test_truncated_json, setup_env),
        cmocka_unit_test_setup(test_top_level_not_object, setup_env),
        cmocka_unit_test_setup(test_unknown_top_level_key, setup_env),
        cmocka_unit_test_setup(test_log_level, setup_env),
        cmocka_unit_test_setup(test_limits_errors, setup_env),
        cmocka_unit_test_setup(test_model_kind, setup_env),
        cmocka_unit_test_setup(test_model_errors, setup_env),
        cmocka_unit_test_setup(test_model_reasoning, setup_env),
        cmocka_unit_test_setup(test_teams, setup_env),
        cmocka_unit_test_setup(test_bad_prices, setup_env),
        cmocka_unit_test_setup(test_explicit_prices, setup_env),
        cmocka_unit_test_setup(test_routes, setup_env),
        cmocka_unit_test_setup(test_route_errors, setup_env),
        cmocka_unit_test_setup(test_timeouts, setup_env),
        cmocka_unit_test_setup(test_timeout_errors, setup_env),
        cmocka_unit_test_setup(test_breaker_open_max, setup_env),
        cmocka_unit_test_setup(test_keys, setup_env),
        cmocka_unit_test_setup(test_key_from_unset_variable_skipped, setup_env),
        cmocka_unit_test_setup(test_key_errors, setup_env),
        cmocka_unit_test_setup(test_precise_errors, setup_env),
        cmocka_unit_test(test_idempotency_section),
        cmocka_unit_test(test_rollup_keys),
        cmocka_unit_test(test_spool_flush_key),
        cmocka_unit_test(test_workers),
        cmocka_unit_test(test_keep_restart_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
