#!/usr/bin/env bash
# bench/spend/load.sh N — loads N synthetic usage_events spread evenly over the
# last 30 days into $DATABASE_URL (a throwaway cluster from bench/lib/pg.sh
# when unset: then it only measures the load and is gone at exit; use
# bench/spend/run.sh for load + reads + drain on one cluster), then runs the
# rollup step until nothing is pending.
#
# Steps: `bridle migrate`; partitions for today-30 .. today+1
# (bridle_ensure_partition); budgets (bridle_budgets: a day and a month
# budget per key, a month budget per team, a total) BEFORE the events, so the
# ledger's budget trigger fills bridle_budget_spend as in production; then
# the events in chunks of CHUNK rows (default 1,000,000), one
# INSERT ... SELECT ... FROM generate_series per chunk: each statement fires
# the statement triggers once (budget charge, rollup capture), like a bulk
# import or a very large ledger batch. Then `bridle ledger rollup` (when the
# binary has it) or `SELECT bridle_rollup(ROLLUP_LIMIT)` in a loop until it
# moves nothing, timed.
#
# The data: KEYS keys (300) over 20 teams, skewed (a few keys carry most
# traffic); each key belongs to an app: one agent (a fifth of the keys none),
# four tasks of that agent, one feature, a tier; 8 models of 4 providers
# (weighted), a fifth of the requests asked for gpt-4o and were routed to a
# cheaper model; tokens log-normal (input median ~400, output ~150), cost and
# baseline cost from per-model prices in pico-dollars; 40 % streamed with a
# log-normal time to first token; latency log-normal (median ~450 ms);
# 2 % errors (429 rate_limited, 502 upstream_error, 504 upstream_timeout,
# 400 invalid_request), 5 % retried, 3 % response-cache hits, 25 % with
# cached prompt tokens. ts increases with the row number (chunks append, as
# the ledger does).
#
# Prints key=value lines (load_rows, load_s, load_rate, rollup_s,
# rollup_rate, sizes) on stdout; SPEND_OUT=FILE appends them there too.
set -euo pipefail
# shellcheck source=bench/spend/common.sh disable=SC2153,SC2034
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
N=${1:?usage: bench/spend/load.sh N}
CHUNK=${CHUNK:-1000000}
KEYS=${KEYS:-300}
ROLLUP_LIMIT=${ROLLUP_LIMIT:-200000}
[[ $N =~ ^[0-9]+$ ]] || { echo "load.sh: N must be a number of events" >&2; exit 2; }
spend_build
trap spend_cleanup EXIT
spend_db
out() { echo "$1=$2"; [[ -z ${SPEND_OUT:-} ]] || echo "$1=$2" >>"$SPEND_OUT"; }

slog "bridle migrate"
"$BRIDLE" migrate --database-url "$DATABASE_URL" >/dev/null
q "SELECT count(*) FROM (SELECT bridle_ensure_partition(((now() AT TIME ZONE 'UTC')::date + d)) FROM generate_series(-31, 1) d) s" >/dev/null

existing=$(q "SELECT count(*) FROM usage_events")
if ((existing > 0)); then
  slog "usage_events already holds $existing rows: not loading again (drop the database to reload)"
  out load_rows 0
  exit 0
fi

# budgets first: the charge trigger creates their spend rows as events land
q "INSERT INTO bridle_budgets (scope, scope_id, period, limit_pusd)
   SELECT 'key', 'key-' || k, p, CASE p WHEN 'day' THEN 50 ELSE 1000 END * 1000000000000::bigint
   FROM generate_series(0, $KEYS - 1) k, (VALUES ('day'), ('month')) v(p)
   UNION ALL SELECT 'team', 'team-' || t, 'month', 5000 * 1000000000000::bigint FROM generate_series(0, 19) t
   UNION ALL SELECT 'total', '', 'month', 100000 * 1000000000000::bigint
   ON CONFLICT DO NOTHING"

T0=$(q "SELECT to_char((date_trunc('second', now()) - interval '30 days') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
STEP_US=$(awk -v n="$N" 'BEGIN { printf "%.3f", 30 * 86400e6 / n }') # µs between events

# models: name, provider, input and output price in pico-dollars per token
# (USD per million tokens × 1e6), and a weight (share of requests, ‰)
chunk_sql() { # LO HI
  cat <<SQL
SELECT setseed(($1 % 1000003) / 1000003.0);
INSERT INTO usage_events (event_id, ts, key_id, team, end_user, agent, task, feature,
  requested_model, provider, model, tier, route_reason, streamed, status, error_class, attempts,
  input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens, usage_exact,
  cost_pusd, baseline_cost_pusd, latency_us, ttft_us, upstream_us, cache_hit)
SELECT 'bench-' || i, ts, 'key-' || k, 'team-' || (k % 20), 'user-' || (k * 17 + floor(u5 * 40)::int),
  CASE WHEN k % 5 = 0 THEN NULL ELSE 'agent-' || (k % 12) END,
  CASE WHEN k % 5 = 0 THEN NULL ELSE 'task-' || (k % 12) || '-' || floor(u6 * 4)::int END,
  'feature-' || (k % 15),
  CASE WHEN routed THEN 'gpt-4o' ELSE m.name END, m.provider, m.name,
  CASE WHEN k % 7 = 0 THEN 'premium' WHEN k % 11 = 0 THEN 'batch' ELSE 'standard' END,
  CASE WHEN routed THEN 'cost' ELSE 'direct' END,
  streamed, status, error_class, CASE WHEN u7 < 0.05 THEN 2 ELSE 1 END,
  inp, cread, 0, outp, CASE WHEN m.name LIKE 'o3%' THEN outp / 2 ELSE 0 END, u8 > 0.01,
  inp * m.pin + cread * m.pin / 10 + outp * m.pout,
  (inp + cread) * 2500000 + outp * 10000000,
  lat, CASE WHEN streamed AND status = 200 THEN least(lat, ttft) END, greatest(lat - 1500, 0), u9 < 0.03
FROM (
  SELECT r.*, CASE WHEN status = 200 THEN floor(exp(6.0 + 1.1 * g1))::bigint ELSE 0 END AS inp,
    CASE WHEN status = 200 AND u10 < 0.25 THEN floor(exp(6.5 + 1.0 * g3))::bigint ELSE 0 END AS cread,
    CASE WHEN status = 200 THEN floor(exp(5.0 + 1.0 * g2))::bigint ELSE 0 END AS outp,
    floor(exp(13.0 + 0.8 * g4))::bigint AS lat, floor(exp(12.2 + 0.7 * g3))::bigint AS ttft
  FROM (
    SELECT i, timestamptz '$T0' + (i - 1 + u0) * interval '$STEP_US microseconds' AS ts,
      floor(power(u1, 2.5) * $KEYS)::int AS k,
      CASE WHEN u2 < 0.30 THEN 1 WHEN u2 < 0.50 THEN 2 WHEN u2 < 0.60 THEN 3
        WHEN u2 < 0.75 THEN 4 WHEN u2 < 0.82 THEN 5 WHEN u2 < 0.93 THEN 6 WHEN u2 < 0.97 THEN 7 ELSE 8 END AS mi,
      u3 < 0.20 AS routed, u4 < 0.40 AS streamed,
      CASE WHEN u11 >= 0.02 THEN 200 WHEN u11 < 0.008 THEN 429 WHEN u11 < 0.013 THEN 502 WHEN u11 < 0.017 THEN 504 ELSE 400 END AS status,
      CASE WHEN u11 >= 0.02 THEN NULL WHEN u11 < 0.008 THEN 'rate_limited' WHEN u11 < 0.013 THEN 'upstream_error'
        WHEN u11 < 0.017 THEN 'upstream_timeout' ELSE 'invalid_request' END AS error_class,
      sqrt(-2 * ln(1 - u12)) * cos(2 * pi() * u13) AS g1, sqrt(-2 * ln(1 - u12)) * sin(2 * pi() * u13) AS g2,
      sqrt(-2 * ln(1 - u14)) * cos(2 * pi() * u15) AS g3, sqrt(-2 * ln(1 - u14)) * sin(2 * pi() * u15) AS g4,
      u5, u6, u7, u8, u9, u10
    FROM (SELECT i, random() u0, random() u1, random() u2, random() u3, random() u4, random() u5, random() u6,
            random() u7, random() u8, random() u9, random() u10, random() u11, random() u12, random() u13,
            random() u14, random() u15
          FROM generate_series($1::bigint, $2::bigint) i) u
  ) r
) x
JOIN (VALUES (1, 'gpt-4o-mini', 'openai', 150000, 600000), (2, 'gpt-4o', 'openai', 2500000, 10000000),
             (3, 'claude-3-5-haiku', 'anthropic', 800000, 4000000), (4, 'claude-sonnet-4', 'anthropic', 3000000, 15000000),
             (5, 'gemini-2.0-flash', 'google', 100000, 400000), (6, 'gemini-1.5-pro', 'google', 1250000, 5000000),
             (7, 'o3-mini', 'openai', 1100000, 4400000), (8, 'llama-3.3-70b', 'groq', 590000, 790000))
  AS m(id, name, provider, pin, pout) ON m.id = x.mi;
SQL
}

slog "loading $N events over 30 days from $T0 in chunks of $CHUNK"
t0=$(now_ms)
for ((lo = 1; lo <= N; lo += CHUNK)); do
  hi=$((lo + CHUNK - 1)); ((hi > N)) && hi=$N
  c0=$(now_ms)
  chunk_sql "$lo" "$hi" | "$PSQL" -X -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" >/dev/null
  c1=$(now_ms)
  slog "  rows $lo..$hi: $(awk -v n=$((hi - lo + 1)) -v ms=$((c1 - c0)) 'BEGIN { printf "%.0f rows/s", n / (ms / 1000) }') (total $(awk -v n="$hi" -v ms=$((c1 - t0)) 'BEGIN { printf "%.0f rows/s", n / (ms / 1000) }'))"
done
t1=$(now_ms)
out load_rows "$N"
out load_s "$(awk -v ms=$((t1 - t0)) 'BEGIN { printf "%.1f", ms / 1000 }')"
out load_rate "$(awk -v n="$N" -v ms=$((t1 - t0)) 'BEGIN { printf "%.0f", n / (ms / 1000) }')"
out pending_rows "$(q 'SELECT count(*) FROM usage_rollup_pending')"
out pending_hist_rows "$(q 'SELECT count(*) FROM usage_rollup_hist_pending')"

# the rollup step until nothing is pending
if "$BRIDLE" ledger rollup --help >/dev/null 2>&1; then
  ROLLUP_CMD="bridle ledger rollup --limit $ROLLUP_LIMIT"
  rollup_once() { "$BRIDLE" ledger rollup --limit "$ROLLUP_LIMIT" --database-url "$DATABASE_URL" >/dev/null; }
else
  ROLLUP_CMD="SELECT bridle_rollup($ROLLUP_LIMIT) until 0"
  rollup_once() { q "SELECT bridle_rollup($ROLLUP_LIMIT)"; }
fi
slog "rollup step: $ROLLUP_CMD"
r0=$(now_ms) runs=0
while :; do
  moved=$(rollup_once)
  runs=$((runs + 1))
  left=$(q "SELECT (SELECT count(*) FROM usage_rollup_pending) + (SELECT count(*) FROM usage_rollup_hist_pending) + (SELECT count(*) FROM usage_top_dirty)")
  slog "  run $runs: moved ${moved:-?}; pending left $left"
  ((left == 0)) && break
  ((runs > 100000)) && { slog "rollup did not finish"; break; }
done
r1=$(now_ms)
out rollup_cmd "$ROLLUP_CMD"
out rollup_runs "$runs"
out rollup_s "$(awk -v ms=$((r1 - r0)) 'BEGIN { printf "%.1f", ms / 1000 }')"
out rollup_rate "$(awk -v n="$N" -v ms=$((r1 - r0)) 'BEGIN { printf "%.0f", n / (ms / 1000) }')"
q "VACUUM ANALYZE" >/dev/null
out rollup_rows "$(q "SELECT string_agg(t || ' ' || grain || ' ' || n, ', ' ORDER BY t, grain) FROM (SELECT 'ops' t, grain, count(*) n FROM usage_rollup_ops GROUP BY grain UNION ALL SELECT 'attr', grain, count(*) FROM usage_rollup_attr GROUP BY grain) s")"
out hist_rows "$(q 'SELECT count(*) FROM usage_rollup_hist')"
out top_rows "$(q 'SELECT count(*) FROM usage_top')"
out size_events "$(q "SELECT pg_size_pretty(sum(pg_total_relation_size(inhrelid))) FROM pg_inherits WHERE inhparent = 'usage_events'::regclass")"
out size_rollups "$(q "SELECT pg_size_pretty(pg_total_relation_size('usage_rollup_ops') + pg_total_relation_size('usage_rollup_attr') + pg_total_relation_size('usage_rollup_hist') + pg_total_relation_size('usage_top'))")"
out budget_spend_rows "$(q 'SELECT count(*) FROM bridle_budget_spend')"
