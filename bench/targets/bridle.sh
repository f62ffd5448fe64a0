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
t_start() {
  [ -x "$BRIDLE_BIN" ] || { echo "bridle: $BRIDLE_BIN not built (make)" >&2; return 1; }
  port_busy "$BRIDLE_BENCH_PORT" && { echo "port $BRIDLE_BENCH_PORT busy" >&2; return 1; }
  local sha conf="$RUN_DIR/bridle.json"
  sha=$(printf '%s' "$BENCH_KEY" | sha256sum | cut -d' ' -f1)
  cat >"$conf" <<CONF
{
  "listen": "127.0.0.1:$BRIDLE_BENCH_PORT",
  "log_level": "${BRIDLE_BENCH_LOG_LEVEL:-warn}",
  "limits": { "max_connections": 16384 },
  "providers": {
    "upstream": { "kind": "openai", "base_url": "$UPSTREAM_BASE_URL", "api_key": "sk-bench" }
  },
  "models": { "gpt-4o-mini": { "provider": "upstream" } },
  "keys": [ { "id": "bench", "sha256": "$sha", "team": "bench" } ]
}
CONF
  # No database section: usage is not recorded (the ledger is bridle-ledger.sh);
  # env -u: a DATABASE_URL in the environment would turn the ledger on.
  taskset -c "$PROXY_CPUS" env -u DATABASE_URL "$BRIDLE_BIN" serve --config "$conf" --listen "127.0.0.1:$BRIDLE_BENCH_PORT" \
    >"$RUN_DIR/bridle.out" 2>&1 &
  T_PID=$!
  T_URL="http://127.0.0.1:$BRIDLE_BENCH_PORT/v1/chat/completions"
  T_HEADERS=()          # Authorization: Bearer $BENCH_KEY is always sent
  wait_port "$BRIDLE_BENCH_PORT" || return 1
  # bridle listens with SO_REUSEPORT: a second listener (another run started
  # at the same moment) would silently take a share of the connections.
  [ "$(ss -Hltn "sport = :$BRIDLE_BENCH_PORT" | wc -l)" -eq 1 ] ||
    { echo "bridle: another process also listens on port $BRIDLE_BENCH_PORT" >&2; return 1; }
}
t_stop() { stop_pid "$T_PID" TERM; }
