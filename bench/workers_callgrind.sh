#!/usr/bin/env bash
# Instructions per request (callgrind Ir) of one process against two workers
# (`--workers 2`): the whole process tree (the supervisor and every worker:
# valgrind follows the fork), measured as (warm-up + N requests) minus
# (warm-up only), every request on a connection of its own so that the
# kernel's SO_REUSEPORT hash spreads them over the workers (the single
# process pays the same accept per request). Also prints how the N requests
# split over the workers (x-bridle-worker). No database.
#
#   bench/workers_callgrind.sh            # N=2000 WARM=200 RUNS=3
# Env: N, WARM, RUNS, BRIDLE_BIN, BRIDLE_MOCK_BIN. Prints one line per run and
# the medians; nothing is written to bench/RESULTS.md.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BRIDLE=${BRIDLE_BIN:-$ROOT/build/bridle}
MOCK=${BRIDLE_MOCK_BIN:-$ROOT/build/bridle-mock}
N=${N:-2000} WARM=${WARM:-200} RUNS=${RUNS:-3}
OUT=$(mktemp -d /tmp/bridle-wcg-XXXXXX)
PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
free_port() { local p=$((20000 + RANDOM % 20000)); while port_busy "$p"; do p=$((p + 1)); done; echo "$p"; }
wait_line() { local i; for ((i = 0; i < $4 * 10; i++)); do grep -q -- "$2" "$1" 2>/dev/null && return 0; kill -0 "$3" 2>/dev/null || return 1; sleep 0.1; done; return 1; }

mport=$(free_port)
"$MOCK" --listen "127.0.0.1:$mport" >"$OUT/mock.log" 2>&1 </dev/null &
PIDS+=($!)
wait_line "$OUT/mock.log" "listening on" "${PIDS[0]}" 10
KEY=bk-bench-workers
sha=$(printf '%s' "$KEY" | sha256sum | cut -d' ' -f1)
cat >"$OUT/bridle.json" <<CONF
{
  "log_level": "warn",
  "providers": { "upstream": { "kind": "openai", "base_url": "http://127.0.0.1:$mport/v1", "api_key": "sk-bench" } },
  "models": { "gpt-4o-mini": { "provider": "upstream" } },
  "keys": [ { "id": "bench", "sha256": "$sha", "team": "bench" } ]
}
CONF

# Sends WARM + n requests, each on a new connection; prints "w0 w1" counts of the last n.
send() { # PORT n
  node - "$1" "$KEY" "$WARM" "$2" <<'JS'
const http = require('node:http');
const [port, key, warm, n] = process.argv.slice(2);
const body = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Hello, how are you today?' }] });
const one = () => new Promise((resolve, reject) => {
  const req = http.request({ host: '127.0.0.1', port, path: '/v1/chat/completions', method: 'POST', agent: false, headers: {
    'content-type': 'application/json', 'content-length': Buffer.byteLength(body), authorization: `Bearer ${key}` } },
    (res) => { res.resume(); res.on('end', () => resolve([res.statusCode, res.headers['x-bridle-worker'] ?? '-'])); });
  req.on('error', reject); req.end(body);
});
(async () => {
  const per = {};
  const total = Number(warm) + Number(n);
  for (let i = 0; i < total; i++) {
    const [st, w] = await one();
    if (st !== 200) { console.error(`HTTP ${st}`); process.exit(1); }
    if (i >= Number(warm)) per[w] = (per[w] || 0) + 1;
  }
  console.log(Object.entries(per).sort().map(([w, c]) => `${w}:${c}`).join(' '));
})().catch((e) => { console.error(e); process.exit(1); });
JS
}

run() { # WORKERS n TAG → prints "IR SPLIT"
  local port pid ir split
  port=$(free_port)
  valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.$3.%p" "$BRIDLE" serve --workers "$1" \
    --config "$OUT/bridle.json" --listen "127.0.0.1:$port" >"$OUT/bridle.$3.log" 2>&1 </dev/null &
  pid=$!
  PIDS+=("$pid")
  # every worker says so on stdout
  for _ in $(seq 1 600); do
    local up
    up=$(grep -c 'listening on' "$OUT/bridle.$3.log" 2>/dev/null) || true
    [ "${up:-0}" -ge "$1" ] && break
    sleep 0.1
  done
  split=$(send "$port" "$2")
  kill -TERM "$pid"
  wait "$pid" || true
  ir=$(cat "$OUT"/cg."$3".* | sed -n 's/^\(summary\|totals\): *\([0-9]*\).*/\2/p' | awk '{s += $1} END {printf "%d", s}')
  echo "$ir $split"
}

median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2)}'; }
declare -A per
for w in 1 2; do
  vals=()
  for ((r = 1; r <= RUNS; r++)); do
    read -r base _ < <(run "$w" 0 "w$w-r$r-base")
    read -r meas split < <(run "$w" "$N" "w$w-r$r-meas")
    v=$(( (meas - base) / N ))
    vals+=("$v")
    echo "workers=$w run $r: $v instructions per request (base $base, measured $meas); split of $N: $split"
  done
  per[$w]=$(printf '%s\n' "${vals[@]}" | median)
done
echo "median instructions per request: 1 worker ${per[1]}, 2 workers ${per[2]} ($(awk -v a="${per[1]}" -v b="${per[2]}" 'BEGIN{printf "%+.1f %%", 100*(b-a)/a}'))"
echo "raw: $OUT"
