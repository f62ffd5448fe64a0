#!/usr/bin/env bash
# make bench: side-by-side load test of bridle (without and with the usage
# ledger) against direct / nginx / Portkey (the shared harness
# ../shared/bench/sidebyside.sh), the SSE variant, bridle's CPU time per
# request, and a callgrind count of instructions per request without and with
# the ledger; appends a dated section to bench/RESULTS.md.
#
# Targets: bench/targets/bridle.sh (no database section) and
# bench/targets/bridle-ledger.sh (the same plus `database`: a throwaway local
# PostgreSQL it starts and stops itself, bench/lib/pg.sh). The callgrind step
# does the same for its ledger run.
#
# Env:
#   BENCH_PEERS="direct nginx portkey"   targets run before bridle ("direct nginx" skips npm)
#   BENCH_ONLY=all|sidebyside|callgrind  which parts to run (default all)
#   BENCH_LEDGER=1                       0: leave out bridle-ledger and the ledger's callgrind run
#   BENCH_LIMITS=1                       0: leave out bridle-limits (ledger + a budget and rate limits on the
#                                        bench key) and its callgrind run
#   BENCH_WORKERS=1                      0: leave out bridle-2w (`--workers 2` on the proxy core; instructions per
#                                        request for it: bench/workers_callgrind.sh)
#   BENCH_CACHE=1                        0: leave out the response cache's callgrind runs (ledger on, every
#                                        request a hit; every request a miss that stores its answer)
#   BENCH_DURATION=10 BENCH_WARMUP=3     wrk seconds per run
#   CALLGRIND_N=2000 CALLGRIND_WARMUP=200
#   CALLGRIND_RUNS=3                     base/measured pairs per configuration; the record gives the median and each
#   CALLGRIND_COMPARE=/path/to/bridle    another build, measured in alternation with this one (same machine noise
#                                        for both); the record gives both medians and the difference
#   CALLGRIND_GOAL=136800 CALLGRIND_GOAL_LEDGER=157500   instructions per request the record compares to (issue 10)
#   SHARED_BENCH=<repo>/../shared/bench  where sidebyside.sh lives (else <repo>/../../shared/bench)
#   PEERS_DIR=<repo>/bench/.peers        where the harness npm-installs Portkey (the shared dir is read-only)
#   PG_BIN=/usr/lib/postgresql/15/bin    PostgreSQL server binaries (default: the newest installed)
#   BENCH_NO_RECORD=1                    do not touch bench/RESULTS.md
# shellcheck disable=SC2054,SC2016,SC2094  # commas are wrk args; backticks are Markdown
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# ../shared/bench beside the checkout (/work/main), or two up (a worktree in /work/wt/NAME)
if [[ -z ${SHARED_BENCH:-} ]]; then
  SHARED_BENCH=$ROOT/../shared/bench
  [[ -x $SHARED_BENCH/sidebyside.sh || ! -x $ROOT/../../shared/bench/sidebyside.sh ]] || SHARED_BENCH=$ROOT/../../shared/bench
fi
BRIDLE=${BRIDLE_BIN:-$ROOT/build/bridle}
MOCK=${BRIDLE_MOCK_BIN:-$ROOT/build/bridle-mock}
TARGET=$ROOT/bench/targets/bridle.sh
TARGET_LEDGER=$ROOT/bench/targets/bridle-ledger.sh
LEDGER=${BENCH_LEDGER:-1}
TARGETS=("$TARGET")
[[ $LEDGER == 0 ]] || TARGETS+=("$TARGET_LEDGER")
LIMITS=${BENCH_LIMITS:-$LEDGER}
CACHE=${BENCH_CACHE:-$LEDGER}
[[ $LIMITS == 0 ]] || TARGETS+=("$ROOT/bench/targets/bridle-limits.sh")
[[ $CACHE == 0 ]] || TARGETS+=("$ROOT/bench/targets/bridle-cache-miss.sh" "$ROOT/bench/targets/bridle-cache-hit.sh")
# two workers sharing the port (issue 15): CPU per request against bridle's, and the split (run/bridle-2w-d*/bridle-2w.split)
[[ ${BENCH_WORKERS:-1} == 0 ]] || TARGETS+=("$ROOT/bench/targets/bridle-2w.sh")
# shellcheck source=bench/lib/bridle.sh disable=SC1091
. "$ROOT/bench/lib/bridle.sh"   # BRIDLE_BENCH_LIMITS_EXTRA
export PEERS_DIR=${PEERS_DIR:-$ROOT/bench/.peers}
# The runs without the ledger must not get one from the environment
# (database.url defaults to $DATABASE_URL).
unset DATABASE_URL
CG_GOAL=${CALLGRIND_GOAL:-136800}
CG_GOAL_LEDGER=${CALLGRIND_GOAL_LEDGER:-157500}
MAX_FOREIGN=${MAX_FOREIGN:-15}
read -r -a PEERS <<<"${BENCH_PEERS:-direct nginx portkey}"
ONLY=${BENCH_ONLY:-all}
DUR=${BENCH_DURATION:-10}
WARM=${BENCH_WARMUP:-3}
CG_N=${CALLGRIND_N:-2000}
CG_WARM=${CALLGRIND_WARMUP:-200}
CG_RUNS=${CALLGRIND_RUNS:-3}
CG_CMP=${CALLGRIND_COMPARE:-}
CG_BUILDS=(this)
[[ -z $CG_CMP ]] || CG_BUILDS+=(compare)
[[ -z $CG_CMP || -x $CG_CMP ]] || { echo "bench: CALLGRIND_COMPARE=$CG_CMP is not an executable" >&2; exit 1; }
TS=$(date +%Y%m%d-%H%M%S)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
# the command as given, for the record
RUN_CMD="bench/run.sh"
for v in CALLGRIND_RUNS CALLGRIND_WARMUP CALLGRIND_N BENCH_WARMUP BENCH_DURATION BENCH_LEDGER BENCH_LIMITS BENCH_CACHE BENCH_WORKERS BENCH_ONLY BENCH_PEERS; do
  [[ -z ${!v:-} ]] || RUN_CMD="$v=${!v// /\\ } $RUN_CMD"
done
OUT=$ROOT/bench/results/$TS
mkdir -p "$OUT"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- tools -------------------------------------------------------------------
need=()
for p in wrk nginx-light libnginx-mod-http-echo curl valgrind; do
  [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true) == ii* ]] || need+=("$p")
done
if ((${#need[@]})); then
  log "installing ${need[*]}"
  SUDO=()
  [[ $(id -u) -eq 0 ]] || SUDO=(sudo)
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[[ -x $BRIDLE ]] || { echo "bench: $BRIDLE not built (make)" >&2; exit 1; }

# --- side by side ----------------------------------------------------------------
JSON_CMD=(-c 1,64,256 -D 0,50 -d "$DUR" -w "$WARM" "${PEERS[@]}" "${TARGETS[@]}")
STREAM_CMD=(--stream -c 16,64 -D 0 -d "$DUR" -w "$WARM" "${PEERS[@]}" "${TARGETS[@]}")
json_rc=- stream_rc=-
if [[ $ONLY == all || $ONLY == sidebyside ]]; then
  [[ -x $SHARED_BENCH/sidebyside.sh ]] || { echo "bench: $SHARED_BENCH/sidebyside.sh not found (set SHARED_BENCH)" >&2; exit 1; }
  log "side by side, JSON: sidebyside.sh ${JSON_CMD[*]}"
  json_rc=0
  "$SHARED_BENCH/sidebyside.sh" -o "$OUT/json" "${JSON_CMD[@]}" || json_rc=$?
  log "side by side, SSE: sidebyside.sh ${STREAM_CMD[*]}"
  stream_rc=0
  "$SHARED_BENCH/sidebyside.sh" -o "$OUT/stream" "${STREAM_CMD[@]}" || stream_rc=$?
fi

# --- callgrind: instructions per request ------------------------------------------
port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
# A random start: two runs of this script (other worktrees) that picked the
# same port must not serve each other's requests (seen when bridle still
# listened with SO_REUSEPORT: +200 requests, +15,000 instructions per
# request; bridle now refuses an address in use). listeners() checks too.
free_port() { local p=$((20000 + RANDOM % 20000)); while port_busy "$p"; do p=$((p + 1)); done; echo "$p"; }
listeners() { ss -Hltn "sport = :$1" 2>/dev/null | wc -l; }
CG_PIDS=() # started and not yet waited for: only these are signalled on exit
forget_pid() { local p keep=(); for p in "${CG_PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done; CG_PIDS=("${keep[@]}"); }
# shellcheck source=bench/lib/pg.sh disable=SC1091
. "$ROOT/bench/lib/pg.sh"
cleanup() {
  local p
  for p in "${CG_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  # bridle drains its ledger into PostgreSQL on SIGTERM: give it a moment
  for p in "${CG_PIDS[@]}"; do
    for _ in {1..50}; do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  bench_pg_stop
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_line() { # FILE PATTERN PID SECONDS
  local i
  for ((i = 0; i < $4 * 10; i++)); do
    grep -q -- "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# Sequential keep-alive POSTs with node (no per-request process start-up).
send_requests() { # URL KEY WARMUP N; $CG_HEADERS: more request headers, as a JSON object
  node - "$@" "${CG_HEADERS:-{\}}" <<'JS'
const http = require('node:http');
const [url, key, warm, n, more] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
let shown = 0;
const body = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Hello, how are you today?' }] });
const one = () => new Promise((resolve, reject) => {
  const req = http.request(url, { method: 'POST', agent, headers: {
    'content-type': 'application/json', 'content-length': Buffer.byteLength(body), authorization: `Bearer ${key}`,
    ...JSON.parse(more) } },
    (res) => { let b = ''; res.on('data', (d) => { if (b.length < 300) b += d; });
      res.on('end', () => { if (res.statusCode !== 200 && !shown++) console.error(`first non-200: ${res.statusCode} ${b}`);
        resolve(res.statusCode); }); });
  req.on('error', reject); req.end(body);
});
(async () => {
  let bad = 0;
  const total = Number(warm) + Number(n);
  for (let i = 0; i < total; i++) if ((await one()) !== 200) bad++;
  agent.destroy();
  if (bad) { console.error(`${bad} of ${total} requests were not 200`); process.exit(1); }
})().catch((e) => { console.error(e); process.exit(1); });
JS
}

# Runs in this shell (not $(...)), so cleanup knows its pid. Retried (up
# to 3 times, on a new port) when another process listens on its port.
callgrind_run() { # NAME CONFIG_TEMPLATE REQUESTS [valgrind|plain] → sets CG_IR (Ir total)
  local try rc
  for try in 1 2 3; do
    rc=0
    callgrind_run1 "$@" || rc=$?
    ((rc == 2)) || return "$rc"
    log "  $1: another process listened on the same port: run again (try $((try + 1)))"
  done
  return 1
}
callgrind_run1() { # returns 2 when the port was shared
  local name=$1 tmpl=$2 n=$3 how=${4:-valgrind} port pid out=$OUT/callgrind
  CG_IR=""
  local -a pre=()
  [[ $how == plain ]] || pre=(valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.$name.out")
  port=$(free_port)
  sed -e "s/@PORT@/$port/" -e "s|@SPOOL@|$out/spool-$name|" "$tmpl" >"$out/bridle-$name.json"
  "${pre[@]}" "${CG_BIN:-$BRIDLE}" serve --config "$out/bridle-$name.json" --listen "127.0.0.1:$port" \
    >"$out/bridle-$name.log" 2>&1 </dev/null &
  pid=$!
  CG_PIDS+=("$pid")
  wait_line "$out/bridle-$name.log" "listening on" "$pid" 120 ||
    { tail -n 30 "$out/bridle-$name.log" >&2; echo "bench: bridle ($name) did not start" >&2; kill -TERM "$pid" 2>/dev/null; wait "$pid" || true; forget_pid "$pid"; return 1; }
  local shared=0
  (($(listeners "$port") == 1)) || shared=1
  ((shared)) || send_requests "http://127.0.0.1:$port/v1/chat/completions" "$CG_KEY" "$CG_WARM" "$n" ||
    { kill -TERM "$pid"; wait "$pid" || true; forget_pid "$pid"; return 1; }
  (($(listeners "$port") == 1)) || shared=1
  kill -TERM "$pid"
  wait "$pid" || true
  forget_pid "$pid"
  ((shared == 0)) || return 2
  [[ $how == plain ]] && return 0
  # SIGTERM drains the ledger: every event of the run is in PostgreSQL by now
  # (a warning in the log otherwise).
  if grep -q "not yet in the database" "$out/bridle-$name.log"; then
    echo "bench: bridle ($name) stopped with ledger events not in the database: $(grep -m1 'not yet' "$out/bridle-$name.log")" >&2
  fi
  CG_IR=$(sed -n 's/^\(summary\|totals\): *\([0-9]*\).*/\2/p' "$out/callgrind.$name.out" | head -n1)
  [[ -n $CG_IR ]]
}

median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2)}'; }

# callgrind_pair LABEL TEMPLATE: CALLGRIND_RUNS times a base run (start,
# warm-up, SIGTERM) and a measured run (the same + CALLGRIND_N requests);
# sets CG_PER (median instructions per request) and CG_DETAIL, or returns 1.
# With CALLGRIND_COMPARE, each round also runs that build (CG_PER_CMP).
# On a quiet machine one pair agrees with the next within ±250; with other
# work on the machine the figures spread over ±2,000 and come out LOWER
# (up to −5,000: under load more happens per pass of the event loop), so
# compare quiet runs, or two builds in alternation (CALLGRIND_COMPARE).
callgrind_pair() {
  local label=$1 tmpl=$2 ir0 irn r bin tag all=() allc=() detail=""
  CG_PER="" CG_DETAIL="" CG_PER_CMP=""
  for ((r = 1; r <= CG_RUNS; r++)); do
    for bin in "$BRIDLE" ${CG_CMP:+"$CG_CMP"}; do
      tag=$label
      [[ $bin == "$BRIDLE" ]] || tag=$label-compare
      CG_BIN=$bin
      callgrind_run "$tag-base-$r" "$tmpl" 0 || return 1
      ir0=$CG_IR
      callgrind_run "$tag-measured-$r" "$tmpl" "$CG_N" || return 1
      irn=$CG_IR
      CG_BIN=""
      if [[ $tag == "$label" ]]; then
        all+=($(((irn - ir0) / CG_N)))
        detail+="${detail:+, }($irn - $ir0) / $CG_N"
      else
        allc+=($(((irn - ir0) / CG_N)))
      fi
      log "  $tag run $r: $(((irn - ir0) / CG_N)) instructions per request"
    done
  done
  CG_PER=$(printf '%s\n' "${all[@]}" | median)
  CG_DETAIL="[median of $CG_RUNS: ${all[*]}; $detail; each run: start, $CG_WARM warm-up requests, SIGTERM; load average before: $CG_LOAD]"
  if ((${#allc[@]})); then
    CG_PER_CMP=$(printf '%s\n' "${allc[@]}" | median)
    CG_DETAIL+=" [in alternation with CALLGRIND_COMPARE=$CG_CMP: median $CG_PER_CMP (${allc[*]}); this build minus that one: $((CG_PER - CG_PER_CMP))]"
  fi
  callgrind_annotate "$OUT/callgrind/callgrind.$label-measured-1.out" 2>/dev/null | head -n 60 >"$OUT/callgrind/top.$label.txt" || true
}

goal_note() { # PER GOAL
  if (($1 <= $2)); then printf 'goal ≤ %s: met' "$2"; else printf 'goal ≤ %s: NOT met (+%s)' "$2" "$(($1 - $2))"; fi
}

CG_RESULT="" CG_RESULT_LEDGER="" CG_RESULT_LIMITS="" CG_RESULT_CACHE="" CG_OK=1
if [[ $ONLY == all || $ONLY == callgrind ]]; then
  log "callgrind: $CG_WARM warm-up + $CG_N measured requests vs $CG_WARM warm-up only"
  mkdir -p "$OUT/callgrind"
  mport=$(free_port)
  "$MOCK" --listen "127.0.0.1:$mport" >"$OUT/callgrind/mock.log" 2>&1 </dev/null &
  mpid=$!
  CG_PIDS+=("$mpid")
  wait_line "$OUT/callgrind/mock.log" "listening on" "$mpid" 10 || { echo "bench: bridle-mock did not start" >&2; exit 1; }
  CG_KEY=bk-bench-callgrind
  CG_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
  sha=$(printf '%s' "$CG_KEY" | sha256sum | cut -d' ' -f1)
  cat >"$OUT/callgrind/bridle.json.in" <<CONF
{
  "log_level": "warn",
  "providers": { "upstream": { "kind": "openai", "base_url": "http://127.0.0.1:$mport/v1", "api_key": "sk-bench" } },
  "models": { "gpt-4o-mini": { "provider": "upstream" } },
  "keys": [ { "id": "bench", "sha256": "$sha", "team": "bench" } ]
}
CONF
  if callgrind_pair noledger "$OUT/callgrind/bridle.json.in"; then
    CG_RESULT="instructions per request (callgrind Ir), no ledger: $CG_PER ($(goal_note "$CG_PER" "$CG_GOAL"))   $CG_DETAIL"
  else
    CG_RESULT="callgrind, no ledger: no totals (see $OUT/callgrind)" CG_OK=0
  fi
  log "$CG_RESULT"

  if [[ $LEDGER != 0 ]]; then
    # The same with a `database` section (url, spool_dir; the rest at their
    # defaults): a throwaway local PostgreSQL, not pinned. One plain run first
    # (bridle serve applies the migrations and creates the partitions), so
    # the base and the measured run find the same schema; each run has its
    # own spool dir; SIGTERM drains the ledger, so the measured run's count
    # includes writing all of its events to PostgreSQL.
    if bench_pg_start ""; then
      bench_pg_watchdog "$$"
      PG_DESC="PostgreSQL $("$BENCH_PG_BIN/postgres" --version | awk '{print $3}') (local throwaway cluster, fsync on, shared_buffers 256MB)"
      sed 's|^}$|  ,"database": { "url": "'"$BENCH_PG_URL"'", "spool_dir": "@SPOOL@" }\n}|' \
        "$OUT/callgrind/bridle.json.in" >"$OUT/callgrind/bridle-ledger.json.in"
      prep_ok=1
      callgrind_run ledger-prep "$OUT/callgrind/bridle-ledger.json.in" 10 plain || prep_ok=0
      if [[ -n $CG_CMP ]] && ((prep_ok)); then
        CG_BIN=$CG_CMP
        callgrind_run ledger-compare-prep "$OUT/callgrind/bridle-ledger.json.in" 10 plain || prep_ok=0
        CG_BIN=""
      fi
      if ((prep_ok)) && callgrind_pair ledger "$OUT/callgrind/bridle-ledger.json.in"; then
        rows=$("$BENCH_PG_BIN/psql" -X -Atq -h 127.0.0.1 -p "$BENCH_PG_PORT" -U "$BENCH_PG_USER" -d bridle \
          -c 'SELECT count(*) FROM usage_events' 2>/dev/null || echo "?")
        CG_RESULT_LEDGER="instructions per request (callgrind Ir), ledger on: $CG_PER ($(goal_note "$CG_PER" "$CG_GOAL_LEDGER"))   $CG_DETAIL; $PG_DESC; usage_events rows after the runs: $rows (expected $(((10 + CG_WARM + CG_RUNS * (2 * CG_WARM + CG_N)) * ${#CG_BUILDS[@]})))"
      else
        CG_RESULT_LEDGER="callgrind, ledger on: no totals (see $OUT/callgrind)" CG_OK=0
      fi
      if [[ $LIMITS != 0 ]]; then
        # the same again with budgets and rate limits on the bench key
        sed 's|"team": "bench" }|"team": "bench"'"$BRIDLE_BENCH_LIMITS_EXTRA"' }|' \
          "$OUT/callgrind/bridle-ledger.json.in" >"$OUT/callgrind/bridle-limits.json.in"
        if callgrind_pair limits "$OUT/callgrind/bridle-limits.json.in"; then
          CG_RESULT_LIMITS="instructions per request (callgrind Ir), ledger on + budgets and rate limits on the key: $CG_PER   $CG_DETAIL"
        else
          CG_RESULT_LIMITS="callgrind, ledger + limits: no totals (see $OUT/callgrind)" CG_OK=0
        fi
        log "$CG_RESULT_LIMITS"
      fi
      if [[ $CACHE != 0 ]]; then
        # The response cache (issue 14), with the ledger: every request a
        # miss that stores its answer (x-bridle-cache: on, Cache-Control:
        # no-cache), the same requests with the cache off (the same bytes
        # in and out, so the difference is the cache's work), and every
        # request a hit.
        sed 's|^}$|  ,"cache": { "enabled": true }\n}|' \
          "$OUT/callgrind/bridle-ledger.json.in" >"$OUT/callgrind/bridle-cache.json.in"
        for kind in off miss hit; do
          tmpl=$OUT/callgrind/bridle-cache.json.in
          [[ $kind == off ]] && tmpl=$OUT/callgrind/bridle-ledger.json.in
          CG_HEADERS='{"x-bridle-cache":"on","cache-control":"no-cache"}'
          [[ $kind == hit ]] && CG_HEADERS='{"x-bridle-cache":"on"}'
          if callgrind_pair "cache-$kind" "$tmpl"; then
            CG_RESULT_CACHE+="${CG_RESULT_CACHE:+$'\n'}instructions per request (callgrind Ir), ledger on, response cache $kind (headers $CG_HEADERS): $CG_PER   $CG_DETAIL"
          else
            CG_RESULT_CACHE+="${CG_RESULT_CACHE:+$'\n'}callgrind, cache $kind: no totals (see $OUT/callgrind)" CG_OK=0
          fi
          CG_HEADERS=""
        done
        log "$CG_RESULT_CACHE"
      fi
      bench_pg_stop
    else
      CG_RESULT_LEDGER="callgrind, ledger on: PostgreSQL did not start" CG_OK=0
    fi
    log "$CG_RESULT_LEDGER"
  fi
  kill -TERM "$mpid" 2>/dev/null || true
  wait "$mpid" 2>/dev/null || true
  forget_pid "$mpid"
  { echo "$CG_RESULT"; [[ -z $CG_RESULT_LEDGER ]] || echo "$CG_RESULT_LEDGER"
    [[ -z $CG_RESULT_LIMITS ]] || echo "$CG_RESULT_LIMITS"
    [[ -z $CG_RESULT_CACHE ]] || echo "$CG_RESULT_CACHE"; } >"$OUT/callgrind/result.txt"
fi

# --- CPU time per request ----------------------------------------------------------------
# From the harness's results.csv: the target's process CPU time over the
# measured run (CPU%, whole percent of a core, from /proc ticks) over the
# requests served: µs = CPU% × 10,000 / req/s. `postgres` = the CPU of the
# processes named postgres that the harness saw (≥ 3 % each): for
# bridle-ledger mostly its own PostgreSQL, counted in `foreign`.
cpu_table() { # CSV
  awk -F, -v mf="$MAX_FOREIGN" 'NR == 1 { next }
    $5 == "FAILED" { printf "%-14s %5s %5s %9s\n", $1, $2, "-", "FAILED"; next }
    $13 == "-" || $13 == "" { next }
    { pg = 0; o = $18; gsub(/"/, "", o); n = split(o, parts, " ")
      for (i = 1; i <= n; i++) if (parts[i] ~ /^postgres:/) { v = parts[i]; sub(/^postgres:/, "", v); sub(/%$/, "", v); pg += v }
      us = ($5 > 0) ? $13 * 10000 / $5 : 0
      flag = ($20 + 0 >= mf) ? "SUSPECT (foreign " $20 "%" (pg ? ", postgres " pg "%" : "") ")" : ""
      if ($13 + 0 < 10) flag = flag (flag ? "; " : "") "coarse (CPU% < 10, rounded to whole %)"
      if (!hdr++) printf "%-14s %5s %5s %9s %6s %12s %8s %9s  %s\n", "target", "delay", "conns", "req/s", "CPU%", "µs CPU/req", "foreign%", "postgres%", "note"
      printf "%-14s %5s %5s %9.0f %6s %12.1f %8s %9s  %s\n", $1, $2, $3, $5, $13, us, $20, pg, flag }' "$1"
}
if [[ $json_rc != - ]]; then
  for part in json stream; do
    [[ -f $OUT/$part/results.csv ]] && cpu_table "$OUT/$part/results.csv" >"$OUT/$part/cpu.txt"
  done
  log "CPU time per request (JSON):"
  cat "$OUT/json/cpu.txt" >&2 2>/dev/null || true
fi

# --- record ---------------------------------------------------------------------------
if [[ -z ${BENCH_NO_RECORD:-} ]]; then
  rev=$(git rev-parse --short HEAD 2>/dev/null || echo "no commit")
  [[ -z $(git status --porcelain -- server router providers lib db 2>/dev/null) ]] || rev="$rev + uncommitted changes"
  [[ -s bench/RESULTS.md ]] ||
    printf '# bridle benchmark results\n\nAppended by `make bench` (bench/run.sh); newest last. Raw data stays in bench/results/ (not committed).\n' >bench/RESULTS.md
  {
    printf '\n## %s\n\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
    printf -- '- machine: %s cores, %s, kernel %s\n' "$(nproc)" \
      "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)" "$(uname -r)"
    printf -- '- bridle: %s (%s)\n' "$rev" "$BRIDLE"
    printf -- '- command: `%s`; load average at the start: %s\n' "$RUN_CMD" "$LOAD0"
    if [[ $json_rc != - ]]; then
      printf -- '- `sidebyside.sh %s` (exit %s)\n' "${JSON_CMD[*]}" "$json_rc"
      printf -- '- `sidebyside.sh %s` (exit %s)\n\n' "${STREAM_CMD[*]}" "$stream_rc"
      printf 'JSON:\n\n```\n'
      cat "$OUT/json/table.txt" 2>/dev/null || echo "(no table)"
      printf '```\n\nSSE:\n\n```\n'
      cat "$OUT/stream/table.txt" 2>/dev/null || echo "(no table)"
      printf '```\n'
    fi
    if [[ $json_rc != - ]]; then
      printf '\nCPU time per request (the target'"'"'s process CPU time over the run / requests served = CPU%% × 10,000 / req/s; CPU%% in whole %% of a core; `postgres` = CPU of processes named postgres, for bridle-ledger mostly its own database, also inside `foreign`), JSON:\n\n```\n'
      cat "$OUT/json/cpu.txt" 2>/dev/null || echo "(no table)"
      printf '```\n\nSSE:\n\n```\n'
      cat "$OUT/stream/cpu.txt" 2>/dev/null || echo "(no table)"
      printf '```\n'
    fi
    [[ -z $CG_RESULT ]] || printf '\n- %s\n' "$CG_RESULT"
    [[ -z $CG_RESULT_LEDGER ]] || printf -- '- %s\n' "$CG_RESULT_LEDGER"
    [[ -z $CG_RESULT_LIMITS ]] || printf -- '- %s\n' "$CG_RESULT_LIMITS"
    [[ -z $CG_RESULT_CACHE ]] || printf -- '%s\n' "$CG_RESULT_CACHE" | sed 's/^/- /'
  } >>bench/RESULTS.md
  log "appended to bench/RESULTS.md (raw: $OUT)"
fi
# Success is about bridle: a peer that fails its check (Portkey's SSE path is
# known to break on Node 20) is reported in the table but does not fail make bench.
if [[ $json_rc != - ]]; then
  for csv in "$OUT/json/results.csv" "$OUT/stream/results.csv"; do
    [[ -f $csv ]] || { echo "bench: $csv missing" >&2; exit 1; }
    if grep -Eq '^bridle(-ledger|-limits)?,.*,FAILED,' "$csv"; then echo "bench: bridle FAILED its check in $csv" >&2; exit 1; fi
    # a target that did not start has no row at all (the harness logs "start failed")
    for t in "${TARGETS[@]}"; do
      t=$(basename "$t" .sh)
      grep -q "^$t," "$csv" || { echo "bench: $t has no results in $csv (did not start? see the log above)" >&2; exit 1; }
    done
  done
fi
((CG_OK))
