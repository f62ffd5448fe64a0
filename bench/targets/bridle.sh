# shellcheck shell=bash disable=SC2034  # sourced by sidebyside.sh, which reads T_URL/T_HEADERS
# Target "bridle" for /work/shared/bench/sidebyside.sh (see its README):
#   ../shared/bench/sidebyside.sh direct nginx "$PWD/bench/targets/bridle.sh"
# One openai-kind provider pointing at the harness's mock, model gpt-4o-mini,
# and one key: SHA-256 of $BENCH_KEY. bridle is pinned to $PROXY_CPUS.
# Env: BRIDLE_BIN (default: build/bridle of this repo), BRIDLE_BENCH_PORT (18189),
#      BRIDLE_BENCH_LOG_LEVEL (warn).
BRIDLE_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BRIDLE_BIN=${BRIDLE_BIN:-$BRIDLE_REPO/build/bridle}
BRIDLE_BENCH_PORT=${BRIDLE_BENCH_PORT:-18189}
# shellcheck source=bench/lib/bridle.sh disable=SC1091
. "$BRIDLE_REPO/bench/lib/bridle.sh"
t_start() {
  [ -x "$BRIDLE_BIN" ] || { echo "bridle: $BRIDLE_BIN not built (make)" >&2; return 1; }
  port_busy "$BRIDLE_BENCH_PORT" && { echo "port $BRIDLE_BENCH_PORT busy" >&2; return 1; }
  local conf="$RUN_DIR/bridle.json"
  bench_bridle_config "$conf" "$BRIDLE_BENCH_PORT"
  # No database section: usage is not recorded (the ledger is bridle-ledger.sh);
  # env -u: a DATABASE_URL in the environment would turn the ledger on.
  taskset -c "$PROXY_CPUS" env -u DATABASE_URL "$BRIDLE_BIN" serve --config "$conf" --listen "127.0.0.1:$BRIDLE_BENCH_PORT" \
    >"$RUN_DIR/bridle.out" 2>&1 &
  T_PID=$!
  T_URL="http://127.0.0.1:$BRIDLE_BENCH_PORT/v1/chat/completions"
  T_HEADERS=()          # Authorization: Bearer $BENCH_KEY is always sent
  wait_port "$BRIDLE_BENCH_PORT" || return 1
  bench_bridle_alone bridle "$BRIDLE_BENCH_PORT"
}
t_stop() { stop_pid "$T_PID" TERM; }
