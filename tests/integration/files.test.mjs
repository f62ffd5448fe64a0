// The Files API (issue 16, first step): the openai SDK's files calls against
// bridle and a real PostgreSQL: upload of a batch JSONL file checked line by
// line, retrieve, content, list, delete, a file seen only by its own key,
// and bad files refused with the number of their first bad line.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI, { toFile } from 'openai';

import { get, mockConfig, newKey, post, startBridle, startMock, tmpDir } from './lib/harness.mjs';
import { startCluster } from './lib/ledgerlib.mjs';

let mock, db, gw, client, other;

before(async () => {
  mock = await startMock();
  db = await startCluster();
  const second = newKey();
  gw = await startBridle({
    config: mockConfig(mock.url, {
      database: { url: db.url, spool_dir: tmpDir('bridle-spool-'), flush_interval_ms: 100 },
      keys: [{ id: 'other', sha256: second.sha256, team: 'other' }],
    }),
  });
  client = new OpenAI({ apiKey: gw.key, baseURL: gw.baseURL, maxRetries: 0 });
  other = new OpenAI({ apiKey: second.key, baseURL: gw.baseURL, maxRetries: 0 });
});

after(async () => {
  await gw?.stop();
  await mock?.stop();
  await db?.destroy();
});

const line = (id, body = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: `Hello ${id}` }] }) =>
  JSON.stringify({ custom_id: id, method: 'POST', url: '/v1/chat/completions', body });
const jsonl = (lines) => lines.join('\n') + '\n';
const upload = async (c, text, name = 'input.jsonl') => c.files.create({ file: await toFile(Buffer.from(text), name), purpose: 'batch' });

describe('a good file', () => {
  test('upload, retrieve, content, list, delete', async () => {
    const text = jsonl([line('a'), line('b'), line('c')]);
    const f = await upload(client, text);
    assert.match(f.id, /^file-[0-9a-f]{24}$/);
    assert.equal(f.object, 'file');
    assert.equal(f.bytes, Buffer.byteLength(text));
    assert.equal(f.filename, 'input.jsonl');
    assert.equal(f.purpose, 'batch');
    assert.ok(Math.abs(f.created_at - Date.now() / 1000) < 60);

    const again = await client.files.retrieve(f.id);
    assert.deepEqual(again, f);
    const content = await client.files.content(f.id);
    assert.equal(await content.text(), text);
    const ids = [];
    for await (const x of client.files.list()) ids.push(x.id);
    assert.ok(ids.includes(f.id));
    // the row is in PostgreSQL, with the endpoint and the line count
    const { rows } = await db.query('SELECT key_id, lines, endpoint FROM bridle_files WHERE id = $1', [f.id]);
    assert.deepEqual(rows, [{ key_id: 'test', lines: 3, endpoint: '/v1/chat/completions' }]);

    const del = await client.files.delete(f.id);
    assert.deepEqual(del, { id: f.id, object: 'file', deleted: true });
    await assert.rejects(client.files.retrieve(f.id), (e) => e.status === 404);
    await assert.rejects(client.files.delete(f.id), (e) => e.status === 404);
  });

  test('another key does not see the file', async () => {
    const f = await upload(client, jsonl([line('x')]));
    await assert.rejects(other.files.retrieve(f.id), (e) => e.status === 404 && /No such File/.test(e.message));
    await assert.rejects(other.files.content(f.id), (e) => e.status === 404);
    await assert.rejects(other.files.delete(f.id), (e) => e.status === 404);
    const ids = [];
    for await (const x of other.files.list()) ids.push(x.id);
    assert.ok(!ids.includes(f.id));
    assert.equal((await client.files.retrieve(f.id)).id, f.id);
  });

  test('CRLF line ends and no final newline are fine', async () => {
    const f = await upload(client, [line('a'), line('b')].join('\r\n'));
    const { rows } = await db.query('SELECT lines FROM bridle_files WHERE id = $1', [f.id]);
    assert.equal(rows[0].lines, 2);
  });
});

describe('a bad file is refused, naming its first bad line', () => {
  const cases = [
    ['invalid JSON', [line('a'), '{"custom_id": "b",'], /^line 2: not valid JSON/],
    ['a repeated custom_id', [line('a'), line('b'), line('a')], /^line 3: custom_id is not unique/],
    ['a missing custom_id', [JSON.stringify({ method: 'POST', url: '/v1/chat/completions', body: {} })], /^line 1: custom_id must be/],
    ['a GET', [JSON.stringify({ custom_id: 'a', method: 'GET', url: '/v1/chat/completions', body: {} })], /^line 1: method must be "POST"/],
    ['an unknown url', [line('a'), JSON.stringify({ custom_id: 'b', method: 'POST', url: '/v1/nope', body: {} })], /^line 2: url must be/],
    ['a body a live request would be refused for', [line('a'), line('b', { model: 'gpt-4o-mini' })], /^line 2: body\.messages: .*missing/],
    ['a streamed body', [line('a', { model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'x' }] })], /^line 1: body\.stream/],
    ['an empty line in the middle', [line('a'), '', line('b')], /^line 2: empty line/],
    ['no requests', [''], /no requests/],
  ];
  for (const [what, lines, re] of cases)
    test(what, async () => {
      await assert.rejects(upload(client, lines.join('\n')), (e) => {
        assert.equal(e.status, 400, e.message);
        assert.equal(e.param, 'file');
        assert.match(e.error.message, re);
        return true;
      });
    });

  test('more than 50,000 requests', async () => {
    const lines = [];
    for (let i = 0; i <= 50000; i++) lines.push(line(`r${i}`));
    await assert.rejects(upload(client, jsonl(lines)), (e) => e.status === 400 && /^line 50001: a batch takes at most 50000/.test(e.error.message));
  });

  test('another purpose, or no multipart body', async () => {
    await assert.rejects(client.files.create({ file: await toFile(Buffer.from(line('a')), 'x.jsonl'), purpose: 'assistants' }), (e) => e.status === 400 && e.param === 'purpose');
    const r = await post(`${gw.baseURL}/files`, { purpose: 'batch' }, gw.auth);
    assert.equal(r.status, 400);
    assert.match(r.json.error.message, /multipart\/form-data/);
  });

  test('nothing was stored for a refused file', async () => {
    const { rows } = await db.query("SELECT count(*)::int AS n FROM bridle_files WHERE filename = 'input.jsonl' AND lines = 0");
    assert.equal(rows[0].n, 0);
  });
});

test('an unknown file id is a 404 in OpenAI shape', async () => {
  const r = await get(`${gw.baseURL}/files/file-000000000000000000000000`, gw.auth);
  assert.equal(r.status, 404);
  assert.equal(r.json.error.code, 'file_not_found');
});

test('without a database the Files API answers 503', async () => {
  const g = await startBridle({ config: mockConfig(mock.url) });
  const r = await get(`${g.baseURL}/files`, g.auth);
  assert.equal(r.status, 503);
  assert.match(r.json.error.message, /needs the database/);
  await g.stop();
});
