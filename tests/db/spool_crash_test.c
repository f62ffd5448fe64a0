/* Crash-consistency test of db/spool (reliability.md T9).
 *
 * (a) KILLS times: fork a writer that opens the spool, appends numbered
 *     events, now and then waits for durability (spool_sync_now or the
 *     eventfd) and acks a prefix, and reports over a pipe, *before* acting,
 *     "number N is durable" (D) and "I may ack up to N" (A). SIGKILL it after
 *     a random delay (0..12 ms, so some die inside spool_open's recovery),
 *     reopen, replay. Pass: no record is torn or wrong (each must equal the
 *     event made from its number), numbers strictly increase, every number
 *     above the ack intent up to the newest record is present, and the
 *     newest record is at least the last number reported durable. A spool
 *     directory lives for a chain of CHAIN kills, so recovery of recovered
 *     spools is exercised too. The checkpoint file must always parse.
 * (b) DAMAGES times: copy a 300-record segment image, truncate it and/or
 *     flip bits and/or overwrite a range; scan it. Pass: every record yielded
 *     passes its CRC and equals the event made from its number, sequence
 *     numbers increase, and every record whose bytes were not touched is
 *     yielded. Every 10th damage also goes through files: the image split
 *     into three segments, spool_open (which cuts the torn tail) and replay.
 *
 * Last line: "N passed, N failed". Exit status 1 on any failure. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "db/spool.h"

#define KILLS 1000
#define CHAIN 20
#define DAMAGES 10000
#define IMAGE_RECORDS 300

static int passed, failed;
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static uint64_t rnd_below(uint64_t n)
{
    return n ? rnd() % n : 0;
}

static void make_event(usage_event *e, uint64_t n)
{
    memset(e, 0, sizeof *e);
    snprintf(e->event_id, sizeof e->event_id, "%032llx", (unsigned long long)n);
    e->ts_us = 1700000000000000ll + (int64_t)n * 997;
    snprintf(e->key_id, sizeof e->key_id, "key-%llu", (unsigned long long)(n % 13));
    snprintf(e->team, sizeof e->team, "team-%llu", (unsigned long long)(n % 5));
    snprintf(e->end_user, sizeof e->end_user, "user-%llu", (unsigned long long)(n * 7919));
    strcpy(e->agent, n % 2 ? "agent-a" : "");
    strcpy(e->task, "summarise");
    strcpy(e->requested_model, "gpt-4o");
    strcpy(e->provider, "openai");
    strcpy(e->model, n % 3 ? "gpt-4o-mini" : "gpt-4o");
    strcpy(e->tier, "mid");
    snprintf(e->route_reason, sizeof e->route_reason, "rule %llu", (unsigned long long)(n % 11));
    e->streamed = n & 1;
    e->status = n % 9 ? 200 : 429;
    e->attempts = (int32_t)(n % 3) + 1;
    e->input_tokens = (int64_t)(n * 31 % 100000);
    e->output_tokens = (int64_t)(n * 17 % 5000);
    e->cost_pusd = (int64_t)n * 1000003;
    e->baseline_cost_pusd = (int64_t)n * 2000003;
    e->latency_us = (int64_t)(n % 100000);
    e->ttft_us = n & 1 ? 1500 : -1;
    e->usage_exact = true;
    e->cache_hit = n % 17 == 0;
}

static bool event_matches(const usage_event *ev, uint64_t *num)
{
    char *end;
    unsigned long long n = strtoull(ev->event_id, &end, 16);
    if (*end || strlen(ev->event_id) != 32) return false;
    usage_event want;
    make_event(&want, n);
    *num = n;
    return memcmp(&want, ev, sizeof want) == 0;
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

static void rmrf(const char *d)
{
    DIR *dd = opendir(d);
    if (!dd) return;
    struct dirent *de;
    char p[512];
    while ((de = readdir(dd))) {
        if (de->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", d, de->d_name);
        unlink(p);
    }
    closedir(dd);
    rmdir(d);
}

/* ================================================================ (a) kills */

static const spool_options kill_opts = {
    .segment_bytes = 16384, .sync_interval_ms = 2, .sync_every = 16, .checkpoint_interval_ms = 3};

static void report(int fd, char type, uint64_t n)
{
    unsigned char m[9];
    m[0] = (unsigned char)type;
    memcpy(m + 1, &n, 8);
    if (write(fd, m, 9) != 9) _exit(5);
}

static void writer(const char *dir, uint64_t start, int wfd, uint64_t seed)
{
    rng_state = seed | 1;
    spool_options o = kill_opts;
    if (seed & 2) o.sync_interval_ms = SPOOL_SYNC_AT_ONCE; /* half the kills: the other policy */
    spool *sp = spool_open(dir, &o, NULL, 0);
    if (!sp) _exit(3);
    struct pollfd pfd = {.fd = spool_sync_fd(sp), .events = POLLIN};
    uint64_t first_seq = 0, last_seq = 0, acked = 0, n = start;
    for (;;) {
        usage_event e;
        uint64_t seq;
        make_event(&e, n);
        if (spool_append(sp, &e, &seq) != SPOOL_OK) _exit(4);
        if (!first_seq) first_seq = seq;
        last_seq = seq;
        n++;
        uint64_t r = rnd_below(100);
        uint64_t durable = 0;
        if (r < 2) {
            if (spool_sync_now(sp) != 0) _exit(6);
            durable = spool_durable_seq(sp);
        } else if (r < 30 && poll(&pfd, 1, 0) == 1) {
            durable = spool_on_sync_ready(sp);
        } else if (r == 99 && last_seq > acked) {
            uint64_t a = acked + 1 + rnd_below(last_seq - acked);
            if (a < first_seq) a = first_seq;
            report(wfd, 'A', start + (a - first_seq));
            spool_ack(sp, a);
            acked = a;
        }
        if (durable >= first_seq) report(wfd, 'D', start + (durable - first_seq));
        struct timespec ts = {0, 30000};
        nanosleep(&ts, NULL);
    }
}

typedef struct check {
    uint64_t prev, hi, count;
    bool have, bad;
    uint64_t need_from; /* every number in (need_from, hi] must be present */
} check;

static int check_cb(void *ctx, uint64_t seq, const usage_event *ev)
{
    check *c = ctx;
    uint64_t num;
    if (!event_matches(ev, &num)) {
        fail("record seq %llu does not match its number", (unsigned long long)seq);
        c->bad = true;
        return 1;
    }
    if (c->have && num <= c->prev) {
        fail("number %llu after %llu", (unsigned long long)num, (unsigned long long)c->prev);
        c->bad = true;
        return 1;
    }
    /* Above the ack intent nothing may be missing. */
    if (num > c->need_from + 1 && !(c->have && c->prev == num - 1)) {
        fail("gap: %llu missing (next is %llu)", (unsigned long long)num - 1,
             (unsigned long long)num);
        c->bad = true;
        return 1;
    }
    c->have = true;
    c->prev = c->hi = num;
    c->count++;
    return 0;
}

static bool checkpoint_sane(const char *dir)
{
    char p[512], s[80];
    snprintf(p, sizeof p, "%s/acked", dir);
    FILE *f = fopen(p, "r");
    if (!f) return errno == ENOENT;
    size_t n = fread(s, 1, sizeof s - 1, f);
    fclose(f);
    s[n] = '\0';
    unsigned long long v;
    unsigned x;
    int used = 0;
    return sscanf(s, "BRLACK1 %llu %8x\n%n", &v, &x, &used) == 2 && used == (int)n && n > 10;
}

static void run_kills(void)
{
    char dir[64] = "";
    uint64_t next = 1, ack_intent = 0, durable_max = 0;
    uint64_t total_records = 0, total_durable_checked = 0, lost = 0;
    int kills_in_open = 0;
    for (int it = 0; it < KILLS; it++) {
        if (it % CHAIN == 0) {
            if (dir[0]) rmrf(dir);
            snprintf(dir, sizeof dir, "/tmp/spool_crash.XXXXXX");
            if (!mkdtemp(dir)) {
                perror("mkdtemp");
                exit(2);
            }
            next = 1, ack_intent = 0, durable_max = 0;
        }
        int pfd[2];
        if (pipe(pfd) != 0) {
            perror("pipe");
            exit(2);
        }
        uint64_t start = next, seed = rnd();
        pid_t pid = fork();
        if (pid == 0) {
            close(pfd[0]);
            writer(dir, start, pfd[1], seed);
        }
        close(pfd[1]);
        struct timespec ts = {0, (long)rnd_below(12000) * 1000};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        bool ok = true;
        if (!WIFSIGNALED(st)) {
            fail("iteration %d: writer exited with %d", it, WEXITSTATUS(st));
            ok = false;
        }
        unsigned char m[9];
        bool any = false;
        while (read(pfd[0], m, 9) == 9) {
            uint64_t v;
            memcpy(&v, m + 1, 8);
            if (m[0] == 'D' && v > durable_max) durable_max = v;
            if (m[0] == 'A' && v > ack_intent) ack_intent = v;
            any = true;
        }
        close(pfd[0]);
        if (!any) kills_in_open++;

        char err[256] = "";
        spool *sp = spool_open(dir, &kill_opts, err, sizeof err);
        if (!sp) {
            fail("iteration %d: reopen: %s", it, err);
            ok = false;
        } else {
            check c = {.need_from = ack_intent};
            int rc = spool_replay(sp, check_cb, &c);
            if (rc != 0 || c.bad) {
                ok = false;
            } else {
                uint64_t must = durable_max > start - 1 ? durable_max : start - 1;
                /* Everything above the ack intent up to `must` is present
                 * (the callback checked there is no gap above it). */
                if (must > ack_intent) {
                    if (!c.have || c.hi < must) {
                        fail("iteration %d: newest %llu < must %llu (acked<=%llu)", it,
                             (unsigned long long)c.hi, (unsigned long long)must,
                             (unsigned long long)ack_intent);
                        lost += must - (c.have ? c.hi : ack_intent);
                        ok = false;
                    }
                }
                total_durable_checked += durable_max > ack_intent ? durable_max - ack_intent : 0;
                total_records += c.count;
                uint64_t hi = c.have ? c.hi : 0;
                next = hi + 1;
                if (start > next) next = start;
                if (ack_intent + 1 > next) next = ack_intent + 1;
                if (durable_max + 1 > next) next = durable_max + 1;
            }
            if (spool_close(sp) != 0) {
                fail("iteration %d: close: %s", it, strerror(errno));
                ok = false;
            }
        }
        if (!checkpoint_sane(dir)) {
            fail("iteration %d: checkpoint file torn or malformed", it);
            ok = false;
        }
        ok ? passed++ : failed++;
    }
    if (dir[0]) rmrf(dir);
    printf("kills: %d iterations (%d killed before reporting anything), %llu records replayed, "
           "%llu durable-acknowledged records checked, %llu lost\n",
           KILLS, kills_in_open, (unsigned long long)total_records,
           (unsigned long long)total_durable_checked, (unsigned long long)lost);
}

/* ================================================================ (b) damage */

static uint8_t image[IMAGE_RECORDS * SPOOL_MAX_RECORD];
static size_t image_len, rec_off[IMAGE_RECORDS + 1];

static void build_image(void)
{
    for (uint64_t i = 0; i < IMAGE_RECORDS; i++) {
        usage_event e;
        make_event(&e, i + 1);
        rec_off[i] = image_len;
        image_len += spool_encode_record(&e, i + 1, image + image_len, sizeof image - image_len);
    }
    rec_off[IMAGE_RECORDS] = image_len;
}

typedef struct dcheck {
    bool seen[IMAGE_RECORDS + 1];
    uint64_t prev;
    bool bad;
} dcheck;

static bool dcheck_record(dcheck *c, uint64_t seq, const usage_event *ev)
{
    uint64_t num;
    if (!event_matches(ev, &num) || num != seq || seq < 1 || seq > IMAGE_RECORDS) {
        fail("damaged image yielded a wrong record (seq %llu)", (unsigned long long)seq);
        return false;
    }
    if (seq <= c->prev) {
        fail("damaged image: seq %llu after %llu", (unsigned long long)seq,
             (unsigned long long)c->prev);
        return false;
    }
    c->prev = seq;
    c->seen[seq] = true;
    return true;
}

static int dcheck_cb(void *ctx, uint64_t seq, const usage_event *ev)
{
    dcheck *c = ctx;
    if (!dcheck_record(c, seq, ev)) {
        c->bad = true;
        return 1;
    }
    return 0;
}

/* Every record none of whose bytes were touched (and that the truncation
 * kept whole) must have been seen. */
static bool dcheck_untouched(const dcheck *c, const uint8_t *touched, size_t len)
{
    for (int i = 0; i < IMAGE_RECORDS; i++) {
        if (rec_off[i + 1] > len) break;
        bool hit = false;
        for (size_t b = rec_off[i]; b < rec_off[i + 1] && !hit; b++)
            hit = touched[b];
        if (!hit && !c->seen[i + 1]) {
            fail("untouched record %d not recovered", i + 1);
            return false;
        }
    }
    return true;
}

static bool write_file(const char *path, const uint8_t *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return false;
    bool ok = write(fd, p, n) == (ssize_t)n;
    close(fd);
    return ok;
}

static void run_damages(void)
{
    static uint8_t buf[sizeof image], touched[sizeof image];
    build_image();
    char dir[64] = "/tmp/spool_damage.XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(2);
    }
    uint64_t yielded = 0, through_files = 0;
    for (int it = 0; it < DAMAGES; it++) {
        memcpy(buf, image, image_len);
        memset(touched, 0, image_len);
        size_t len = image_len;
        int kind = (int)rnd_below(4);
        if (kind == 0 || kind == 3) len = rnd_below(image_len + 1);
        if (kind == 1 || kind == 3) {
            int flips = 1 + (int)rnd_below(8);
            for (int f = 0; f < flips; f++) {
                size_t at = rnd_below(image_len);
                buf[at] ^= (uint8_t)(1u << rnd_below(8));
                touched[at] = 1;
            }
        }
        if (kind == 2) {
            size_t at = rnd_below(image_len), n = 1 + rnd_below(600);
            if (at + n > image_len) n = image_len - at;
            bool zero = rnd_below(2);
            for (size_t b = at; b < at + n; b++) {
                uint8_t v = zero ? 0 : (uint8_t)rnd();
                if (v != buf[b]) touched[b] = 1;
                buf[b] = v;
            }
        }
        bool ok = true;
        dcheck c = {0};
        size_t pos = 0, off, rl;
        usage_event ev;
        uint64_t seq;
        while (ok && spool_scan_next(buf, len, &pos, &ev, &seq, &off, &rl, NULL)) {
            if (off + rl > len || rl < SPOOL_HEADER_LEN ||
                spool_crc32c(0, buf + off + SPOOL_HEADER_LEN, rl - SPOOL_HEADER_LEN) !=
                    ((uint32_t)buf[off + 8] | (uint32_t)buf[off + 9] << 8 |
                     (uint32_t)buf[off + 10] << 16 | (uint32_t)buf[off + 11] << 24)) {
                fail("scan yielded a record whose CRC fails");
                ok = false;
            }
            ok = ok && dcheck_record(&c, seq, &ev);
            yielded++;
        }
        ok = ok && dcheck_untouched(&c, touched, len);

        if (ok && it % 10 == 0) {
            /* Through files: three segments cut at record boundaries. */
            through_files++;
            size_t cut1 = rec_off[100] < len ? rec_off[100] : len;
            size_t cut2 = rec_off[200] < len ? rec_off[200] : len;
            char p[512];
            snprintf(p, sizeof p, "%s/seg-%016d.log", dir, 1);
            ok = write_file(p, buf, cut1);
            snprintf(p, sizeof p, "%s/seg-%016d.log", dir, 101);
            ok = ok && write_file(p, buf + cut1, cut2 - cut1);
            snprintf(p, sizeof p, "%s/seg-%016d.log", dir, 201);
            ok = ok && write_file(p, buf + cut2, len - cut2);
            char err[256] = "";
            spool_options o = {.no_preallocate = true};
            spool *sp = ok ? spool_open(dir, &o, err, sizeof err) : NULL;
            if (!sp) {
                fail("damage %d: spool_open: %s", it, err);
                ok = false;
            } else {
                dcheck fc = {0};
                if (spool_replay(sp, dcheck_cb, &fc) != 0 || fc.bad) ok = false;
                /* Records cut by the split are damage too: only whole
                 * untouched records inside one file count. */
                ok = ok && dcheck_untouched(&fc, touched, len);
                spool_close(sp);
            }
            rmrf(dir);
            if (mkdir(dir, 0700) != 0) {
                perror("mkdir");
                exit(2);
            }
        }
        ok ? passed++ : failed++;
    }
    rmrf(dir);
    printf("damage: %d damaged images (%llu also through files), %llu records yielded, "
           "all CRC-valid and matching\n",
           DAMAGES, (unsigned long long)through_files, (unsigned long long)yielded);
}

int main(int argc, char **argv)
{
    rng_state ^= (uint64_t)time(NULL) * 0x100000001B3ull;
    if (argc > 1) rng_state = strtoull(argv[1], NULL, 0) | 1;
    printf("seed: %llu\n", (unsigned long long)rng_state);
    struct timespec t0, t1, t2;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    run_kills();
    clock_gettime(CLOCK_MONOTONIC, &t1);
    run_damages();
    clock_gettime(CLOCK_MONOTONIC, &t2);
    printf("time: kills %.1f s, damage %.1f s\n",
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
           (double)(t2.tv_sec - t1.tv_sec) + (double)(t2.tv_nsec - t1.tv_nsec) / 1e9);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
