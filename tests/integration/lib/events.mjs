// Seeding usage_events in tests and the exact money text they compare with
// (shared by dashboards.test.mjs and cost.test.mjs).

/** usage_events' columns, in the order the seeds give them. */
export const COLS = [
  'event_id', 'ts', 'key_id', 'team', 'end_user', 'agent', 'task', 'feature', 'requested_model', 'provider', 'model',
  'tier', 'route_reason', 'streamed', 'status', 'error_class', 'attempts', 'input_tokens', 'cache_read_tokens',
  'cache_write_tokens', 'output_tokens', 'reasoning_tokens', 'usage_exact', 'cost_pusd', 'baseline_cost_pusd',
  'latency_us', 'ttft_us', 'upstream_us', 'cache_hit', 'batch_id',
];

/** The ledger's statement shape: multi-row INSERT ... ON CONFLICT DO NOTHING. */
export async function insertEvents(client, events) {
  const values = [];
  const rows = events.map((e, i) => {
    for (const c of COLS) values.push(typeof e[c] === 'bigint' ? e[c].toString() : e[c]);
    return `(${COLS.map((_, j) => `$${i * COLS.length + j + 1}`).join(', ')})`;
  });
  return client.query(`INSERT INTO usage_events (${COLS.join(', ')}) VALUES ${rows.join(', ')} ON CONFLICT DO NOTHING`, values);
}

/** pico-dollars -> the exact numeric text PostgreSQL prints at scale 12 (fewer decimals: half away from zero). */
export function usd(p, decimals = 12) {
  const neg = p < 0n;
  let a = neg ? -p : p;
  if (decimals < 12) {
    const unit = 10n ** BigInt(12 - decimals);
    a = (a + unit / 2n) / unit; // half away from zero on the magnitude
  }
  const s = a.toString().padStart(decimals + 1, '0');
  const int = s.slice(0, s.length - decimals);
  return `${neg && a !== 0n ? '-' : ''}${int}${decimals ? `.${s.slice(s.length - decimals)}` : ''}`;
}

/** A seeded PRNG (uniform in [0, 1)): the same seed, the same events. */
export function mulberry32(a) {
  return () => {
    a |= 0;
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------------------
// arithmetic on seeded events, independent of the code under test

export const grouped = (s) => s.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
/** The table form: $ and thousands, 6 decimals. */
export function money6(p) {
  const s = usd(p, 6);
  const neg = s.startsWith('-');
  const [i, f] = (neg ? s.slice(1) : s).split('.');
  return `${neg ? '-' : ''}$${grouped(i)}.${f}`;
}
export const sum = (evs, f) => evs.reduce((a, e) => a + f(e), 0n);
export const isError = (e) => (e.error_class ?? '') !== '' || e.status >= 400;
export function groupMap(evs, keyFn) {
  const m = new Map();
  for (const e of evs) {
    const k = keyFn(e);
    if (!m.has(k)) m.set(k, []);
    m.get(k).push(e);
  }
  return m;
}
/** What `bridle cost summary|breakdown --json` prints for these events. */
export const reportMeasures = (evs) => ({
  requests: evs.length,
  errors: evs.filter(isError).length,
  cache_hits: evs.filter((e) => e.cache_hit).length,
  input_tokens: Number(sum(evs, (e) => e.input_tokens)),
  cache_read_tokens: Number(sum(evs, (e) => e.cache_read_tokens)),
  cache_write_tokens: Number(sum(evs, (e) => e.cache_write_tokens)),
  output_tokens: Number(sum(evs, (e) => e.output_tokens)),
  reasoning_tokens: Number(sum(evs, (e) => e.reasoning_tokens)),
  cost_usd: Number(usd(sum(evs, (e) => e.cost_pusd))),
  cost_pusd: Number(sum(evs, (e) => e.cost_pusd)),
  baseline_cost_usd: Number(usd(sum(evs, (e) => e.baseline_cost_pusd))),
  baseline_cost_pusd: Number(sum(evs, (e) => e.baseline_cost_pusd)),
  savings_usd: Number(usd(sum(evs, (e) => e.baseline_cost_pusd - e.cost_pusd))),
  savings_pusd: Number(sum(evs, (e) => e.baseline_cost_pusd - e.cost_pusd)),
  // migration 0009: a cache_hit event saved its baseline (the call it replaced); routing saved the rest
  cache_savings_usd: Number(usd(sum(evs, (e) => (e.cache_hit ? e.baseline_cost_pusd : 0n)))),
  cache_savings_pusd: Number(sum(evs, (e) => (e.cache_hit ? e.baseline_cost_pusd : 0n))),
  routing_savings_usd: Number(usd(sum(evs, (e) => e.baseline_cost_pusd - e.cost_pusd - (e.cache_hit ? e.baseline_cost_pusd : 0n)))),
  routing_savings_pusd: Number(sum(evs, (e) => e.baseline_cost_pusd - e.cost_pusd - (e.cache_hit ? e.baseline_cost_pusd : 0n))),
});
