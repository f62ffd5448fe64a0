#!/usr/bin/env bash
# A 10,000-line batch beside live traffic (issue 16's speed goal): live
# chat requests (wrk, N connections, D seconds) first alone, then while a
# 10,000-line batch runs; prints each run's latency percentiles and request
# rate, and the batch's time to complete. By default the lines run live from
# the local queue; PROVIDER_BATCH=1 gives the provider "batch": true, so the
# lines are routed by the queue and go to the mock's Batch API (the provider
# batch path: router/pbatch.h).
#
#   bench/batch_live.sh            (env: LIVE_CONNS=8, LIVE_SECONDS=20, BATCH_LINES=10000,
#                                   BATCH_CONCURRENCY=16, BATCH_BUSY_CONCURRENCY=2, BRIDLE_BIN,
#                                   MOCK_BIN, PROVIDER_BATCH=0)
#
# bridle runs pinned to CPU 1; the mock, PostgreSQL (fsync on, bench/lib/pg.sh)
# and wrk share CPU 0. The ledger is on, as production runs it.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BRIDLE_BIN=${BRIDLE_BIN:-$ROOT/build/bridle}
MOCK_BIN=${MOCK_BIN:-$ROOT/build/bridle-mock}
CONNS=${LIVE_CONNS:-8} SECS=${LIVE_SECONDS:-20} LINES=${BATCH_LINES:-10000}
CONC=${BATCH_CONCURRENCY:-16} BUSY=${BATCH_BUSY_CONCURRENCY:-2}
PB=${PROVIDER_BATCH:-0}
PB_JSON=$([[ $PB == 1 ]] && echo ', "batch": true' || true)
OUT=$(mktemp -d /tmp/bridle-batch-live.XXXXXX)
# shellcheck source=bench/lib/pg.sh disable=SC1091
. "$ROOT/bench/lib/pg.sh"
port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
free_port() { local p=$1; while port_busy "$p"; do p=$((p + 1)); done; echo "$p"; }
wait_http() { local i; for ((i = 0; i < 200; i++)); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.05; done; return 1; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  bench_pg_stop
}
trap cleanup EXIT

bench_pg_start 0
mport=$(free_port 18400)
taskset -c 0 "$MOCK_BIN" --listen "127.0.0.1:$mport" >"$OUT/mock.log" 2>&1 &
pids+=($!)
KEY=bk-bench-batch-live
sha=$(printf '%s' "$KEY" | sha256sum | cut -d' ' -f1)
bport=$(free_port 18410)
cat >"$OUT/bridle.json" <<CONF
{
  "log_level": "warn",
  "providers": { "openai": { "kind": "openai", "base_url": "http://127.0.0.1:$mport/v1", "api_key": "sk-bench"$PB_JSON } },
  "models": { "gpt-4o-mini": { "provider": "openai" } },
  "keys": [ { "id": "bench", "sha256": "$sha", "team": "bench" } ],
  "database": { "url": "$BENCH_PG_URL", "spool_dir": "$OUT/spool" },
  "batches": { "concurrency": $CONC, "busy_concurrency": $BUSY, "submit_after_ms": 1000,
               "poll_min_ms": 200, "poll_max_ms": 1000 }
}
CONF
taskset -c 1 "$BRIDLE_BIN" serve --config "$OUT/bridle.json" --listen "127.0.0.1:$bport" >"$OUT/bridle.log" 2>&1 &
pids+=($!)
URL="http://127.0.0.1:$bport"
wait_http "$URL/readyz" || { echo "bridle did not start:"; cat "$OUT/bridle.log"; exit 1; }
sleep 1 # the database connections come up

cat >"$OUT/live.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello, a live request"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
LUA
live() { # NAME: wrk against /v1/chat/completions; prints p50/p99 and req/s
  taskset -c 0 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -s "$OUT/live.lua" "$URL/v1/chat/completions" >"$OUT/wrk-$1.txt"
  awk -v n="$1" '/^ +50%/{p50=$2} /^ +99%/{p99=$2} /Requests\/sec/{rps=$2} /Non-2xx/{bad=$NF}
    END{printf "%-14s p50 %-9s p99 %-9s req/s %-9s non-2xx %s\n", n, p50, p99, rps, bad ? bad : 0}' "$OUT/wrk-$1.txt"
}

for ((i = 0; i < LINES; i++)); do
  printf '{"custom_id":"l%d","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Batch line %d"}]}}\n' "$i" "$i"
done >"$OUT/batch.jsonl"

echo "bench/batch_live.sh: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "live: wrk -c$CONNS -d${SECS}s; batch: $LINES lines, concurrency $CONC ($BUSY beside live requests)$([[ $PB == 1 ]] && echo ', through the provider batch path' || true)"
live alone
t0=$(date +%s.%N)
BRIDLE_URL=$URL BRIDLE_KEY=$KEY "$BRIDLE_BIN" batch submit "$OUT/batch.jsonl" >"$OUT/submit.txt"
id=$(awk '{print $1}' "$OUT/submit.txt")
sleep 2 # the batch's lines are in and running; nothing polls the batch during the live run
live with-batch
BRIDLE_URL=$URL BRIDLE_KEY=$KEY "$BRIDLE_BIN" batch status "$id" | sed 's/^/at the end of the live run: /'
while :; do
  st=$(BRIDLE_URL=$URL BRIDLE_KEY=$KEY "$BRIDLE_BIN" batch status "$id")
  case "$(awk '{print $2}' <<<"$st")" in completed | cancelled | expired) break ;; esac
  sleep 0.2
done
t1=$(date +%s.%N)
echo "batch: $st"
awk -v a="$t0" -v b="$t1" 'BEGIN{printf "batch: %d lines done in %.1f s (from upload to completed)\n", '"$LINES"', b - a}'
echo "(raw output in $OUT)"
