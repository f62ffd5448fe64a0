#!/usr/bin/env bash
# Ledger benchmark (reliability.md §5, issue: "≥ 100,000 events/s so the
# database is never the gateway's bottleneck"). One run, four phases, against
# a throwaway PostgreSQL 15 cluster (initdb in a temp dir, fsync ON,
# synchronous_commit ON, shared_buffers 256MB: the §5.2 settings) and the mock:
#
#   1. DB up:   wrk --latency -c$CONNS for $DUR s through bridle; rows/s into
#               usage_events from count(*) before/after (end to end: bounded
#               by how many requests the gateway serves).
#   2. DB down: pg_ctl stop -m immediate, the same wrk run: p99 while the
#               database is away; the events pile up in the spool.
#   3. drain:   pg_ctl start; time until count(*) reaches what was recorded:
#               the ledger's own insert rate (spool → multi-row INSERT).
#   4. table:   printed, and appended to bench/RESULTS.md under "Ledger"
#               (LEDGER_BENCH_NO_RECORD=1: don't).
#
# Env: DUR (10), CONNS (16), BUILD (build), BRIDLE_CPUS (1), LOAD_CPUS (0).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BUILD=${BUILD:-build}
DUR=${DUR:-10}
CONNS=${CONNS:-16}
BRIDLE_CPUS=${BRIDLE_CPUS:-1}
LOADAVG=$(cut -d" " -f1-3 /proc/loadavg)
LOAD_CPUS=${LOAD_CPUS:-0}
BRIDLE=$ROOT/$BUILD/bridle
MOCK=$ROOT/$BUILD/bridle-mock
PGBIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}
for b in "$BRIDLE" "$MOCK" "$PGBIN/initdb" "$PGBIN/psql"; do [[ -x $b ]] || { echo "ledger_bench: $b missing (make / apt-get install postgresql)" >&2; exit 1; }; done
command -v wrk >/dev/null || { echo "ledger_bench: wrk missing (apt-get install wrk)" >&2; exit 1; }

log() { printf '[ledger-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
free_port() { local p=$1; while port_busy "$p"; do p=$((p + 1)); done; echo "$p"; }

W=$(mktemp -d /tmp/bridle-ledger-bench.XXXXXX)
PIDS=()
AS=()
PGUSER_=$(id -un)
if [[ $(id -u) -eq 0 ]]; then AS=(runuser -u postgres --); PGUSER_=postgres; chown postgres "$W"; fi
PGDATA_=$W/pgdata
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$PGDATA_" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT

# --- PostgreSQL ------------------------------------------------------------------
PGPORT_=$(free_port 55432)
"${AS[@]}" "$PGBIN/initdb" -D "$PGDATA_" -U "$PGUSER_" --auth=trust -E UTF8 --no-locale >/dev/null
PGOPTS="-p $PGPORT_ -k $W -c listen_addresses=127.0.0.1 -c shared_buffers=256MB -c max_connections=20"
pg_start() { "${AS[@]}" "$PGBIN/pg_ctl" -D "$PGDATA_" -l "$W/pg.log" -w -t 60 -o "$PGOPTS" start >/dev/null; }
pg_stop() { "${AS[@]}" "$PGBIN/pg_ctl" -D "$PGDATA_" -m immediate -w stop >/dev/null; }
pg_start
URL="postgresql://$PGUSER_@127.0.0.1:$PGPORT_/bridle"
"$PGBIN/psql" -q -h 127.0.0.1 -p "$PGPORT_" -U "$PGUSER_" -d postgres -c 'CREATE DATABASE bridle' >/dev/null
rows() { "$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT_" -U "$PGUSER_" -d bridle -Atc 'SELECT count(*) FROM usage_events' 2>/dev/null || echo -1; }

# --- mock and gateway --------------------------------------------------------------
MPORT=$(free_port 18281)
taskset -c "$LOAD_CPUS" "$MOCK" --listen "127.0.0.1:$MPORT" >"$W/mock.log" 2>&1 </dev/null &
PIDS+=($!)
GPORT=$(free_port 18291)
KEY=bk-ledger-bench
SHA=$(printf '%s' "$KEY" | sha256sum | cut -d' ' -f1)
cat >"$W/bridle.json" <<CONF
{
  "log_level": "error",
  "limits": { "max_connections": 16384 },
  "providers": { "upstream": { "kind": "openai", "base_url": "http://127.0.0.1:$MPORT/v1", "api_key": "sk-bench" } },
  "models": { "gpt-4o-mini": { "provider": "upstream" } },
  "keys": [ { "id": "bench", "sha256": "$SHA", "team": "bench" } ],
  "database": { "url": "$URL", "spool_dir": "$W/spool", "flush_interval_ms": 100, "batch_max": ${BATCH_MAX:-5000} }
}
CONF
taskset -c "$BRIDLE_CPUS" "$BRIDLE" serve --config "$W/bridle.json" --listen "127.0.0.1:$GPORT" >"$W/bridle.log" 2>&1 </dev/null &
GPID=$!
PIDS+=("$GPID")
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$GPORT/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$GPORT/readyz" >/dev/null || { cat "$W/bridle.log" >&2; echo "ledger_bench: bridle did not start" >&2; exit 1; }

cat >"$W/post.lua" <<LUA
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":16}'
LUA
run_wrk() { # NAME → wrk output in $W/wrk-NAME.txt
  taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"${DUR}s" --latency -s "$W/post.lua" "http://127.0.0.1:$GPORT/" >"$W/wrk-$1.txt" 2>&1
}
wrk_rps() { sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$1"; }
wrk_pct() { awk -v p="$2" '$1 == p { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 } printf "%.2f", v }' "$1"; }
wrk_non2xx() { sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' "$1" | head -n1; }
wrk_total() { sed -n 's/^ *\([0-9]*\) requests in .*/\1/p' "$1"; }
now_ms() { date +%s%3N; }

# warm-up (and the partitions are created by then)
taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d2s -s "$W/post.lua" "http://127.0.0.1:$GPORT/" >/dev/null 2>&1
sleep 1

# --- 1. database up -----------------------------------------------------------
log "phase 1: database up, wrk -c$CONNS -d${DUR}s"
r0=$(rows); t0=$(now_ms)
run_wrk up
sleep 1   # the last batches (flush interval 100 ms)
r1=$(rows); t1=$(now_ms)
up_rows=$((r1 - r0))
up_rate=$(awk -v n="$up_rows" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / ((b - a) / 1000) }')
log "  $(wrk_rps "$W/wrk-up.txt") req/s; $up_rows rows in $((t1 - t0)) ms"

# --- 2. database down -----------------------------------------------------------
log "phase 2: database down (pg_ctl stop -m immediate), same wrk run"
pg_stop
sleep 0.5
run_wrk down
down_total=$(wrk_total "$W/wrk-down.txt")
spool_bytes=$(du -sb "$W/spool" | cut -f1)
log "  $(wrk_rps "$W/wrk-down.txt") req/s; $down_total requests wait in the spool"

# --- 3. backlog drain ---------------------------------------------------------------
# Progress is read from the gateway's own counter (GET /v1/bridle/health,
# ledger.inserted: rows in committed batches), not count(*), which would scan
# the table on the same two cores every poll and slow the inserts it measures.
# CPU seconds of bridle and of all PostgreSQL processes over the drain say
# which side is the limit.
log "phase 3: pg_ctl start; timing the drain of the backlog"
target=$((r1 + down_total))
inserted() { curl -fs -H "Authorization: Bearer $KEY" "http://127.0.0.1:$GPORT/v1/bridle/health" | sed -n 's/.*"inserted":\([0-9]*\).*/\1/p'; }
cpu_ticks() { # utime+stime of the given pids, in clock ticks
  local p t=0
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo "$t"
}
pg_pids() { pgrep -f "postgres: .*|$PGBIN/postgres" | tr '\n' ' '; }
i0=$(inserted)
pg_start
ts=$(now_ms)
first_ms="" first_ins=""
while :; do
  n=$(inserted)
  t=$(now_ms)
  if [[ -z $first_ms && $n -gt $i0 ]]; then
    first_ms=$t first_ins=$n
    b0=$(cpu_ticks "$GPID") pgs=$(pg_pids) p0=$(cpu_ticks $pgs)
  fi
  if ((n - i0 >= down_total)); then break; fi
  if ((t - ts > 120000)); then log "  drain did not finish in 120 s ($((n - i0)) of $down_total rows)"; break; fi
  sleep 0.02
done
te=$(now_ms)
b1=$(cpu_ticks "$GPID") p1=$(cpu_ticks $pgs)
hz=$(getconf CLK_TCK)
bridle_cpu=$(awk -v a="$b0" -v b="$b1" -v h="$hz" 'BEGIN { printf "%.2f", (b - a) / h }')
pg_cpu=$(awk -v a="$p0" -v b="$p1" -v h="$hz" 'BEGIN { printf "%.2f", (b - a) / h }')
final=$(rows)
drained=$((final - r1))
drain_s=$(awk -v a="${first_ms:-$ts}" -v b="$te" 'BEGIN { printf "%.3f", (b - a) / 1000 }')
drain_rate=$(awk -v n="$((n - ${first_ins:-$i0}))" -v a="${first_ms:-$ts}" -v b="$te" 'BEGIN { d = (b - a) / 1000; r = 0; if (d > 0) r = n / d; printf "%.0f", r }')
reconnect_ms=$(( ${first_ms:-$ts} - ts ))
dups=$("$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT_" -U "$PGUSER_" -d bridle -Atc 'SELECT count(*) - count(DISTINCT event_id) FROM usage_events')
[[ $final -ge $target ]] || log "  MISSING ROWS: $final in the table, $target expected"
log "  $drained rows; first batch ${reconnect_ms} ms after start; ${drain_rate} rows/s over ${drain_s} s (CPU s: bridle $bridle_cpu, PostgreSQL $pg_cpu); duplicates $dups"

# --- table ---------------------------------------------------------------------------
machine="$(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1), kernel $(uname -r)"
rev=$(git rev-parse --short HEAD 2>/dev/null || echo "no commit")
[[ -z $(git status --porcelain -- db server 2>/dev/null) ]] || rev="$rev + uncommitted changes"
table=$(
  printf '| measure | database up | database down |\n|---|---|---|\n'
  printf '| wrk -c%s req/s (bridle on cpu %s, wrk+mock on cpu %s) | %s | %s |\n' "$CONNS" "$BRIDLE_CPUS" "$LOAD_CPUS" "$(wrk_rps "$W/wrk-up.txt")" "$(wrk_rps "$W/wrk-down.txt")"
  printf '| latency p50 ms | %s | %s |\n' "$(wrk_pct "$W/wrk-up.txt" 50%)" "$(wrk_pct "$W/wrk-down.txt" 50%)"
  printf '| latency p99 ms | %s | %s |\n' "$(wrk_pct "$W/wrk-up.txt" 99%)" "$(wrk_pct "$W/wrk-down.txt" 99%)"
  printf '| non-2xx | %s | %s |\n' "$(n=$(wrk_non2xx "$W/wrk-up.txt"); echo "${n:-0}")" "$(n=$(wrk_non2xx "$W/wrk-down.txt"); echo "${n:-0}")"
  printf '| usage_events rows/s end to end (count(*) over %s s + 1 s) | %s | – |\n' "$DUR" "$up_rate"
  printf '| spool after the down run | – | %s events, %s bytes on disk |\n' "$down_total" "$spool_bytes"
  printf '| **backlog drain: ledger insert rate** (spool → PostgreSQL, first row to last) | **%s rows/s** (%s rows in %s s; first batch committed %s ms after pg_ctl start; CPU seconds meanwhile: bridle %s, PostgreSQL %s; %s duplicates) | |\n' "$drain_rate" "$drained" "$drain_s" "$reconnect_ms" "$bridle_cpu" "$pg_cpu" "$dups"
)
echo
echo "$table"
if [[ -z ${LEDGER_BENCH_NO_RECORD:-} ]]; then
  {
    grep -q '^## Ledger' bench/RESULTS.md 2>/dev/null || printf '\n## Ledger\n'
    printf '\n### %s\n\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
    printf -- '- command: `%s` (DUR=%s CONNS=%s)\n' "bench/ledger/ledger_bench.sh" "$DUR" "$CONNS"
    printf -- '- machine: %s; load average before: %s\n' "$machine" "$LOADAVG"
    printf -- '- bridle: %s; PostgreSQL %s, fsync on, synchronous_commit on, shared_buffers 256MB, batch_max ${BATCH_MAX:-5000}\n\n' "$rev" "$("$PGBIN/postgres" --version | awk '{print $3}')"
    echo "$table"
  } >>bench/RESULTS.md
  log "appended to bench/RESULTS.md"
fi
