#!/usr/bin/env bash
# The layering docs/design.md draws, checked on the includes:
#   cli -> server -> router -> providers, router -> db; lib under all.
# Nothing below includes a header from above it, and only router/ starts
# provider calls. Prints "layers: N passed, N failed".
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
pass=0 fail=0
rule() { # rule NAME DIRS FORBIDDEN-REGEX
  local hits
  hits=$(grep -nE "#include \"($3)/" $2 2>/dev/null || true)
  if [[ -n $hits ]]; then
    echo "layers: $1 broken:"; echo "$hits"; fail=$((fail + 1))
  else pass=$((pass + 1)); fi
}
rule "lib includes nothing of bridle's modules" "lib/*.[ch]" "server|cli|router|providers|db"
rule "db is below router" "db/*.[ch]" "server|cli|router|providers"
rule "providers are below router" "providers/*.[ch]" "server|cli|router|db"
rule "router is below server" "router/*.[ch]" "server|cli"
rule "server is below cli" "server/*.[ch]" "cli"
calls=$(grep -nE 'engine_call_(start|cancel)' server/*.c cli/*.c db/*.c 2>/dev/null || true)
if [[ -n $calls ]]; then echo "layers: only router/ starts provider calls:"; echo "$calls"; fail=$((fail + 1)); else pass=$((pass + 1)); fi
echo "layers: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
