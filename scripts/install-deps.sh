#!/usr/bin/env bash
# Installs what bridle needs to build, run and test (Debian 12), then the
# integration suite's npm packages. Fast and silent when everything is there.
#   scripts/install-deps.sh           everything
#   NO_NPM=1 scripts/install-deps.sh  skip tests/integration/node_modules
#   TEST_PKGS=1 scripts/install-deps.sh  also what only the tests use (prometheus)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PKGS=(build-essential pkg-config libevent-dev libcurl4-openssl-dev libjson-c-dev
      libmsgpack-dev libpq-dev libssl-dev libcmocka-dev postgresql clang curl valgrind)
# The tests also scrape GET /metrics with a real Prometheus and promtool
# (tests/integration/metrics.test.mjs); `make run` does not need them.
[[ ${TEST_PKGS:-0} == 1 ]] && PKGS+=(prometheus)
# nodejs/npm only when there is no node at all (NodeSource's nodejs bundles npm).
command -v node >/dev/null 2>&1 || PKGS+=(nodejs npm)

missing=()
for p in "${PKGS[@]}"; do
  st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
  [[ $st == ii* ]] || missing+=("$p")
done

if ((${#missing[@]})); then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: not a Debian system; install the equivalents of: ${missing[*]}" >&2
    exit 1
  fi
  SUDO=()
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      SUDO=(sudo)
    else
      echo "install-deps: missing packages and not root (no sudo). Please run as root:" >&2
      echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
      exit 1
    fi
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Integration suite: npm ci when node_modules is missing or package.json /
# package-lock.json changed since the last install.
if [[ -z ${NO_NPM:-} && -f tests/integration/package.json ]]; then
  (
    cd tests/integration
    stamp=node_modules/.bridle-deps-stamp
    digest() { cat package.json; [[ ! -f package-lock.json ]] || cat package-lock.json; }
    want=$(digest | sha256sum | cut -d' ' -f1)
    if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
      echo "install-deps: npm packages for tests/integration"
      if [[ -f package-lock.json ]]; then
        npm ci --no-audit --no-fund --loglevel=error ||
          npm install --no-audit --no-fund --loglevel=error
      else
        npm install --no-audit --no-fund --loglevel=error
      fi
      # the lock may have been rewritten by npm install: stamp what is there now
      digest | sha256sum | cut -d' ' -f1 >"$stamp"
    fi
  )
fi
