#!/usr/bin/env bash
# Runs cmocka test binaries, prints their output, sums their counts.
#   scripts/run-unit-tests.sh build/tests/router/test_pricing ...
# Last line: "unit: N passed, N failed". Exit 1 when a test failed or a binary
# crashed / exited non-zero without reporting a failure.
set -uo pipefail

passed=0 failed=0 broken=()
for bin in "$@"; do
  echo "== $bin"
  if [[ ! -x $bin ]]; then
    echo "   not an executable"
    broken+=("$bin (missing)")
    continue
  fi
  out=$("$bin" 2>&1)
  rc=$?
  printf '%s\n' "$out"
  # cmocka: "[  PASSED  ] 3 test(s)." and "[  FAILED  ] 1 test(s), listed below:"
  p=$(sed -n 's/^\[  PASSED  \] \([0-9][0-9]*\) test(s)\..*/\1/p' <<<"$out" | awk '{s+=$1} END {print s+0}')
  f=$(sed -n 's/^\[  FAILED  \] \([0-9][0-9]*\) test(s).*/\1/p' <<<"$out" | awk '{s+=$1} END {print s+0}')
  passed=$((passed + p))
  failed=$((failed + f))
  if ((rc != 0 && f == 0)); then
    if ((rc > 128)); then
      broken+=("$bin (killed by signal $((rc - 128)))")
    else
      broken+=("$bin (exit $rc)")
    fi
  elif ((rc == 0 && p == 0 && f == 0)); then
    broken+=("$bin (no cmocka summary)")
  fi
done

for b in "${broken[@]}"; do echo "BROKEN: $b"; done
echo "unit: $passed passed, $failed failed"
((failed == 0 && ${#broken[@]} == 0))
