# shellcheck shell=bash disable=SC2034  # sourced by sidebyside.sh, which reads T_URL/T_HEADERS
# Target "bridle-2w" for /work/shared/bench/sidebyside.sh: bench/targets/bridle.sh
# with `--workers 2` (a supervisor and two worker processes sharing the port
# by SO_REUSEPORT). Both workers are pinned to $PROXY_CPUS, like the single
# process of bridle.sh, so the CPU per request of the two rows compares the
# same core's work; T_PID is the supervisor, whose tree holds the workers.
# t_stop records how the requests split between the workers
# ($RUN_DIR/bridle-2w.split: each worker's bridle_requests_total over the
# whole target run, read from /metrics on new connections until both answered).
# Env: BRIDLE_BIN, BRIDLE_2W_PORT (18185), BRIDLE_BENCH_LOG_LEVEL (warn).
BRIDLE_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BRIDLE_BIN=${BRIDLE_BIN:-$BRIDLE_REPO/build/bridle}
BRIDLE_2W_PORT=${BRIDLE_2W_PORT:-18185}
# shellcheck source=bench/lib/bridle.sh disable=SC1091
. "$BRIDLE_REPO/bench/lib/bridle.sh"
t_start() {
  [ -x "$BRIDLE_BIN" ] || { echo "bridle: $BRIDLE_BIN not built (make)" >&2; return 1; }
  port_busy "$BRIDLE_2W_PORT" && { echo "port $BRIDLE_2W_PORT busy" >&2; return 1; }
  local conf="$RUN_DIR/bridle-2w.json"
  bench_bridle_config "$conf" "$BRIDLE_2W_PORT"
  taskset -c "$PROXY_CPUS" env -u DATABASE_URL "$BRIDLE_BIN" serve --workers 2 --config "$conf" \
    --listen "127.0.0.1:$BRIDLE_2W_PORT" >"$RUN_DIR/bridle-2w.out" 2>&1 &
  T_PID=$!
  T_URL="http://127.0.0.1:$BRIDLE_2W_PORT/v1/chat/completions"
  T_HEADERS=()
  wait_port "$BRIDLE_2W_PORT" || return 1
  # the group is two sockets, both the supervisor's (no other process)
  [ "$(ss -Hltnp "sport = :$BRIDLE_2W_PORT" | grep -vc "pid=$T_PID,")" -eq 0 ] ||
    { echo "bridle-2w: another process also listens on port $BRIDLE_2W_PORT" >&2; return 1; }
}
# Each worker's requests answered (bridle_requests_total summed), by worker index.
bridle_2w_split() {
  local seen="" i w n
  for i in $(seq 1 200); do
    local out
    out=$(curl -s -D - -H 'Connection: close' "http://127.0.0.1:$BRIDLE_2W_PORT/metrics") || continue
    w=$(printf '%s' "$out" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-bridle-worker"{print $2; exit}')
    [ -n "$w" ] || continue
    case " $seen " in *" $w "*) continue ;; esac
    n=$(printf '%s' "$out" | awk '/^bridle_requests_total/{s+=$NF} END{printf "%d", s}')
    echo "worker $w: $n"
    seen="$seen $w"
    [ "$(echo "$seen" | wc -w)" -ge 2 ] && return 0
  done
}
t_stop() {
  bridle_2w_split >"$RUN_DIR/bridle-2w.split" 2>&1 || true
  stop_pid "$T_PID" TERM
}
