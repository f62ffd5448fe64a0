# shellcheck shell=bash disable=SC2034  # sourced: the BENCH_PG_* variables are for the caller
# A throwaway PostgreSQL for the benchmarks (sourced; no `set -e` assumed):
# a fresh cluster (initdb, trust auth) in a temp dir under /tmp, started on a
# free port with its socket in that dir, one database `bridle`, stopped with
# `pg_ctl -m immediate` and removed by bench_pg_stop. As root, the cluster
# belongs to the `postgres` system user (PostgreSQL refuses to run as root):
# initdb and pg_ctl go through `runuser -u postgres --`. Same recipe as
# tests/integration/lib/pg.mjs and bench/ledger/ledger_bench.sh.
#
#   . bench/lib/pg.sh
#   bench_pg_start [CPUS]     -> sets BENCH_PG_URL BENCH_PG_PORT BENCH_PG_DIR BENCH_PG_PID
#   bench_pg_watchdog PID [PIDS...] -> if process PID dies first (kill -9 of the caller):
#                                TERM to PIDS (the gateway using the cluster), then stops the cluster
#   bench_pg_stop             -> stops the cluster and removes its dir (safe to call twice)
#
# Env: PG_BIN (default: newest /usr/lib/postgresql/*/bin), BENCH_PG_PORT_FROM
# (55440: first port tried), BENCH_PG_OPTS (extra `-c name=value` server
# options), BENCH_PG_IDLE and BENCH_PG_CPU_SLICE (how the server shares its
# core: bench_pg_start). The server keeps fsync and synchronous_commit on (what a
# deployment has) with shared_buffers 256MB, as bench/ledger/ledger_bench.sh.

BENCH_PG_URL="" BENCH_PG_PORT="" BENCH_PG_DIR="" BENCH_PG_PID="" BENCH_PG_USER="" BENCH_PG_BIN=""
_BENCH_PG_AS=()

_bench_pg_log() { printf '[bench-pg %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
_bench_pg_port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

bench_pg_bin() { # prints the directory holding initdb/pg_ctl/postgres/psql
  local d
  if [[ -n ${PG_BIN:-} ]]; then
    [[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl ]] && { echo "$PG_BIN"; return 0; }
    return 1
  fi
  for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
    [[ -x $d/initdb && -x $d/pg_ctl && -x $d/psql ]] && { echo "$d"; return 0; }
  done
  return 1
}

_BENCH_PG_CGROUP=""
_bench_pg_cgroup() { # Q/P: makes the cgroup, sets _BENCH_PG_CGROUP
  local root=/sys/fs/cgroup/cpu q=${1%/*} p=${1#*/}
  [[ -w $root ]] || return 1
  _BENCH_PG_CGROUP=$root/bridle-bench-pg-$$
  mkdir -p "$_BENCH_PG_CGROUP" && echo "$p" >"$_BENCH_PG_CGROUP/cpu.cfs_period_us" &&
    echo "$q" >"$_BENCH_PG_CGROUP/cpu.cfs_quota_us"
}

bench_pg_start() { # [CPUS]: taskset CPU list for the server (empty: not pinned); env BENCH_PG_IDLE, BENCH_PG_CPU_SLICE
  local cpus=${1:-} pin=() port tries out
  BENCH_PG_BIN=$(bench_pg_bin) ||
    { _bench_pg_log "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql (scripts/install-deps.sh), or set PG_BIN"; return 1; }
  [[ -n $cpus ]] && pin=(taskset -c "$cpus")
  # BENCH_PG_IDLE=1: the server runs in the SCHED_IDLE class, so on a core it
  # shares with the load generator it takes only what that leaves and never
  # delays it (as on its own machine); nice 19 does not do that: a waking
  # load generator still waits out PostgreSQL's slice (up to ~7 ms measured)
  [[ -n ${BENCH_PG_IDLE:-} ]] && pin+=(chrt --idle 0)
  # BENCH_PG_CPU_SLICE=Q/P (µs, e.g. 1000/2000; the kernel's least Q is
  # 1000): the server runs in a cgroup (v1 cpu controller) allowed Q µs of CPU
  # per P µs, so no run of it holds the shared core for longer than Q
  if [[ -n ${BENCH_PG_CPU_SLICE:-} ]]; then
    _bench_pg_cgroup "$BENCH_PG_CPU_SLICE" || { _bench_pg_log "BENCH_PG_CPU_SLICE: no writable cgroup v1 cpu controller"; return 1; }
    # shellcheck disable=SC2016  # expanded by that sh: its own pid, then exec
    pin+=(sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$_BENCH_PG_CGROUP")
  fi
  BENCH_PG_DIR=$(mktemp -d /tmp/bridle-bench-pg.XXXXXX) || { _bench_pg_log "mktemp failed"; return 1; }
  _BENCH_PG_AS=() BENCH_PG_USER=$(id -un)
  if [[ $(id -u) -eq 0 ]]; then
    id -u postgres >/dev/null 2>&1 || { _bench_pg_log "running as root but there is no 'postgres' user to run PostgreSQL as"; bench_pg_stop; return 1; }
    _BENCH_PG_AS=(runuser -u postgres --) BENCH_PG_USER=postgres
    chown postgres: "$BENCH_PG_DIR"
  fi
  chmod 700 "$BENCH_PG_DIR"
  if ! out=$("${_BENCH_PG_AS[@]}" "$BENCH_PG_BIN/initdb" -D "$BENCH_PG_DIR/data" -U "$BENCH_PG_USER" \
    --auth=trust -E UTF8 --no-locale -N 2>&1); then
    _bench_pg_log "initdb failed:"; printf '%s\n' "$out" | tail -n 20 >&2
    bench_pg_stop; return 1
  fi
  port=${BENCH_PG_PORT_FROM:-55440}
  for ((tries = 0; tries < 3; tries++)); do
    while _bench_pg_port_busy "$port"; do port=$((port + 1)); done
    # shellcheck disable=SC2086  # BENCH_PG_OPTS is a list of options
    if "${pin[@]}" "${_BENCH_PG_AS[@]}" "$BENCH_PG_BIN/pg_ctl" -D "$BENCH_PG_DIR/data" -l "$BENCH_PG_DIR/postgres.log" \
      -w -t 60 -o "-p $port -k $BENCH_PG_DIR -c listen_addresses=127.0.0.1 -c shared_buffers=256MB -c max_connections=40 ${BENCH_PG_OPTS:-}" \
      start >/dev/null 2>&1; then
      BENCH_PG_PORT=$port
      break
    fi
    port=$((port + 1)) # someone took it between the check and the start
  done
  if [[ -z $BENCH_PG_PORT ]]; then
    _bench_pg_log "PostgreSQL did not start (3 tries); the end of its log:"
    tail -n 20 "$BENCH_PG_DIR/postgres.log" >&2 2>/dev/null
    bench_pg_stop; return 1
  fi
  BENCH_PG_PID=$(head -n1 "$BENCH_PG_DIR/data/postmaster.pid" 2>/dev/null)
  if ! out=$("$BENCH_PG_BIN/psql" -X -q -h 127.0.0.1 -p "$BENCH_PG_PORT" -U "$BENCH_PG_USER" -d postgres \
    -c 'CREATE DATABASE bridle' 2>&1); then
    _bench_pg_log "CREATE DATABASE failed: $out"
    bench_pg_stop; return 1
  fi
  BENCH_PG_URL="postgresql://$BENCH_PG_USER@127.0.0.1:$BENCH_PG_PORT/bridle"
  return 0
}

# Runs in the background until process PID is gone or the cluster's dir is
# (bench_pg_stop removes it); in the first case it stops PIDS (SIGTERM, then
# SIGKILL after 5 s) and the cluster itself. Its output goes to /dev/null so
# it never holds a caller's pipe open.
bench_pg_watchdog() { # PID [PIDS...]
  local owner=$1 dir=$BENCH_PG_DIR bin=$BENCH_PG_BIN
  shift
  [[ -n $dir ]] || return 0
  (
    trap '' INT TERM HUP
    while kill -0 "$owner" 2>/dev/null && [[ -d $dir ]]; do sleep 1; done
    if [[ -d $dir ]]; then
      pids=()
      for p in "$@"; do # still the gateway (not a pid reused since)?
        grep -qa bridle "/proc/$p/cmdline" 2>/dev/null && pids+=("$p")
      done
      if ((${#pids[@]})); then
        kill -TERM "${pids[@]}"
        for ((i = 0; i < 50; i++)); do kill -0 "${pids[@]}" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "${pids[@]}"
      fi
      "${_BENCH_PG_AS[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 10 stop
      rm -rf "$dir"
    fi
  ) </dev/null >/dev/null 2>&1 &
  disown $! 2>/dev/null || true
}

bench_pg_stop() {
  local i
  [[ -n $BENCH_PG_DIR && -d $BENCH_PG_DIR ]] || { BENCH_PG_DIR=""; return 0; }
  if [[ -f $BENCH_PG_DIR/data/postmaster.pid ]]; then
    "${_BENCH_PG_AS[@]}" "$BENCH_PG_BIN/pg_ctl" -D "$BENCH_PG_DIR/data" -m immediate -w -t 10 stop >/dev/null 2>&1
  fi
  # pg_ctl could not do it (or the pid file was gone): the postmaster by pid;
  # SIGQUIT is PostgreSQL's immediate shutdown (it takes its children along).
  if [[ -n $BENCH_PG_PID ]] && kill -0 "$BENCH_PG_PID" 2>/dev/null; then
    kill -QUIT "$BENCH_PG_PID" 2>/dev/null
    for ((i = 0; i < 50; i++)); do kill -0 "$BENCH_PG_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$BENCH_PG_PID" 2>/dev/null && { _bench_pg_log "postmaster $BENCH_PG_PID ignored SIGQUIT: SIGKILL"; kill -KILL "$BENCH_PG_PID" 2>/dev/null; }
  fi
  rm -rf "$BENCH_PG_DIR"
  [[ -n $_BENCH_PG_CGROUP ]] && { rmdir "$_BENCH_PG_CGROUP" 2>/dev/null; _BENCH_PG_CGROUP=""; }
  BENCH_PG_DIR="" BENCH_PG_PID="" BENCH_PG_PORT="" BENCH_PG_URL=""
  return 0
}
