#!/usr/bin/env bash
# What the usage_events layout costs PostgreSQL itself, with the gateway out of
# the picture: one server-side INSERT ... SELECT of N rows (generate_series)
# ... ON CONFLICT DO NOTHING into a daily partition, three times per layout,
# into a throwaway cluster (fsync on, shared_buffers 256MB). It is the
# evidence for migrations/0002_ledger_insert_rate.sql. Prints a table; does
# not write bench/RESULTS.md. Env: ROWS (200000).
set -euo pipefail
ROWS=${ROWS:-200000}
PGBIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}
W=$(mktemp -d /tmp/bridle-schema-bench.XXXXXX)
AS=() U=$(id -un)
if [[ $(id -u) -eq 0 ]]; then AS=(runuser -u postgres --); U=postgres; chown postgres "$W"; fi
trap '"${AS[@]}" "$PGBIN/pg_ctl" -D "$W/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$W"' EXIT
PORT=56123
while ss -Hltn "sport = :$PORT" | grep -q .; do PORT=$((PORT + 1)); done
"${AS[@]}" "$PGBIN/initdb" -D "$W/data" -U "$U" --auth=trust -E UTF8 --no-locale >/dev/null
"${AS[@]}" "$PGBIN/pg_ctl" -D "$W/data" -l "$W/log" -w -o "-p $PORT -k $W -c listen_addresses=127.0.0.1 -c shared_buffers=256MB" start >/dev/null
sql() { "$PGBIN/psql" -q -X -h 127.0.0.1 -p "$PORT" -U "$U" -d postgres "$@"; }

# $1 label, $2 event_id expression, $3 key clause, $4 extra indexes
layout() {
  sql -c "DROP TABLE IF EXISTS ue" -c "CREATE TABLE ue (
    event_id text NOT NULL, ts timestamptz NOT NULL, key_id text, team text, end_user text,
    agent text, task text, feature text, requested_model text, provider text, model text,
    tier text, route_reason text, streamed boolean NOT NULL, status integer NOT NULL,
    error_class text, attempts integer NOT NULL, input_tokens bigint NOT NULL,
    cache_read_tokens bigint NOT NULL, cache_write_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL, reasoning_tokens bigint NOT NULL, usage_exact boolean NOT NULL,
    cost_pusd bigint NOT NULL, baseline_cost_pusd bigint NOT NULL, latency_us bigint NOT NULL,
    ttft_us bigint, upstream_us bigint NOT NULL, cache_hit boolean NOT NULL, batch_id text
    $3) PARTITION BY RANGE (ts)" \
    -c "CREATE TABLE ue_p PARTITION OF ue FOR VALUES FROM ('2026-01-01') TO ('2026-01-02')" \
    -c "CREATE INDEX ON ue USING brin (ts)" ${4:+-c "$4"} 2>&1 | grep -v NOTICE || true
  local times=()
  for r in 1 2 3; do
    local t
    t=$(sql -At -c '\timing on' -c "INSERT INTO ue SELECT $2, '2026-01-01 0$r:00'::timestamptz + i * interval '1 microsecond',
      'key' || (i % 50), 'team' || (i % 7), NULL, 'agent', 'classify', NULL, 'auto', 'mock',
      'gpt-4o-mini', 'budget', 'task classify -> budget', false, 200, NULL, 1, i % 1000, 0, 0,
      i % 300, 0, true, i * 13, i * 40, 1200, NULL, 900, false, NULL
      FROM generate_series(1, $ROWS) i ON CONFLICT DO NOTHING" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
    times+=("$(awk -v t="$t" 'BEGIN { printf "%.2f", t / 1000 }')")
  done
  local best
  best=$(printf '%s\n' "${times[@]}" | sort -n | head -n1)
  printf '| %s | %s | %s |\n' "$1" "${times[*]}" "$(awk -v n="$ROWS" -v t="$best" 'BEGIN { printf "%.0f", n / t }')"
}

echo "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), $ROWS rows per INSERT, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "| layout (random 32-hex event ids) | seconds (3 runs) | rows/s (best) |"
echo "|---|---|---|"
layout "0001: PRIMARY KEY (event_id, ts) + B-trees (key_id, ts), (team, ts)" "md5(i::text)" ", PRIMARY KEY (event_id, ts)" "CREATE INDEX ON ue (key_id, ts); CREATE INDEX ON ue (team, ts)"
layout "PRIMARY KEY (ts, event_id) + B-tree (key_id, ts)" "md5(i::text)" ", PRIMARY KEY (ts, event_id)" "CREATE INDEX ON ue (key_id, ts)"
layout "0002: PRIMARY KEY (ts, event_id) alone" "md5(i::text)" ", PRIMARY KEY (ts, event_id)" ""
layout "no key, no B-tree (no dedup: for scale)" "md5(i::text)" "" ""
