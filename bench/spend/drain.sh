#!/usr/bin/env bash
# bench/spend/drain.sh — the ledger's drain rate with the rollups maintained
# (issue 12: "the ledger still drains at least 100,000 events/s with the
# rollups maintained; the rollup step keeps up with that rate").
#
# The method of bench/ledger/ledger_bench.sh (phase 2 and 3): bridle in front
# of the mock, PostgreSQL stopped (pg_ctl stop -m immediate) while wrk sends
# DUR seconds of requests, so the events pile up in the spool; PostgreSQL
# started again and the drain timed from bridle's own counter
# (/v1/bridle/health ledger.inserted), first committed batch to last. Twice on
# one cluster with the migrations applied (0008: the rollups are usage_rollup_ops/_attr/_hist):
#   on:  the capture trigger enabled (as shipped), and the rollup step run
#        every ROLLUP_EVERY seconds (1) during the drain (`bridle ledger
#        rollup` when the binary has it, else SELECT bridle_rollup()): its
#        rate and whether pending grows;
#   off: ALTER TABLE usage_events DISABLE TRIGGER usage_events_rollup_capture
#        (what the ledger costs without rollups).
# Requests vary over KEYS (50) keys in 10 teams, 4 models, 8 agents and 16
# tasks (x-bridle-agent / x-bridle-task), so each ledger batch has realistic
# dimensions for the trigger to aggregate (ledger_bench.sh uses one key and
# one model, which flatters the trigger).
#
# Env: DUR (10), CONNS (16), BRIDLE_CPUS (1), LOAD_CPUS (0), BATCH_MAX (5000),
# ORDER ("on off"). Prints a markdown table (appended to SPEND_OUT_TABLE).
set -euo pipefail
# shellcheck source=bench/spend/common.sh disable=SC2153,SC2034
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
DUR=${DUR:-10}
CONNS=${CONNS:-16}
BRIDLE_CPUS=${BRIDLE_CPUS:-1}
LOAD_CPUS=${LOAD_CPUS:-0}
KEYS=${KEYS:-50}
ROLLUP_EVERY=${ROLLUP_EVERY:-1}
MOCK=$SPEND_ROOT/$BUILD/bridle-mock
command -v wrk >/dev/null || { slog "wrk missing: apt-get install wrk"; exit 1; }
spend_build
unset DATABASE_URL # always its own cluster: it is stopped and started
W=$(mktemp -d /tmp/bridle-spend-drain.XXXXXX)
PIDS=()
ROLLER=""
LOADAVG=$(cut -d" " -f1-3 /proc/loadavg)
cleanup() {
  local p
  [[ -n $ROLLER ]] && kill "$ROLLER" 2>/dev/null
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  spend_cleanup
  rm -rf "$W"
}
trap cleanup EXIT
spend_db
PGOPTS="-p $BENCH_PG_PORT -k $BENCH_PG_DIR -c listen_addresses=127.0.0.1 -c shared_buffers=256MB -c max_connections=40 ${BENCH_PG_OPTS:-}"
pg_down() { "${_BENCH_PG_AS[@]}" "$BENCH_PG_BIN/pg_ctl" -D "$BENCH_PG_DIR/data" -m immediate -w stop >/dev/null; }
pg_up() {
  "${_BENCH_PG_AS[@]}" "$BENCH_PG_BIN/pg_ctl" -D "$BENCH_PG_DIR/data" -l "$BENCH_PG_DIR/postgres.log" -w -t 60 -o "$PGOPTS" start >/dev/null
  BENCH_PG_PID=$(head -n1 "$BENCH_PG_DIR/data/postmaster.pid") # bench_pg_stop kills it by pid
}
"$BRIDLE" migrate --database-url "$DATABASE_URL" >/dev/null
q "SELECT bridle_ensure_partitions(2)" >/dev/null

port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
free_port() { local p=$1; while port_busy "$p"; do p=$((p + 1)); done; echo "$p"; }
MPORT=$(free_port 18381)
taskset -c "$LOAD_CPUS" "$MOCK" --listen "127.0.0.1:$MPORT" >"$W/mock.log" 2>&1 </dev/null &
PIDS+=($!)
GPORT=$(free_port 18391)
keys_json="" keys_lua=""
for ((k = 0; k < KEYS; k++)); do
  sha=$(printf 'bk-spend-%d' "$k" | sha256sum | cut -d' ' -f1)
  keys_json+="${keys_json:+,}{ \"id\": \"key-$k\", \"sha256\": \"$sha\", \"team\": \"team-$((k % 10))\" }"
  keys_lua+="${keys_lua:+,}\"bk-spend-$k\""
done
cat >"$W/bridle.json" <<CONF
{
  "log_level": "error",
  "limits": { "max_connections": 16384 },
  "providers": { "upstream": { "kind": "openai", "base_url": "http://127.0.0.1:$MPORT/v1", "api_key": "sk-bench" } },
  "models": { "gpt-4o-mini": { "provider": "upstream" }, "gpt-4o": { "provider": "upstream" },
              "gpt-4.1": { "provider": "upstream" }, "gpt-4.1-mini": { "provider": "upstream" } },
  "keys": [ $keys_json ],
  "database": { "url": "$DATABASE_URL", "spool_dir": "$W/spool", "flush_interval_ms": 100, "batch_max": ${BATCH_MAX:-5000} }
}
CONF
taskset -c "$BRIDLE_CPUS" "$BRIDLE" serve --config "$W/bridle.json" --listen "127.0.0.1:$GPORT" >"$W/bridle.log" 2>&1 </dev/null &
GPID=$!
PIDS+=("$GPID")
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$GPORT/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$GPORT/readyz" >/dev/null || { cat "$W/bridle.log" >&2; slog "bridle did not start"; exit 1; }
cat >"$W/post.lua" <<LUA
local keys = { $keys_lua }
local models = { "gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini" }
math.randomseed(42)
request = function()
  local k = math.random(#keys)
  local h = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. keys[k],
              ["x-bridle-agent"] = "agent-" .. (k % 8), ["x-bridle-task"] = "task-" .. (k % 8) .. "-" .. math.random(0, 1) }
  return wrk.format("POST", "/v1/chat/completions", h,
    '{"model":"' .. models[math.random(#models)] .. '","messages":[{"role":"user","content":"hi"}],"max_tokens":16}')
end
LUA
KEY0=bk-spend-0
inserted() { curl -fs -H "Authorization: Bearer $KEY0" "http://127.0.0.1:$GPORT/v1/bridle/health" | sed -n 's/.*"inserted":\([0-9]*\).*/\1/p'; }
wrk_total() { sed -n 's/^ *\([0-9]*\) requests in .*/\1/p' "$1"; }
if "$BRIDLE" ledger rollup --help >/dev/null 2>&1; then
  ROLLUP_CMD="bridle ledger rollup"
  rollup_once() { "$BRIDLE" ledger rollup --database-url "$DATABASE_URL" >/dev/null 2>&1; }
else
  ROLLUP_CMD="SELECT bridle_rollup()"
  rollup_once() { q "SELECT bridle_rollup()" >/dev/null 2>&1; }
fi
pending() { q "SELECT (SELECT count(*) FROM usage_rollup_pending) || ' ' || (SELECT coalesce(sum(requests), 0) FROM usage_rollup_pending)" 2>/dev/null || echo "? ?"; }
rolled() { q "SELECT coalesce(sum(requests), 0) FROM usage_rollup_ops WHERE grain = '5m'" 2>/dev/null || echo 0; }

# warm-up: the connection, the partitions, the prepared statements
taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d2s -s "$W/post.lua" "http://127.0.0.1:$GPORT/" >/dev/null 2>&1
sleep 1
rollup_once || true
ROWS=()
for mode in ${ORDER:-on off}; do
  if [[ $mode == on ]]; then q "ALTER TABLE usage_events ENABLE TRIGGER usage_events_rollup_capture"
  else q "ALTER TABLE usage_events DISABLE TRIGGER usage_events_rollup_capture"; fi
  slog "capture trigger $mode: database down, wrk -c$CONNS -d${DUR}s fills the spool"
  pg_down
  sleep 0.5
  taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"${DUR}s" -s "$W/post.lua" "http://127.0.0.1:$GPORT/" >"$W/wrk-$mode.txt" 2>&1
  backlog=$(wrk_total "$W/wrk-$mode.txt")
  i0=$(inserted)
  pg_up
  ts=$(now_ms) first_ms="" first_ins="" rolls=0
  if [[ $mode == on ]]; then
    rolled0=$(rolled)
    (while :; do rollup_once; echo x >>"$W/rolls"; sleep "$ROLLUP_EVERY"; done) &
    ROLLER=$!
  fi
  while :; do
    n=$(inserted); t=$(now_ms)
    [[ -z $first_ms && -n $n && $n -gt $i0 ]] && first_ms=$t first_ins=$n
    ((n - i0 >= backlog)) && break
    ((t - ts > 180000)) && { slog "  drain did not finish in 180 s ($((n - i0)) of $backlog)"; break; }
    sleep 0.02
  done
  te=$(now_ms)
  rate=$(awk -v n="$((n - ${first_ins:-$i0}))" -v a="${first_ms:-$ts}" -v b="$te" 'BEGIN { d = (b - a) / 1000; printf "%.0f", (d > 0) ? n / d : 0 }')
  secs=$(awk -v a="${first_ms:-$ts}" -v b="$te" 'BEGIN { printf "%.2f", (b - a) / 1000 }')
  note="trigger disabled: no rollups"
  if [[ $mode == on ]]; then
    read -r prow pev < <(pending)
    # the rollup step catches up with what is left, timed
    kill "$ROLLER" 2>/dev/null; wait "$ROLLER" 2>/dev/null || true; ROLLER=""
    rolls=$(wc -l <"$W/rolls" 2>/dev/null || echo 0); rm -f "$W/rolls"
    c0=$(now_ms); while read -r pr _ < <(pending); ((pr > 0)); do rollup_once; done; c1=$(now_ms)
    moved=$(($(rolled) - rolled0))
    ru=$(awk -v n="$moved" -v a="${first_ms:-$ts}" -v b="$c1" 'BEGIN { printf "%.0f", n / ((b - a) / 1000) }')
    note="$ROLLUP_CMD every ${ROLLUP_EVERY} s during the drain ($rolls runs): at the drain's end $pev events ($prow rows) still pending, rolled up $((c1 - c0)) ms later; $moved events rolled up from first batch to none pending: $ru events/s"
  fi
  slog "  $mode: $rate events/s ($backlog events, $secs s); $note"
  ROWS+=("| capture trigger $mode | $backlog | $secs | **$rate** | $(awk -v r="$rate" 'BEGIN { print (r >= 100000) ? "yes" : "**no**" }') | $note |")
done
dups=$(q "SELECT count(*) - count(DISTINCT event_id) FROM usage_events")
{
  echo "| ledger drain (spool → PostgreSQL, first batch to last) | events | s | events/s | ≥ 100,000 | rollups |"
  echo "|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "bridle on cpu $BRIDLE_CPUS, wrk + mock on cpu $LOAD_CPUS, PostgreSQL unpinned; batch_max ${BATCH_MAX:-5000}, $KEYS keys × 4 models × 8 agents; duplicates in usage_events: $dups; load average at the start: $LOADAVG."
} | tee -a "${SPEND_OUT_TABLE:-/dev/null}"
