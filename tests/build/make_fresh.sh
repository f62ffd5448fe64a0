#!/usr/bin/env bash
# The Makefile on a machine that lacks the -dev packages (a fresh Debian 12):
# the first `make`, `make run` must install them (DEPS_CMD) before anything
# is compiled, and compile with pkg-config's flags. Runs make in a copy of
# the tree with a fake pkg-config on PATH that finds nothing until a fake
# install step created a stamp file; the compiler is real for one object
# that needs libpq-fe.h, and a fake one (records its arguments) for whole
# builds, so the test takes seconds.
#   tests/build/make_fresh.sh          last line "build: N passed, N failed"
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MAKE=${MAKE:-make}
REAL_PKG_CONFIG=$(command -v pkg-config) || { echo "build: pkg-config is not installed (make deps)" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/bridle-make-fresh.XXXXXX")
trap '[[ -n ${KEEP:-} ]] || rm -rf "$TMP"' EXIT
FAKE=$TMP/bin
mkdir -p "$FAKE"

# pkg-config that knows nothing until the "install" ran (as on a fresh machine)
cat >"$FAKE/pkg-config" <<EOF
#!/bin/sh
[ -f "$TMP/installed" ] || exit 1
exec "$REAL_PKG_CONFIG" "\$@"
EOF
# the install step: counts its runs, then pkg-config finds everything
cat >"$FAKE/install" <<EOF
#!/bin/sh
echo install >>"$TMP/install.log"
touch "$TMP/installed"
EOF
# an install step that "succeeds" but leaves pkg-config unable to find anything
cat >"$FAKE/install-nothing" <<EOF
#!/bin/sh
echo install >>"$TMP/install.log"
EOF
# a compiler that records its command line and makes the output file
cat >"$FAKE/fake-cc" <<EOF
#!/bin/sh
echo "\$*" >>"$TMP/cc.log"
while [ \$# -gt 0 ]; do
  if [ "\$1" = -o ]; then mkdir -p "\$(dirname "\$2")" && : >"\$2"; fi
  shift
done
EOF
# run.sh stand-in for `make run`: says what it found
cat >"$FAKE/run" <<EOF
#!/bin/sh
echo "run \$1: \$(ls "$TMP/src/build/bridle" "$TMP/src/build/bridle-mock" 2>&1 | tr '\n' ' ')" >>"$TMP/run.log"
EOF
chmod +x "$FAKE"/*

# the tree as it is now (tracked and new files), without build output
mkdir -p "$TMP/src"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard -- . ':!tests/integration/node_modules' |
  xargs -0 tar -cf - 2>/dev/null) | tar -xf - -C "$TMP/src"

pass=0 fail=0
ok() { echo "ok   - $1"; pass=$((pass + 1)); }
no() {
  echo "FAIL - $1"
  shift
  for f in "$@"; do [[ -f $f ]] && { echo "  --- $(basename "$f")"; tail -n 20 "$f" | sed 's/^/  /'; }; done
  fail=$((fail + 1))
}
fresh() { rm -rf "$TMP/src/build" "$TMP/installed" "$TMP"/*.log; }
# make in the copy, fake tools first on PATH; output in $TMP/make.out
mk() { (cd "$TMP/src" && PATH="$FAKE:$PATH" timeout 120 "$MAKE" --no-print-directory "$@") >"$TMP/make.out" 2>&1; }
installs() { [[ -f $TMP/install.log ]] && wc -l <"$TMP/install.log" || echo 0; }
want_cflags=$("$REAL_PKG_CONFIG" --cflags libpq)
want_cflags=${want_cflags%% } # "-I/usr/include/postgresql"

# 1. The reported failure: the first compile of a file that includes
#    libpq-fe.h, with the real compiler, on a machine without the packages.
fresh
if mk -j2 DEPS_CMD="$FAKE/install" build/obj/db/pgconn.o && [[ -f $TMP/src/build/obj/db/pgconn.o ]]; then
  if [[ $(installs) == 1 ]]; then ok "first make of an object that includes libpq-fe.h installs the packages first, then compiles"; else no "install ran $(installs) times, want 1" "$TMP/make.out"; fi
else
  no "first make of build/obj/db/pgconn.o on a fresh machine fails" "$TMP/make.out"
fi

# 2. `make -j2` (all): every compile line has pkg-config's flags.
fresh
if mk -j2 DEPS_CMD="$FAKE/install" CC="$FAKE/fake-cc"; then
  n=$(grep -c -- ' -c ' "$TMP/cc.log")
  bad=$(grep -- ' -c ' "$TMP/cc.log" | grep -vc -- "$want_cflags")
  if [[ $(installs) == 1 && $n -gt 10 && $bad == 0 && -f $TMP/src/build/bridle && -f $TMP/src/build/bridle-mock ]]; then
    ok "first make -j2: install once, then $n compiles, all with $want_cflags"
  else
    no "first make -j2: installs=$(installs) compiles=$n without-flags=$bad" "$TMP/make.out" "$TMP/cc.log"
  fi
else
  no "first make -j2 fails" "$TMP/make.out"
fi

# 3. Packages present now: a plain make neither installs again nor rebuilds.
if mk -j2 DEPS_CMD="$FAKE/install" CC="$FAKE/fake-cc" && [[ $(installs) == 1 ]]; then
  ok "with the packages there, make runs no install step"
else
  no "second make: installs=$(installs)" "$TMP/make.out"
fi

# 4. `make -j2 run`: install, the whole build, then run.sh, in that order.
fresh
if mk -j2 run DEPS_CMD="$FAKE/install" CC="$FAKE/fake-cc" RUN_CMD="$FAKE/run"; then
  bad=$(grep -- ' -c ' "$TMP/cc.log" | grep -vc -- "$want_cflags")
  if [[ $bad == 0 && $(installs) -ge 1 ]] && grep -q '^run start: .*build/bridle .*build/bridle-mock' "$TMP/run.log" 2>/dev/null &&
    ! grep -q 'No such file' "$TMP/run.log"; then
    ok "first make -j2 run: installs, builds with the flags, then starts"
  else
    no "first make -j2 run: installs=$(installs) compiles-without-flags=$bad" "$TMP/make.out" "$TMP/run.log" "$TMP/cc.log"
  fi
else
  no "first make -j2 run fails" "$TMP/make.out"
fi

# 5. An install that does not bring pkg-config's flags: make stops with the
#    reason after one attempt (no restart loop, nothing compiled).
fresh
if mk -j2 DEPS_CMD="$FAKE/install-nothing" CC="$FAKE/fake-cc"; then
  no "make succeeded although pkg-config found nothing" "$TMP/make.out"
elif grep -q 'pkg-config still finds no flags' "$TMP/make.out" && [[ $(installs) == 1 && ! -f $TMP/cc.log ]]; then
  ok "pkg-config still failing after the install: make stops with the reason, compiles nothing"
else
  no "no clear stop: installs=$(installs)" "$TMP/make.out" "$TMP/cc.log"
fi

# 6. Goals that compile nothing do not install anything.
fresh
if mk clean DEPS_CMD="$FAKE/install" && [[ $(installs) == 0 ]]; then
  ok "make clean on a fresh machine installs nothing"
else
  no "make clean: installs=$(installs)" "$TMP/make.out"
fi

echo "build: $pass passed, $fail failed"
((fail == 0))
