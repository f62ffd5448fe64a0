// Integration test harness: starts the real binaries (build/bridle,
// build/bridle-mock) on free ports, talks to them, and kills everything it
// started when the test file ends (test.after) or the process exits.
//
//   import { startMock, startBridle, mockConfig, post } from './lib/harness.mjs';
//   const mock = await startMock();
//   const gw = await startBridle({ config: mockConfig(mock.url) });
//   const r = await post(`${gw.baseURL}/chat/completions`, body, { authorization: `Bearer ${gw.key}` });
//
// BUILD (env, default "build") picks the build directory. With an ASan build
// (BUILD=build-asan) the children run with ASAN_OPTIONS=detect_leaks=1 and
// stop() throws when a child's stderr holds an AddressSanitizer / LeakSanitizer
// report or a UBSan "runtime error:".

import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const BUILD = path.resolve(ROOT, process.env.BUILD || 'build');
export const SANITIZED = /asan|ubsan|sanitiz/i.test(path.basename(BUILD)) || process.env.SAN === '1';
/**
 * The factor every timing window is scaled by: start-up and shutdown budgets
 * here, and the thresholds in the test files ("answered within 500 ms" is
 * `500 * SLOW`). Sanitized binaries run 2–3× slower, so 3 under ASan/UBSan;
 * BRIDLE_TEST_SLOW overrides it (a loaded machine).
 */
export const SLOW = Number(process.env.BRIDLE_TEST_SLOW) > 0 ? Number(process.env.BRIDLE_TEST_SLOW) : SANITIZED ? 3 : 1;

const SAN_ENV = SANITIZED
  ? {
      ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=0',
      UBSAN_OPTIONS: 'print_stacktrace=1',
      LSAN_OPTIONS: process.env.LSAN_OPTIONS || '',
    }
  : {};
const SAN_PATTERNS = [/ERROR: AddressSanitizer/, /ERROR: LeakSanitizer/, /runtime error:/];
const CRASH_SIGNALS = new Set(['SIGSEGV', 'SIGABRT', 'SIGBUS', 'SIGILL', 'SIGFPE']);

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------
// processes

const live = new Set(); // every child we started and have not reaped
const tmpDirs = new Set();

function killEverything() {
  for (const p of live) {
    try {
      p.child.kill('SIGKILL');
    } catch {}
  }
  for (const d of tmpDirs) {
    try {
      rmSync(d, { recursive: true, force: true });
    } catch {}
  }
}
process.on('exit', killEverything);
// A runner that is itself stopped (timeout, Ctrl-C) must not leave servers behind.
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => {
    killEverything();
    process.exit(128 + os.constants.signals[sig]);
  });
}

// Per-file watchdog. node --test bounds each test (--test-timeout), but a
// test may ask for more (ledger_fault's T8) and a hook or a hung import is not
// a test at all; without this a hang ends only when the whole run is killed,
// which cancels every file silently. scripts/run-integration-tests.sh sets
// BRIDLE_FILE_TIMEOUT_S; past it the file fails with a message naming it.
const FILE_TIMEOUT_S = Number(process.env.BRIDLE_FILE_TIMEOUT_S) || 0;
if (FILE_TIMEOUT_S > 0) {
  const file = path.relative(ROOT, process.argv[1] || 'the test file');
  setTimeout(() => {
    process.stderr.write(
      `\n${file} timed out after ${FILE_TIMEOUT_S} s (BRIDLE_FILE_TIMEOUT_S; INTEGRATION_FILE_TIMEOUT_S in scripts/run-integration-tests.sh)\n`,
    );
    for (const p of live) process.stderr.write(`--- ${p.name} stderr, last lines ---\n${tail(p.stderr, 20)}\n`);
    process.exitCode = 124;
    process.exit(124); // the 'exit' handler kills the children
  }, FILE_TIMEOUT_S * 1000).unref();
}

/** Stops everything still running; throws if any of them reported a sanitizer error. */
export async function stopAll() {
  const errors = [];
  for (const p of [...live]) {
    try {
      await p.stop();
    } catch (e) {
      errors.push(e);
    }
  }
  if (errors.length === 1) throw errors[0];
  if (errors.length) throw new AggregateError(errors, errors.map((e) => e.message).join('\n\n'));
}
after(stopAll);

/** A free TCP port on 127.0.0.1 (closed again; a tiny race with others is possible). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function tail(s, n = 40) {
  return s.split('\n').slice(-n).join('\n');
}

/**
 * Spawns a binary, keeps its stdout/stderr, and gives it a stop() that sends
 * SIGTERM, waits, SIGKILLs after a while, and throws on sanitizer reports or
 * a crash. Exported for tests that need other sub-commands.
 */
export function spawnTracked(name, file, args, { env = {}, cwd = ROOT } = {}) {
  const child = spawn(file, args, {
    cwd,
    env: { ...process.env, ...SAN_ENV, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const p = {
    name,
    child,
    stdout: '',
    stderr: '',
    exited: null, // {code, signal} once it ended
    stopping: false,
    listeners: new Set(),
  };
  const bump = () => {
    for (const f of p.listeners) f();
  };
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (d) => {
    p.stdout += d;
    bump();
  });
  child.stderr.on('data', (d) => {
    p.stderr += d;
    bump();
    if (process.env.BRIDLE_TEST_VERBOSE) process.stderr.write(`[${name}] ${d}`);
  });
  p.closed = new Promise((resolve) => {
    child.on('error', (err) => {
      p.stderr += `\n[harness] spawn failed: ${err.message}\n`;
      p.exited = { code: null, signal: null, error: err };
      live.delete(p);
      bump();
      resolve();
    });
    child.on('close', (code, signal) => {
      p.exited = { code, signal };
      live.delete(p);
      bump();
      resolve();
    });
  });
  p.logs = () => `--- ${name} stdout ---\n${p.stdout}\n--- ${name} stderr ---\n${p.stderr}`;
  p.check = () => {
    const hit = SAN_PATTERNS.find((re) => re.test(p.stderr));
    if (hit) throw new Error(`${name}: sanitizer report (${hit.source}):\n${tail(p.stderr, 80)}`);
    const ex = p.exited;
    if (ex && ex.signal && CRASH_SIGNALS.has(ex.signal))
      throw new Error(`${name}: crashed with ${ex.signal}:\n${tail(p.stderr)}`);
    if (ex && ex.error) throw new Error(`${name}: ${ex.error.message}`);
  };
  p.stop = async ({ signal = 'SIGTERM', timeoutMs = 5000 * SLOW } = {}) => {
    if (!p.exited) {
      p.stopping = true;
      try {
        child.kill(signal);
      } catch {}
      const t = setTimeout(() => {
        try {
          child.kill('SIGKILL');
        } catch {}
      }, timeoutMs);
      await p.closed;
      clearTimeout(t);
    }
    p.check();
    return p.exited;
  };
  /** Resolves when pred(p) is true; rejects when the process ends first or after ms. */
  p.waitFor = (pred, ms, what) =>
    new Promise((resolve, reject) => {
      const done = () => {
        if (pred(p)) {
          cleanup();
          resolve();
        } else if (p.exited) {
          cleanup();
          reject(new Error(`${name} exited (${JSON.stringify(p.exited)}) before ${what}\n${p.logs()}`));
        }
      };
      const t = setTimeout(() => {
        cleanup();
        reject(new Error(`${name}: no ${what} within ${ms} ms\n${p.logs()}`));
      }, ms);
      const cleanup = () => {
        clearTimeout(t);
        p.listeners.delete(done);
      };
      p.listeners.add(done);
      done();
    });
  live.add(p);
  return p;
}

// ---------------------------------------------------------------------------
// mock and gateway

/** Starts build/bridle-mock on a free port. → {url, port, stop(), logs(), proc} */
export async function startMock({ env = {}, args = [] } = {}) {
  let lastErr;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const p = spawnTracked('bridle-mock', path.join(BUILD, 'bridle-mock'), ['--listen', `127.0.0.1:${port}`, ...args], {
      env,
    });
    try {
      await p.waitFor((q) => /listening on/.test(q.stdout), 10000 * SLOW, 'ready line');
    } catch (e) {
      lastErr = e;
      await p.stop().catch(() => {});
      continue; // most likely the port was taken in between
    }
    const url = `http://127.0.0.1:${port}`;
    return { url, port, proc: p, logs: p.logs, stop: p.stop };
  }
  throw lastErr;
}

/** A fresh client key and its SHA-256 (what config `keys[].sha256` holds). */
export function newKey() {
  const key = `bk-${randomBytes(24).toString('hex')}`;
  return { key, sha256: sha256hex(key) };
}

export function sha256hex(s) {
  return createHash('sha256').update(s).digest('hex');
}

/** A temporary directory removed when the process exits. */
export function tmpDir(prefix = 'bridle-test-') {
  const d = mkdtempSync(path.join(os.tmpdir(), prefix));
  tmpDirs.add(d);
  return d;
}

/**
 * Writes `config` (an object) to a temp file, adds a fresh client key to
 * `keys`, starts `bridle serve` on a free port and waits for GET /readyz.
 * → {url, port, baseURL, key, keyId, configPath, logs(), stop(), proc}
 */
export async function startBridle({ config, env = {}, args = [], keyId = 'test', team = 'test', readyTimeoutMs } = {}) {
  if (!config) throw new Error('startBridle: config is required (see mockConfig)');
  const { key, sha256 } = newKey();
  const cfg = structuredClone(config);
  cfg.keys = [...(Array.isArray(cfg.keys) ? cfg.keys : []), { id: keyId, sha256, team }];
  const dir = tmpDir();
  const configPath = path.join(dir, 'bridle.json');
  writeFileSync(configPath, JSON.stringify(cfg, null, 2));

  let lastErr;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const p = spawnTracked(
      'bridle',
      path.join(BUILD, 'bridle'),
      ['serve', '--config', configPath, '--listen', `127.0.0.1:${port}`, ...args],
      { env },
    );
    const deadline = Date.now() + (readyTimeoutMs ?? 10000 * SLOW);
    let ready = false;
    while (!p.exited && Date.now() < deadline) {
      try {
        const r = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(1000) });
        await r.arrayBuffer();
        if (r.status === 200) {
          ready = true;
          break;
        }
      } catch {}
      await sleep(50);
    }
    if (ready) {
      return {
        url,
        port,
        baseURL: `${url}/v1`,
        key,
        keyId,
        configPath,
        config: cfg,
        proc: p,
        logs: p.logs,
        stop: p.stop,
        auth: { authorization: `Bearer ${key}` },
      };
    }
    const portClash = /address already in use|EADDRINUSE/i.test(p.stderr);
    await p.stop().catch(() => {});
    lastErr = new Error(
      `bridle did not become ready on ${url} (${p.exited ? `exited ${JSON.stringify(p.exited)}` : 'timeout'})\n${p.logs()}`,
    );
    if (!portClash) break;
  }
  throw lastErr;
}

function isPlainObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Deep merge: objects merge, arrays and scalars replace, null deletes. */
export function merge(base, over) {
  if (!isPlainObject(over)) return over === undefined ? base : over;
  const out = isPlainObject(base) ? { ...base } : {};
  for (const [k, v] of Object.entries(over)) {
    if (v === null) delete out[k];
    else out[k] = merge(out[k], v);
  }
  return out;
}

/**
 * A config with one provider of each kind pointing at the mock, the models
 * gpt-4o-mini (openai), claude-haiku-4-5 (anthropic), gemini-2.5-flash
 * (gemini), llama3.2 (ollama) and the route `auto`. `overrides` is deep-merged
 * (null deletes a key).
 */
export function mockConfig(mockUrl, overrides = {}) {
  const base = {
    log_level: process.env.BRIDLE_TEST_LOG_LEVEL || 'info',
    providers: {
      openai: { kind: 'openai', base_url: `${mockUrl}/v1`, api_key: 'sk-mock-openai' },
      anthropic: { kind: 'anthropic', base_url: `${mockUrl}/v1`, api_key: 'sk-mock-anthropic' },
      gemini: { kind: 'gemini', base_url: `${mockUrl}/v1beta`, api_key: 'mock-gemini' },
      ollama: { kind: 'ollama', base_url: `${mockUrl}` },
    },
    models: {
      'gpt-4o-mini': { provider: 'openai' },
      'claude-haiku-4-5': { provider: 'anthropic' },
      'gemini-2.5-flash': { provider: 'gemini' },
      'llama3.2': { provider: 'ollama' },
    },
    routes: {
      auto: { candidates: ['gpt-4o-mini', 'claude-haiku-4-5', 'gemini-2.5-flash'] },
    },
    // No `resilience` section: every file runs with the shipped defaults
    // (retries and circuit breakers on). A test that is about turning a
    // feature off says so in its own overrides.
    keys: [],
  };
  return merge(base, overrides);
}

// ---------------------------------------------------------------------------
// clients

function headersObject(h) {
  const o = {};
  for (const [k, v] of h) o[k] = v;
  return o;
}

/**
 * POSTs `body` (object → JSON, string/Buffer as is) and reads the whole reply.
 * → {status, headers (lower-case object), text, json (null unless JSON)}
 */
export async function post(url, body, headers = {}, { timeoutMs = 30000, method = 'POST' } = {}) {
  const isRaw = typeof body === 'string' || body instanceof Uint8Array;
  const r = await fetch(url, {
    method,
    headers: { ...(isRaw ? {} : { 'content-type': 'application/json' }), ...headers },
    body: body === undefined ? undefined : isRaw ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: r.status, headers: headersObject(r.headers), text, json };
}

/** GET → same shape as post(). */
export async function get(url, headers = {}, opts = {}) {
  return post(url, undefined, headers, { ...opts, method: 'GET' });
}

/** Parses SSE text into [{event, data}] (data lines joined with \n). */
export function parseSSE(text) {
  const out = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    let event = null;
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith(':') || line === '') continue;
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      let value = i < 0 ? '' : line.slice(i + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
    }
    if (event !== null || data.length) out.push({ event, data: data.join('\n') });
  }
  return out;
}

// ---------------------------------------------------------------------------
// raw HTTP/1.1 over a socket

const REQUEST_LINE = /(?:GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH) \S+ HTTP\/1\.[01]\r\n/g;

/**
 * Parses as many complete HTTP/1.1 responses from `buf` as there are.
 * A response without Content-Length or chunked framing is complete only once
 * the connection closed (`closed`).
 */
export function parseResponses(buf, closed = false) {
  const out = [];
  let off = 0;
  while (off < buf.length) {
    const headEnd = buf.indexOf('\r\n\r\n', off);
    if (headEnd < 0) break;
    const head = buf.subarray(off, headEnd).toString('latin1');
    const [statusLine, ...lines] = head.split('\r\n');
    const m = /^HTTP\/(\d\.\d) (\d{3})(?: (.*))?$/.exec(statusLine);
    if (!m) throw new Error(`not an HTTP response at byte ${off}: ${JSON.stringify(statusLine)}`);
    const headers = {};
    for (const l of lines) {
      const i = l.indexOf(':');
      if (i > 0) {
        const k = l.slice(0, i).trim().toLowerCase();
        const v = l.slice(i + 1).trim();
        headers[k] = k in headers ? `${headers[k]}, ${v}` : v;
      }
    }
    const status = Number(m[2]);
    let p = headEnd + 4;
    let body;
    if (status === 204 || status === 304 || (status >= 100 && status < 200)) {
      body = Buffer.alloc(0);
    } else if (/chunked/i.test(headers['transfer-encoding'] || '')) {
      const parts = [];
      let complete = false;
      for (;;) {
        const le = buf.indexOf('\r\n', p);
        if (le < 0) break;
        const size = parseInt(buf.subarray(p, le).toString('latin1'), 16);
        if (Number.isNaN(size)) throw new Error('bad chunk size');
        if (size === 0) {
          // last chunk: optional trailer lines, then an empty line
          const q = le + 2;
          if (buf.length >= q + 2 && buf[q] === 0x0d && buf[q + 1] === 0x0a) {
            p = q + 2;
          } else {
            const te = buf.indexOf('\r\n\r\n', q);
            if (te < 0) break;
            p = te + 4;
          }
          complete = true;
          break;
        }
        if (buf.length < le + 2 + size + 2) break;
        parts.push(buf.subarray(le + 2, le + 2 + size));
        p = le + 2 + size + 2;
      }
      if (!complete) break;
      body = Buffer.concat(parts);
    } else if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      if (buf.length < p + n) break;
      body = buf.subarray(p, p + n);
      p += n;
    } else {
      if (!closed) break;
      body = buf.subarray(p);
      p = buf.length;
    }
    out.push({ status, reason: m[3] || '', httpVersion: m[1], headers, body: body.toString('utf8') });
    off = p;
  }
  return { responses: out, consumed: off };
}

/**
 * Sends `bytes` (string or Buffer: one or more raw HTTP requests) to
 * 127.0.0.1:port in segments of `segmentSize` bytes, with setNoDelay and
 * `delayMs` between writes, so each segment is its own TCP segment. Collects
 * responses until `expect` complete ones arrived (default: the number of
 * request lines in `bytes`), the server closed, or `timeoutMs`.
 * → {responses: [{status, headers, body}], raw (string), closed (bool), timedOut (bool)}
 */
export function rawRequest(port, bytes, segmentSize = Infinity, opts = {}) {
  const { delayMs = 2, timeoutMs = 10000, host = '127.0.0.1', endAfterWrite = false } = opts;
  const data = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes, 'latin1');
  const expect = opts.expect ?? (data.toString('latin1').match(REQUEST_LINE) || []).length;
  return new Promise((resolve, reject) => {
    const chunks = [];
    let closed = false;
    let settled = false;
    const sock = net.connect({ port, host });
    sock.setNoDelay(true);
    const finish = (timedOut) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const buf = Buffer.concat(chunks);
      let parsed;
      try {
        parsed = parseResponses(buf, closed);
      } catch (e) {
        sock.destroy();
        reject(new Error(`${e.message}\nraw: ${JSON.stringify(buf.toString('latin1').slice(0, 2000))}`));
        return;
      }
      sock.destroy();
      resolve({ responses: parsed.responses, raw: buf.toString('latin1'), closed, timedOut });
    };
    const timer = setTimeout(() => finish(true), timeoutMs);
    sock.on('data', (d) => {
      chunks.push(d);
      if (expect > 0) {
        try {
          if (parseResponses(Buffer.concat(chunks), false).responses.length >= expect) finish(false);
        } catch {
          // malformed: report when the connection ends or times out
        }
      }
    });
    sock.on('end', () => {
      closed = true;
      finish(false);
    });
    sock.on('close', () => {
      closed = true;
      finish(false);
    });
    sock.on('error', (e) => {
      if (e.code === 'ECONNRESET' || e.code === 'EPIPE') {
        closed = true;
        finish(false);
      } else if (!settled) {
        settled = true;
        clearTimeout(timer);
        reject(e);
      }
    });
    sock.on('connect', async () => {
      const step = Number.isFinite(segmentSize) && segmentSize > 0 ? segmentSize : data.length;
      for (let i = 0; i < data.length && !closed && !settled; i += step) {
        const seg = data.subarray(i, i + step);
        await new Promise((r) => sock.write(seg, r));
        if (i + step < data.length && delayMs > 0) await sleep(delayMs);
      }
      if (endAfterWrite && !closed && !settled) sock.end();
    });
  });
}

/** Builds one raw HTTP/1.1 request (CRLF line ends, Content-Length for the body). */
export function httpRequest(method, target, { headers = {}, body, host = '127.0.0.1' } = {}) {
  const b = body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body);
  const h = { host, ...headers };
  if (body !== undefined) {
    if (!Object.keys(h).some((k) => k.toLowerCase() === 'content-type')) h['content-type'] = 'application/json';
    h['content-length'] = Buffer.byteLength(b);
  }
  return `${method} ${target} HTTP/1.1\r\n${Object.entries(h)
    .map(([k, v]) => `${k}: ${v}`)
    .join('\r\n')}\r\n\r\n${b}`;
}

// ---------------------------------------------------------------------------
// the mock's introspection endpoints

export async function mockStats(mockUrl) {
  const r = await get(`${mockUrl}/_mock/stats`);
  if (r.status !== 200) throw new Error(`GET /_mock/stats → ${r.status}: ${r.text}`);
  return r.json;
}

export async function mockLast(mockUrl, n = 1) {
  const r = await get(`${mockUrl}/_mock/last?n=${n}`);
  if (r.status !== 200) throw new Error(`GET /_mock/last → ${r.status}: ${r.text}`);
  return r.json;
}

/** POST /_mock/faults: the next `count` requests for `model` ("*" = any) get `directives` ("k=v,k=v"). */
export async function mockFault(mockUrl, { model = '*', count = 1, directives }) {
  const r = await post(`${mockUrl}/_mock/faults`, { model, count, directives });
  if (r.status !== 200) throw new Error(`POST /_mock/faults → ${r.status}: ${r.text}`);
  return r.json;
}

/** POST /_mock/reset: clears faults and counters. */
export async function mockReset(mockUrl) {
  const r = await post(`${mockUrl}/_mock/reset`, '');
  if (r.status !== 200) throw new Error(`POST /_mock/reset → ${r.status}: ${r.text}`);
  return r.json;
}

/** Runs build/bridle ARGS (a CLI command) to its end: {code, stdout, stderr}; rejects on a sanitizer
 * report or a signal. DATABASE_URL is not inherited: only what the test passes. */
export function runCli(args, { env = {} } = {}) {
  const baseEnv = { ...process.env };
  delete baseEnv.DATABASE_URL;
  if (SANITIZED) Object.assign(baseEnv, { ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=0', UBSAN_OPTIONS: 'print_stacktrace=1' });
  return new Promise((resolve, reject) => {
    const child = spawn(path.join(BUILD, 'bridle'), args, { env: { ...baseEnv, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      for (const p of SAN_PATTERNS)
        if (p.test(stderr)) return reject(new Error(`bridle ${args.join(' ')}: sanitizer report:\n${stderr}`));
      if (signal) return reject(new Error(`bridle ${args.join(' ')} died of ${signal}\n${stderr}`));
      resolve({ code, stdout, stderr });
    });
  });
}

/** runCli, and the command must exit 0. */
export async function runCliOk(args, opts) {
  const r = await runCli(args, opts);
  if (r.code !== 0) throw new Error(`bridle ${args.join(' ')} exited ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  return r;
}
