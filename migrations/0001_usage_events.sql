-- 0001_usage_events: the usage ledger and the views the dashboards and
-- `bridle cost` read.
--
-- Applied by `bridle migrate` (db/migrate.c) inside one transaction; the
-- runner records it in bridle_schema_migrations, which it manages itself.
--
-- One row per client request, one column per field of struct usage_event
-- (db/usage_event.h); an empty string there is NULL here. Money is integer
-- pico-dollars (1e-12 USD) in bigint columns; the views expose dollars as exact
-- numeric (cost_pusd * 1e-12, scale 12), so sums stay exact in SQL.
--
-- Partitioning (reliability.md §5.3): native RANGE partitions on ts, one per
-- UTC day, named usage_events_pYYYYMMDD. There is no default partition: the
-- gateway calls bridle_ensure_partitions(N) at start and daily, and the spool
-- replay calls bridle_ensure_partition(day) for an older day before retrying.
-- Retention is bridle_drop_partitions_older_than(days): DROP TABLE per day,
-- no bulk DELETE, no VACUUM debt.
--
-- Dedup: PRIMARY KEY (event_id, ts) (0002 turns it round to (ts, event_id)). A unique key on a partitioned table must
-- contain the partition key; a replayed event carries the same ts, so the
-- ledger's INSERT ... ON CONFLICT DO NOTHING drops the duplicate.

CREATE TABLE usage_events (
    event_id            text        NOT NULL,
    ts                  timestamptz NOT NULL,
    key_id              text,
    team                text,
    end_user            text,
    agent               text,
    task                text,
    feature             text,
    requested_model     text,
    provider            text,
    model               text,
    tier                text,
    route_reason        text,
    streamed            boolean     NOT NULL DEFAULT false,
    status              integer     NOT NULL,
    error_class         text,
    attempts            integer     NOT NULL DEFAULT 1,
    input_tokens        bigint      NOT NULL DEFAULT 0,  -- uncached input
    cache_read_tokens   bigint      NOT NULL DEFAULT 0,
    cache_write_tokens  bigint      NOT NULL DEFAULT 0,
    output_tokens       bigint      NOT NULL DEFAULT 0,  -- reasoning included
    reasoning_tokens    bigint      NOT NULL DEFAULT 0,
    usage_exact         boolean     NOT NULL DEFAULT true,
    cost_pusd           bigint      NOT NULL DEFAULT 0,  -- pico-dollars
    baseline_cost_pusd  bigint      NOT NULL DEFAULT 0,  -- same usage on the requested/baseline model
    latency_us          bigint      NOT NULL DEFAULT 0,
    ttft_us             bigint,                          -- NULL (or -1) when not streamed / no token
    upstream_us         bigint      NOT NULL DEFAULT 0,
    cache_hit           boolean     NOT NULL DEFAULT false,
    batch_id            text,
    PRIMARY KEY (event_id, ts)
) PARTITION BY RANGE (ts);

COMMENT ON TABLE usage_events IS
    'bridle usage ledger: one row per client request (db/usage_event.h); daily RANGE partitions on ts; money in pico-dollars';

-- Time-range scans: BRIN is tiny and append-only events correlate with ts.
CREATE INDEX usage_events_ts_brin ON usage_events USING brin (ts);
-- The hot keyed queries (budgets, per-key and per-team panels, Citus-ready).
CREATE INDEX usage_events_key_ts ON usage_events (key_id, ts);
CREATE INDEX usage_events_team_ts ON usage_events (team, ts);

-- ---------------------------------------------------------------- partitions

-- The partition for one UTC day: creates usage_events_pYYYYMMDD covering
-- [day 00:00 UTC, day+1 00:00 UTC) unless it exists. Returns true only when
-- this call created it. Safe when two gateways race: the loser's duplicate
-- error is swallowed once the partition is seen to exist. (A plain CREATE
-- TABLE inside the handler rather than IF NOT EXISTS, so that "created" is
-- exact: IF NOT EXISTS would skip silently and be counted.)
CREATE FUNCTION bridle_ensure_partition(day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text := 'usage_events_p' || to_char(day, 'YYYYMMDD');
    lo   text := to_char(day, 'YYYY-MM-DD') || ' 00:00:00+00';
    hi   text := to_char(day + 1, 'YYYY-MM-DD') || ' 00:00:00+00';
BEGIN
    IF day IS NULL THEN
        RAISE EXCEPTION 'bridle_ensure_partition: day is NULL';
    END IF;
    IF to_regclass(quote_ident(part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    BEGIN
        EXECUTE format('CREATE TABLE %I PARTITION OF usage_events FOR VALUES FROM (%L) TO (%L)',
                       part, lo, hi);
    EXCEPTION
        WHEN duplicate_table OR unique_violation OR invalid_object_definition THEN
            -- another session created it between our check and our CREATE
            -- (or an overlapping partition of another name exists: not ours
            -- to fix, so that error stands)
            IF to_regclass(quote_ident(part)) IS NULL THEN
                RAISE;
            END IF;
            RETURN false;
    END;
    RETURN true;
END;
$$;

-- Daily partitions from yesterday (UTC) to today + days_ahead; idempotent.
-- Returns how many partitions this call created.
CREATE FUNCTION bridle_ensure_partitions(days_ahead integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    today   date := (now() AT TIME ZONE 'UTC')::date;
    created integer := 0;
BEGIN
    IF days_ahead IS NULL OR days_ahead < 0 THEN
        RAISE EXCEPTION 'bridle_ensure_partitions: days_ahead must be >= 0, not %', days_ahead;
    END IF;
    FOR i IN -1 .. days_ahead LOOP
        IF bridle_ensure_partition(today + i) THEN
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END;
$$;

-- Retention: drops every partition of usage_events whose whole range ends on
-- or before (today UTC − days) at 00:00 UTC, i.e. keeps today and the `days`
-- days before it. Returns how many partitions were dropped.
CREATE FUNCTION bridle_drop_partitions_older_than(days integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    cutoff  timestamptz := ((now() AT TIME ZONE 'UTC')::date - days)::timestamp AT TIME ZONE 'UTC';
    dropped integer := 0;
    r       record;
BEGIN
    IF days IS NULL OR days < 0 THEN
        RAISE EXCEPTION 'bridle_drop_partitions_older_than: days must be >= 0, not %', days;
    END IF;
    FOR r IN
        SELECT c.oid::regclass AS part,
               substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)') AS upper_bound
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'usage_events'::regclass
    LOOP
        -- upper_bound is NULL for a DEFAULT partition (we never make one) or
        -- MAXVALUE: those are never retention's to drop.
        IF r.upper_bound IS NOT NULL AND r.upper_bound <> 'MAXVALUE'
           AND r.upper_bound::timestamptz <= cutoff THEN
            EXECUTE format('DROP TABLE IF EXISTS %s', r.part);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    RETURN dropped;
END;
$$;

-- A fresh database accepts events at once.
SELECT bridle_ensure_partitions(7);

-- --------------------------------------------------------------------- views

-- Every event with dollars (exact numeric) and milliseconds.
CREATE VIEW usage_events_v AS
SELECT
    e.*,
    e.cost_pusd * 0.000000000001                              AS cost_usd,
    e.baseline_cost_pusd * 0.000000000001                     AS baseline_cost_usd,
    (e.baseline_cost_pusd - e.cost_pusd) * 0.000000000001     AS savings_usd,
    e.latency_us * 0.001                                      AS latency_ms,
    CASE WHEN e.ttft_us >= 0 THEN e.ttft_us * 0.001 END       AS ttft_ms,
    e.upstream_us * 0.001                                     AS upstream_ms,
    (e.ts AT TIME ZONE 'UTC')::date                           AS day,
    (coalesce(e.error_class, '') <> '' OR e.status >= 400)    AS is_error,
    greatest(e.attempts - 1, 0)                               AS retries,
    e.input_tokens + e.cache_read_tokens + e.cache_write_tokens AS prompt_tokens
FROM usage_events e;

-- Per UTC day x model x provider x key x team x agent x task x feature.
CREATE VIEW usage_daily AS
SELECT
    day,
    model, provider, key_id, team, agent, task, feature,
    count(*)                                  AS requests,
    count(*) FILTER (WHERE is_error)          AS errors,
    sum(retries)                              AS retries,
    count(*) FILTER (WHERE cache_hit)         AS cache_hits,
    sum(input_tokens)                         AS input_tokens,
    sum(cache_read_tokens)                    AS cache_read_tokens,
    sum(cache_write_tokens)                   AS cache_write_tokens,
    sum(output_tokens)                        AS output_tokens,
    sum(reasoning_tokens)                     AS reasoning_tokens,
    sum(cost_pusd)                            AS cost_pusd,
    sum(baseline_cost_pusd)                   AS baseline_cost_pusd,
    sum(cost_usd)                             AS cost_usd,
    sum(baseline_cost_usd)                    AS baseline_cost_usd,
    sum(savings_usd)                          AS savings_usd
FROM usage_events_v
GROUP BY day, model, provider, key_id, team, agent, task, feature;

-- Daily totals over all keys, with the mean and sample standard deviation of
-- the daily cost over every day in the table and whether the day is above
-- mean + 2 sigma. (The dashboard recomputes mean and sigma over the days in
-- its own time range; this view is the whole-history answer.)
CREATE VIEW usage_daily_totals AS
WITH d AS (
    SELECT day,
           (day::timestamp AT TIME ZONE 'UTC') AS day_start,
           count(*)                         AS requests,
           count(*) FILTER (WHERE is_error) AS errors,
           sum(cost_usd)                    AS cost_usd,
           sum(baseline_cost_usd)           AS baseline_cost_usd,
           sum(savings_usd)                 AS savings_usd
    FROM usage_events_v
    GROUP BY day
)
SELECT d.*,
       avg(cost_usd) OVER ()          AS mean_cost_usd,
       stddev_samp(cost_usd) OVER ()  AS stddev_cost_usd,
       coalesce(cost_usd > avg(cost_usd) OVER () + 2 * stddev_samp(cost_usd) OVER (), false)
                                      AS above_2sigma
FROM d;
