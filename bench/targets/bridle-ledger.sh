# shellcheck shell=bash disable=SC2034  # sourced by sidebyside.sh, which reads T_URL/T_HEADERS
# Target "bridle-ledger" for /work/shared/bench/sidebyside.sh (see its README):
#   ../shared/bench/sidebyside.sh direct "$PWD/bench/targets/bridle.sh" "$PWD/bench/targets/bridle-ledger.sh"
# bench/targets/bridle.sh with the usage ledger on: the same provider, model
# and key, plus a `database` section (url, spool_dir; every other key at its
# default) pointing at a throwaway PostgreSQL that t_start starts and t_stop
# stops (bench/lib/pg.sh: initdb in /tmp, run as the `postgres` user when we
# are root, a free port from 55440 up). `bridle serve` applies the migrations
# itself. t_start fails (the harness marks the target failed) when PostgreSQL
# does not start or the ledger does not report the database up.
#
# bridle is pinned to $PROXY_CPUS, PostgreSQL to $BRIDLE_BENCH_PG_CPUS (default:
# the mock's core, $MOCK_CPUS), so bridle keeps its core to itself. The
# harness measures bridle's process only: PostgreSQL's CPU shows up in the
# `foreign` column (and so may mark rows SUSPECT); bench/run.sh's CPU table
# says how much of that was postgres.
#
# Never leaves a postgres running: t_stop stops bridle, then the cluster
# (pg_ctl -m immediate) and removes its dir; the harness's EXIT trap is
# extended to do the same; a watchdog stops bridle and the cluster if the
# harness dies by SIGKILL.
# Variants, targets of their own so that the table names them; they set
# BRIDLE_LEDGER_VARIANT before sourcing this file, which takes it for this
# target only (the harness sources every target into one shell):
#   bridle-spool.sh (spool): no PostgreSQL; the database URL points at a
#     closed port, so the spool alone is measured;
#   bridle-ledger-idle.sh (idle): PostgreSQL in the SCHED_IDLE class
#     (BENCH_PG_IDLE=1, bench/lib/pg.sh);
#   bridle-ledger-slice.sh (slice): PostgreSQL in a cgroup allowed 1 ms of
#     CPU per 2 ms (BENCH_PG_CPU_SLICE, bench/lib/pg.sh; root only);
#   bridle-cache-hit.sh (cache-hit): the response cache on and every request
#     opting in (x-bridle-cache: on): all but the first are hits;
#   bridle-cache-miss.sh (cache-miss): the same with Cache-Control: no-cache,
#     so every request is a miss that computes its key and stores its answer.
# Env: BRIDLE_BIN (default: build/bridle of this repo), BRIDLE_LEDGER_BENCH_PORT
#      (18187), BRIDLE_BENCH_LOG_LEVEL (warn), BRIDLE_BENCH_PG_CPUS ($MOCK_CPUS),
#      PG_BIN (newest /usr/lib/postgresql/*/bin).
BRIDLE_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BRIDLE_BIN=${BRIDLE_BIN:-$BRIDLE_REPO/build/bridle}
BRIDLE_LEDGER_BENCH_PORT=${BRIDLE_LEDGER_BENCH_PORT:-18187}
# shellcheck source=bench/lib/pg.sh disable=SC1091
. "$BRIDLE_REPO/bench/lib/pg.sh"
# shellcheck source=bench/lib/bridle.sh disable=SC1091
. "$BRIDLE_REPO/bench/lib/bridle.sh"
BRIDLE_LEDGER_PID=""
BRIDLE_LEDGER_MODE=${BRIDLE_LEDGER_VARIANT:-}
unset BRIDLE_LEDGER_VARIANT

bridle_ledger_cleanup() {
  if [[ -n $BRIDLE_LEDGER_PID ]]; then stop_pid "$BRIDLE_LEDGER_PID" TERM; BRIDLE_LEDGER_PID=""; fi
  bench_pg_stop
}

t_start() {
  [ -x "$BRIDLE_BIN" ] || { echo "bridle-ledger: $BRIDLE_BIN not built (make)" >&2; return 1; }
  port_busy "$BRIDLE_LEDGER_BENCH_PORT" && { echo "port $BRIDLE_LEDGER_BENCH_PORT busy" >&2; return 1; }
  # Once per harness run: its EXIT trap also stops what this target started.
  if [[ -z ${BRIDLE_LEDGER_TRAPPED:-} ]]; then
    local prev
    prev=$(trap -p EXIT)
    eval "set -- $prev"   # trap -- 'CMD' EXIT
    trap -- "${3:+$3; }bridle_ledger_cleanup" EXIT
    BRIDLE_LEDGER_TRAPPED=1
  fi
  local conf="$RUN_DIR/bridle-ledger.json" i up="" url want='"database_up":true'
  if [[ $BRIDLE_LEDGER_MODE == spool ]]; then
    # the spool alone: nothing listens on port 1, so every event stays in the spool
    BENCH_PG_DIR=$(mktemp -d /tmp/bridle-bench-spool.XXXXXX)
    url="postgresql://127.0.0.1:1/none?connect_timeout=1" want='"database_up":false'
  else
    BENCH_PG_IDLE=${BENCH_PG_IDLE:-$([[ $BRIDLE_LEDGER_MODE == idle ]] && echo 1)} \
      BENCH_PG_CPU_SLICE=$([[ $BRIDLE_LEDGER_MODE == slice ]] && echo "${BRIDLE_LEDGER_SLICE:-1000/2000}") \
      bench_pg_start "${BRIDLE_BENCH_PG_CPUS:-${MOCK_CPUS:-0}}" ||
      { echo "bridle-ledger: PostgreSQL did not start (see above)" >&2; return 1; }
    echo "postgres: $BENCH_PG_URL (pid $BENCH_PG_PID, dir $BENCH_PG_DIR)" >"$RUN_DIR/postgres.txt"
    url=$BENCH_PG_URL
  fi
  local cache=""
  [[ $BRIDLE_LEDGER_MODE == cache-* ]] && cache='"cache": { "enabled": true },'
  bench_bridle_config "$conf" "$BRIDLE_LEDGER_BENCH_PORT" \
    "$cache \"database\": { \"url\": \"$url\", \"spool_dir\": \"$BENCH_PG_DIR/spool\"${BRIDLE_LEDGER_BENCH_DB:+, $BRIDLE_LEDGER_BENCH_DB} },"
  taskset -c "$PROXY_CPUS" "$BRIDLE_BIN" serve --config "$conf" --listen "127.0.0.1:$BRIDLE_LEDGER_BENCH_PORT" \
    >"$RUN_DIR/bridle.out" 2>&1 &
  T_PID=$!
  BRIDLE_LEDGER_PID=$T_PID
  bench_pg_watchdog "$$" "$T_PID"
  T_URL="http://127.0.0.1:$BRIDLE_LEDGER_BENCH_PORT/v1/chat/completions"
  T_HEADERS=()          # Authorization: Bearer $BENCH_KEY is always sent
  [[ $BRIDLE_LEDGER_MODE == cache-* ]] && T_HEADERS=(-H "x-bridle-cache: on")
  [[ $BRIDLE_LEDGER_MODE == cache-miss ]] && T_HEADERS+=(-H "Cache-Control: no-cache")
  # The migrations run before bridle listens: allow 30 s.
  wait_port "$BRIDLE_LEDGER_BENCH_PORT" 300 || { tail -n 20 "$RUN_DIR/bridle.out" >&2; return 1; }
  bench_bridle_alone bridle-ledger "$BRIDLE_LEDGER_BENCH_PORT"
  for ((i = 0; i < 100; i++)); do
    curl -s --max-time 2 -H "Authorization: Bearer $BENCH_KEY" \
      "http://127.0.0.1:$BRIDLE_LEDGER_BENCH_PORT/v1/bridle/health" >"$RUN_DIR/health.json" 2>/dev/null
    grep -qF "$want" "$RUN_DIR/health.json" && { up=1; break; }
    sleep 0.1
  done
  [[ -n $up ]] || { echo "bridle-ledger: the ledger did not report $want in 10 s: $(head -c 400 "$RUN_DIR/health.json")" >&2
    tail -n 20 "$RUN_DIR/bridle.out" >&2; return 1; }
}
t_stop() {
  # SIGTERM: bridle drains the ledger into PostgreSQL (up to 5 s), then exits.
  stop_pid "$T_PID" TERM
  BRIDLE_LEDGER_PID=""
  bench_pg_stop
}
