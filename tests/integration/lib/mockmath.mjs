// What bridle-mock answers and what bridle should charge for it, computed in
// advance from tests/mock/README.md ("The answer and the token formulas") and
// router/price_table.c. Shared by the integration tests.

/** The mock's default answer for the model name it received upstream. */
export const answerFor = (upstreamModel) => `Hello from ${upstreamModel}. This is a mock reply.`;

/** Words of a text: maximal runs of non-space characters. */
export const words = (s) => s.split(/\s+/).filter(Boolean);

/** B: the total UTF-8 bytes of every prompt text (string content or the text of parts). */
export function promptBytes(messages) {
  let b = 0;
  for (const m of messages) {
    if (typeof m.content === 'string') b += Buffer.byteLength(m.content);
    else if (Array.isArray(m.content))
      for (const p of m.content) if (typeof p.text === 'string') b += Buffer.byteLength(p.text);
  }
  return b;
}

/** P = max(1, ceil(B / 4)). */
export const promptTokens = (messages) => Math.max(1, Math.ceil(promptBytes(messages) / 4));

/** The directives in `[[mock:...]]` markers of the prompt (later ones win). */
export function directives(messages) {
  const d = {};
  for (const m of messages) {
    const texts =
      typeof m.content === 'string' ? [m.content] : Array.isArray(m.content) ? m.content.map((p) => p.text || '') : [];
    for (const t of texts)
      for (const [, body] of t.matchAll(/\[\[mock:([^\]]*)\]\]/g))
        for (const kv of body.split(',')) {
          const i = kv.indexOf('=');
          if (i > 0) d[kv.slice(0, i).trim()] = decodeURIComponent(kv.slice(i + 1).trim());
        }
  }
  return d;
}

/**
 * The usage the mock reports, in the OpenAI client's terms, for a request of
 * `messages` answered by `upstreamModel` with an optional cap.
 * → {answer, finish, P, C, R, CR, W5, W1}
 */
export function expected(messages, upstreamModel, { cap = -1 } = {}) {
  const d = directives(messages);
  const full = d.content ?? answerFor(upstreamModel);
  const ws = words(full);
  let answer = full;
  let finish = d.finish === 'length' ? 'length' : 'stop';
  if (cap >= 0 && cap < ws.length) {
    // truncated after its first `cap` words: keep the text up to the end of word `cap`
    const re = /\S+/g;
    let m;
    let n = 0;
    let end = 0;
    while ((m = re.exec(full)) && n < cap) {
      n++;
      end = m.index + m[0].length;
    }
    answer = full.slice(0, end);
    finish = 'length';
  }
  const W = words(answer).length;
  const num = (k, dflt) => (d[k] !== undefined ? Number(d[k]) : dflt);
  const R = num('reasoning_tokens', 0);
  return {
    answer,
    finish,
    P: num('prompt_tokens', promptTokens(messages)),
    R,
    C: num('completion_tokens', W + R),
    CR: num('cached_tokens', 0),
    W5: num('cache_write_tokens', 0),
    W1: num('cache_write_1h_tokens', 0),
  };
}

// µ$ per million tokens (router/price_table.c). A cache-write price of 0 is
// billed as plain input.
export const PRICES = {
  'gpt-4o-mini': { input: 150000n, cached: 75000n, write5m: 0n, write1h: 0n, output: 600000n },
  'claude-haiku-4-5': { input: 1000000n, cached: 100000n, write5m: 1250000n, write1h: 2000000n, output: 5000000n },
  'gemini-2.5-flash': { input: 300000n, cached: 30000n, write5m: 0n, write1h: 0n, output: 2500000n },
  'llama3.2': { input: 0n, cached: 0n, write5m: 0n, write1h: 0n, output: 0n },
  'gpt-4o': { input: 2500000n, cached: 1250000n, write5m: 0n, write1h: 0n, output: 10000000n },
  'claude-sonnet-4-6': { input: 3000000n, cached: 300000n, write5m: 3750000n, write1h: 6000000n, output: 15000000n },
  'claude-opus-4-8': { input: 5000000n, cached: 500000n, write5m: 6250000n, write1h: 10000000n, output: 25000000n },
};

/**
 * P for a body as the mock received it (its README: B = the bytes of every
 * prompt text, dialect by dialect; P = max(1, ceil(B / 4))).
 */
export function upstreamPromptTokens(body) {
  let b = 0;
  const text = (c) => {
    if (typeof c === 'string') b += Buffer.byteLength(c);
    else if (Array.isArray(c))
      for (const p of c) {
        if (typeof p?.text === 'string') b += Buffer.byteLength(p.text);
        if (p?.content !== undefined) text(p.content);
      }
  };
  text(body.system); // Anthropic
  for (const m of body.messages || []) text(m.content); // OpenAI, Anthropic, Ollama
  for (const p of body.systemInstruction?.parts || []) text(p.text); // Gemini
  for (const c of body.contents || []) for (const p of c.parts || []) text(p.text);
  return Math.max(1, Math.ceil(b / 4));
}

/**
 * The canonical usage record bridle bills (wire-formats.md §9) for the mock's
 * usage in a dialect: {input_uncached, cache_read, cache_write_5m, cache_write_1h, output}.
 */
export function billed(dialect, e) {
  const max0 = (x) => (x > 0 ? x : 0);
  switch (dialect) {
    case 'openai': // cached and written ⊂ prompt
      return {
        input_uncached: max0(e.P - e.CR - (e.W5 + e.W1)),
        cache_read: e.CR,
        cache_write_5m: e.W5 + e.W1,
        cache_write_1h: 0,
        output: e.C,
      };
    case 'anthropic': // disjoint buckets
      return {
        input_uncached: max0(e.P - e.CR - e.W5 - e.W1),
        cache_read: e.CR,
        cache_write_5m: e.W5,
        cache_write_1h: e.W1,
        output: e.C,
      };
    case 'gemini':
      return { input_uncached: e.P - Math.min(e.CR, e.P), cache_read: Math.min(e.CR, e.P), cache_write_5m: 0, cache_write_1h: 0, output: e.C };
    case 'ollama':
      return { input_uncached: e.P, cache_read: 0, cache_write_5m: 0, cache_write_1h: 0, output: e.C };
    default:
      throw new Error(`unknown dialect ${dialect}`);
  }
}

/** Cost in pico-dollars: tokens × µ$/Mtok, exact (BigInt). */
export function costPusd(priceModel, u) {
  const p = PRICES[priceModel];
  if (!p) throw new Error(`no price for ${priceModel}`);
  const w = (x, input) => (x > 0n ? x : input);
  return (
    BigInt(u.input_uncached) * p.input +
    BigInt(u.cache_read) * p.cached +
    BigInt(u.cache_write_5m) * w(p.write5m, p.input) +
    BigInt(u.cache_write_1h) * w(p.write1h, p.input) +
    BigInt(u.output) * p.output
  );
}

/** Dollars with 12 decimals, trailing zeros trimmed but one decimal kept (server/chat.c cost_header). */
export function formatUsd(pusd) {
  const whole = pusd / 1000000000000n;
  let frac = (pusd % 1000000000000n).toString().padStart(12, '0');
  while (frac.length > 1 && frac.endsWith('0')) frac = frac.slice(0, -1);
  return `${whole}.${frac}`;
}

/** x-bridle-savings-usd: dollars with 6 decimals, rounded half away from zero (util_format_pusd). */
export function formatSavings(pusd) {
  const neg = pusd < 0n;
  const v = neg ? -pusd : pusd;
  const r = (v + 500000n) / 1000000n; // in µ$
  return `${neg ? '-' : ''}${r / 1000000n}.${(r % 1000000n).toString().padStart(6, '0')}`;
}
