/* Micro-benchmark of db/spool: appends/s with the sync thread grouping the
 * fdatasyncs, and the latency of spool_append on the calling thread.
 *
 *   tests/db/spool_bench [DIR]       (default: a fresh dir under /tmp)
 *
 * Three runs: a burst of 200,000 appends as fast as one thread can go (with
 * and without preallocated segments), then 20,000 appends paced at 10,000/s,
 * closer to a busy gateway. Each prints appends/s, append latency p50 / p99
 * / p99.9 / max, the fdatasync rounds and records per round, the slowest
 * round, and how long spool_sync_now took at the end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "db/spool.h"

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void make_event(usage_event *e, uint64_t n)
{
    memset(e, 0, sizeof *e);
    snprintf(e->event_id, sizeof e->event_id, "%032llx", (unsigned long long)n);
    e->ts_us = 1700000000000000ll + (int64_t)n;
    strcpy(e->key_id, "3f9a1c0e2b7d4a66");
    strcpy(e->team, "search");
    strcpy(e->end_user, "user-4411");
    strcpy(e->task, "summarise");
    strcpy(e->feature, "digest");
    strcpy(e->requested_model, "gpt-4o");
    strcpy(e->provider, "openai");
    strcpy(e->model, "gpt-4o-mini");
    strcpy(e->tier, "budget");
    strcpy(e->route_reason, "task summarise -> tier budget, first healthy candidate");
    e->status = 200;
    e->attempts = 1;
    e->input_tokens = 1834;
    e->cache_read_tokens = 1024;
    e->output_tokens = 412;
    e->usage_exact = true;
    e->cost_pusd = 522600000;
    e->baseline_cost_pusd = 8705000000;
    e->latency_us = 812345;
    e->ttft_us = -1;
    e->upstream_us = 800000;
}

static void run(const char *label, const char *dir, int n, int rate, bool prealloc)
{
    char err[256];
    spool_options o = {.no_preallocate = !prealloc};
    spool *sp = spool_open(dir, &o, err, sizeof err);
    if (!sp) {
        fprintf(stderr, "spool_open: %s\n", err);
        exit(1);
    }
    int64_t *lat = malloc(sizeof *lat * (size_t)n);
    usage_event e;
    int64_t t0 = now_ns(), gap = rate ? 1000000000 / rate : 0;
    for (int i = 0; i < n; i++) {
        if (gap) {
            int64_t due = t0 + gap * i;
            while (now_ns() < due) {
                struct timespec ts = {0, 20000};
                nanosleep(&ts, NULL);
            }
        }
        make_event(&e, (uint64_t)i);
        int64_t a = now_ns();
        uint64_t seq;
        if (spool_append(sp, &e, &seq) != SPOOL_OK) {
            perror("spool_append");
            exit(1);
        }
        lat[i] = now_ns() - a;
        if (i % 4096 == 0) spool_ack(sp, seq > 4096 ? seq - 4096 : 0); /* PostgreSQL keeps up */
    }
    int64_t t1 = now_ns();
    spool_sync_now(sp);
    int64_t t2 = now_ns();
    spool_stats st;
    spool_get_stats(sp, &st);
    qsort(lat, (size_t)n, sizeof *lat, cmp_i64);
    double secs = (double)(t1 - t0) / 1e9;
    printf("%-28s %8d appends in %.3f s = %9.0f appends/s | append p50 %.2f us p99 %.2f us "
           "p99.9 %.2f us max %.1f us | %llu syncs, %.1f records/sync, slowest sync %.2f ms, "
           "final sync_now %.2f ms\n",
           label, n, secs, n / secs, lat[n / 2] / 1e3, lat[n * 99 / 100] / 1e3,
           lat[n * 999 / 1000] / 1e3, lat[n - 1] / 1e3, (unsigned long long)st.syncs,
           st.syncs ? (double)n / (double)st.syncs : 0.0, st.sync_max_us / 1e3,
           (double)(t2 - t1) / 1e6);
    free(lat);
    spool_close(sp);
}

int main(int argc, char **argv)
{
    char dir[256];
    if (argc > 1) {
        snprintf(dir, sizeof dir, "%s", argv[1]);
    } else {
        snprintf(dir, sizeof dir, "/tmp/spool_bench.XXXXXX");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            return 1;
        }
    }
    run("burst, preallocated", dir, 200000, 0, true);
    run("burst, not preallocated", dir, 200000, 0, false);
    run("paced 10k/s, preallocated", dir, 20000, 10000, true);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (argc == 1 && system(cmd) != 0) return 1;
    return 0;
}
