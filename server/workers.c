#include "server/workers.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/util.h"

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 10000
#define STABLE_MS 10000 /* a worker that lived this long starts its backoff over */

typedef struct worker_slot {
    pid_t pid;          /* 0 while not running */
    bool ever_ready;    /* some worker at this index has served */
    int64_t started_ms; /* when the current one was forked */
    int64_t restart_ms; /* when to fork it again; 0 = not scheduled */
    int backoff_ms;
} worker_slot;

typedef struct supervisor {
    int n;
    const int *fds;
    workers_main_fn fn;
    workers_hup_fn on_hup;
    void *arg;
    worker_slot *w;
    int sigfd;
    sigset_t blocked, old_mask;
    bool stopping, failed; /* failed: some worker did not exit with 0 while stopping */
} supervisor;

static int ready_fd = -1; /* in a worker: the pipe to the supervisor */

void workers_ready(void)
{
    if (ready_fd < 0) return;
    char b = 1;
    if (write(ready_fd, &b, 1) != 1)
        log_warn("workers: cannot tell the supervisor: %s", strerror(errno));
    close(ready_fd);
    ready_fd = -1;
}

int workers_auto(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* In the child: keeps only its own socket and the write end of a pipe of
 * its own; dies with the supervisor (PDEATHSIG), so a killed supervisor
 * never leaves workers holding the port. */
static void child_start(supervisor *s, int i, int ready_wr)
{
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    close(s->sigfd);
    for (int j = 0; j < s->n; j++)
        if (j != i) close(s->fds[j]);
    ready_fd = ready_wr;
    /* SIGTERM, SIGINT and SIGHUP stay blocked until the worker handles them */
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_UNBLOCK, &chld, NULL);
    if (getppid() == 1) _exit(1); /* the supervisor died before PDEATHSIG was set */
    /* exit, not _exit: the sanitizers' leak check runs at exit (the
     * supervisor buffers nothing: it flushed before the fork) */
    exit(s->fn(i, s->fds[i], s->arg));
}

/* One pipe per fork: the child writes a byte once it serves. The pipe's
 * read end is polled by index (ready_rd is per slot below). */
static int *ready_pipes;

static void spawn(supervisor *s, int i)
{
    worker_slot *w = &s->w[i];
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
        log_error("worker %d: pipe: %s; retrying in 1 s", i, strerror(errno));
        w->restart_ms = util_now_ms() + 1000;
        return;
    }
    fflush(NULL); /* nothing buffered is written twice */
    pid_t pid = fork();
    if (pid < 0) {
        log_error("worker %d: fork: %s; retrying in 1 s", i, strerror(errno));
        close(p[0]);
        close(p[1]);
        w->restart_ms = util_now_ms() + 1000;
        return;
    }
    if (pid == 0) {
        close(p[0]);
        for (int j = 0; j < s->n; j++)
            if (ready_pipes[j] >= 0) close(ready_pipes[j]);
        child_start(s, i, p[1]);
    }
    close(p[1]);
    if (ready_pipes[i] >= 0) close(ready_pipes[i]);
    ready_pipes[i] = p[0];
    w->pid = pid;
    w->started_ms = util_now_ms();
    w->restart_ms = 0;
    log_info("worker %d started (pid %d)", i, (int)pid);
}

static void describe(int st, char *out, size_t n)
{
    if (WIFEXITED(st))
        snprintf(out, n, "exited with status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(out, n, "was killed by signal %d (%s)%s", WTERMSIG(st), strsignal(WTERMSIG(st)),
                 WCOREDUMP(st) ? ", core dumped" : "");
    else
        snprintf(out, n, "ended (status 0x%x)", st);
}

static void signal_all(supervisor *s, int sig)
{
    for (int i = 0; i < s->n; i++)
        if (s->w[i].pid > 0) kill(s->w[i].pid, sig);
}

static void stop_all(supervisor *s, const char *why)
{
    if (s->stopping) return;
    s->stopping = true;
    int live = 0;
    for (int i = 0; i < s->n; i++) {
        s->w[i].restart_ms = 0;
        live += s->w[i].pid > 0;
    }
    log_info("%s: draining %d workers", why, live);
    signal_all(s, SIGTERM);
}

/* A worker ended: while stopping, note whether it drained cleanly;
 * otherwise restart it after its backoff, unless it never served at all. */
static void on_exit_of(supervisor *s, int i, int st)
{
    worker_slot *w = &s->w[i];
    char how[96];
    describe(st, how, sizeof how);
    pid_t pid = w->pid;
    w->pid = 0;
    if (ready_pipes[i] >= 0) {
        close(ready_pipes[i]);
        ready_pipes[i] = -1;
    }
    if (s->stopping) {
        bool clean = WIFEXITED(st) && WEXITSTATUS(st) == 0;
        if (!clean) s->failed = true;
        log_msg(clean ? LOG_INFO : LOG_ERROR, "worker %d (pid %d) %s%s", i, (int)pid, how,
                clean ? ": drained" : ": did not drain cleanly");
        return;
    }
    if (!w->ever_ready) {
        log_error("worker %d (pid %d) %s before it served: the gateway cannot start (its log "
                  "above says why); stopping the other workers",
                  i, (int)pid, how);
        s->failed = true;
        stop_all(s, "start failed");
        return;
    }
    int64_t now = util_now_ms();
    if (now - w->started_ms >= STABLE_MS || w->backoff_ms == 0)
        w->backoff_ms = BACKOFF_FIRST_MS;
    else
        w->backoff_ms = w->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : w->backoff_ms * 2;
    w->restart_ms = now + w->backoff_ms;
    log_warn("worker %d (pid %d) %s; restarting it in %d ms", i, (int)pid, how, w->backoff_ms);
}

static void reap(supervisor *s)
{
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
        for (int i = 0; i < s->n; i++)
            if (s->w[i].pid == pid) on_exit_of(s, i, st);
}

static void on_signal(supervisor *s, int sig)
{
    if (sig == SIGCHLD) {
        reap(s);
    } else if (sig == SIGHUP) {
        if (s->stopping) return;
        log_info("SIGHUP: every worker reloads the config");
        if (s->on_hup) s->on_hup(s->arg);
        signal_all(s, SIGHUP);
    } else {
        char why[32];
        snprintf(why, sizeof why, "signal %d", sig);
        stop_all(s, why);
    }
}

static int live_count(const supervisor *s)
{
    int n = 0;
    for (int i = 0; i < s->n; i++)
        n += s->w[i].pid > 0;
    return n;
}

/* Milliseconds until the next restart is due, or -1 (none). */
static int next_timeout(supervisor *s)
{
    int64_t next = 0, now = util_now_ms();
    for (int i = 0; i < s->n; i++)
        if (s->w[i].restart_ms && (!next || s->w[i].restart_ms < next)) next = s->w[i].restart_ms;
    if (!next) return -1;
    return next <= now ? 0 : (int)(next - now);
}

static void poll_once(supervisor *s)
{
    struct pollfd pf[1 + 1024];
    int np = 0;
    pf[np++] = (struct pollfd){.fd = s->sigfd, .events = POLLIN};
    int idx[1024];
    for (int i = 0; i < s->n; i++)
        if (ready_pipes[i] >= 0) {
            idx[np - 1] = i;
            pf[np++] = (struct pollfd){.fd = ready_pipes[i], .events = POLLIN};
        }
    int r = poll(pf, (nfds_t)np, next_timeout(s));
    if (r < 0 && errno != EINTR) log_error("workers: poll: %s", strerror(errno));
    if (r > 0 && (pf[0].revents & POLLIN)) {
        struct signalfd_siginfo si;
        while (read(s->sigfd, &si, sizeof si) == (ssize_t)sizeof si)
            on_signal(s, (int)si.ssi_signo);
    }
    for (int k = 1; r > 0 && k < np; k++) {
        if (!pf[k].revents) continue;
        int i = idx[k - 1];
        char b;
        if (ready_pipes[i] >= 0 && read(ready_pipes[i], &b, 1) == 1) s->w[i].ever_ready = true;
        if (ready_pipes[i] >= 0) { /* one byte, or the child closed it: either way done */
            close(ready_pipes[i]);
            ready_pipes[i] = -1;
        }
    }
    int64_t now = util_now_ms();
    for (int i = 0; !s->stopping && i < s->n; i++)
        if (s->w[i].restart_ms && s->w[i].restart_ms <= now) spawn(s, i);
}

int workers_run(int n, const int *fds, workers_main_fn fn, workers_hup_fn on_hup, void *arg)
{
    supervisor s = {.n = n, .fds = fds, .fn = fn, .on_hup = on_hup, .arg = arg};
    s.w = calloc((size_t)n, sizeof *s.w);
    ready_pipes = malloc((size_t)n * sizeof *ready_pipes);
    if (!s.w || !ready_pipes || n > 1024) {
        log_error("workers: out of memory");
        free(s.w);
        return 1;
    }
    for (int i = 0; i < n; i++)
        ready_pipes[i] = -1;
    sigemptyset(&s.blocked);
    sigaddset(&s.blocked, SIGCHLD);
    sigaddset(&s.blocked, SIGTERM);
    sigaddset(&s.blocked, SIGINT);
    sigaddset(&s.blocked, SIGHUP);
    sigprocmask(SIG_BLOCK, &s.blocked, &s.old_mask);
    s.sigfd = signalfd(-1, &s.blocked, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s.sigfd < 0) {
        log_error("workers: signalfd: %s", strerror(errno));
        free(s.w);
        return 1;
    }
    log_info("supervisor (pid %d): starting %d workers", (int)getpid(), n);
    fflush(stderr);
    for (int i = 0; i < n; i++)
        spawn(&s, i);
    while (!s.stopping || live_count(&s) > 0)
        poll_once(&s);
    log_info("supervisor: every worker has exited%s", s.failed ? " (not all cleanly)" : "");
    for (int i = 0; i < n; i++)
        if (ready_pipes[i] >= 0) close(ready_pipes[i]);
    close(s.sigfd);
    free(ready_pipes);
    free(s.w);
    return s.failed ? 1 : 0;
}
