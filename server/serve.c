/* bridle serve: the gateway process (cli/main.c dispatches here). */
#include <event2/event.h>
#include <event2/thread.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "db/idem.h"
#include "db/ledger.h"
#include "db/migrate.h"
#include "db/rollup.h"
#include "lib/log.h"
#include "lib/util.h"
#include "providers/engine.h"
#include "router/alerts.h"
#include "router/budget.h"
#include "router/config.h"
#include "router/keyring.h"
#include "router/router.h"
#include "server/admin.h"
#include "server/app.h"
#include "server/serve.h"
#include "server/chat.h"
#include "server/files.h"
#include "server/batches.h"
#include "db/filestore.h"
#include "server/http.h"
#include "server/workers.h"

#define DRAIN_LIMIT_MS 30000

/* ------------------------------------------------------------ serve */

static void on_budgets_drained(void *arg)
{
    app *a = arg;
    event_base_loopexit(a->base, NULL);
}

/* Then the budget leases go back at once rather than after their TTL. */
static void on_ledger_drained(void *arg)
{
    app *a = arg;
    budget_drain(router_budgets(a->router), on_budgets_drained, a);
}

/* SIGTERM: wait for the requests in flight, then for the ledger to hand
 * every event to PostgreSQL (or make the spool durable), then exit. */
static void on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
    app *a = arg;
    static int64_t started;
    static bool ledger_asked;
    if (!started) started = util_now_ms();
    if (ledger_asked || (a->in_flight > 0 && util_now_ms() - started <= DRAIN_LIMIT_MS)) return;
    if (a->in_flight)
        log_warn("drain limit reached with %lld requests in flight", (long long)a->in_flight);
    ledger_asked = true;
    if (a->ledger)
        ledger_drain(a->ledger, 5000, on_ledger_drained, a);
    else
        on_ledger_drained(a);
}

/* Applies pending migrations (or checks there are none) before serving;
 * blocking is fine here: nobody is being served yet. */
static int prepare_database(const database_conf *db)
{
    char err[512];
    if (db->migrate == MIGRATE_OFF) return 0;
    /* A database that is down must not take the gateway down with it:
     * serve, keep usage in the spool, write it when the database returns. */
    PGconn *probe = migrate_connect(db->url, "bridle-start", err, sizeof err);
    if (!probe) {
        log_warn("database unreachable at start (%s): serving anyway; usage waits in the spool; "
                 "migrations were not checked",
                 err);
        return 0;
    }
    PQfinish(probe);
    if (db->migrate == MIGRATE_APPLY) {
        if (migrate_apply(db->url, false, err, sizeof err) < 0) {
            log_error("database: %s", err);
            return -1;
        }
    } else if (db->migrate == MIGRATE_CHECK) {
        int pending = 0;
        if (migrate_pending(db->url, &pending, err, sizeof err) < 0) {
            log_error("database: %s", err);
            return -1;
        }
        if (pending > 0) {
            log_error("database: %d migrations are pending and database.migrate is \"check\": "
                      "run `bridle migrate` first",
                      pending);
            return -1;
        }
    }
    return 0;
}

static int start_ledger(app *a)
{
    const database_conf *db = config_database(a->cfg);
    if (!db->url[0]) {
        log_warn("no database configured (database.url or DATABASE_URL): usage is NOT recorded");
        return 0;
    }
    if (prepare_database(db) != 0) return -1;
    ledger_options lo = {
        .database_url = db->url,
        .spool_dir = db->spool_dir,
        .spool_max_bytes = db->spool_max_bytes,
        .flush_interval_ms = (int)db->flush_interval_ms,
        .spool_sync_ms = db->spool_flush_ms > 0 ? (int)db->spool_flush_ms : -1,
        .batch_max = (int)db->batch_max,
        .partitions_ahead_days = (int)db->partitions_ahead_days,
        .retention_days = (int)db->retention_days,
    };
    char err[512];
    a->ledger = ledger_new(a->base, &lo, err, sizeof err);
    if (!a->ledger) {
        log_error("%s", err);
        return -1;
    }
    log_info("usage ledger: spool in %s, writing to PostgreSQL", db->spool_dir);
    const idempotency_conf *ic = config_idempotency(a->cfg);
    idem_options io = {
        .database_url = db->url,
        .connections = (int)ic->connections,
        .retention_s = ic->retention_hours * 3600,
        /* a claim outlives any request that holds it: its deadline plus margin */
        .lease_ms = config_limits(a->cfg)->request_timeout_ms + 60000,
    };
    a->idem = idem_new(a->base, &io);
    if (!a->idem) {
        log_error("idempotency: out of memory");
        return -1;
    }
    if (db->rollup_interval_ms > 0) { /* the rollup step: db/rollup.h */
        rollup_options ro = {.database_url = db->url,
                             .interval_ms = (int)db->rollup_interval_ms,
                             .batch = (int)db->rollup_batch,
                             .retention_days_5m = (int)db->rollup_retention_days_5m,
                             .retention_days_1h = (int)db->rollup_retention_days_1h,
                             .retention_days_1d = (int)db->rollup_retention_days_1d};
        if (!(a->rollup = rollup_new(a->base, &ro))) {
            log_error("rollup: out of memory");
            return -1;
        }
    }
    return 0;
}

/* The keys: the config's, and the database's when there is one (reloaded
 * within database.keys_refresh_ms of a change); the admin API with them. */
static int start_keys(app *a)
{
    const database_conf *db = config_database(a->cfg);
    a->keys = keyring_new(a->base, a->cfg, db->url, db->keys_refresh_ms);
    if (!a->keys) {
        log_error("out of memory");
        return -1;
    }
    if (db->url[0] && (!(a->admin = admin_new(a)) || !(a->files = files_store_new(a)))) {
        log_error("out of memory");
        return -1;
    }
    return 0;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    app *a = arg;
    if (a->draining) return;
    log_info("signal %d: no longer accepting; draining %lld requests in flight", (int)sig,
             (long long)a->in_flight);
    a->draining = true;
    http_stop_accepting(a);
    a->drain_timer = event_new(a->base, -1, EV_PERSIST, on_drain_tick, a);
    struct timeval tv = {0, 50000};
    event_add(a->drain_timer, &tv);
}

static const char *arg_value(int argc, char **argv, const char *name)
{
    for (int i = 2; i < argc - 1; i++)
        if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return NULL;
}

static void set_log_level(const char *lvl)
{
    log_level l = LOG_INFO;
    if (strcmp(lvl, "debug") == 0)
        l = LOG_DEBUG;
    else if (strcmp(lvl, "warn") == 0)
        l = LOG_WARN;
    else if (strcmp(lvl, "error") == 0)
        l = LOG_ERROR;
    log_set_level(l);
}

/* Worker i > 0 spools in spool_dir/worker-i (worker_main): the same for a
 * reloaded config, so that the spool directory never reads as changed. */
static void worker_spool_dir(bridle_config *cfg, int worker)
{
    if (worker <= 0) return;
    char sub[4096];
    snprintf(sub, sizeof sub, "%s/worker-%d", config_database(cfg)->spool_dir, worker);
    config_set_spool_dir(cfg, sub);
}

/* SIGHUP: the config file again. A file that does not load is refused
 * whole (the old config stays, the log names the file and JSON path); a
 * setting that needs a restart is logged and kept as it runs. Otherwise
 * new requests get a router for the new config (router_reload); requests
 * in flight finish on the old one, which goes with its last run. */
static void serve_reload(app *a)
{
    char err[1024];
    const char *path = config_path(a->cfg);
    bridle_config *nw = config_load(path, err, sizeof err);
    if (!nw) {
        log_error("config reload refused, the running config is kept: %s", err);
        return;
    }
    worker_spool_dir(nw, a->worker);
    int kept = config_keep_restart_settings(nw, a->cfg, true);
    struct router *rt = router_reload(a->router, nw);
    if (!rt) {
        config_free(nw);
        log_error("config reload: out of memory; the running config is kept");
        return;
    }
    a->router = rt;
    a->cfg = nw;
    keyring_set_config(a->keys, nw);
    set_log_level(config_log_level(nw));
    log_set_json(config_log_json(nw));
    log_info("config reloaded from %s: %d models, %d routes%s", path, config_n_models(nw),
             config_n_routes(nw), kept ? "; some changes wait for a restart (above)" : "");
}

/* SIGHUP: reload the config. */
static void on_hup(evutil_socket_t sig, short what, void *arg)
{
    app *a = arg;
    if (a->draining) return;
    serve_reload(a);
}

static struct event_base *new_base(void)
{
    /* The changelist halves epoll_ctl calls (performance.md). */
    struct event_config *ec = event_config_new();
    event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    struct event_base *base = event_base_new_with_config(ec);
    event_config_free(ec);
    return base;
}

/* Serves the listening socket fd until SIGTERM has drained the process.
 * Nothing is accepted before the loop runs, after the ledger and the
 * router are up. */
static int serve(app *a, evutil_socket_t fd, const char *listen)
{
    char err[512];
    int rc = 1;
    struct event *sigterm = NULL, *sigint = NULL, *sighup = NULL;
    alerts *budget_alerts = NULL;
    a->base = new_base();
    a->eng = engine_new(a->base, 4096);
    if (http_start(a, fd, err, sizeof err) != 0) {
        log_error("%s", err);
        goto out;
    }
    if (start_ledger(a) != 0) goto out;
    a->router = router_new(a->base, a->cfg, a->eng, a->ledger, a->idem);
    if (!a->router) {
        log_error("out of memory");
        goto out;
    }
    budget_alerts = alerts_start(a->router); /* budget alerts: claimed and delivered on the loop */
    if (start_keys(a) != 0) goto out;
    if (config_database(a->cfg)->url[0] && !(a->batches = batches_new(a))) {
        log_error("out of memory");
        goto out;
    }
    sigterm = evsignal_new(a->base, SIGTERM, on_signal, a);
    sigint = evsignal_new(a->base, SIGINT, on_signal, a);
    sighup = evsignal_new(a->base, SIGHUP, on_hup, a);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);
    event_add(sighup, NULL);
    /* a worker starts with them blocked (server/workers.h): handled from here */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigprocmask(SIG_UNBLOCK, &sigs, NULL);
    for (int i = 0; i < config_n_providers(a->cfg); i++)
        if (!config_provider_enabled(a->cfg, i))
            log_info("provider %s is disabled: an environment variable it needs is not set",
                     config_provider(a->cfg, i)->name);
    if (a->worker >= 0)
        log_info("bridle %s worker %d (pid %d) serving http://%s (%d models, %d routes)",
                 BRIDLE_VERSION, a->worker, (int)getpid(), listen, config_n_models(a->cfg),
                 config_n_routes(a->cfg));
    else
        log_info("bridle %s listening on http://%s (%d models, %d routes)", BRIDLE_VERSION, listen,
                 config_n_models(a->cfg), config_n_routes(a->cfg));
    printf("bridle listening on http://%s\n", listen);
    fflush(stdout);
    workers_ready();
    event_base_dispatch(a->base);
    log_info("bridle stopped");
    rc = 0;
    fd = -1;
out: /* also when starting failed: everything above copes with what was not made */
    if (fd >= 0 && !a->h1) close(fd);
    if (sigterm) event_free(sigterm);
    if (sigint) event_free(sigint);
    if (sighup) event_free(sighup);
    if (a->drain_timer) event_free(a->drain_timer);
    http_free(a);
    chat_pool_free(a);
    alerts_free(budget_alerts);
    admin_free(a->admin);
    filestore_free(a->files);
    batches_free(a->batches);
    router_free(a->router);
    keyring_free(a->keys);
    rollup_free(a->rollup);
    idem_free(a->idem);
    ledger_free(a->ledger);
    engine_free(a->eng);
    event_base_free(a->base);
    return rc;
}

/* ------------------------------------------------------------ workers */

typedef struct worker_ctx {
    bridle_config *cfg;
    const char *listen;
} worker_ctx;

/* Worker i: a whole gateway on socket fd. Its spool is its own (worker 0
 * keeps database.spool_dir, so a gateway that goes from one worker to
 * several replays what the single process left; worker i > 0 uses
 * spool_dir/worker-i): a restarted worker i replays its predecessor's
 * spool, and the spool's lock file makes sure no two processes ever
 * write one. */
static int worker_main(int index, int fd, void *arg)
{
    worker_ctx *w = arg;
    app a;
    memset(&a, 0, sizeof a);
    a.cfg = w->cfg;
    a.worker = index;
    log_set_worker(index);
    const char *dir = config_database(a.cfg)->spool_dir;
    if (index > 0 && config_database(a.cfg)->url[0] && mkdir(dir, 0700) != 0 && errno != EEXIST)
        log_warn("worker %d: mkdir %s: %s", index, dir, strerror(errno));
    worker_spool_dir(a.cfg, index);
    int rc = serve(&a, fd, w->listen);
    config_free(w->cfg); /* a reloaded config is the router's, freed with it */
    return rc;
}

/* SIGHUP in the supervisor: the config a restarted worker starts with is
 * the one the others reloaded (each worker logs what it refused). */
static void supervisor_hup(void *arg)
{
    worker_ctx *w = arg;
    char err[1024];
    bridle_config *nw = config_load(config_path(w->cfg), err, sizeof err);
    if (!nw) return;
    config_keep_restart_settings(nw, w->cfg, false);
    config_free(w->cfg);
    w->cfg = nw;
}

/* How many workers: --workers N|auto, else the config's "workers". */
static int workers_wanted(int argc, char **argv, const bridle_config *cfg)
{
    const char *v = arg_value(argc, argv, "--workers");
    int n = config_workers(cfg);
    if (v) n = strcmp(v, "auto") == 0 ? 0 : atoi(v);
    if (n == 0) n = workers_auto();
    return n;
}

/* glibc's defaults give memory back to the kernel as soon as the top of the
 * heap holds 128 KiB free, and mmap every block from 128 KiB up (a COPY
 * batch, a large body): under load the same pages are returned and faulted
 * in again per request. Keeping 64 MiB served 2-6 % more requests at 64
 * connections (bench/RESULTS.md, 2026-12-07 00:50); peak RSS at 9,000 calls
 * in flight went from 278-280 to 289 MB. */
static void tune_malloc(void)
{
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    mallopt(M_TOP_PAD, 16 << 20);
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
}

int serve_main(int argc, char **argv)
{
    tune_malloc();
    /* SIGHUP's default is to end the process: held until the loop handles
     * it (serve() unblocks it), so a reload asked for during start-up
     * waits instead of killing the gateway */
    sigset_t hup;
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    sigprocmask(SIG_BLOCK, &hup, NULL);
    const char *path = arg_value(argc, argv, "--config");
    if (!path) path = getenv("BRIDLE_CONFIG");
    if (!path) path = "config/bridle.json";
    char err[1024];
    app a;
    memset(&a, 0, sizeof a);
    a.cfg = config_load(path, err, sizeof err);
    if (!a.cfg) {
        fprintf(stderr, "bridle: %s\n", err);
        return 1;
    }
    set_log_level(config_log_level(a.cfg));
    log_set_json(config_log_json(a.cfg));
    const char *listen = arg_value(argc, argv, "--listen");
    if (!listen) listen = config_listen(a.cfg); /* the config's own default reads BRIDLE_LISTEN */
    if (getenv("BRIDLE_LISTEN") && !arg_value(argc, argv, "--listen"))
        listen = getenv("BRIDLE_LISTEN");
    signal(SIGPIPE, SIG_IGN);
    int n = workers_wanted(argc, argv, a.cfg);
    if (n < 1 || n > 1024) {
        fprintf(stderr, "bridle: --workers: expected 1 to 1024 or \"auto\"\n");
        config_free(a.cfg);
        return 1;
    }
    char host[256];
    int port, fds[1024];
    if (!util_parse_hostport(listen, host, sizeof host, &port)) {
        log_error("listen address \"%s\" is not HOST:PORT", listen);
        config_free(a.cfg);
        return 1;
    }
    /* The address first: a gateway that cannot serve must not touch the
     * database or the spool of the one that does. */
    if (http_listen(host, port, n, fds, err, sizeof err) != 0) {
        log_error("%s", err);
        config_free(a.cfg);
        return 1;
    }
    int rc;
    bridle_config *first = a.cfg; /* a reloaded config is the router's, freed with it */
    if (n == 1) {
        a.worker = -1;
        rc = serve(&a, fds[0], listen);
        config_free(first);
    } else {
        worker_ctx w = {.cfg = a.cfg, .listen = listen};
        rc = workers_run(n, fds, worker_main, supervisor_hup, &w);
        for (int i = 0; i < n; i++)
            close(fds[i]);
        config_free(w.cfg);
    }
    return rc;
}
