#!/usr/bin/env bash
# bench/spend/reads.sh — times every spend reader against $DATABASE_URL (a
# database loaded by bench/spend/load.sh; bench/spend/run.sh does both):
#
#   - every query of every panel of deploy/grafana/dashboards/bridle-costs.json
#     over the last 30 days, expanded as Grafana does (bench/spend/grafana_expand.py,
#     a port of the expander in tests/integration/dashboards.test.mjs;
#     $__interval for 30 days at 1,500 px = 30m), goal 300 ms;
#   - every `bridle cost` report over a month (summary, breakdown by model,
#     key and team, top, alert), goal 300 ms;
#   - the budget spend read: bridle_budget_sync for one key's budgets (key
#     day + month, its team's month, the total month: the statement the
#     gateway's budget store runs, db/budget_store.c) and a plain SELECT of
#     those bridle_budget_spend rows, goal 20 ms; plus, for reference, the raw
#     month-to-date spend per key from usage_events (the issue's 0.83 s row).
#
# Time: wall time. SQL through psql's \timing (client round trip: the
# statement, its rows to psql, discarded), RUNS (5) runs in one session, no
# warm-up beyond the runs themselves; the CLI as the wall time of the whole
# command (process start, connect, query, output) per run. Median and max.
# The readers are whatever the checkout holds: run it again after the
# readers move and it measures the new SQL.
#
# Output: a markdown table on stdout (and appended to SPEND_OUT when set).
set -euo pipefail
# shellcheck source=bench/spend/common.sh disable=SC2153,SC2034
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
RUNS=${RUNS:-5}
DASH=${DASH:-$SPEND_ROOT/deploy/grafana/dashboards/bridle-costs.json}
: "${DATABASE_URL:?reads.sh: set DATABASE_URL to a database loaded by bench/spend/load.sh (or use bench/spend/run.sh)}"
spend_build
W=$(mktemp -d /tmp/bridle-spend-reads.XXXXXX)
trap 'rm -rf "$W"' EXIT

# median and max of the numbers on stdin (ms)
stats() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "error error"; exit } m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.1f %.1f\n", m, v[NR] }'; }
ROWS=()
row() { # NAME KIND GOAL_MS MEDIAN MAX [NOTE]
  local ok
  if [[ $4 == error ]]; then ok="**ERROR**"; else ok=$(awk -v m="$5" -v g="$3" 'BEGIN { print (m <= g) ? "yes" : "**no**" }'); fi
  ROWS+=("| $1 | $2 | $4 | $5 | $3 | $ok |${6:+ $6 |}")
  slog "  $1: median $4 ms, max $5 ms (goal $3)"
}
sql_times() { # SQL → RUNS timings (ms) through psql \timing
  { printf '\\o /dev/null\n\\timing on\n'; for ((i = 0; i < RUNS; i++)); do printf '%s;\n' "$1"; done; } >"$W/q.sql"
  "$PSQL" -X -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" -f "$W/q.sql" 2>"$W/err" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' || true
  [[ -s $W/err ]] && slog "    error: $(head -c 300 "$W/err")"
  return 0
}
cmd_times() { # ARGS... → RUNS wall times (ms)
  local i a b
  for ((i = 0; i < RUNS; i++)); do
    a=$(date +%s%N)
    "$@" >/dev/null 2>"$W/err" || { slog "    $* failed: $(head -c 300 "$W/err")"; return 0; }
    b=$(date +%s%N)
    awk -v a="$a" -v b="$b" 'BEGIN { printf "%.1f\n", (b - a) / 1e6 }'
  done
}

slog "dashboard panels (30 days, $RUNS runs each)"
python3 "$SPEND_ROOT/bench/spend/grafana_expand.py" "$DASH" 30 1500 >"$W/panels.tsv"
while IFS=$'\t' read -r title fmt sql; do
  read -r med max < <(sql_times "$sql" | stats)
  row "panel: $title" "Grafana $fmt" 300 "$med" "$max"
done <"$W/panels.tsv"

slog "bridle cost reports (month, $RUNS runs each)"
for args in "summary --period month" "breakdown --by model --period month" "breakdown --by requested_model --period month" "breakdown --by key --period month" "breakdown --by task --period month" \
  "breakdown --by team --period month" "top --period month" "alert"; do
  # shellcheck disable=SC2086
  read -r med max < <(cmd_times "$BRIDLE" cost $args --database-url "$DATABASE_URL" | stats)
  row "\`bridle cost $args\`" "CLI wall time" 300 "$med" "$max"
done

slog "budget spend read ($RUNS runs each)"
KEY=${BENCH_KEY:-key-0}
TEAM=$(q "SELECT team FROM usage_events WHERE key_id = '$KEY' LIMIT 1")
SCOPES="ARRAY['key','key','team','total'], ARRAY['$KEY','$KEY','$TEAM',''], ARRAY['day','month','month','month']"
STARTS="ARRAY[bridle_period_start('day', now()), bridle_period_start('month', now()), bridle_period_start('month', now()), bridle_period_start('month', now())]"
read -r med max < <(sql_times "SELECT i, spent_pusd, held_pusd FROM bridle_budget_sync('spend-bench', $SCOPES, $STARTS, ARRAY[0,0,0,0]::bigint[], 30000) ORDER BY i" | stats)
row "budget spend read: bridle_budget_sync, 4 budgets of $KEY" "gateway SQL" 20 "$med" "$max"
read -r med max < <(sql_times "SELECT scope, period, spent_pusd, held_pusd FROM bridle_budget_spend WHERE (scope, scope_id, period, period_start) IN (SELECT * FROM unnest($SCOPES, $STARTS))" | stats)
row "budget spend read: SELECT bridle_budget_spend, 4 budgets of $KEY" "SQL" 20 "$med" "$max"
if [[ -z ${SKIP_RAW:-} ]]; then
  read -r med max < <(sql_times "SELECT key_id, sum(cost_pusd) FROM usage_events WHERE ts >= bridle_period_start('month', now()) GROUP BY key_id" | stats)
  row "reference: raw month-to-date spend per key from usage_events (no reader uses it)" "SQL" 20 "$med" "$max"
fi

{
  echo "| read | how | median ms | max ms | goal ms | within |"
  echo "|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
} | tee -a "${SPEND_OUT_TABLE:-/dev/null}"
