#!/usr/bin/env bash
# Calls in flight (issue 13): bridle pinned to one core, build/bridle-mock
# answering every call after LATENCY ms on the other, wrk (1 thread, same
# core as the mock) holding N connections, each sending one request after
# the other. Prints a markdown table: in flight, req/s, bridle CPU µs per
# request, p50/p99, errors, peak RSS.
#
# CPU per request is measured in the steady state only: bridle's utime+stime
# (/proc/PID/stat) over a window that starts WARM seconds after wrk, divided
# by the requests the mock received in that window (its /_mock/stats).
# p50/p99: a probe of INFLIGHT_PROBE=100 of the N connections, opened for
# the window only (steady state); "p99 incl. ramp": the other N-100, whose
# first requests queue behind thousands of connects at once. Errors: both.
# direct: the same load straight to the mock (what the harness adds).
# A fresh bridle per N, so VmHWM is that N's peak.
#
#   bench/inflight.sh                    # N = 500 1000 3000 5000 9000
#   INFLIGHT_N="500 5000" bench/inflight.sh
# Env: INFLIGHT_N, INFLIGHT_LATENCY_MS=2000, INFLIGHT_WARM=4 (s), INFLIGHT_DUR=8 (s),
#      INFLIGHT_PERF=N (perf record -g bridle for INFLIGHT_PERF_S=10 s of the
#      window at that N; perf.data and a report beside the table),
#      INFLIGHT_DIRECT=1 (0: skip the reference run of wrk straight to the mock at each N,
#      the same length: its p50/p99 is what the harness itself adds on this machine),
#      BRIDLE_BIN, BRIDLE_MOCK_BIN, PROXY_CPUS=1, LOAD_CPUS=0, INFLIGHT_OUT (dir).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BRIDLE=${BRIDLE_BIN:-$ROOT/build/bridle}
MOCK=${BRIDLE_MOCK_BIN:-$ROOT/build/bridle-mock}
read -r -a NS <<<"${INFLIGHT_N:-500 1000 3000 5000 9000}"
LAT=${INFLIGHT_LATENCY_MS:-2000}
WARM=${INFLIGHT_WARM:-4}
DUR=${INFLIGHT_DUR:-8}
PERF_N=${INFLIGHT_PERF:-}
PERF_S=${INFLIGHT_PERF_S:-10}
PROBE=${INFLIGHT_PROBE:-100}
PROXY_CPUS=${PROXY_CPUS:-1}
LOAD_CPUS=${LOAD_CPUS:-0}
OUT=${INFLIGHT_OUT:-$ROOT/bench/results/inflight-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
# each call holds two fds in bridle (client + upstream); the hard limit here is 20,000
ulimit -n "$(ulimit -Hn)"
((${NS[-1]} * 2 + 100 <= $(ulimit -n))) || echo "inflight: ulimit -n $(ulimit -n) is low for ${NS[-1]} in flight" >&2
[[ -x $BRIDLE && -x $MOCK ]] || { echo "inflight: build first (make)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "inflight: needs wrk" >&2; exit 1; }

PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM
port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
# below the ephemeral range (32768-): thousands of client sockets hold ports there
free_port() { local p=$((20000 + RANDOM % 12000)); while port_busy "$p"; do p=$((p + 1)); done; echo "$p"; }
wait_port() { local i; for ((i = 0; i < 100; i++)); do port_busy "$1" && return 0; sleep 0.05; done; return 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime
mock_requests() { curl -s "http://127.0.0.1:$MPORT/_mock/stats" | sed -n 's/.*"requests":\([0-9]*\).*/\1/p'; }

# The mock delays by a [[mock:latency_ms=...]] marker in the prompt, which bridle passes on.
cat >"$OUT/inflight.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello [[mock:latency_ms=$LAT]]"}]}'
wrk.headers["Content-Type"] = "application/json"
done = function(s, lat, req)
  local e = s.errors
  io.write(string.format("WRKRESULT requests=%d rps=%.1f p50_us=%d p99_us=%d max_us=%d errors=%d non2xx=%d\n",
    s.requests, s.requests / (s.duration / 1e6), lat:percentile(50), lat:percentile(99), lat.max,
    e.connect + e.read + e.write + e.timeout, e.status))
end
LUA

MPORT=$(free_port)
taskset -c "$LOAD_CPUS" "$MOCK" --listen "127.0.0.1:$MPORT" >"$OUT/mock.log" 2>&1 &
PIDS+=($!)
wait_port "$MPORT" || { echo "inflight: mock did not start" >&2; exit 1; }
export UPSTREAM_BASE_URL="http://127.0.0.1:$MPORT/v1" BENCH_KEY=sk-inflight
# shellcheck source=bench/lib/bridle.sh disable=SC1091
. "$ROOT/bench/lib/bridle.sh"
HZ=$(getconf CLK_TCK)

{
  echo "bench/inflight.sh on $(uname -n), $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, upstream ${LAT} ms," \
    "window ${DUR} s after ${WARM} s; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "bridle: $BRIDLE ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
  echo
  echo "| in flight | req/s | bridle CPU µs/req | p50 | p99 | p99 incl. ramp | errors | peak RSS | direct p50 | direct p99 |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
} | tee "$OUT/table.md"

# wrk holding N-PROBE connections for the whole run, and a probe of PROBE
# more for the DUR s window only: its latencies are the steady state's,
# without the ramp (thousands of connects at once overflow the listen
# backlogs and wait for SYN retries, 1 s and more).
# Sets W (main wrk's WRKRESULT line), P (the probe's), C0/C1 R0/R1 T0/T1.
run_load() { # URL N TAG [PID to measure]
  local url=$1 n=$2 tag=$3 pid=${4:-} wpid ppid
  taskset -c "$LOAD_CPUS" wrk -t1 -c"$((n - PROBE))" -d"$((WARM + DUR + 2))s" --timeout 30s -s "$OUT/inflight.lua" \
    -H "Authorization: Bearer $BENCH_KEY" "$url" >"$OUT/$tag-$n.txt" 2>&1 &
  wpid=$!
  sleep "$WARM"
  C0=0 C1=0
  [[ -z $pid ]] || C0=$(cpu_ticks "$pid")
  R0=$(mock_requests) T0=$(date +%s.%N)
  taskset -c "$LOAD_CPUS" wrk -t1 -c"$PROBE" -d"${DUR}s" --timeout 30s -s "$OUT/inflight.lua" \
    -H "Authorization: Bearer $BENCH_KEY" "$url" >"$OUT/$tag-probe-$n.txt" 2>&1 &
  ppid=$!
  if [[ -n $pid && $n == "$PERF_N" ]]; then
    perf record -g -o "$OUT/perf-$n.data" -p "$pid" -- sleep "$PERF_S" >"$OUT/perf-$n.log" 2>&1 || true
  fi
  wait "$ppid" || true
  [[ -z $pid ]] || C1=$(cpu_ticks "$pid")
  R1=$(mock_requests) T1=$(date +%s.%N)
  wait "$wpid" || true
  W=$(grep WRKRESULT "$OUT/$tag-$n.txt" || echo "")
  P=$(grep WRKRESULT "$OUT/$tag-probe-$n.txt" || echo "")
}
get() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }
secs() { awk -v u="$1" 'BEGIN { if (u == "") print "-"; else printf "%.3f s", u / 1e6 }'; }

for n in "${NS[@]}"; do
  port=$(free_port)
  bench_bridle_config "$OUT/bridle-$n.json" "$port"
  # the provider's default max_concurrency (1024) would refuse the calls above it
  sed -i 's/"api_key": "sk-bench" }/"api_key": "sk-bench", "max_concurrency": 100000 }/' "$OUT/bridle-$n.json"
  grep -q '"max_concurrency": 100000' "$OUT/bridle-$n.json" || { echo "inflight: config edit failed" >&2; exit 1; }
  taskset -c "$PROXY_CPUS" env -u DATABASE_URL "$BRIDLE" serve --config "$OUT/bridle-$n.json" \
    --listen "127.0.0.1:$port" >"$OUT/bridle-$n.log" 2>&1 &
  bpid=$!
  PIDS+=("$bpid")
  wait_port "$port" || { echo "inflight: bridle did not start (N=$n)" >&2; tail "$OUT/bridle-$n.log" >&2; exit 1; }
  run_load "http://127.0.0.1:$port/v1/chat/completions" "$n" wrk "$bpid"
  hwm=$(awk '/VmHWM/ {printf "%d MB", $2 / 1024}' "/proc/$bpid/status")
  kill -TERM "$bpid"
  wait "$bpid" || true
  BW=$W BP=$P cpu=$((C1 - C0)) reqs=$((R1 - R0)) dt=$(echo "$T1 - $T0" | bc)
  err=$(($(get errors "$BW") + $(get errors "$BP"))) non2=$(($(get non2xx "$BW") + $(get non2xx "$BP")))
  dp50=- dp99=-
  if [[ ${INFLIGHT_DIRECT:-1} == 1 ]]; then
    sleep 1
    run_load "http://127.0.0.1:$MPORT/v1/chat/completions" "$n" direct
    dp50=$(secs "$(get p50_us "$P")") dp99=$(secs "$(get p99_us "$P")")
  fi
  awk -v n="$n" -v c="$cpu" -v hz="$HZ" -v r="$reqs" -v dt="$dt" \
    -v p50="$(secs "$(get p50_us "$BP")")" -v p99="$(secs "$(get p99_us "$BP")")" -v p99all="$(secs "$(get p99_us "$BW")")" \
    -v err="$err" -v non2="$non2" -v rss="$hwm" -v dp50="$dp50" -v dp99="$dp99" \
    'BEGIN { printf "| %d | %.0f | %.0f | %s | %s | %s | %d (+%d non-2xx) | %s | %s | %s |\n",
      n, r / dt, (r ? c / hz * 1e6 / r : 0), p50, p99, p99all, err, non2, rss, dp50, dp99 }' | tee -a "$OUT/table.md"
  if [[ $n == "$PERF_N" && -s $OUT/perf-$n.data ]]; then
    perf report -i "$OUT/perf-$n.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null | grep -v '^$' | head -60 >"$OUT/perf-$n.txt" || true
  fi
  sleep 1
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); output in $OUT" | tee -a "$OUT/table.md"
