#!/usr/bin/env bash
# Routing benchmark (issue 5, "Speed"): "Routing must not show up in the
# benchmark: requests/s with the full policy (tiers + cascade rules loaded,
# 50 models) within 5 % of the spine's figure."
#
# One run, two gateways side by side on the same core, so the answer is a
# ratio taken in the same minutes on the same (noisy) machine:
#
#   A  the spine: one concrete model (gpt-4o-mini), no "routing" section,
#      requests name the model (what `make bench` measures);
#   B  the full policy: 50 models (32 from the built-in price table, 18 with
#      explicit prices) over six providers and the four tiers, the task map,
#      prefer_local, output caps and a default cap, thinking caps, the
#      cascade (every check, escalate_to), the budget downgrade, batch tasks,
#      a baseline; requests say "model": "auto" and x-bridle-task (16 tasks
#      in turn, one unmapped, one without a task; 1 in 4 with its own
#      max_tokens), so each one is planned.
#
# Both send the same bodies and headers; only "model" differs. Every
# provider is of kind openai and points at the same mock, so the dialect
# work is the same and the difference is routing alone.
#
#   1. mock upstream (nginx returning the fixed completion, as the shared
#      harness ../shared/bench does) and wrk on core 0, both gateways pinned
#      to core 1 (only the one under load is busy);
#   2. wrk -c64 for DUR s, alternating A B A B ... ROUNDS times each; req/s,
#      bridle CPU µs per request, CPU used by other processes (noise) per
#      round; the median of the per-pair ratios B/A (all pairs, and the
#      quiet ones), and of the CPU-per-request ratios;
#   3. SAME_ROUNDS rounds with both gateways loaded at once (a wrk each),
#      sharing core 1: the noise hits both alike, and B/A in req/s is the
#      inverse of their CPU cost per request;
#   4. callgrind: instructions per request for A and B (bench/run.sh's
#      method: a run with CG_WARM warm-up requests and one with CG_WARM +
#      CG_N, the difference over CG_N), plus per-function inclusive costs
#      per request for the routing code;
#   5. appends a dated section under "## Routing" in bench/RESULTS.md and
#      updates the row of the goals table at its top (ROUTING_BENCH_NO_RECORD=1:
#      don't).
#
# Needs: `make` (build/bridle), wrk, taskset, curl, ss, node (config and
# request generation, the callgrind client), valgrind (callgrind_annotate)
# unless CG_N=0, nginx (nginx-light) for the mock (build/bridle-mock
# otherwise, slower: say so in the record).
#
# Env: ROUNDS (10) DUR (8) WARM (3) CONNS (64) CG_N (2000) CG_WARM (200)
#      MAX_FOREIGN (25: a pair of rounds is "quiet" when other processes used
#      less than this % of a core in both; their median is reported too)
#      SAME_ROUNDS (3: side-by-side rounds, both gateways loaded at once)
#      PROXY_CPUS (1) LOADGEN_CPUS (0) MOCK_CPUS (0) BUILD (build)
#      SHARED_BENCH (<repo>/../shared/bench) ROUTING_BENCH_NO_RECORD
# shellcheck disable=SC2016  # backticks are Markdown
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BUILD=${BUILD:-build}
BRIDLE=$ROOT/$BUILD/bridle
BRIDLE_MOCK=$ROOT/$BUILD/bridle-mock
SHARED_BENCH=${SHARED_BENCH:-$ROOT/../shared/bench}
ROUNDS=${ROUNDS:-10}
DUR=${DUR:-8}
MAX_FOREIGN=${MAX_FOREIGN:-25}
SAME_ROUNDS=${SAME_ROUNDS:-3}
WARM=${WARM:-3}
CONNS=${CONNS:-64}
CG_N=${CG_N:-2000}
CG_WARM=${CG_WARM:-200}
PROXY_CPUS=${PROXY_CPUS:-1}
LOADGEN_CPUS=${LOADGEN_CPUS:-0}
MOCK_CPUS=${MOCK_CPUS:-0}
LOADAVG=$(cut -d" " -f1-3 /proc/loadavg)
CLK_TCK=$(getconf CLK_TCK)

die() { echo "routing_bench: $*" >&2; exit 1; }
log() { printf '[routing-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- tools ------------------------------------------------------------------------
[[ -x $BRIDLE ]] || die "$BRIDLE not built: run make first"
for t in wrk taskset curl ss node awk; do
  command -v "$t" >/dev/null || die "$t not found (Debian: apt-get install wrk util-linux curl iproute2 nodejs gawk)"
done
if ((CG_N > 0)); then
  { command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null; } ||
    die "valgrind not found (apt-get install valgrind), or run with CG_N=0 to skip the callgrind part"
fi
MOCK_KIND=nginx
ECHO_MOD=/usr/lib/nginx/modules/ngx_http_echo_module.so
if ! command -v nginx >/dev/null; then
  [[ -x $BRIDLE_MOCK ]] || die "neither nginx (apt-get install nginx-light) nor $BRIDLE_MOCK (make) for the mock upstream"
  MOCK_KIND=bridle-mock
  log "nginx not found: the mock is build/bridle-mock (slower; ratios still hold, absolute req/s are lower)"
fi

TS=$(date +%Y%m%d-%H%M%S)
OUT=$ROOT/bench/results/routing-$TS
mkdir -p "$OUT"
PIDS=()
cleanup() {
  local p i
  for p in "${PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null || continue
    for ((i = 0; i < 50; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
free_port() { local p=$1; while port_busy "$p"; do p=$((p + 1)); done; echo "$p"; }
wait_port() { local i; for ((i = 0; i < ${2:-100}; i++)); do port_busy "$1" && return 0; sleep 0.1; done; return 1; }
ticks() { # utime+stime of one process, in clock ticks
  local s
  s=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
  # shellcheck disable=SC2086
  set -- $s
  echo $((${12} + ${13}))
}
cpu_ns() { # CPU time of a process, all threads, in ns (schedstat: exact, not ticks)
  cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{t += $1} END {printf "%.0f\n", t}'
}
usersys_all() { awk '/^cpu /{print $2 + $3 + $4 + $9}' /proc/stat; }
median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# --- mock upstream ------------------------------------------------------------------
MPORT=$(free_port 18381)
if [[ $MOCK_KIND == nginx ]]; then
  MSSE=$(free_port $((MPORT + 1)))
  mkdir -p "$OUT/mock"
  if [[ -x $SHARED_BENCH/mock/gen-mock-conf.sh && -f $ECHO_MOD ]]; then
    "$SHARED_BENCH/mock/gen-mock-conf.sh" "$OUT/mock" "$MPORT" "$MSSE" 0 >"$OUT/mock/mock.conf"
    MOCK_DESC="nginx, ../shared/bench/mock/gen-mock-conf.sh (fixed 710 B chat.completion), delay 0"
  else # the same answer without the shared harness (a clean clone on its own)
    cat >"$OUT/mock/mock.conf" <<CONF
worker_processes 1;
daemon off;
pid $OUT/mock/mock.pid;
error_log $OUT/mock/mock.err warn;
events { worker_connections 16384; multi_accept on; }
http {
    access_log off;
    client_body_temp_path $OUT/mock/body;
    proxy_temp_path $OUT/mock/proxy;
    fastcgi_temp_path $OUT/mock/fcgi;
    uwsgi_temp_path $OUT/mock/uwsgi;
    scgi_temp_path $OUT/mock/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    client_body_buffer_size 64k;
    server {
        listen 127.0.0.1:$MPORT backlog=4096 reuseport;
        location = /v1/chat/completions {
            default_type application/json;
            return 200 '{"id":"chatcmpl-bench000000000000000000000001","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"This is a fixed completion returned by the benchmark mock upstream. It is long enough to look like a short real answer.","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":251,"completion_tokens":24,"total_tokens":275,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"system_fingerprint":"fp_bench0001"}';
        }
        location = /health { return 200 'ok'; }
    }
}
CONF
    MOCK_DESC="nginx (inline config, fixed chat.completion), delay 0"
  fi
  taskset -c "$MOCK_CPUS" nginx -c "$OUT/mock/mock.conf" -e "$OUT/mock/mock.err" >"$OUT/mock/mock.out" 2>&1 </dev/null &
else
  taskset -c "$MOCK_CPUS" "$BRIDLE_MOCK" --listen "127.0.0.1:$MPORT" >"$OUT/mock.log" 2>&1 </dev/null &
  MOCK_DESC="build/bridle-mock"
fi
MOCK_PID=$!
PIDS+=("$MOCK_PID")
wait_port "$MPORT" || die "the mock upstream did not open port $MPORT (see $OUT)"
UPSTREAM=http://127.0.0.1:$MPORT/v1

# --- configs and requests -----------------------------------------------------------
KEY=bk-routing-bench
SHA=$(printf '%s' "$KEY" | sha256sum | cut -d' ' -f1)
node - "$OUT" "$UPSTREAM" "$SHA" <<'JS'
const fs = require('node:fs');
const [out, upstream, sha] = process.argv.slice(2);
const key = [{ id: 'bench', sha256: sha, team: 'bench', budget_usd: 100 }];
const base = { log_level: 'warn', limits: { max_connections: 16384 } };

// A: the spine, as bench/targets/bridle.sh configures it.
const A = { ...base,
  providers: { upstream: { kind: 'openai', base_url: upstream, api_key: 'sk-bench' } },
  models: { 'gpt-4o-mini': { provider: 'upstream' } },
  keys: key };

// B: 50 models. Every provider is kind openai at the mock (the dialect work
// stays that of A); names and prices come from router/price_table.c where it
// has them; the 18 "extra-*" models carry explicit (illustrative) prices.
const prov = (extra) => ({ kind: 'openai', base_url: upstream, api_key: 'sk-bench', ...extra });
const providers = {
  openai: prov({ options: { max_completion_tokens: true } }),
  'openai-backup': prov(),
  anthropic: prov(), google: prov(), deepseek: prov(),
  local: prov({ api_key: '' }),
  extra: prov(),
};
const table = {
  local: ['llama3.2', 'qwen2.5', 'mistral'],
  budget: ['claude-haiku-4-5', 'gpt-4o-mini', 'gpt-4.1-mini', 'gpt-5-mini', 'gpt-5.4-mini', 'gpt-5.4-nano',
    'gemini-2.5-flash', 'gemini-2.5-flash-lite', 'gemini-3-flash', 'gemini-3.1-flash-lite',
    'deepseek-chat', 'deepseek-reasoner', 'deepseek-v4-flash', 'deepseek-v4-pro'],
  mid: ['claude-sonnet-4-5', 'claude-sonnet-4-6', 'gpt-4o', 'gpt-4.1', 'gpt-5', 'gpt-5.1', 'gpt-5.4',
    'gemini-2.5-pro', 'gemini-3.1-pro'],
  heavy: ['claude-opus-4-5', 'claude-opus-4-6', 'claude-opus-4-7', 'claude-opus-4-8', 'claude-opus-4-1', 'gpt-5.5'],
};
const providerOf = (m) => m.startsWith('claude') ? 'anthropic'
  : m.startsWith('gpt') ? ['openai', 'openai-backup']
  : m.startsWith('gemini') ? 'google' : m.startsWith('deepseek') ? 'deepseek' : 'local';
const models = {};
const tiers = { local: [], budget: [], mid: [], heavy: [] };
for (const [tier, names] of Object.entries(table))
  for (const m of names) { models[m] = { provider: providerOf(m) }; tiers[tier].push(m); }
const extras = { local: 2, budget: 6, mid: 6, heavy: 4 };
const priceOf = { local: [0, 0], budget: [0.12, 0.5], mid: [1.1, 6], heavy: [4, 20] };
const ctxs = [8192, 32768, 131072, 200000, 1000000];
let k = 0;
for (const [tier, n] of Object.entries(extras))
  for (let i = 1; i <= n; i++, k++) {
    const name = `extra-${tier}-${String(i).padStart(2, '0')}`;
    const [inp, outp] = priceOf[tier];
    models[name] = { provider: tier === 'local' ? 'local' : 'extra', upstream_model: `vendor/${name}`,
      prices: { input: String(+(inp * (1 + 0.07 * i)).toFixed(6)), output: String(+(outp * (1 + 0.05 * i)).toFixed(6)),
        context_window: ctxs[k % ctxs.length], tier } };
    tiers[tier].push(name);
  }
const n = Object.keys(models).length;
if (n !== 50) throw new Error(`config B has ${n} models, not 50`);
const tasks = {
  triage: 'local',
  classify: 'budget', summarize: 'budget', extract: 'budget', format: 'budget', translate: 'budget',
  test_generation: 'budget',
  code_gen: 'mid', analysis: 'mid', draft_writing: 'mid', code_review: 'mid',
  agent_orchestration: 'heavy', complex_reasoning: 'heavy', architecture: 'heavy',
};
const B = { ...base, providers, models,
  routes: { 'cheap-fallback': { candidates: ['gpt-4o-mini', 'claude-haiku-4-5', 'gemini-2.5-flash'] } },
  routing: {
    default_tier: 'mid', tasks, tiers, prefer_local: true,
    output_caps: { triage: 64, classify: 10, summarize: 500, extract: 300, format: 400, translate: 800,
      test_generation: 1500, code_gen: 2000, analysis: 1200, draft_writing: 1500, code_review: 1000 },
    default_output_cap: 1024,
    thinking_caps: { complex_reasoning: 8000, architecture: 6000, agent_orchestration: 4000, analysis: 2000 },
    cascade: { enabled: true, checks: ['length', 'json', 'uncertain', 'empty'], uncertain_marker: 'UNCERTAIN',
      escalate_to: { local: 'budget', budget: 'mid', mid: 'heavy' } },
    budget_downgrade: { share_pct: 80, to_tier: 'budget' },
    batch_tasks: ['summarize', 'translate'],
    baseline: 'claude-sonnet-4-6',
  },
  keys: key };
fs.writeFileSync(`${out}/bridle-A.json`, JSON.stringify(A, null, 2));
fs.writeFileSync(`${out}/bridle-B.json`, JSON.stringify(B, null, 2));

// Requests: the body of ../shared/bench/wrk/chat.lua (about 1 KB), the task
// in x-bridle-task, 16 variants in turn: every mapped task, one unmapped
// ("misc": the default tier), one with no task; 1 in 4 with max_tokens
// (the request's own cap; the others get the policy's). No json_mode: the
// mock's answer is prose, so the cascade's json check would escalate every
// such request (two upstream calls); the checks still run on every answer
// from a tier that has one above it.
const sys = 'You are a concise assistant used in a gateway benchmark. Answer in one short paragraph, '
  + 'do not use markdown, do not ask follow-up questions, and keep the tone neutral and factual. '
  + 'If the question is ambiguous, pick the most common interpretation and answer that one.';
const user = 'Explain in plain words what an HTTP reverse proxy does, why teams put one in front of '
  + 'large language model providers, and which costs it adds per request: parsing, routing, '
  + 'authentication, connection reuse to the upstream, usage accounting and logging. Mention that '
  + 'the answer is for a benchmark and that the exact wording does not matter at all. '
  + 'Padding text to reach roughly one kilobyte of request body: lorem ipsum dolor sit amet, '
  + 'consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. '
  + 'Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo.';
const taskList = [...Object.keys(tasks), 'misc', null];
for (const [name, model] of [['A', 'gpt-4o-mini'], ['B', 'auto']]) {
  const variants = taskList.map((task, i) => {
    const body = { model, messages: [{ role: 'system', content: sys }, { role: 'user', content: user }],
      temperature: 0.2, ...(i % 4 === 3 ? { max_tokens: 128 } : {}), user: 'bench-user-0001',
      metadata: { bench: 'routing' } };
    return { task, body: JSON.stringify(body) };
  });
  fs.writeFileSync(`${out}/requests-${name}.json`, JSON.stringify(variants));
  const lua = [
    '-- generated by bench/routing/routing_bench.sh: the requests in turn, one wrk.format each',
    'local variants = {',
    ...variants.map((v) => `  { task = ${v.task ? JSON.stringify(v.task) : 'nil'}, body = [==[${v.body}]==] },`),
    '}',
    'local reqs, i = {}, 0',
    'init = function(args)',
    '  for _, v in ipairs(variants) do',
    '    local h = {}',
    '    for k, val in pairs(wrk.headers) do h[k] = val end',
    '    h["Content-Type"] = "application/json"',
    '    if v.task then h["x-bridle-task"] = v.task end',
    '    reqs[#reqs + 1] = wrk.format("POST", "/v1/chat/completions", h, v.body)',
    '  end',
    'end',
    'request = function()',
    '  i = i % #reqs + 1',
    '  return reqs[i]',
    'end',
    'local non2xx = 0',
    'response = function(status, headers, body) if status ~= 200 then non2xx = non2xx + 1 end end',
    'done = function(summary, latency, requests)',
    '  local e = summary.errors',
    '  io.write(string.format("WRKRESULT requests=%d duration_s=%.3f rps=%.1f p50_us=%d p99_us=%d "',
    '    .. "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\\n",',
    '    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),',
    '    latency:percentile(50), latency:percentile(99), e.connect, e.read, e.write, e.status, e.timeout))',
    'end',
  ].join('\n');
  fs.writeFileSync(`${out}/requests-${name}.lua`, lua + '\n');
}
JS

# The "response" callback costs wrk a Lua call per answer; err_status counts
# non-2xx without it, so it is dropped to keep the load generator lean.
sed -i '/^local non2xx/d; /^response = function/d' "$OUT"/requests-{A,B}.lua

"$BRIDLE" check-config "$OUT/bridle-A.json" >/dev/null || die "config A does not pass check-config"
"$BRIDLE" check-config "$OUT/bridle-B.json" >/dev/null || die "config B does not pass check-config"

# --- gateways -------------------------------------------------------------------------
start_bridle() { # NAME PORT: sets STARTED_PID
  taskset -c "$PROXY_CPUS" "$BRIDLE" serve --config "$OUT/bridle-$1.json" --listen "127.0.0.1:$2" \
    >"$OUT/bridle-$1.log" 2>&1 </dev/null &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
  local i
  for ((i = 0; i < 100; i++)); do
    curl -fs "http://127.0.0.1:$2/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$STARTED_PID" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$OUT/bridle-$1.log" >&2
  die "bridle ($1) did not start"
}
PORT_A=$(free_port 18391)
start_bridle A "$PORT_A"
PID_A=$STARTED_PID
PORT_B=$(free_port $((PORT_A + 1)))
start_bridle B "$PORT_B"
PID_B=$STARTED_PID
declare -A PORT=([A]=$PORT_A [B]=$PORT_B) PID=([A]=$PID_A [B]=$PID_B)

# Every request variant once through each gateway: 200, and what B chose.
log "checking every request variant (B's choices in $OUT/plans.txt)"
node - "$OUT" "$KEY" "$PORT_A" "$PORT_B" <<'JS' >"$OUT/plans.txt" || die "a request variant failed (see $OUT/plans.txt)"
const fs = require('node:fs');
const [out, key, portA, portB] = process.argv.slice(2);
(async () => {
  for (const [name, port] of [['A', portA], ['B', portB]]) {
    for (const v of JSON.parse(fs.readFileSync(`${out}/requests-${name}.json`))) {
      const headers = { 'content-type': 'application/json', authorization: `Bearer ${key}` };
      if (v.task) headers['x-bridle-task'] = v.task;
      const r = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, { method: 'POST', headers, body: v.body });
      const text = await r.text();
      if (r.status !== 200 || !text.includes('"chat.completion"')) {
        console.log(`${name} task=${v.task}: HTTP ${r.status} ${text.slice(0, 300)}`);
        process.exit(1);
      }
      if (name === 'B')
        console.log(`${String(v.task ?? '(none)').padEnd(20)} ${String(JSON.parse(v.body).max_tokens ?? '-').padStart(4)}  `
          + `${(r.headers.get('x-bridle-model') ?? '').padEnd(22)} ${r.headers.get('x-bridle-route')}`);
    }
  }
})().catch((e) => { console.log(String(e)); process.exit(1); });
JS
cat "$OUT/plans.txt" >&2

# --- alternating wrk rounds --------------------------------------------------------------
run_wrk() { # NAME SECONDS OUTFILE
  taskset -c "$LOADGEN_CPUS" timeout $(($2 + 30)) wrk -t1 -c"$CONNS" -d"$2s" --timeout 10s \
    -s "$OUT/requests-$1.lua" -H "Authorization: Bearer $KEY" "http://127.0.0.1:${PORT[$1]}/v1/chat/completions" >"$3" 2>&1
}
kv() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }
log "warm-up: ${WARM}s each"
run_wrk A "$WARM" "$OUT/warmup-A.txt"
run_wrk B "$WARM" "$OUT/warmup-B.txt"

echo "round,config,rps,requests,errors,bridle_cpu_us_per_req,bridle_cpu_pct,foreign_cpu_pct,p50_us,p99_us" >"$OUT/rounds.csv"
for ((r = 1; r <= ROUNDS; r++)); do
  for cfg in A B; do
    raw=$OUT/round$r-$cfg.txt
    b0=$(ticks "${PID[$cfg]}") n0=$(cpu_ns "${PID[$cfg]}") m0=$(ticks "$MOCK_PID") a0=$(usersys_all) t0=$(date +%s%N)
    TIMEFORMAT='%U %S'
    { time run_wrk "$cfg" "$DUR" "$raw"; } 2>"$OUT/wrktime-$r-$cfg"
    b1=$(ticks "${PID[$cfg]}") n1=$(cpu_ns "${PID[$cfg]}") m1=$(ticks "$MOCK_PID") a1=$(usersys_all) t1=$(date +%s%N)
    line=$(grep '^WRKRESULT' "$raw" | tail -n1) || die "round $r $cfg: no wrk result (see $raw)"
    rps=$(kv rps "$line") reqs=$(kv requests "$line")
    errs=$(($(kv err_connect "$line") + $(kv err_read "$line") + $(kv err_write "$line") + $(kv err_status "$line") + $(kv err_timeout "$line")))
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print (b - a) / 1e9}')
    read -r wu ws <"$OUT/wrktime-$r-$cfg"
    us_req=$(awk -v d=$((n1 - n0)) -v n="$reqs" 'BEGIN {printf "%.2f", n ? d / 1e3 / n : 0}')
    cpu_pct=$(awk -v d=$((n1 - n0)) -v s="$wall" 'BEGIN {printf "%.0f", 100 * d / 1e9 / s}')
    foreign=$(awk -v all=$((a1 - a0)) -v b=$((b1 - b0)) -v m=$((m1 - m0)) -v k="$CLK_TCK" -v s="$wall" -v wu="$wu" -v ws="$ws" \
      'BEGIN {f = 100 * ((all - b - m) / k - wu - ws) / s; printf "%.0f", f < 0 ? 0 : f}')
    echo "$r,$cfg,$rps,$reqs,$errs,$us_req,$cpu_pct,$foreign,$(kv p50_us "$line"),$(kv p99_us "$line")" >>"$OUT/rounds.csv"
    log "  round $r $cfg: $rps req/s, $errs errors, bridle $us_req µs CPU/request ($cpu_pct % of a core), foreign $foreign %"
    ((errs == 0)) || log "  WARNING: round $r $cfg had $errs errors (non-2xx or socket)"
  done
done

# per-round B/A and medians
pairs() { # per round: rps ratio B/A, CPU µs/request ratio B/A, quiet (1/0)
  awk -F, -v mf="$MAX_FOREIGN" 'NR > 1 {rps[$1, $2] = $3; us[$1, $2] = $6; fo[$1, $2] = $8; n = $1}
    END {for (r = 1; r <= n; r++) printf "%.4f %.4f %d\n", rps[r, "B"] / rps[r, "A"], us[r, "B"] / us[r, "A"], fo[r, "A"] < mf && fo[r, "B"] < mf}' "$OUT/rounds.csv"
}
RATIO=$(pairs | awk '{print $1}' | median)
CPU_RATIO=$(pairs | awk '{print $2}' | median)
N_QUIET=$(pairs | awk '$3 {n++} END {print n + 0}')
RATIO_Q=$(pairs | awk '$3 {print $1}' | median)
((N_QUIET > 0)) || RATIO_Q="–"
MED_A=$(awk -F, 'NR > 1 && $2 == "A" {print $3}' "$OUT/rounds.csv" | median)
MED_B=$(awk -F, 'NR > 1 && $2 == "B" {print $3}' "$OUT/rounds.csv" | median)
US_A=$(awk -F, 'NR > 1 && $2 == "A" {print $6}' "$OUT/rounds.csv" | median)
US_B=$(awk -F, 'NR > 1 && $2 == "B" {print $6}' "$OUT/rounds.csv" | median)
ERRS=$(awk -F, 'NR > 1 {e += $5} END {print e + 0}' "$OUT/rounds.csv")
MAX_SEEN=$(awk -F, 'NR > 1 && $8 > m {m = $8} END {print m + 0}' "$OUT/rounds.csv")
log "median req/s A $MED_A, B $MED_B; median of the per-round ratios B/A: $RATIO ($N_QUIET quiet pairs: $RATIO_Q); CPU µs/request A $US_A, B $US_B (median ratio $CPU_RATIO)"

# Side by side at the same instant: both gateways loaded at once (a wrk -c$CONNS
# each, both on the load core), sharing their core. The scheduler gives each
# the same CPU time, so B/A in req/s is the inverse of their CPU cost per
# request, and whatever else runs on the machine hits both alike.
SAME_ROWS=""
SAME_RATIOS=()
for ((r = 1; r <= SAME_ROUNDS; r++)); do
  na0=$(cpu_ns "$PID_A") nb0=$(cpu_ns "$PID_B")
  run_wrk A "$DUR" "$OUT/same$r-A.txt" &
  wa=$!
  run_wrk B "$DUR" "$OUT/same$r-B.txt" &
  wb=$!
  wait "$wa" "$wb" || true
  na1=$(cpu_ns "$PID_A") nb1=$(cpu_ns "$PID_B")
  la=$(grep '^WRKRESULT' "$OUT/same$r-A.txt" | tail -n1) lb=$(grep '^WRKRESULT' "$OUT/same$r-B.txt" | tail -n1)
  [[ -n $la && -n $lb ]] || die "side-by-side round $r: no wrk result (see $OUT/same$r-*.txt)"
  ra=$(kv rps "$la") rb=$(kv rps "$lb")
  ratio=$(awk -v a="$ra" -v b="$rb" 'BEGIN {printf "%.4f", b / a}')
  SAME_RATIOS+=("$ratio")
  ua=$(awk -v d=$((na1 - na0)) -v n="$(kv requests "$la")" 'BEGIN {printf "%.2f", d / 1e3 / n}')
  ub=$(awk -v d=$((nb1 - nb0)) -v n="$(kv requests "$lb")" 'BEGIN {printf "%.2f", d / 1e3 / n}')
  ca=$(awk -v d=$((na1 - na0)) -v s="$DUR" 'BEGIN {printf "%.0f", 100 * d / 1e9 / s}')
  cb=$(awk -v d=$((nb1 - nb0)) -v s="$DUR" 'BEGIN {printf "%.0f", 100 * d / 1e9 / s}')
  SAME_ROWS+="| $r | $ra | $rb | $ratio | $ua ($ca %) | $ub ($cb %) |"$'\n'
  log "  side by side $r: A $ra req/s ($ua µs CPU/request, $ca % of a core), B $rb ($ub µs, $cb %): B/A $ratio"
done
SAME_RATIO=$(printf '%s\n' "${SAME_RATIOS[@]}" | median)
log "side by side: median B/A $SAME_RATIO"
kill -TERM "$PID_A" "$PID_B" 2>/dev/null || true
wait "$PID_A" "$PID_B" 2>/dev/null || true # children of this shell: returns once both have exited

# --- callgrind ---------------------------------------------------------------------------
send_requests() { # PORT NAME WARMUP N: sequential keep-alive requests, the variants in turn
  node - "$1" "$KEY" "$OUT/requests-$2.json" "$3" "$4" <<'JS'
const http = require('node:http');
const fs = require('node:fs');
const [port, key, file, warm, n] = process.argv.slice(2);
const variants = JSON.parse(fs.readFileSync(file));
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const one = (v) => new Promise((resolve, reject) => {
  const headers = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(v.body),
    authorization: `Bearer ${key}` };
  if (v.task) headers['x-bridle-task'] = v.task;
  const req = http.request({ host: '127.0.0.1', port, path: '/v1/chat/completions', method: 'POST', agent, headers },
    (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)); });
  req.on('error', reject);
  req.end(v.body);
});
(async () => {
  const total = Number(warm) + Number(n);
  let bad = 0;
  for (let i = 0; i < total; i++) if ((await one(variants[i % variants.length])) !== 200) bad++;
  agent.destroy();
  if (bad) { console.error(`${bad} of ${total} requests were not 200`); process.exit(1); }
})().catch((e) => { console.error(e); process.exit(1); });
JS
}

callgrind_run() { # CFG RUN REQUESTS: sets CG_IR to the run's total Ir
  local cfg=$1 run=$2 n=$3 port pid i
  CG_IR=""
  port=$(free_port 18395)
  valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind/$cfg-$run.out" \
    "$BRIDLE" serve --config "$OUT/bridle-$cfg.json" --listen "127.0.0.1:$port" \
    >"$OUT/callgrind/$cfg-$run.log" 2>&1 </dev/null &
  pid=$!
  PIDS+=("$pid")
  for ((i = 0; i < 1200; i++)); do
    grep -q "listening on" "$OUT/callgrind/$cfg-$run.log" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  grep -q "listening on" "$OUT/callgrind/$cfg-$run.log" || { tail -n 20 "$OUT/callgrind/$cfg-$run.log" >&2; return 1; }
  send_requests "$port" "$cfg" "$CG_WARM" "$n" || { kill -TERM "$pid"; return 1; }
  kill -TERM "$pid"
  wait "$pid" || true
  CG_IR=$(sed -n 's/^\(summary\|totals\): *\([0-9]*\).*/\2/p' "$OUT/callgrind/$cfg-$run.out" | head -n1)
  [[ -n $CG_IR ]]
}

# Inclusive Ir of a function in a callgrind file (0 when absent), from
# `callgrind_annotate --inclusive=yes` lines "1,234 (0.12%)  file.c:fn [binary]".
fn_ir() { # FILE FUNCTION
  awk -v f="$2" '
    { line = $0; sub(/^ */, "", line); n = line; sub(/ .*/, "", n); gsub(/,/, "", n)
      if (n !~ /^[0-9]+$/) next
      sub(/^[0-9,]+ *\([ 0-9.%]*\) +/, "", line); sub(/ \[.*$/, "", line)
      if (line ~ (":" f "$") && n + 0 > best) best = n + 0 }
    END { print best + 0 }' "$1.incl"
}

CG_FNS=(chat_handle call_finish plan_by_policy policy_plan_request add_tier plan_tier fmt_into policy_estimate_cost_pusd
  pricing_cost_pusd breaker_get_state spend_share cascade_escalate answer_text
  policy_cascade_failed_check policy_escalation_index config_find_model config_find_route
  policy_task_tier task_cap_of safe_name)
declare -A IR
CG_LINE="" CG_TABLE=""
if ((CG_N > 0)); then
  mkdir -p "$OUT/callgrind"
  for cfg in A B; do
    log "callgrind $cfg: start + $CG_WARM warm-up requests, SIGTERM; then start + $CG_WARM + $CG_N"
    callgrind_run "$cfg" base 0 || die "callgrind $cfg (base) failed (see $OUT/callgrind)"
    IR[$cfg-base]=$CG_IR
    callgrind_run "$cfg" measured "$CG_N" || die "callgrind $cfg (measured) failed (see $OUT/callgrind)"
    IR[$cfg-run]=$CG_IR
    IR[$cfg]=$(((IR[$cfg-run] - IR[$cfg-base]) / CG_N))
    for run in base measured; do
      callgrind_annotate --inclusive=yes --threshold=100 --auto=no "$OUT/callgrind/$cfg-$run.out" >"$OUT/callgrind/$cfg-$run.out.incl" 2>/dev/null || true
    done
    callgrind_annotate --auto=no "$OUT/callgrind/$cfg-measured.out" 2>/dev/null | head -n 80 >"$OUT/callgrind/$cfg-top-self.txt" || true
    log "  $cfg: ${IR[$cfg]} instructions per request [(${IR[$cfg-run]} - ${IR[$cfg-base]}) / $CG_N]"
  done
  CG_LINE=$(printf 'callgrind Ir per request: A %s, B %s (B/A %s, +%s per request) [(measured − base) / %s; each run: start, %s warm-up requests%s, SIGTERM]' \
    "${IR[A]}" "${IR[B]}" "$(awk -v a="${IR[A]}" -v b="${IR[B]}" 'BEGIN {printf "%.3f", b / a}')" "$((IR[B] - IR[A]))" \
    "$CG_N" "$CG_WARM" "; measured: + $CG_N")
  log "$CG_LINE"
  # where B's extra instructions go: inclusive Ir per request of the routing functions
  CG_TABLE=$(
    printf '| function (inclusive) | A Ir/request | B Ir/request |\n|---|---|---|\n'
    for f in "${CG_FNS[@]}"; do
      a=$((($(fn_ir "$OUT/callgrind/A-measured.out" "$f") - $(fn_ir "$OUT/callgrind/A-base.out" "$f")) / CG_N))
      b=$((($(fn_ir "$OUT/callgrind/B-measured.out" "$f") - $(fn_ir "$OUT/callgrind/B-base.out" "$f")) / CG_N))
      ((a == 0 && b == 0)) || printf '| `%s` | %s | %s |\n' "$f" "$a" "$b"
    done
  )
  echo "$CG_TABLE" >"$OUT/callgrind/routing-functions.md"
  printf '%s\n' "$CG_TABLE" >&2
fi

# --- record ---------------------------------------------------------------------------------
machine="$(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1), kernel $(uname -r)"
rev=$(git rev-parse --short HEAD 2>/dev/null || echo "no commit")
[[ -z $(git status --porcelain -- server router providers lib db 2>/dev/null) ]] || rev="$rev + uncommitted changes"
# Met when both measures say so: the alternating rounds (the goal's own
# terms, but each pair sees different noise) and the rounds side by side
# (the same noise for both); "borderline" when they disagree.
MET=$(awk -v r="$RATIO" -v s="${SAME_RATIO:-nan}" 'BEGIN {
  a = r >= 0.95; b = (s == "nan" || s == "") ? a : s >= 0.95
  print (a && b) ? "yes" : (!a && !b) ? "no" : "borderline (the two measures disagree)" }')
PCT=$(awk -v r="$RATIO" 'BEGIN {printf "%+.1f", 100 * (r - 1)}')
WHEN=$(date -u '+%Y-%m-%d %H:%M UTC')
HHMM=$(date -u '+%H:%M')
rounds_table=$(
  printf '| round | A req/s | B req/s | B/A | A µs CPU/req | B µs CPU/req | foreign CPU A / B |\n|---|---|---|---|---|---|---|\n'
  awk -F, 'NR > 1 {rps[$1, $2] = $3; us[$1, $2] = $6; fo[$1, $2] = $8; n = $1}
    END {for (r = 1; r <= n; r++) printf "| %d | %.0f | %.0f | %.3f | %s | %s | %s %% / %s %% |\n", r, rps[r, "A"], rps[r, "B"], rps[r, "B"] / rps[r, "A"], us[r, "A"], us[r, "B"], fo[r, "A"], fo[r, "B"]}' "$OUT/rounds.csv"
  printf '| **median** | **%.0f** | **%.0f** | **%s** (of the per-round ratios; %s quiet pairs: %s) | %s | %s (ratio %s) | |\n' "$MED_A" "$MED_B" "$RATIO" "$N_QUIET" "$RATIO_Q" "$US_A" "$US_B" "$CPU_RATIO"
)
section=$(
  printf '### %s\n\n' "$WHEN"
  printf -- '- command: `bench/routing/routing_bench.sh` (ROUNDS=%s DUR=%s WARM=%s CONNS=%s CG_N=%s CG_WARM=%s)\n' "$ROUNDS" "$DUR" "$WARM" "$CONNS" "$CG_N" "$CG_WARM"
  printf -- '- machine: %s; load average before: %s\n' "$machine" "$LOADAVG"
  printf -- '- bridle: %s; mock: %s; wrk -t1 -c%s and the mock on cpu %s, both gateways on cpu %s (one under load at a time)\n' "$rev" "$MOCK_DESC" "$CONNS" "$LOADGEN_CPUS" "$PROXY_CPUS"
  printf -- '- A (spine): 1 model, no `routing`, `"model": "gpt-4o-mini"`; B (full policy): 50 models (32 from the price table, 18 with explicit prices; 7 providers, all kind openai at the mock), tiers local 5 / budget 20 / mid 15 / heavy 10, 14 tasks mapped, output caps + default cap, thinking caps, cascade (all checks, escalate_to), budget_downgrade (loaded; no ledger here, so never triggered), batch_tasks, baseline; `"model": "auto"` + `x-bridle-task` over 16 variants (one unmapped, one without a task, 1 in 4 with max_tokens); same bodies (≈1 KB) otherwise\n'
  printf -- '- %s rounds of %s s alternating A B; errors over all rounds: %s; most CPU used by other processes in a round: %s %% of a core (a pair is quiet when both rounds saw < %s %%)\n\n' "$ROUNDS" "$DUR" "$ERRS" "$MAX_SEEN" "$MAX_FOREIGN"
  echo "$rounds_table"
  printf '\nAlternating rounds: B/A = **%s** (%s %%; quiet pairs only: %s; bridle CPU per request B/A: %s).\n' "$RATIO" "$PCT" "$RATIO_Q" "$CPU_RATIO"
  if ((SAME_ROUNDS > 0)); then
    printf '\nSide by side at the same instant (both gateways loaded at once, a wrk -c%s each, sharing cpu %s; B/A = the inverse of their CPU cost per request, the noise alike for both): median B/A **%s**\n\n' "$CONNS" "$PROXY_CPUS" "$SAME_RATIO"
    printf '| round | A req/s | B req/s | B/A | A µs CPU/req (%% of a core) | B µs CPU/req (%% of a core) |\n|---|---|---|---|---|---|\n'
    printf '%s' "$SAME_ROWS"
  fi
  printf '\nGoal "within 5 %% of the spine": **%s**.\n' "$MET"
  if [[ -n $CG_LINE ]]; then
    printf '\n- %s\n\nWhere B'"'"'s extra instructions go (inclusive Ir per request, measured − base over %s; `callgrind_annotate --inclusive=yes`):\n\n' "$CG_LINE" "$CG_N"
    echo "$CG_TABLE"
  fi
  printf '\nWhat B planned for each variant (task, max_tokens, x-bridle-model, x-bridle-route):\n\n```\n'
  cat "$OUT/plans.txt"
  printf '```\n'
)
echo
echo "$section"
if [[ -z ${ROUTING_BENCH_NO_RECORD:-} ]]; then
  f=bench/RESULTS.md
  [[ -s $f ]] || printf '# bridle benchmark results\n' >"$f"
  # the section goes at the end of "## Routing" (created at the end of the file)
  grep -q '^## Routing$' "$f" || printf '\n## Routing\n' >>"$f"
  printf '%s\n' "$section" >"$OUT/section.md"
  awk -v sec="$OUT/section.md" '
    function out(l) { print l; blank = (l == "") }
    function emit() { if (!blank) out(""); while ((getline l < sec) > 0) out(l); close(sec); done = 1 }
    /^## / && inr && !done { emit(); out("") }
    /^## Routing$/ { inr = 1 }
    /^## / && !/^## Routing$/ { inr = 0 }
    { out($0) }
    END { if (!done) emit() }' "$f" >"$OUT/RESULTS.new"
  # the goals table at the top: one row for this goal, replaced on every run
  cg_note=""
  [[ -z $CG_LINE ]] || cg_note="; callgrind ${IR[A]} vs ${IR[B]} instructions per request"
  row="| routing: full policy (50 models) within 5 % of the spine's req/s | B/A **$SAME_RATIO** with both loaded at once (the same noise for both); alternating rounds at -c$CONNS: median $RATIO ($N_QUIET quiet pairs: $RATIO_Q), $MED_B vs $MED_A req/s; bridle CPU per request B/A $CPU_RATIO ($HHMM run under \"Routing\" below$cg_note) | **$MET** |"
  awk -v row="$row" -v hhmm="$HHMM" '
    /^## Where the goals stand/ && !h { h = 1
      if ($0 ~ /issue 5, "Routing" below, [0-9:]+ UTC/) sub(/issue 5, "Routing" below, [0-9:]+ UTC/, "issue 5, \"Routing\" below, " hhmm " UTC")
      else sub(/\)$/, "; issue 5, \"Routing\" below, " hhmm " UTC)") }
    /^\| routing: full policy \(50 models\)/ { if (!put) print row; put = 1; next }
    intab && !/^\|/ && !put { print row; put = 1 }
    h && /^\| goal \|/ { intab = 1 }
    intab && !/^\|/ { intab = 0 }
    { print }' "$OUT/RESULTS.new" >"$f"
  log "appended to $f (raw: $OUT)"
fi
