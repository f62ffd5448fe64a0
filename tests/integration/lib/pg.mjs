// A throwaway PostgreSQL for integration tests: a fresh cluster in a temp dir
// (initdb, trust auth, fsync off), started on a free port with its socket in
// that dir, removed again by stop() or when the process exits.
//
//   import { startPostgres } from './lib/pg.mjs';
//   const pg = await startPostgres();           // { url, adminUrl, port, ... }
//   const url2 = await pg.createDatabase('other');
//   const rows = await pg.query(pg.url, 'SELECT 1 AS x');
//   await pg.stop();
//
// As root the cluster belongs to the `postgres` system user (PostgreSQL
// refuses to run as root): initdb and pg_ctl run through `runuser -u postgres
// --`. Otherwise everything runs as the current user. PG_BIN (env) picks the
// server binaries; else the newest /usr/lib/postgresql/*/bin, else PATH.

import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { freePort } from './harness.mjs';

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

const running = new Set(); // clusters to kill if the process exits without stop()
process.on('exit', () => {
  for (const c of running) c.killSync();
});

/** Starts a fresh cluster and creates `database` in it. */
export async function startPostgres({ database = 'bridle' } = {}) {
  const bin = findPgBin();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'bridle-pg-'));
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
  const run = (cmd, args) => {
    const [file, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
    const r = spawnSync(file, argv, { encoding: 'utf8', timeout: 120000 });
    return { ok: r.status === 0, out: `${r.stdout || ''}${r.stderr || ''}${r.error ? r.error.message : ''}` };
  };
  const cleanup = () => fs.rmSync(root, { recursive: true, force: true });

  const init = run(path.join(bin, 'initdb'), ['-D', data, '-U', user, '--auth=trust', '-E', 'UTF8', '--no-locale', '-N']);
  if (!init.ok) {
    cleanup();
    throw new Error(`initdb failed:\n${init.out}`);
  }

  let port;
  let started = null;
  for (let attempt = 0; attempt < 3 && !started?.ok; attempt++) {
    port = await freePort();
    const opts = [
      `-p ${port}`,
      `-k ${root}`,
      '-c listen_addresses=127.0.0.1',
      '-c fsync=off',
      '-c synchronous_commit=off',
      '-c full_page_writes=off',
      '-c max_connections=100',
    ].join(' ');
    started = run(path.join(bin, 'pg_ctl'), ['-D', data, '-l', log, '-w', '-t', '60', '-o', opts, 'start']);
  }
  if (!started.ok) {
    let tail = '';
    try {
      tail = fs.readFileSync(log, 'utf8').split('\n').slice(-30).join('\n');
    } catch {}
    cleanup();
    throw new Error(`PostgreSQL did not start:\n${started.out}\n${tail}`);
  }
  const pid = Number(fs.readFileSync(path.join(data, 'postmaster.pid'), 'utf8').split('\n')[0]);

  const urlFor = (db) => `postgresql://${encodeURIComponent(user)}@127.0.0.1:${port}/${encodeURIComponent(db)}`;
  let stopped = false;
  const cluster = {
    killSync() {
      if (stopped) return;
      stopped = true;
      try {
        process.kill(pid, 'SIGQUIT'); // immediate shutdown
      } catch {}
      cleanup();
    },
  };
  running.add(cluster);

  async function query(url, sql, params = []) {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      return await c.query(sql, params);
    } finally {
      await c.end();
    }
  }

  async function createDatabase(name) {
    await query(urlFor('postgres'), `CREATE DATABASE "${name.replace(/"/g, '""')}"`);
    return urlFor(name);
  }

  const url = await createDatabase(database);
  return {
    url,
    adminUrl: urlFor('postgres'),
    host: '127.0.0.1',
    port,
    user,
    dataDir: data,
    urlFor,
    createDatabase,
    query,
    async stop() {
      if (stopped) return;
      const r = run(path.join(bin, 'pg_ctl'), ['-D', data, '-m', 'fast', '-w', '-t', '30', 'stop']);
      if (!r.ok) {
        try {
          process.kill(pid, 'SIGQUIT');
        } catch {}
      }
      stopped = true;
      running.delete(cluster);
      cleanup();
    },
  };
}
