#!/usr/bin/env bash
# bench/spend/run.sh N [load reads drain] — the spend-store benchmark of
# issue 12 in one command: a throwaway PostgreSQL (bench/lib/pg.sh), N
# synthetic events over 30 days and the rollup step (load.sh), every panel,
# `bridle cost` report and budget spend read timed against its goal
# (reads.sh), the ledger drain with and without the rollup capture trigger
# (drain.sh, its own cluster), then a dated section appended to
# bench/RESULTS.md (SPEND_BENCH_NO_RECORD=1: don't). Steps default to all
# three. Run `make` first or let it build; needs wrk and PostgreSQL server
# binaries (scripts/install-deps.sh). Disk: about 0.8 GB per million events.
#
#   bench/spend/run.sh 5000000             # the issue's table
#   bench/spend/run.sh 50000000 load reads # the goal's volume
set -euo pipefail
# shellcheck source=bench/spend/common.sh disable=SC2153,SC2034
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
N=${1:?usage: bench/spend/run.sh N [load] [reads] [drain]}
shift
STEPS=${*:-load reads drain}
cd "$SPEND_ROOT"
spend_build
LOADAVG0=$(cut -d" " -f1-3 /proc/loadavg)
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
REV=$(spend_rev) # at the start: the readers measured
READERS=$(git log -1 --format=%h -- cli/cost.c deploy/grafana/dashboards migrations 2>/dev/null || echo "?")
W=$(mktemp -d /tmp/bridle-spend-run.XXXXXX)
trap 'spend_cleanup; rm -rf "$W"' EXIT
export SPEND_OUT=$W/load.kv SPEND_OUT_TABLE
: >"$SPEND_OUT"
if [[ $STEPS == *load* || $STEPS == *reads* ]]; then
  unset DATABASE_URL
  spend_db
  [[ $STEPS == *load* ]] && { bench/spend/load.sh "$N" >/dev/null; }
  if [[ $STEPS == *reads* ]]; then
    SPEND_OUT_TABLE=$W/reads.md bench/spend/reads.sh >/dev/null
  fi
  LOADAVG1=$(cut -d" " -f1-3 /proc/loadavg)
  spend_cleanup
  unset DATABASE_URL
fi
if [[ $STEPS == *drain* ]]; then SPEND_OUT_TABLE=$W/drain.md bench/spend/drain.sh >/dev/null; fi
LOADAVG2=$(cut -d" " -f1-3 /proc/loadavg)

kv() { sed -n "s/^$1=//p" "$SPEND_OUT" | tail -n1; }
section=$(
  printf '\n### %s: N = %s\n\n' "$STARTED" "$(printf "%'d" "$N" 2>/dev/null || echo "$N")"
  printf -- '- command: `bench/spend/run.sh %s %s`\n' "$N" "$STEPS"
  printf -- '- machine: %s; load average at the start %s, after load+reads %s, at the end %s (2 cores shared with other work)\n' "$(spend_machine)" "$LOADAVG0" "${LOADAVG1:-–}" "$LOADAVG2"
  printf -- '- checkout: %s (readers: the dashboard, `cli/cost.c` and migrations as of %s); PostgreSQL %s, fsync on, synchronous_commit on, shared_buffers 256MB (bench/lib/pg.sh)\n' "$REV" "$READERS" "$("$(bench_pg_bin)/postgres" --version | awk '{print $3}')"
  if [[ -n $(kv load_rows) && $(kv load_rows) != 0 ]]; then
    printf -- '- load: %s events in %s s = **%s events/s** (INSERT … SELECT generate_series, %s rows per statement, capture and budget triggers on); usage_events %s, rollups %s\n' \
      "$(kv load_rows)" "$(kv load_s)" "$(kv load_rate)" "${CHUNK:-1000000}" "$(kv size_events)" "$(kv size_rollups)"
    printf -- '- rollup step (`%s`, %s runs) until nothing pending: %s pending rows + %s histogram rows in %s s = **%s events/s**; rollup rows: %s; histogram rows %s; usage_top rows %s\n' \
      "$(kv rollup_cmd)" "$(kv rollup_runs)" "$(kv pending_rows)" "$(kv pending_hist_rows)" "$(kv rollup_s)" "$(kv rollup_rate)" "$(kv rollup_rows)" "$(kv hist_rows)" "$(kv top_rows)"
  fi
  if [[ -s $W/reads.md ]]; then printf '\nReads (wall time, %s runs each, median and max; SQL via psql \\timing, CLI as the whole command):\n\n' "${RUNS:-5}"; cat "$W/reads.md"; fi
  if [[ -s $W/drain.md ]]; then printf '\nLedger drain with the rollups maintained (bench/spend/drain.sh):\n\n'; cat "$W/drain.md"; fi
)
echo "$section"
if [[ -z ${SPEND_BENCH_NO_RECORD:-} ]]; then
  { grep -q '^## Spend store' bench/RESULTS.md 2>/dev/null || printf '\n## Spend store (issue 12)\n'; echo "$section"; } >>bench/RESULTS.md
  slog "appended to bench/RESULTS.md"
fi
