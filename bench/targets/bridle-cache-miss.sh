# shellcheck shell=bash disable=SC2034  # sourced by sidebyside.sh
# Target "bridle-cache-miss": bench/targets/bridle-ledger.sh with the response
# cache on, every request opting in and sending Cache-Control: no-cache: each
# is a miss that computes its key, calls the mock and stores its answer.
# Issue 14's goal: at most 3 % more CPU per request than bridle-ledger.sh.
# Env: as bridle-ledger.sh; BRIDLE_CACHE_MISS_BENCH_PORT (18185).
BRIDLE_LEDGER_VARIANT=cache-miss
BRIDLE_LEDGER_BENCH_PORT=${BRIDLE_CACHE_MISS_BENCH_PORT:-18185}
# shellcheck source=bench/targets/bridle-ledger.sh disable=SC1091
. "$(dirname "${BASH_SOURCE[0]}")/bridle-ledger.sh"
