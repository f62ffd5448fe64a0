#!/usr/bin/env bash
# Builds and runs the libFuzzer targets: every tests/fuzz/fuzz_NAME.c, each
# for FUZZ_SECONDS (default 30) starting from the seed corpus
# tests/fuzz/corpus/NAME/. Fails if any target does not build or finds a
# crash, leak, timeout or sanitizer report.
#
#   scripts/fuzz.sh              every target
#   scripts/fuzz.sh sse json     only fuzz_sse.c and fuzz_json.c
#   FUZZ_SECONDS=300 scripts/fuzz.sh sse
#
# The library sources (lib, router, providers, db, server, cli minus
# cli/main.c) are compiled once with fuzzer instrumentation into an archive,
# so each target links only the objects it uses. A source or a target that
# does not compile fails the run (exit 1, naming the file and the first
# errors): a fuzzer that silently stops being built fuzzes nothing.
#
# make fuzz-ci (CI) runs every target for FUZZ_SECONDS=20.
#
# Objects and binaries go to build/fuzz/; the corpus each run grows and any
# crash reproducer go to fuzz-out/NAME/ (both are git-ignored). Reproduce a
# crash with: build/fuzz/fuzz_NAME fuzz-out/NAME/crash-...
set -uo pipefail

cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-30}
CC=${FUZZ_CC:-clang}
BUILD=build/fuzz
OUT=fuzz-out
PKGS="libevent libcurl json-c msgpack libpq openssl"

SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CFLAGS="-std=gnu11 -g -O1 -Wall -Wno-unused-parameter -D_GNU_SOURCE -I. $SAN"

# Only the packages that are installed, so a missing one does not stop the
# targets that never needed it.
pkg_cflags=""
pkg_libs=""
for p in $PKGS; do
    if pkg-config --exists "$p" 2>/dev/null; then
        pkg_cflags="$pkg_cflags $(pkg-config --cflags "$p")"
        pkg_libs="$pkg_libs $(pkg-config --libs "$p")"
    fi
done
if pkg-config --exists libevent_openssl 2>/dev/null; then
    pkg_libs="$pkg_libs $(pkg-config --libs libevent_openssl)"
fi

die() {
    echo "fuzz.sh: $*" >&2
    exit 1
}

command -v "$CC" >/dev/null || die "$CC not found (libFuzzer needs clang)"

# ---------------------------------------------------------------- library

# Newest header: a change to any header rebuilds every object.
newest_header=$(find lib router providers db server cli -name '*.h' 2>/dev/null | xargs -r ls -t | head -n 1)

build_library() {
    local objs=() src obj
    for src in lib/*.c router/*.c providers/*.c db/*.c server/*.c cli/*.c; do
        [ -f "$src" ] || continue
        [ "$src" = cli/main.c ] && continue
        obj="$BUILD/obj/${src%.c}.o"
        mkdir -p "$(dirname "$obj")"
        if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] ||
            { [ -n "$newest_header" ] && [ "$newest_header" -nt "$obj" ]; }; then
            if ! $CC $CFLAGS -fsanitize=fuzzer-no-link $pkg_cflags -c "$src" -o "$obj" 2>"$obj.err"; then
                grep -m 5 'error' "$obj.err" >&2
                rm -f "$obj"
                die "$src does not compile with $CC (the library the fuzz targets link); full output in $obj.err"
            fi
        fi
        objs+=("$obj")
    done
    rm -f "$BUILD/libbridle-fuzz.a"
    ar rcs "$BUILD/libbridle-fuzz.a" "${objs[@]}" || die "ar failed"
}

# ---------------------------------------------------------------- targets

build_target() {
    local name=$1
    $CC $CFLAGS -fsanitize=fuzzer $pkg_cflags "tests/fuzz/fuzz_$name.c" \
        "$BUILD/libbridle-fuzz.a" $pkg_libs -lm -o "$BUILD/fuzz_$name" 2>"$BUILD/fuzz_$name.err"
    local rc=$?
    [ $rc -eq 0 ] || grep -m 5 'error' "$BUILD/fuzz_$name.err" >&2
    return $rc
}

run_target() {
    local name=$1
    local dirs=("$OUT/$name/corpus")
    mkdir -p "$OUT/$name/corpus"
    [ -d "tests/fuzz/corpus/$name" ] && dirs+=("tests/fuzz/corpus/$name")
    echo "== fuzz_$name: ${FUZZ_SECONDS}s"
    "$BUILD/fuzz_$name" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$OUT/$name/" "${dirs[@]}" \
        >"$OUT/$name/log" 2>&1
    local rc=$?
    local execs
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$OUT/$name/log")
    if [ $rc -ne 0 ]; then
        tail -n 40 "$OUT/$name/log" >&2
        echo "== fuzz_$name: FAILED (exit $rc); reproducer in $OUT/$name/" >&2
        return 1
    fi
    echo "== fuzz_$name: ok, ${execs:-?} executions (log: $OUT/$name/log)"
}

mkdir -p "$BUILD" "$OUT"

if [ $# -gt 0 ]; then
    names=("$@")
else
    names=()
    for f in tests/fuzz/fuzz_*.c; do
        [ -f "$f" ] || continue
        n=${f#tests/fuzz/fuzz_}
        names+=("${n%.c}")
    done
fi
[ ${#names[@]} -gt 0 ] || die "no targets in tests/fuzz/"

for name in "${names[@]}"; do
    [ -f "tests/fuzz/fuzz_$name.c" ] || die "no tests/fuzz/fuzz_$name.c"
done
build_library
# Every target is built before any runs: one that does not compile fails the
# run at once instead of after the others have fuzzed.
for name in "${names[@]}"; do
    build_target "$name" || die "tests/fuzz/fuzz_$name.c does not compile or link; full output in $BUILD/fuzz_$name.err"
done
start=$(date +%s)
failed=()
for name in "${names[@]}"; do
    run_target "$name" || failed+=("$name")
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: ${#names[@]} targets, FAILED: ${failed[*]} (reproducers in $OUT/NAME/)" >&2
    echo "fuzz: $((${#names[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
    exit 1
fi
echo "fuzz: ${#names[@]} targets, ${FUZZ_SECONDS}s each, no crash ($(($(date +%s) - start)) s)"
echo "fuzz: ${#names[@]} passed, 0 failed"
