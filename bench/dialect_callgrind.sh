#!/usr/bin/env bash
# callgrind instructions per request for an Anthropic-dialect model
# (claude-haiku-4-5 on bridle-mock): the path that translates the request.
#   bench/dialect_callgrind.sh BRIDLE_BIN TAG   (CALLGRIND_N=1000, CALLGRIND_WARMUP=100)
# WAY=messages sends the same request in Anthropic's shape to /v1/messages
# (the Anthropic way in: translated in and out on top of the same work).
# The same shape as bench/run.sh BENCH_ONLY=callgrind, with another model.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BRIDLE=$1; TAG=$2; N=${CALLGRIND_N:-1000}; WARM=${CALLGRIND_WARMUP:-100}
OUT=${OUT_DIR:-$ROOT/bench/results/dialect-callgrind}/$TAG; mkdir -p $OUT
port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
free_port() { local p=$1; while port_busy "$p"; do p=$((p + 1)); done; echo "$p"; }
wait_line() { local i; for ((i = 0; i < $4 * 10; i++)); do grep -q -- "$2" "$1" 2>/dev/null && return 0; kill -0 "$3" 2>/dev/null || return 1; sleep 0.1; done; return 1; }
send_requests() {
  node - "$@" <<'JS'
const http = require('node:http');
const [url, key, warm, n, way] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
let shown = 0;
const body = JSON.stringify(way === 'messages'
  ? { model: 'claude-haiku-4-5', system: 'Be brief.', messages: [{ role: 'user', content: 'Hello, how are you today?' }], temperature: 0.5, max_tokens: 100 }
  : { model: 'claude-haiku-4-5', messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello, how are you today?' }], temperature: 0.5, max_tokens: 100 });
const one = () => new Promise((resolve, reject) => {
  const req = http.request(url, { method: 'POST', agent, headers: {
    'content-type': 'application/json', 'content-length': Buffer.byteLength(body), authorization: `Bearer ${key}` } },
    (res) => { let b = ''; res.on('data', (d) => { if (b.length < 300) b += d; });
      res.on('end', () => { if (res.statusCode !== 200 && !shown++) console.error(`first non-200: ${res.statusCode} ${b}`);
        resolve(res.statusCode); }); });
  req.on('error', reject); req.end(body);
});
(async () => {
  let bad = 0; const total = Number(warm) + Number(n);
  for (let i = 0; i < total; i++) if ((await one()) !== 200) bad++;
  agent.destroy();
  if (bad) { console.error(`${bad} of ${total} requests were not 200`); process.exit(1); }
})().catch((e) => { console.error(e); process.exit(1); });
JS
}
mport=$(free_port 18283)
"${BRIDLE_MOCK_BIN:-$ROOT/build/bridle-mock}" --listen 127.0.0.1:$mport >$OUT/mock.log 2>&1 </dev/null &
mpid=$!
trap 'kill -TERM $mpid 2>/dev/null || true' EXIT
wait_line $OUT/mock.log "listening on" $mpid 10
KEY=bk-bench-callgrind
sha=$(printf '%s' "$KEY" | sha256sum | cut -d' ' -f1)
cat >$OUT/bridle.json.in <<CONF
{
  "log_level": "warn",
  "providers": { "anthropic": { "kind": "anthropic", "base_url": "http://127.0.0.1:$mport/v1", "api_key": "sk-bench" } },
  "models": { "claude-haiku-4-5": { "provider": "anthropic" } },
  "keys": [ { "id": "bench", "sha256": "$sha", "team": "bench" } ]
}
CONF
run() { local name=$1 n=$2 port pid
  port=$(free_port 18295)
  sed "s/@PORT@/$port/" $OUT/bridle.json.in >$OUT/bridle-$name.json
  valgrind --tool=callgrind --callgrind-out-file=$OUT/callgrind.$name.out "$BRIDLE" serve --config $OUT/bridle-$name.json --listen 127.0.0.1:$port >$OUT/bridle-$name.log 2>&1 </dev/null &
  pid=$!
  wait_line $OUT/bridle-$name.log "listening on" $pid 120
  local path=/v1/chat/completions
  [[ ${WAY:-chat} == messages ]] && path=/v1/messages
  send_requests http://127.0.0.1:$port$path $KEY $WARM $n ${WAY:-chat} || { kill -TERM $pid; return 1; }
  kill -TERM $pid; wait $pid || true
  sed -n 's/^\(summary\|totals\): *\([0-9]*\).*/\2/p' $OUT/callgrind.$name.out | head -n1
}
ir0=$(run base 0); irn=$(run measured $N)
echo "$TAG: instructions per request: $(((irn - ir0) / N))  [($irn - $ir0) / $N]"
callgrind_annotate $OUT/callgrind.measured.out 2>/dev/null | head -n 50 > $OUT/top.txt || true
