-- 0016_jit_off: PostgreSQL's JIT off for this database's sessions.
--
-- The gateway's queries are small, but a plan the planner thinks costly
-- (a subquery it never runs, counting a batch's lines behind a CASE) crosses
-- jit_above_cost, and PostgreSQL then compiles it on every call: a page of
-- 20 batches took 258-338 ms, 0.45 ms without JIT (bench/RESULTS.md,
-- 2026-12-07 15:30; 0006 and 0008 turned it off on each rollup reader for
-- the same reason). Set on the database rather than in the connection's
-- startup options, which PgBouncer refuses; a role without the right to
-- alter the database keeps the server's setting, with a notice.
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET jit = off', current_database());
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'bridle: cannot turn JIT off for database % (not its owner); set jit = off for it',
        current_database();
END $$;
