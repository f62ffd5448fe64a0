// The listener: a second gateway started on an address another one already
// serves must refuse to start (it used to join it with SO_REUSEPORT and
// silently take half of the connections, with its own config and keys).
import assert from 'node:assert/strict';
import path from 'node:path';
import { before, test } from 'node:test';

import { BUILD, SLOW, get, mockConfig, post, spawnTracked, startBridle, startMock } from './lib/harness.mjs';

let mock, gw;
before(async () => {
  mock = await startMock();
  gw = await startBridle({ config: mockConfig(mock.url) });
});

test('a second `bridle serve` on an address in use exits non-zero and names the address; the first keeps serving', async () => {
  const addr = `127.0.0.1:${gw.port}`;
  const second = spawnTracked('bridle-second', path.join(BUILD, 'bridle'), ['serve', '--config', gw.configPath, '--listen', addr]);
  const t0 = Date.now();
  const timer = setTimeout(() => second.child.kill('SIGKILL'), 5000 * SLOW);
  await second.closed;
  clearTimeout(timer);
  const took = Date.now() - t0;
  second.check(); // no sanitizer report, no crash
  assert.equal(second.exited.signal, null, `the second gateway was still running after ${took} ms (killed):\n${second.logs()}`);
  assert.notEqual(second.exited.code, 0, `the second gateway exited 0:\n${second.logs()}`);
  assert.match(second.stderr, /address (already )?in use/i, second.logs());
  assert.ok(second.stderr.includes(addr), `stderr does not name ${addr}:\n${second.logs()}`);
  assert.doesNotMatch(second.stdout, /listening on/, second.logs());

  // The first one still answers, and on every new connection (with the
  // port shared, about half of them went to the second process).
  for (let i = 0; i < 8; i++) {
    const r = await get(`${gw.url}/readyz`, { connection: 'close' });
    assert.equal(r.status, 200, r.text);
  }
  const r = await post(`${gw.baseURL}/chat/completions`, { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'still there?' }] }, gw.auth);
  assert.equal(r.status, 200, r.text);
});

test('a listen address that is not numeric is refused with a clear message', async () => {
  const p = spawnTracked('bridle-badaddr', path.join(BUILD, 'bridle'), ['serve', '--config', gw.configPath, '--listen', 'localhost:1']);
  const timer = setTimeout(() => p.child.kill('SIGKILL'), 5000 * SLOW);
  await p.closed;
  clearTimeout(timer);
  p.check();
  assert.notEqual(p.exited.code, 0, p.logs());
  assert.match(p.stderr, /localhost/, p.logs());
});
