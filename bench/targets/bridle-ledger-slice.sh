# shellcheck shell=bash disable=SC2034  # sourced by sidebyside.sh
# Target "bridle-ledger-slice": bench/targets/bridle-ledger.sh with PostgreSQL
# on the load generator's core in a cgroup allowed 1 ms of CPU per 2 ms
# (BENCH_PG_CPU_SLICE, bench/lib/pg.sh; BRIDLE_LEDGER_SLICE=Q/P to change it),
# so that no run of it holds wrk and the mock off that core for longer than
# 1 ms. Needs a writable cgroup v1 cpu controller (root).
BRIDLE_LEDGER_VARIANT=slice
# shellcheck source=bench/targets/bridle-ledger.sh disable=SC1091
. "$(dirname "${BASH_SOURCE[0]}")/bridle-ledger.sh"
