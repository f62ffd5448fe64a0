/* The supervisor of `--workers N` (docs/design.md "Workers"): one process
 * that holds the listening sockets, forks the worker processes (each a
 * whole gateway on its own loop), restarts the ones that die and passes
 * SIGHUP and SIGTERM on to them. It never serves, touches the database or
 * runs an event loop; it waits on a signalfd and a pipe. */
#ifndef BRIDLE_WORKERS_H
#define BRIDLE_WORKERS_H

/* A worker's life: runs in the child, returns its exit status. The
 * worker's SIGTERM, SIGINT and SIGHUP are blocked when it starts: it
 * unblocks them once it handles them (a signal sent meanwhile waits). */
typedef int (*workers_main_fn)(int index, int fd, void *arg);
/* Called in the supervisor on SIGHUP, before the workers are told, so
 * that a worker started later gets what the others reload (may be NULL). */
typedef void (*workers_hup_fn)(void *arg);

/* Forks n workers, worker i running fn(i, fds[i], arg); fds stay open in
 * the supervisor, so a restarted worker i serves fds[i] again and the
 * connections queued there wait for it. A worker that dies is logged with
 * its exit status or signal and restarted after a backoff (100 ms,
 * doubling to 10 s while it keeps dying within 10 s of its start). A
 * worker that dies before it ever said it serves (workers_ready) stops
 * them all: the gateway cannot start. SIGTERM or SIGINT: every worker is
 * sent SIGTERM and drains; the supervisor returns once all have exited:
 * 0 when every one exited with 0, else 1. */
int workers_run(int n, const int *fds, workers_main_fn fn, workers_hup_fn on_hup, void *arg);

/* In a worker: tells the supervisor this worker serves. A no-op in a
 * gateway without a supervisor. */
void workers_ready(void);

/* "workers": "auto": the cores this process may run on
 * (sched_getaffinity, else sysconf), at least 1. */
int workers_auto(void);

#endif
