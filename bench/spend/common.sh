# shellcheck shell=bash
# Shared by bench/spend/*.sh (sourced): paths, logging, psql against
# $DATABASE_URL, and the throwaway PostgreSQL of bench/lib/pg.sh.
SPEND_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD:-build}
BRIDLE=$SPEND_ROOT/$BUILD/bridle
# shellcheck source=bench/lib/pg.sh
. "$SPEND_ROOT/bench/lib/pg.sh"

slog() { printf '[spend-bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
now_ms() { date +%s%3N; }

spend_psql_bin() {
  local d
  d=$(bench_pg_bin 2>/dev/null) && [[ -x $d/psql ]] && { echo "$d/psql"; return; }
  command -v psql
}
PSQL=$(spend_psql_bin)
q() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" -Atc "$1"; }

# make when the binary is missing (a clean clone)
spend_build() {
  [[ -x $BRIDLE ]] && return 0
  slog "building: make -j$(nproc)"
  make -C "$SPEND_ROOT" -j"$(nproc)" >/dev/null || { slog "make failed"; return 1; }
}

# A throwaway cluster unless DATABASE_URL is set; stopped on exit.
SPEND_OWN_PG=""
spend_db() {
  if [[ -n ${DATABASE_URL:-} ]]; then return 0; fi
  bench_pg_start "${PG_CPUS:-}" || return 1
  SPEND_OWN_PG=1
  DATABASE_URL=$BENCH_PG_URL
  export DATABASE_URL
  bench_pg_watchdog $$
  slog "PostgreSQL at $DATABASE_URL (dir $BENCH_PG_DIR)"
}
spend_cleanup() { [[ -n $SPEND_OWN_PG ]] && bench_pg_stop; return 0; }

spend_machine() {
  printf '%s cores, %s, %s GB RAM, kernel %s' "$(nproc)" \
    "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)" \
    "$(awk '/MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)" "$(uname -r)"
}
spend_rev() {
  local r
  r=$(git -C "$SPEND_ROOT" rev-parse --short HEAD 2>/dev/null || echo "no commit")
  [[ -z $(git -C "$SPEND_ROOT" status --porcelain -- db cli migrations deploy 2>/dev/null) ]] || r="$r + uncommitted changes"
  echo "$r"
}
