# shellcheck shell=bash disable=SC2034  # sourced by sidebyside.sh
# Target "bridle-cache-hit": bench/targets/bridle-ledger.sh with the response
# cache on and every request opting in (x-bridle-cache: on, since the
# harness's body has no temperature): after the first, every request is a hit
# answered from memory, recorded in the ledger at cost 0. Issue 14's goal: a
# hit at >= 2x the requests/s of a proxied miss (bridle-cache-miss.sh).
# Env: as bridle-ledger.sh; BRIDLE_CACHE_HIT_BENCH_PORT (18186).
BRIDLE_LEDGER_VARIANT=cache-hit
BRIDLE_LEDGER_BENCH_PORT=${BRIDLE_CACHE_HIT_BENCH_PORT:-18186}
# shellcheck source=bench/targets/bridle-ledger.sh disable=SC1091
. "$(dirname "${BASH_SOURCE[0]}")/bridle-ledger.sh"
