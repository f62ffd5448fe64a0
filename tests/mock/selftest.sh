#!/usr/bin/env bash
# Self-test of build/bridle-mock: every dialect plain and streamed, the
# faults, the queue, the provider batch APIs and the counters. Needs bash, curl and node (for JSON).
# Usage: tests/mock/selftest.sh [path/to/bridle-mock]
# The last line is "N passed, N failed"; the exit status is non-zero on any failure.
set -u
cd "$(dirname "$0")/../.."
MOCK=${1:-build/bridle-mock}
T=$(mktemp -d)
PASS=0
FAIL=0
MOCK_PID=

cleanup() {
    [ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

# check.js evaluates one JS expression against the last response:
#   s (status), h (headers, lower-case), raw (body text), j (body as JSON or
#   null), ev (SSE messages: [{event, data}] with data parsed when JSON),
#   nd (NDJSON lines parsed), rc (curl exit code), ms (elapsed ms).
cat >"$T/check.js" <<'EOF'
const fs = require('fs');
const dir = process.argv[2], expr = process.argv[3];
const raw = fs.readFileSync(dir + '/body', 'utf8');
const meta = fs.readFileSync(dir + '/meta', 'utf8').trim().split(' ');
const s = +meta[0], rc = +meta[1], ms = +meta[2];
const h = {};
for (const line of fs.readFileSync(dir + '/hdr', 'utf8').split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0) h[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
}
let j = null;
try { j = JSON.parse(raw); } catch (e) {}
const parse = (t) => { try { return JSON.parse(t); } catch (e) { return t; } };
const ev = raw.split('\n\n').filter((b) => b.trim()).map((b) => {
    const m = { event: null, data: null };
    for (const l of b.split('\n')) {
        if (l.startsWith('event: ')) m.event = l.slice(7);
        if (l.startsWith('data: ')) m.data = parse(l.slice(6));
    }
    return m;
});
const nd = raw.split('\n').filter((l) => l.trim()).map(parse);
const text = (arr) => arr.join('');
let ok = false;
try { ok = !!eval(expr); } catch (e) { console.error('  exception: ' + e.message); }
if (!ok) console.error('  status=' + s + ' rc=' + rc + ' body=' + raw.slice(0, 600));
process.exit(ok ? 0 : 1);
EOF

# req METHOD PATH [BODY] [curl args...]: runs one request into $T/{body,hdr,meta}.
req() {
    local method=$1 path=$2 body=${3:-}
    shift 3 2>/dev/null || shift $#
    local start end code rc
    start=$(date +%s%N)
    if [ -n "$body" ]; then
        code=$(curl -s -o "$T/body" -D "$T/hdr" -w '%{http_code}' -X "$method" \
            -H 'content-type: application/json' --data-binary "$body" "$@" "$BASE$path")
    else
        code=$(curl -s -o "$T/body" -D "$T/hdr" -w '%{http_code}' -X "$method" "$@" "$BASE$path")
    fi
    rc=$?
    end=$(date +%s%N)
    echo "$code $rc $(((end - start) / 1000000))" >"$T/meta"
}

check() {
    local name=$1 expr=$2
    if node "$T/check.js" "$T" "$expr"; then
        PASS=$((PASS + 1))
        echo "ok   $name"
    else
        FAIL=$((FAIL + 1))
        echo "FAIL $name  [$expr]"
    fi
}

# ---- start the mock on a free port ----------------------------------------
"$MOCK" --listen 127.0.0.1:0 >"$T/mock.out" 2>"$T/mock.err" &
MOCK_PID=$!
for _ in $(seq 50); do
    grep -q 'listening on' "$T/mock.out" 2>/dev/null && break
    sleep 0.1
done
ADDR=$(sed -n 's/^bridle-mock listening on //p' "$T/mock.out")
if [ -z "$ADDR" ]; then
    echo "mock did not start: $(cat "$T/mock.err")"
    echo "0 passed, 1 failed"
    exit 1
fi
BASE="http://$ADDR"
echo "mock at $BASE (pid $MOCK_PID)"

HELLO='"messages":[{"role":"user","content":"Say hello to the test suite"}]' # 27 bytes -> 7 tokens

# ---- OpenAI ---------------------------------------------------------------
req POST /v1/chat/completions "{\"model\":\"gpt-4o-mini\",$HELLO}" -H 'authorization: Bearer sk-test'
check "openai plain" 's==200 && j.object=="chat.completion" && j.choices[0].message.content=="Hello from gpt-4o-mini. This is a mock reply." && j.choices[0].finish_reason=="stop"'
check "openai usage" 'j.usage.prompt_tokens==7 && j.usage.completion_tokens==8 && j.usage.total_tokens==15 && j.usage.prompt_tokens_details.cached_tokens==0 && j.usage.completion_tokens_details.reasoning_tokens==0'

req POST /v1/chat/completions "{\"model\":\"gpt-4o-mini\",\"stream\":true,$HELLO}"
check "openai stream" 'h["content-type"]=="text/event-stream" && ev[0].data.choices[0].delta.role=="assistant" && text(ev.slice(1,-2).map(e=>e.data.choices[0].delta.content))=="Hello from gpt-4o-mini. This is a mock reply." && ev.length==11'
check "openai stream end" 'ev[ev.length-2].data.choices[0].finish_reason=="stop" && ev[ev.length-1].data=="[DONE]" && ev.slice(0,-1).every(e=>!("usage" in e.data))'

req POST /v1/chat/completions "{\"model\":\"gpt-4o-mini\",\"stream\":true,\"stream_options\":{\"include_usage\":true},$HELLO}"
check "openai stream include_usage" 'ev.slice(0,-2).every(e=>e.data.usage===null) && ev[ev.length-2].data.choices.length==0 && ev[ev.length-2].data.usage.completion_tokens==8 && ev[ev.length-2].data.usage.prompt_tokens==7 && ev[ev.length-1].data=="[DONE]"'

req POST /v1/chat/completions "{\"model\":\"gpt-4o-mini\",\"max_completion_tokens\":3,$HELLO}"
check "openai cap truncates" 'j.choices[0].message.content=="Hello from gpt-4o-mini." && j.choices[0].finish_reason=="length" && j.usage.completion_tokens==3'

req GET /v1/models
check "openai models" 's==200 && j.object=="list" && j.data.length>0 && j.data[0].object=="model"'

req POST /v1/chat/completions '{"model":"x",'
check "openai bad json" 's==400 && j.error.type=="invalid_request_error" && "param" in j.error && "code" in j.error'

# ---- Anthropic ------------------------------------------------------------
req POST /v1/messages "{\"model\":\"claude-x\",$HELLO}"
check "anthropic needs max_tokens" 's==400 && j.type=="error" && j.error.type=="invalid_request_error"'

# system (12 bytes) + user 27 bytes = 39 -> 10 tokens; 3 cached, 2+1 written
req POST /v1/messages "{\"model\":\"claude-x\",\"max_tokens\":100,\"system\":[{\"type\":\"text\",\"text\":\"Be concise.!\"}],$HELLO}" \
    -H 'x-mock: cached_tokens=3,cache_write_tokens=2,cache_write_1h_tokens=1'
check "anthropic plain" 's==200 && j.type=="message" && j.content[0].type=="text" && j.content[0].text=="Hello from claude-x. This is a mock reply." && j.stop_reason=="end_turn"'
check "anthropic usage" 'j.usage.input_tokens==4 && j.usage.cache_read_input_tokens==3 && j.usage.cache_creation_input_tokens==3 && j.usage.cache_creation.ephemeral_5m_input_tokens==2 && j.usage.cache_creation.ephemeral_1h_input_tokens==1 && j.usage.output_tokens==8'

req POST /v1/messages "{\"model\":\"claude-x\",\"max_tokens\":100,\"stream\":true,\"system\":\"Be concise.!\",$HELLO}"
check "anthropic stream order" 'JSON.stringify(ev.map(e=>e.event).filter((x,i,a)=>x!=a[i-1]))==JSON.stringify(["message_start","ping","content_block_start","content_block_delta","content_block_stop","message_delta","message_stop"]) && ev.every(e=>e.data.type==e.event)'
check "anthropic stream content" 'text(ev.filter(e=>e.event=="content_block_delta").map(e=>e.data.delta.text))=="Hello from claude-x. This is a mock reply." && ev[0].data.message.usage.input_tokens==10'
check "anthropic stream usage" 'ev[ev.length-2].data.delta.stop_reason=="end_turn" && ev[ev.length-2].data.usage.output_tokens==8'

req POST /v1/messages "{\"model\":\"claude-x\",\"max_tokens\":2,$HELLO}"
check "anthropic cap" 'j.stop_reason=="max_tokens" && j.content[0].text=="Hello from" && j.usage.output_tokens==2'

req POST /v1/messages 'nope'
check "anthropic bad json" 's==400 && j.type=="error" && j.error.type=="invalid_request_error"'

# ---- Gemini ---------------------------------------------------------------
GEM='"contents":[{"role":"user","parts":[{"text":"Say hello to the test suite"}]}]'
req POST /v1beta/models/gemini-2.5-flash:generateContent "{$GEM}" -H 'x-mock: reasoning_tokens=5,cached_tokens=2'
check "gemini plain" 's==200 && j.candidates[0].content.parts[0].text=="Hello from gemini-2.5-flash. This is a mock reply." && j.candidates[0].finishReason=="STOP"'
check "gemini usage" 'const u=j.usageMetadata; u.promptTokenCount==7 && u.cachedContentTokenCount==2 && u.candidatesTokenCount==8 && u.thoughtsTokenCount==5 && u.totalTokenCount==20'

req POST "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse" "{$GEM,\"generationConfig\":{\"maxOutputTokens\":4}}"
check "gemini stream" 'ev.length==4 && text(ev.map(e=>e.data.candidates[0].content.parts[0].text))=="Hello from gemini-2.5-flash. This" && ev.every(e=>e.event===null && typeof e.data=="object")'
check "gemini stream running usage" 'ev.map(e=>e.data.usageMetadata.candidatesTokenCount).join()=="1,2,3,4" && ev[3].data.candidates[0].finishReason=="MAX_TOKENS" && !ev[2].data.candidates[0].finishReason'

req POST /v1beta/models/g:generateContent '{bad'
check "gemini bad json" 's==400 && j.error.code==400 && j.error.status=="INVALID_ARGUMENT"'

# ---- Ollama ---------------------------------------------------------------
req POST /api/chat "{\"model\":\"llama3.2\",$HELLO}"
check "ollama default stream" 'h["content-type"]=="application/x-ndjson" && nd.length==9 && nd.slice(0,-1).every(l=>l.done===false) && text(nd.map(l=>l.message.content))=="Hello from llama3.2. This is a mock reply."'
check "ollama final line" 'const f=nd[nd.length-1]; f.done===true && f.done_reason=="stop" && f.prompt_eval_count==7 && f.eval_count==8 && f.total_duration>0'

req POST /api/chat "{\"model\":\"llama3.2\",\"stream\":false,\"options\":{\"num_predict\":1},$HELLO}"
check "ollama non-stream cap" 'j.done===true && j.message.content=="Hello" && j.done_reason=="length" && j.eval_count==1'

req GET /api/tags
check "ollama tags" 's==200 && j.models.length>0 && j.models[0].name'

req POST /api/chat '['
check "ollama bad json" 's==400 && typeof j.error=="string"'

# ---- faults ---------------------------------------------------------------
req POST /v1/chat/completions "{\"model\":\"m\",$HELLO}" -H 'x-mock: status=429,retry_after=2,retry_after_ms=1500'
check "status 429 + retry headers" 's==429 && h["retry-after"]=="2" && h["retry-after-ms"]=="1500" && j.error.code=="rate_limit_exceeded"'

req POST /v1/chat/completions "{\"model\":\"m\",$HELLO}" -H 'x-mock: status=429,code=insufficient_quota,should_retry=false'
check "openai insufficient_quota" 's==429 && j.error.type=="insufficient_quota" && j.error.code=="insufficient_quota" && h["x-should-retry"]=="false"'

req POST /v1/messages "{\"model\":\"c\",\"max_tokens\":5,$HELLO}" -H 'x-mock: status=529'
check "anthropic 529" 's==529 && j.error.type=="overloaded_error"'

req POST /v1/chat/completions "{\"model\":\"m\",$HELLO}" -H 'x-mock: status=503,retry_after=3,retry_after_date=1'
check "retry-after as HTTP date" 's==503 && (d=Date.parse(h["retry-after"])-Date.now(), d>1000 && d<=4000)'

req POST /v1beta/models/g:generateContent "{$GEM}" -H 'x-mock: status=429,retry_after=7'
check "gemini RetryInfo" 's==429 && j.error.status=="RESOURCE_EXHAUSTED" && j.error.details[0].retryDelay=="7s"'

req POST /v1/chat/completions "{\"model\":\"m\",\"stream\":true,$HELLO}" -H 'x-mock: cut_after=2'
check "cut_after stream" 'rc==18 && ev.length==3 && !raw.includes("[DONE]") && !raw.includes("finish_reason\":\"stop")'

req POST /v1/chat/completions "{\"model\":\"m\",$HELLO}" -H 'x-mock: cut_after=1'
check "cut_after non-stream" 'rc==18 && s==200 && j===null && raw.length>20'

req POST /v1/chat/completions "{\"model\":\"m\",$HELLO}" -H 'x-mock: hang=1' --max-time 1
check "hang" 'rc==28 && ms>=900'
sleep 0.2
req GET /_mock/stats
check "hang released when client left" 'j.in_flight==0'

req POST /v1/chat/completions "{\"model\":\"m\",\"stream\":true,$HELLO}" -H 'x-mock: trickle_ms=200' --max-time 0.5
check "client leaves mid-trickle" 'rc==28 && ev.length>=2 && ev.length<5'
req POST /v1/chat/completions "{\"model\":\"m\",$HELLO}" -H 'x-mock: latency_ms=3000' --max-time 0.3
check "client leaves during latency" 'rc==28'
sleep 0.5
req GET /_mock/stats
check "both released" 'j.in_flight==0'

req POST /v1/chat/completions "{\"model\":\"m\",$HELLO}" -H 'x-mock: malformed=1'
check "malformed" 's==200 && j===null && raw.length>0'

req POST /v1/messages "{\"model\":\"c\",\"max_tokens\":50,\"stream\":true,$HELLO}" -H 'x-mock: malformed=1'
check "malformed stream" 's==200 && ev.length==1 && typeof ev[0].data=="string"'

req POST /v1/chat/completions "{\"model\":\"m\",$HELLO}" -H 'x-mock: content=UNCERTAIN%2C%20maybe'
check "content override" 'j.choices[0].message.content=="UNCERTAIN, maybe" && j.usage.completion_tokens==2'
req POST /v1/chat/completions "{\"model\":\"m\",$HELLO}" -H 'x-mock: content=ab,repeat=3'
check "repeat" 'j.choices[0].message.content=="ab ab ab" && j.usage.completion_tokens==3'

# A marker in the prompt steers the mock through a gateway. 66 bytes -> 17.
req POST /v1/chat/completions '{"model":"m","messages":[{"role":"user","content":"hi [[mock:cached_tokens=4,reasoning_tokens=3,content=%7Bnot%20json]]"}]}'
check "marker directives" 'j.choices[0].message.content=="{not json" && j.usage.prompt_tokens==17 && j.usage.prompt_tokens_details.cached_tokens==4 && j.usage.completion_tokens==5 && j.usage.completion_tokens_details.reasoning_tokens==3'

req POST /v1/chat/completions "{\"model\":\"m\",$HELLO}" -H 'x-mock: prompt_tokens=1000,completion_tokens=42,cache_write_tokens=10'
check "usage overrides" 'j.usage.prompt_tokens==1000 && j.usage.completion_tokens==42 && j.usage.total_tokens==1042 && j.usage.prompt_tokens_details.cache_write_tokens==10'

req POST /v1/chat/completions "{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true},$HELLO}" -H 'x-mock: no_usage=1'
check "no_usage stream" 'ev[ev.length-1].data=="[DONE]" && ev.every(e=>e.data=="[DONE]" || (!("usage" in e.data) && e.data.choices.length==1))'

req POST /v1/chat/completions "{\"model\":\"m\",$HELLO}" -H 'x-mock: finish=length'
check "finish=length" 'j.choices[0].finish_reason=="length" && j.usage.completion_tokens==8'

req POST /v1/chat/completions "{\"model\":\"m\",$HELLO}" -H 'x-mock: latency_ms=300'
check "latency_ms" 's==200 && ms>=300'

req POST /api/chat "{\"model\":\"llama3.2\",$HELLO}" -H 'x-mock: trickle_ms=40'
check "trickle_ms" 'nd.length==9 && ms>=8*40'

# ---- tool calls -------------------------------------------------------------
OT='"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"}}}}},{"type":"function","function":{"name":"get_time"}}]'
ASK='"messages":[{"role":"user","content":"Weather? [[mock:tool_calls=2]]"}]'
req POST /v1/chat/completions "{\"model\":\"gpt-4o-mini\",$ASK,$OT}"
check "openai tool calls" 'j.choices[0].finish_reason=="tool_calls" && j.choices[0].message.content===null && j.choices[0].message.tool_calls.map(c=>c.function.name).join()=="get_weather,get_time" && j.choices[0].message.tool_calls[0].function.arguments==JSON.stringify({city:"mock-city",days:1}) && j.choices[0].message.tool_calls[1].id=="call_"+j.id.slice(9)+"_1" && j.usage.completion_tokens==Math.ceil((11+JSON.stringify({city:"mock-city",days:1}).length)/4)+Math.ceil((8+2)/4)'
req POST /v1/chat/completions "{\"model\":\"gpt-4o-mini\",\"stream\":true,$ASK,$OT}"
check "openai streamed tool calls" 'ev[ev.length-2].data.choices[0].finish_reason=="tool_calls" && text(ev.flatMap(e=>e.data.choices?.[0]?.delta?.tool_calls??[]).filter(t=>t.index==0).map(t=>t.function.arguments))==JSON.stringify({city:"mock-city",days:1}) && ev.filter(e=>e.data.choices?.[0]?.delta?.tool_calls?.[0]?.id).length==2'
req POST /v1/chat/completions "{\"model\":\"gpt-4o-mini\",$ASK,$OT,\"tool_choice\":\"none\"}"
check "openai tool_choice none answers text" 'j.choices[0].finish_reason=="stop" && j.choices[0].message.content=="Hello from gpt-4o-mini. This is a mock reply."'
req POST /v1/chat/completions "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"{}\"}}]}],$OT}"
check "openai unanswered call refused" 's==400 && /did not have response messages: c1/.test(j.error.message)'
AT='"tools":[{"name":"get_weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}]'
req POST /v1/messages "{\"model\":\"claude-x\",\"max_tokens\":50,\"stream\":true,$ASK,$AT}" -H 'x-mock: tool_call=get_weather:%7B%22city%22%3A%22Rome%22%7D'
check "anthropic streamed tool_use" 'ev[2].event=="content_block_start" && ev[2].data.content_block.type=="tool_use" && ev[2].data.content_block.input && text(ev.filter(e=>e.data.delta?.type=="input_json_delta").map(e=>e.data.delta.partial_json))=="{\"city\":\"Rome\"}" && ev[ev.length-2].data.delta.stop_reason=="tool_use"'
req POST /v1/messages "{\"model\":\"claude-x\",\"max_tokens\":50,\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"a.b\",\"name\":\"get_weather\",\"input\":{}}]},{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"a.b\",\"content\":\"r\"}]}]}"
check "anthropic bad tool_use id refused" 's==400 && j.error.type=="invalid_request_error" && /should match pattern/.test(j.error.message)'
GT='"tools":[{"functionDeclarations":[{"name":"get_weather","parametersJsonSchema":{"type":"object","properties":{"city":{"type":"string"}}}}]}]'
req POST '/v1beta/models/gemini-3-flash:generateContent' "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"Weather? [[mock:tool_calls=1]]\"}]}],$GT}"
check "gemini functionCall" 'j.candidates[0].finishReason=="STOP" && j.candidates[0].content.parts[0].functionCall.name=="get_weather" && j.candidates[0].content.parts[0].functionCall.args.city=="mock-city" && /\/get_weather\//.test(j.candidates[0].content.parts[0].thoughtSignature)'
req POST '/v1beta/models/gemini-3-flash:generateContent' "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"x\"}]},{\"role\":\"model\",\"parts\":[{\"functionCall\":{\"name\":\"get_weather\",\"args\":{}}}]},{\"role\":\"user\",\"parts\":[{\"functionResponse\":{\"name\":\"get_weather\",\"response\":{}}}]}],$GT}"
check "gemini 3 without the thought signature refused" 's==400 && j.error.status=="INVALID_ARGUMENT" && /thought_signature/.test(j.error.message)'
req POST /api/chat "{\"model\":\"llama3.2\",$ASK,$OT}"
check "ollama streamed tool calls" 'nd.length==3 && nd[0].message.tool_calls[0].function.name=="get_weather" && nd[0].message.tool_calls[0].function.arguments.city=="mock-city" && nd[1].message.tool_calls[0].function.index==1 && nd[2].done===true && nd[2].done_reason=="stop"'

# ---- fault queue ----------------------------------------------------------
req POST /_mock/faults '{"model":"q-model","count":2,"directives":"status=503,retry_after=1"}'
check "queue add" 's==200'
req POST /v1/chat/completions "{\"model\":\"other\",$HELLO}"
check "queue skips other model" 's==200'
req POST /v1/chat/completions "{\"model\":\"q-model\",$HELLO}"
check "queue rule 1/2" 's==503 && h["retry-after"]=="1"'
req POST /v1/messages "{\"model\":\"q-model\",\"max_tokens\":9,$HELLO}"
check "queue rule 2/2" 's==503 && j.error.type=="api_error"'
req POST /v1/chat/completions "{\"model\":\"q-model\",$HELLO}"
check "queue exhausted" 's==200'
req POST /_mock/faults '{"model":"*","count":5,"directives":"status=500"}'
req DELETE /_mock/faults
req POST /v1/chat/completions "{\"model\":\"q-model\",$HELLO}"
check "queue cleared" 's==200'

# ---- embeddings ------------------------------------------------------------
NORM='(v)=>Math.abs(Math.hypot(...v)-1)<1e-6'
req POST /v1/embeddings '{"model":"text-embedding-3-small","input":["hello","world!"],"dimensions":4}'
check "openai embeddings" 's==200 && j.object=="list" && j.data.length==2 && j.data[1].index==1 && j.data[0].embedding.length==4 && ('"$NORM"')(j.data[0].embedding) && j.usage.prompt_tokens==4 && j.usage.total_tokens==4'
cp "$T/body" "$T/emb_float"
req POST /v1/embeddings '{"model":"m","input":"hello","dimensions":4,"encoding_format":"base64"}'
check "openai embeddings base64" 'typeof j.data[0].embedding=="string" && Buffer.from(j.data[0].embedding,"base64").length==16'
req POST /v1beta/models/gemini-embedding-001:embedContent '{"model":"models/gemini-embedding-001","content":{"parts":[{"text":"hello"}]},"outputDimensionality":4}'
check "gemini embedContent: the same vector for the same text" 's==200 && JSON.stringify(j.embedding.values)==JSON.stringify(JSON.parse(require("fs").readFileSync(dir+"/emb_float")).data[0].embedding) && j.usageMetadata.promptTokenCount==2'
req POST /v1beta/models/g:batchEmbedContents '{"requests":[{"model":"models/other","content":{"parts":[{"text":"a"}]}}]}'
check "gemini batch: model must match the path" 's==400 && j.error.code==400'
req POST /api/embed '{"model":"nomic-embed-text","input":["hello","x [[mock:no_usage=1]]"],"dimensions":4}'
check "ollama embed, no_usage" 's==200 && j.embeddings.length==2 && !("prompt_eval_count" in j)'
req POST /v1/embeddings '{"model":"m","input":""}'
check "empty input is a 400" 's==400 && j.error.type=="invalid_request_error"'

# ---- provider batch APIs -------------------------------------------------------
# wait_for PATH EXPR: GETs PATH until EXPR holds (at most ~10 s), then checks it.
wait_for() {
    for _ in $(seq 200); do
        req GET "$1"
        node "$T/check.js" "$T" "$2" 2>/dev/null && return
        sleep 0.05
    done
}
LINE() { # custom_id content
    printf '{"custom_id":"%s","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"%s"}]}}\n' "$1" "$2"
}
{ LINE b-0 "Say hello to the test suite"; LINE b-1 "fail [[mock:status=503]]"; LINE b-2 "x [[mock:content=ok,reasoning_tokens=2]]"; } >"$T/in.jsonl"
req POST /_mock/batch '{"processing_ms":200}'
check "batch knob" 's==200 && j.processing_ms==200'
req POST /v1/files '' -F purpose=batch -F "file=@$T/in.jsonl;filename=batch.jsonl"
check "file upload" 's==200 && j.object=="file" && j.purpose=="batch" && j.status=="processed" && j.bytes>0 && /^file-/.test(j.id)'
FILE_ID=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).id)' "$T/body")
req POST /v1/batches "{\"input_file_id\":\"$FILE_ID\",\"endpoint\":\"/v1/chat/completions\",\"completion_window\":\"24h\"}"
check "batch created validating" 's==200 && j.object=="batch" && j.status=="validating" && /^batch_/.test(j.id)'
BATCH_ID=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).id)' "$T/body")
wait_for "/v1/batches/$BATCH_ID" 'j.status=="completed"'
check "batch completed" 'j.status=="completed" && j.request_counts.total==3 && j.request_counts.completed==2 && j.request_counts.failed==1 && j.usage.input_tokens==7+Math.ceil(38/4) && j.usage.output_tokens==8+1+2'
OUT_ID=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).output_file_id)' "$T/body")
ERR_ID=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).error_file_id)' "$T/body")
req POST /v1/chat/completions "{\"model\":\"gpt-4o-mini\",$HELLO}"
cp "$T/body" "$T/live"
req GET "/v1/files/$OUT_ID/content"
check "output lines reversed, answered as live" 'nd.map(l=>l.custom_id).join()=="b-2,b-0" && (L=JSON.parse(require("fs").readFileSync(dir+"/live")), B=nd[1].response.body, B.choices[0].message.content==L.choices[0].message.content && JSON.stringify(B.usage)==JSON.stringify(L.usage)) && nd[0].response.body.choices[0].message.content=="ok" && nd.every(l=>l.error===null && l.response.status_code==200)'
req GET "/v1/files/$ERR_ID/content"
check "error file: the failing line" 'nd.length==1 && nd[0].custom_id=="b-1" && nd[0].response.status_code==503 && nd[0].response.body.error.type=="server_error"'

# cancel midway: 100 lines over 2 s, cancelled after ~0.6 s
for i in $(seq 0 99); do LINE "c-$i" "cancel $i"; done >"$T/many.jsonl"
req POST /_mock/batch '{"processing_ms":2000}'
req POST /v1/files '' -F purpose=batch -F "file=@$T/many.jsonl;filename=batch.jsonl"
FILE_ID=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).id)' "$T/body")
req POST /v1/batches "{\"input_file_id\":\"$FILE_ID\",\"endpoint\":\"/v1/chat/completions\",\"completion_window\":\"24h\"}"
BATCH_ID=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).id)' "$T/body")
sleep 0.6
req POST "/v1/batches/$BATCH_ID/cancel"
check "cancel -> cancelling" 's==200 && j.status=="cancelling" && j.cancelling_at>0'
wait_for "/v1/batches/$BATCH_ID" 'j.status=="cancelled"'
check "cancelled midway" 'j.status=="cancelled" && j.request_counts.completed>0 && j.request_counts.completed<100 && j.error_file_id===null'

# Anthropic Message Batches
req POST /_mock/batch '{"processing_ms":200}'
AP='"model":"claude-x","max_tokens":100,"messages":[{"role":"user","content":"Say hello to the test suite"}]'
req POST /v1/messages/batches "{\"requests\":[{\"custom_id\":\"m-0\",\"params\":{$AP}},{\"custom_id\":\"m-1\",\"params\":{\"model\":\"claude-x\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"[[mock:status=529]]\"}]}}]}"
check "message batch created" 's==200 && j.type=="message_batch" && j.processing_status=="in_progress" && j.request_counts.processing==2 && j.results_url===null && /^msgbatch_/.test(j.id)'
MB_ID=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).id)' "$T/body")
wait_for "/v1/messages/batches/$MB_ID" 'j.processing_status=="ended"'
check "message batch ended" 'j.request_counts.succeeded==1 && j.request_counts.errored==1 && j.results_url=="'"$BASE"'/v1/messages/batches/'"$MB_ID"'/results" && j.ended_at'
req GET "/v1/messages/batches/$MB_ID/results"
check "message batch results" 'nd.length==2 && nd[0].custom_id=="m-1" && nd[0].result.type=="errored" && nd[0].result.error.error.type=="overloaded_error" && nd[1].result.type=="succeeded" && nd[1].result.message.content[0].text=="Hello from claude-x. This is a mock reply." && nd[1].result.message.usage.input_tokens==7 && nd[1].result.message.usage.output_tokens==8 && nd[1].result.message.usage.service_tier=="batch"'
req POST /_mock/batch '{"fail_create":529}'
req POST /v1/messages/batches "{\"requests\":[{\"custom_id\":\"m-0\",\"params\":{$AP}}]}"
check "fail_create" 's==529 && j.error.type=="overloaded_error"'
# Gemini batch mode: inlined requests, results in input order with their keys
req POST /v1beta/models/gemini-2.5-flash:batchGenerateContent "{\"batch\":{\"display_name\":\"t\",\"input_config\":{\"requests\":{\"requests\":[{\"metadata\":{\"key\":\"k-0\"},\"request\":{$GEM}},{\"metadata\":{\"key\":\"k-1\"},\"request\":{\"contents\":[{\"parts\":[{\"text\":\"[[mock:status=429]]\"}]}]}}]}}}}"
check "gemini batch created" 's==200 && /^batches\//.test(j.name) && j.metadata.state=="BATCH_STATE_PENDING" && j.metadata.batchStats.requestCount=="2"'
GB=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).name)' "$T/body")
wait_for "/v1beta/$GB" 'j.done===true'
check "gemini batch done" 'j.metadata.state=="BATCH_STATE_SUCCEEDED" && (r=j.response.inlinedResponses.inlinedResponses, r.length==2 && r[0].metadata.key=="k-0" && r[0].response.candidates[0].content.parts[0].text=="Hello from gemini-2.5-flash. This is a mock reply." && r[0].response.usageMetadata.promptTokenCount==7 && r[1].metadata.key=="k-1" && r[1].error.code==429 && r[1].error.status=="RESOURCE_EXHAUSTED")'
req GET /_mock/stats
check "batch counters" 'j.batch.created.openai==2 && j.batch.created.anthropic==1 && j.batch.created.gemini==1 && j.batch.lines_run.gemini==2 && j.batch.lines_run.anthropic==2 && j.batch.lines_run.openai>=4 && j.batch.custom_ids_submitted_twice==0'

# ---- counters -------------------------------------------------------------
req POST /_mock/reset
check "reset" 's==200'
req POST /v1/chat/completions "{\"model\":\"alpha\",\"stream\":true,\"stream_options\":{\"include_usage\":true},$HELLO}" -H 'authorization: Bearer sk-upstream'
req POST /v1/chat/completions "{\"model\":\"alpha\",$HELLO}" -H 'x-mock: status=500'
req POST /v1/messages "{\"model\":\"beta\",\"max_tokens\":5,$HELLO}" -H 'X-Api-Key: ak-1'
req GET /_mock/stats
check "stats" 'j.requests==3 && j.by_path["/v1/chat/completions"]==2 && j.by_path["/v1/messages"]==1 && j.by_model.alpha==2 && j.by_model.beta==1 && j.by_status["200"]==2 && j.by_status["500"]==1 && j.in_flight==0'
req GET '/_mock/last?n=3'
check "last n=3" 'j.length==3 && j[0].method=="POST" && j[0].path=="/v1/chat/completions" && j[0].headers.authorization=="Bearer sk-upstream" && j[0].body.stream_options.include_usage===true && j[2].headers["x-api-key"]=="ak-1" && j[2].body.model=="beta"'
req GET /_mock/last
check "last default 1" 'j.length==1 && j[0].path=="/v1/messages"'

# ---- clean exit -----------------------------------------------------------
kill -TERM "$MOCK_PID"
wait "$MOCK_PID"
echo "$? 0 0" >"$T/meta"
: >"$T/body"
: >"$T/hdr"
MOCK_PID=
check "SIGTERM exits 0" 's==0'

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
