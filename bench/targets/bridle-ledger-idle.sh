# shellcheck shell=bash disable=SC2034  # sourced by sidebyside.sh
# Target "bridle-ledger-idle": bench/targets/bridle-ledger.sh with PostgreSQL in
# the SCHED_IDLE class (BENCH_PG_IDLE=1, bench/lib/pg.sh) on the load
# generator's core, so that it takes only what wrk and the mock leave.
BRIDLE_LEDGER_VARIANT=idle
# shellcheck source=bench/targets/bridle-ledger.sh disable=SC1091
. "$(dirname "${BASH_SOURCE[0]}")/bridle-ledger.sh"
