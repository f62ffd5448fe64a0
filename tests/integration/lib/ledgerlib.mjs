// Helpers for the usage-ledger tests (ledger.test.mjs, ledger_fault.test.mjs):
//
//   startCluster()     a PostgreSQL cluster that can be stopped (-m immediate),
//                      started again on the same port and data dir, and paused
//                      (SIGSTOP/SIGCONT of the postmaster). lib/pg.mjs removes
//                      its cluster on stop(), so it cannot do that.
//   spoolState(dir)    reads the spool's segments and checkpoint from outside:
//                      records, their sequence numbers, the acked position.
//   startBridleAt()    (re)starts `bridle serve` on a given config and port
//                      (a restart on the same port and spool dir).
//   waitUntil()        polls a condition with a deadline.

import { execFile, execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { BUILD, freePort, sleep, spawnTracked } from './harness.mjs';

function findPgBin() {
  const ok = (d) => d && fs.existsSync(path.join(d, 'initdb')) && fs.existsSync(path.join(d, 'pg_ctl'));
  if (ok(process.env.PG_BIN)) return process.env.PG_BIN;
  const base = '/usr/lib/postgresql';
  if (fs.existsSync(base)) {
    const dirs = fs
      .readdirSync(base)
      .filter((v) => /^\d+$/.test(v))
      .sort((a, b) => Number(b) - Number(a))
      .map((v) => path.join(base, v, 'bin'));
    for (const d of dirs) if (ok(d)) return d;
  }
  for (const d of (process.env.PATH || '').split(':')) if (ok(d)) return d;
  throw new Error('PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql, or set PG_BIN');
}

const clusters = new Set();
process.on('exit', () => {
  for (const c of clusters) c.killSync();
});

/**
 * A fresh cluster (trust auth, fsync off) with database `database`, running.
 * → {url, adminUrl, port, dataDir, query(sql, params, url?), stopImmediate(),
 *    start(), pause(), resume(), pid(), running(), destroy()}
 */
export async function startCluster({ database = 'bridle', fsyncOff = true } = {}) {
  const bin = findPgBin();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'bridle-pgl-'));
  const data = path.join(root, 'data');
  const log = path.join(root, 'postgres.log');
  const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  let user = os.userInfo().username;
  if (asRoot) {
    user = 'postgres';
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
    fs.chownSync(root, uid, gid);
    fs.chmodSync(root, 0o700);
  }
  const run = (cmd, args, timeout = 120000) => {
    const [file, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
    const r = spawnSync(file, argv, { encoding: 'utf8', timeout });
    return { ok: r.status === 0, out: `${r.stdout || ''}${r.stderr || ''}${r.error ? r.error.message : ''}` };
  };
  const init = run(path.join(bin, 'initdb'), ['-D', data, '-U', user, '--auth=trust', '-E', 'UTF8', '--no-locale', '-N']);
  if (!init.ok) {
    fs.rmSync(root, { recursive: true, force: true });
    throw new Error(`initdb failed:\n${init.out}`);
  }
  const port = await freePort();
  const opts = [
    `-p ${port}`,
    `-k ${root}`,
    '-c listen_addresses=127.0.0.1',
    // fsync off is safe against the process kills these tests do (the page
    // cache survives); synchronous_commit stays on: with it off, a commit's
    // WAL can still be in PostgreSQL's own buffers when `stop -m immediate`
    // hits, and the database itself would lose acknowledged rows.
    ...(fsyncOff ? ['-c fsync=off', '-c full_page_writes=off'] : []),
    '-c max_connections=100',
  ].join(' ');
  // the same, without blocking the event loop (for tests that keep load running meanwhile)
  const runAsync = (cmd, args, timeout = 120000) =>
    new Promise((resolve) => {
      const [file, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
      execFile(file, argv, { encoding: 'utf8', timeout }, (err, stdout, stderr) =>
        resolve({ ok: !err, out: `${stdout || ''}${stderr || ''}${err ? err.message : ''}` }),
      );
    });
  const pidFile = path.join(data, 'postmaster.pid');
  const pid = () => {
    try {
      return Number(fs.readFileSync(pidFile, 'utf8').split('\n')[0]) || 0;
    } catch {
      return 0;
    }
  };
  const logTail = (n = 30) => {
    try {
      return fs.readFileSync(log, 'utf8').split('\n').slice(-n).join('\n');
    } catch {
      return '';
    }
  };
  let destroyed = false;
  const c = {
    port,
    user,
    dataDir: data,
    root,
    logTail,
    pid,
    running: () => pid() > 0,
    /** Starts the postmaster (after a stop), waiting until it accepts connections. */
    start() {
      const r = run(path.join(bin, 'pg_ctl'), ['-D', data, '-l', log, '-w', '-t', '60', '-o', opts, 'start']);
      if (!r.ok) throw new Error(`pg_ctl start failed:\n${r.out}\n${logTail()}`);
    },
    /** pg_ctl stop -m immediate (no shutdown checkpoint: crash recovery at the next start). */
    stopImmediate() {
      const r = run(path.join(bin, 'pg_ctl'), ['-D', data, '-m', 'immediate', '-w', '-t', '30', 'stop']);
      if (!r.ok) throw new Error(`pg_ctl stop -m immediate failed:\n${r.out}`);
    },
    async startAsync() {
      const r = await runAsync(path.join(bin, 'pg_ctl'), ['-D', data, '-l', log, '-w', '-t', '60', '-o', opts, 'start']);
      if (!r.ok) throw new Error(`pg_ctl start failed:\n${r.out}\n${logTail()}`);
    },
    async stopImmediateAsync() {
      const r = await runAsync(path.join(bin, 'pg_ctl'), ['-D', data, '-m', 'immediate', '-w', '-t', '30', 'stop']);
      if (!r.ok) throw new Error(`pg_ctl stop -m immediate failed:\n${r.out}`);
    },
    pause() {
      process.kill(pid(), 'SIGSTOP');
    },
    resume() {
      process.kill(pid(), 'SIGCONT');
    },
    killSync() {
      if (destroyed) return;
      destroyed = true;
      const p = pid();
      if (p) {
        try {
          process.kill(p, 'SIGCONT');
          process.kill(p, 'SIGQUIT');
        } catch {}
      }
      fs.rmSync(root, { recursive: true, force: true });
    },
    async destroy() {
      if (destroyed) return;
      const p = pid();
      if (p) {
        try {
          process.kill(p, 'SIGCONT');
        } catch {}
        const r = run(path.join(bin, 'pg_ctl'), ['-D', data, '-m', 'immediate', '-w', '-t', '30', 'stop']);
        if (!r.ok) c.killSync();
      }
      destroyed = true;
      clusters.delete(c);
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
  clusters.add(c);
  c.start();
  c.urlFor = (db) => `postgresql://${encodeURIComponent(user)}@127.0.0.1:${port}/${encodeURIComponent(db)}`;
  c.adminUrl = c.urlFor('postgres');
  c.url = c.urlFor(database);
  c.query = async (sql, params = [], url = c.url) => {
    const cl = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
    await cl.connect();
    try {
      return await cl.query(sql, params);
    } finally {
      await cl.end();
    }
  };
  await c.query(`CREATE DATABASE "${database}"`, [], c.adminUrl);
  return c;
}

/**
 * The spool seen from outside (db/spool.h layout): every intact record's
 * sequence number, read sequentially from each segment until the first spot
 * that is not a record (the preallocated zeros), and the acked checkpoint.
 * → {segments, records, maxSeq, acked, unacked (records with seq > acked), bytes (record bytes)}
 */
export function spoolState(dir) {
  let acked = 0;
  try {
    const m = /^BRLACK1 (\d+) /.exec(fs.readFileSync(path.join(dir, 'acked'), 'utf8'));
    if (m) acked = Number(m[1]);
  } catch {}
  let segs = [];
  try {
    segs = fs.readdirSync(dir).filter((f) => /^seg-\d+\.log$/.test(f));
  } catch {}
  let records = 0;
  let unacked = 0;
  let maxSeq = 0;
  let bytes = 0;
  for (const f of segs) {
    let buf;
    try {
      buf = fs.readFileSync(path.join(dir, f));
    } catch {
      continue; // unlinked meanwhile
    }
    let off = 0;
    while (off + 12 <= buf.length && buf.toString('latin1', off, off + 4) === 'BRL1') {
      const len = buf.readUInt32LE(off + 4);
      if (len < 32 || off + 12 + len > buf.length) break;
      const seq = payloadSeq(buf, off + 12);
      if (seq === null) break;
      records++;
      bytes += 12 + len;
      if (seq > maxSeq) maxSeq = seq;
      if (seq > acked) unacked++;
      off += 12 + len;
    }
  }
  return { segments: segs.length, records, maxSeq, acked, unacked, bytes };
}

/** The sequence number of a payload: msgpack array [1, seq, ...]. */
function payloadSeq(b, p) {
  const t = b[p];
  if ((t & 0xf0) === 0x90) p += 1;
  else if (t === 0xdc) p += 3;
  else if (t === 0xdd) p += 5;
  else return null;
  if (b[p] !== 0x01) return null;
  p++;
  const u = b[p];
  if (u <= 0x7f) return u;
  if (u === 0xcc) return b[p + 1];
  if (u === 0xcd) return b.readUInt16BE(p + 1);
  if (u === 0xce) return b.readUInt32BE(p + 1);
  if (u === 0xcf) return Number(b.readBigUInt64BE(p + 1));
  return null;
}

/**
 * Starts `bridle serve --config configPath --listen 127.0.0.1:port` and waits
 * for GET /readyz 200. → the tracked process (stop(), logs(), exited …).
 * Throws with the logs if it exits or is not ready within readyMs.
 */
export async function startBridleAt(configPath, port, { env = {}, readyMs = 15000 } = {}) {
  const p = spawnTracked('bridle', path.join(BUILD, 'bridle'), ['serve', '--config', configPath, '--listen', `127.0.0.1:${port}`], {
    env,
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + readyMs;
  while (!p.exited && Date.now() < deadline) {
    try {
      const r = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(1000) });
      await r.arrayBuffer();
      if (r.status === 200) return p;
    } catch {}
    await sleep(50);
  }
  const why = p.exited ? `exited ${JSON.stringify(p.exited)}` : 'timeout';
  await p.stop({ signal: 'SIGKILL' }).catch(() => {});
  throw new Error(`bridle did not become ready on ${url} (${why})\n${p.logs()}`);
}

/** Polls fn() (may be async) every `every` ms until it returns a truthy value; → {value, ms}. Throws after ms. */
export async function waitUntil(fn, ms, what, every = 50) {
  const t0 = Date.now();
  let last;
  for (;;) {
    try {
      last = await fn();
    } catch (e) {
      last = e;
    }
    if (last && !(last instanceof Error)) return { value: last, ms: Date.now() - t0 };
    if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await sleep(every);
  }
}
