#!/usr/bin/env bash
# Builds and runs the spool crash-consistency test (tests/db/spool_crash_test.c)
# and, with BENCH=1, the spool micro-benchmark (tests/db/spool_bench.c).
#
#   tests/db/spool_crash.sh            build + crash test
#   tests/db/spool_crash.sh 12345      ... with a fixed seed
#   BENCH=1 tests/db/spool_crash.sh    ... then the benchmark
#
# Uses its own build directory (SPOOL_BUILD, default build/spool-crash).
# Exits non-zero on any failure; the last line is "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/../.."

B=${SPOOL_BUILD:-build/spool-crash}
CC=${CC:-cc}
CFLAGS="-std=gnu11 -O2 -g -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -D_GNU_SOURCE -I."
LIBS="$(pkg-config --libs msgpack 2>/dev/null || echo -lmsgpackc) -lpthread"

mkdir -p "$B"
build() {
    # Only what the spool needs: db/spool.c and lib/log.c.
    $CC $CFLAGS -o "$B/$1" "tests/db/$1.c" db/spool.c lib/log.c $LIBS
}
if ! build spool_crash_test; then
    echo "spool_crash: build failed"
    echo "0 passed, 1 failed"
    exit 1
fi

brc=0
if [ "${BENCH:-0}" = 1 ]; then
    { build spool_bench && "$B/spool_bench"; } || brc=1
fi
"$B/spool_crash_test" "$@"
rc=$?
[ $brc = 0 ] || { echo "spool_bench failed"; rc=1; }
if [ $rc -gt 1 ]; then
    echo "0 passed, 1 failed (exit $rc)"
fi
exit $rc
