# shellcheck shell=bash disable=SC2034  # sourced by sidebyside.sh, which reads T_URL/T_HEADERS
# Target "bridle-limits" for /work/shared/bench/sidebyside.sh:
#   ../shared/bench/sidebyside.sh direct "$PWD/bench/targets/bridle-ledger.sh" "$PWD/bench/targets/bridle-limits.sh"
# bench/targets/bridle-ledger.sh (ledger on, a throwaway PostgreSQL) with a
# daily, weekly and monthly budget and a requests/tokens/cost-per-hour rate
# limit on the bench key, all far above what a run spends, so nothing is
# refused: it measures what budget reservation (leases) and rate limiting
# cost per request. The issue's goal: within 10 % of bridle-ledger's
# requests/s and CPU per request, in the same run.
# Env: as bridle-ledger.sh; BRIDLE_LIMITS_BENCH_PORT (18188).
BRIDLE_LEDGER_BENCH_PORT=${BRIDLE_LIMITS_BENCH_PORT:-18188}
# shellcheck source=bench/targets/bridle-ledger.sh disable=SC1091
. "$(dirname "${BASH_SOURCE[0]}")/bridle-ledger.sh"
BRIDLE_BENCH_KEY_EXTRA=$BRIDLE_BENCH_LIMITS_EXTRA
