#!/usr/bin/env bash
# Runs the integration suite (node's built-in test runner) against the binaries
# in $BUILD (default build/; build-asan/ for the sanitizer pass).
#   scripts/run-integration-tests.sh                      every tests/integration/*.test.mjs
#   scripts/run-integration-tests.sh tests/integration/smoke.test.mjs
# Env: BUILD, TEST_CONCURRENCY (default 2), TEST_TIMEOUT_MS (per test, default
# 120000), INTEGRATION_FILE_TIMEOUT_S (per file, default 300, ×3 for an ASan
# build: a file still running then fails with "FILE timed out after N s"),
# INTEGRATION_TIMEOUT_S (the whole run, default 900, ×2 for ASan),
# BRIDLE_TEST_VERBOSE=1 (echo the children's stderr).
# Last line: "integration: N passed, N failed"; exit status is node's.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
export BUILD=${BUILD:-build}

for b in bridle bridle-mock; do
  [[ -x $BUILD/$b ]] || { echo "integration: $BUILD/$b is not built (make BUILD=$BUILD)" >&2; echo "integration: 0 passed, 1 failed"; exit 1; }
done
command -v node >/dev/null || { echo "integration: node is not installed (make deps)" >&2; exit 1; }
if [[ ! -d tests/integration/node_modules ]]; then
  scripts/install-deps.sh || exit 1
fi

if (($#)); then files=("$@"); else files=(tests/integration/*.test.mjs); fi
[[ -e ${files[0]} ]] || { echo "integration: 0 passed, 0 failed (no test files)"; exit 0; }

mkdir -p "$BUILD"
tap=$BUILD/integration.tap
slow=1
if [[ $BUILD == *asan* ]]; then
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
  slow=3
fi
# The per-file bound (enforced by tests/integration/lib/harness.mjs, which
# every file imports) must stay below the whole run's.
export BRIDLE_FILE_TIMEOUT_S=${INTEGRATION_FILE_TIMEOUT_S:-$((300 * slow))}
run_timeout=${INTEGRATION_TIMEOUT_S:-$((slow > 1 ? 1800 : 900))}

timeout -k 10 "$run_timeout" node --test \
  --test-concurrency="${TEST_CONCURRENCY:-2}" \
  --test-timeout="${TEST_TIMEOUT_MS:-120000}" \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$tap" \
  "${files[@]}"
rc=$?

count() { sed -n "s/^# $1 \([0-9][0-9]*\)$/\1/p" "$tap" 2>/dev/null | tail -n1; }
pass=$(count pass)
fail=$(count fail)
cancelled=$(count cancelled)
fail=$(( ${fail:-0} + ${cancelled:-0} ))
((rc == 124)) && echo "integration: the whole run timed out"
if ((rc != 0 && fail == 0)); then fail=1; fi
echo "integration: ${pass:-0} passed, $fail failed"
exit $rc
