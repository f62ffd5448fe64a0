-- 0002_ledger_insert_rate: a usage_events layout PostgreSQL can take at
-- ≥ 100,000 rows/s (issue 4). bench/ledger/schema_bench.sh times one
-- server-side INSERT ... SELECT of 200,000 rows ... ON CONFLICT DO NOTHING per
-- layout (bench/RESULTS.md, "Ledger", 2026-11-24 08:13):
--
--   PRIMARY KEY (event_id, ts) + B-trees (key_id, ts), (team, ts)    69,204 rows/s
--   PRIMARY KEY (ts, event_id) + B-tree (key_id, ts)                104,712 rows/s
--   PRIMARY KEY (ts, event_id) alone                                136,054 rows/s
--
-- Why: event ids are random, so a key that starts with one lands every insert
-- on a random leaf page; starting it with ts (the completion time, nearly
-- monotonic) appends at the right edge. The key still deduplicates replays:
-- a replayed event carries the same ts and event_id.
--
-- The two secondary B-trees cost a third of the rate and serve no query the
-- gateway or the dashboards run: the spend refresh and every panel aggregate a
-- time range (BRIN on ts), grouped by key or team, never look up one key over a
-- long range. An operator who needs that can add the index back: it's not
-- part of any constraint.
ALTER TABLE usage_events DROP CONSTRAINT usage_events_pkey;
ALTER TABLE usage_events ADD PRIMARY KEY (ts, event_id);
DROP INDEX usage_events_key_ts;
DROP INDEX usage_events_team_ts;
