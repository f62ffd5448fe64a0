-- 0006_rollups: the spend store at production volume. Every report, panel
-- and spend read goes through rollups instead of scanning usage_events.
--
-- Grains: 5 minutes, 1 hour, 1 day (UTC), in one table usage_rollup keyed
-- by (grain, bucket, dimensions). Dimensions: key, team, model, provider,
-- agent, task, feature, tier, status and error class ('' = none, so that
-- they can be in the primary key). Measures: requests, errors, retries,
-- cache hits, streamed, estimated usage, every token kind, cost, baseline
-- cost, and sums of latency, time to first token and upstream time.
-- Latency and time to first token also go into fixed-bucket histograms
-- (usage_rollup_hist, per model and provider), so percentiles need no raw
-- rows: bucket 0 is below 100 µs, bucket i (1..191) is
-- [100 µs · 2^((i-1)/8), 100 µs · 2^(i/8)) — an eighth of an octave, 9 %
-- wide, so an interpolated percentile is within 9 % — up to about 25
-- minutes; bucket 191 takes the rest.
-- The most expensive events are kept per UTC hour (usage_top: the top 100
-- of each hour, with their details), so `cost top` and the "most expensive
-- requests" panel never scan.
--
-- Exactly once. A statement trigger on usage_events (like 0004's budget
-- charge) aggregates the rows a statement really inserted — a COPY, the
-- ledger's dedup INSERT ... ON CONFLICT DO NOTHING, a bulk import alike;
-- a replayed duplicate is not in new_rows — into the *_pending tables, in
-- the inserting transaction. bridle_rollup() moves pending rows into the
-- rollups: it DELETEs them (FOR UPDATE SKIP LOCKED, so concurrent runs take
-- disjoint rows) and adds them to every grain in the same transaction, so
-- each pending row is counted once, whoever runs it and however often.
-- Readers add what is still pending, so a read is exact even between runs.
--
-- Readers: bridle_usage(from, to, max_grain) and bridle_usage_hist(...)
-- return the rows that cover [from, to) exactly: the coarsest grain that
-- fits inside the range and is at most max_grain, finer grains towards the
-- edges, and raw events only for the pieces shorter than 5 minutes at the
-- edges. bridle_top(from, to, n) does the same for the most expensive
-- events. Retention: bridle_rollup_retention(days_5m, days_1h, days_1d).
-- Each reader reaches every table through a LATERAL subquery per piece of
-- bridle_cover (OFFSET 0 keeps it one): a range scan of the primary key for
-- the rollups and of the partitions' (ts, event_id) keys for the raw edges,
-- with run-time partition pruning, whatever the size of the tables.

-- ---------------------------------------------------------------- tables

CREATE TABLE usage_rollup (
    grain              text        NOT NULL CHECK (grain IN ('5m', '1h', '1d')),
    bucket             timestamptz NOT NULL,  -- start of the grain's UTC period
    key_id             text        NOT NULL DEFAULT '',
    team               text        NOT NULL DEFAULT '',
    model              text        NOT NULL DEFAULT '',
    provider           text        NOT NULL DEFAULT '',
    agent              text        NOT NULL DEFAULT '',
    task               text        NOT NULL DEFAULT '',
    feature            text        NOT NULL DEFAULT '',
    tier               text        NOT NULL DEFAULT '',
    status             integer     NOT NULL,
    error_class        text        NOT NULL DEFAULT '',
    requests           bigint      NOT NULL DEFAULT 0,
    errors             bigint      NOT NULL DEFAULT 0,  -- error_class set or status >= 400
    retries            bigint      NOT NULL DEFAULT 0,  -- attempts - 1
    cache_hits         bigint      NOT NULL DEFAULT 0,
    streamed           bigint      NOT NULL DEFAULT 0,
    estimated          bigint      NOT NULL DEFAULT 0,  -- usage_exact false
    input_tokens       bigint      NOT NULL DEFAULT 0,
    cache_read_tokens  bigint      NOT NULL DEFAULT 0,
    cache_write_tokens bigint      NOT NULL DEFAULT 0,
    output_tokens      bigint      NOT NULL DEFAULT 0,
    reasoning_tokens   bigint      NOT NULL DEFAULT 0,
    cost_pusd          bigint      NOT NULL DEFAULT 0,
    baseline_cost_pusd bigint      NOT NULL DEFAULT 0,
    latency_us_sum     bigint      NOT NULL DEFAULT 0,
    ttft_us_sum        bigint      NOT NULL DEFAULT 0,
    ttft_count         bigint      NOT NULL DEFAULT 0,  -- streamed events with a first token
    upstream_us_sum    bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (grain, bucket, key_id, team, model, provider, agent, task, feature, tier,
                 status, error_class)
);

-- What the trigger captured and bridle_rollup() has not moved yet: the
-- same columns at the 5-minute grain, appended without conflicts.
CREATE TABLE usage_rollup_pending (LIKE usage_rollup INCLUDING DEFAULTS);
ALTER TABLE usage_rollup_pending DROP COLUMN grain;

CREATE TABLE usage_rollup_hist (
    grain    text        NOT NULL CHECK (grain IN ('5m', '1h', '1d')),
    bucket   timestamptz NOT NULL,
    metric   text        NOT NULL CHECK (metric IN ('latency', 'ttft')),
    model    text        NOT NULL DEFAULT '',
    provider text        NOT NULL DEFAULT '',
    idx      smallint    NOT NULL CHECK (idx BETWEEN 0 AND 191),
    n        bigint      NOT NULL,
    PRIMARY KEY (grain, bucket, metric, model, provider, idx)
);

CREATE TABLE usage_rollup_hist_pending (LIKE usage_rollup_hist INCLUDING DEFAULTS);
ALTER TABLE usage_rollup_hist_pending DROP COLUMN grain;

-- The 100 most expensive events of each UTC hour, with their details (they
-- outlive the raw partitions). The trigger appends each statement's top 100
-- per hour; bridle_rollup() trims the hours it was told about.
CREATE TABLE usage_top (
    hour               timestamptz NOT NULL,
    ts                 timestamptz NOT NULL,
    event_id           text        NOT NULL,
    key_id             text,
    team               text,
    model              text,
    provider           text,
    input_tokens       bigint      NOT NULL,
    cache_read_tokens  bigint      NOT NULL,
    cache_write_tokens bigint      NOT NULL,
    output_tokens      bigint      NOT NULL,
    cost_pusd          bigint      NOT NULL,
    baseline_cost_pusd bigint      NOT NULL,
    latency_us         bigint      NOT NULL,
    status             integer     NOT NULL,
    attempts           integer     NOT NULL,
    PRIMARY KEY (hour, cost_pusd, ts, event_id)
);
CREATE TABLE usage_top_dirty (hour timestamptz NOT NULL);  -- hours to trim (duplicates allowed)

-- ---------------------------------------------------------------- helpers

CREATE FUNCTION bridle_bucket_5m(ts timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT date_bin('5 minutes', ts, timestamptz '2000-01-01 00:00:00+00')
$$;

-- The histogram bucket of a duration in microseconds. float8 arithmetic:
-- numeric's log() cost ~30 µs a row, which the capture trigger pays on
-- every inserted event.
CREATE FUNCTION bridle_hist_idx(us bigint) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN us IS NULL OR us < 100 THEN 0
                ELSE least(191, 1 + floor(8 * ln(us / 100.0::float8) / ln(2.0::float8)))::smallint
           END
$$;

-- Bucket idx covers [bridle_hist_lower_ms(idx), bridle_hist_upper_ms(idx)).
CREATE FUNCTION bridle_hist_lower_ms(idx integer) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN idx <= 0 THEN 0 ELSE 0.1 * power(2.0, (idx - 1) / 8.0) END
$$;
CREATE FUNCTION bridle_hist_upper_ms(idx integer) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 0.1 * power(2.0, idx / 8.0)
$$;

-- bridle_hist_quantile(q, idx, n): an aggregate over histogram rows (one
-- bucket and its count per row; pre-group by bucket for speed) giving the
-- q-quantile in milliseconds, interpolated linearly inside its bucket.
CREATE FUNCTION bridle_hist_add(state bigint[], q float8, idx smallint, n bigint)
RETURNS bigint[] LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF state IS NULL THEN
        state := array_fill(0::bigint, ARRAY[193]);
        state[193] := (q * 1e9)::bigint;  -- q rides along in the last cell
    END IF;
    IF idx IS NOT NULL AND n IS NOT NULL THEN
        state[idx + 1] := state[idx + 1] + n;
    END IF;
    RETURN state;
END $$;

CREATE FUNCTION bridle_hist_final(state bigint[]) RETURNS float8
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    total bigint := 0;
    target float8;
    cum bigint := 0;
    q float8;
BEGIN
    IF state IS NULL THEN RETURN NULL; END IF;
    q := state[193] / 1e9;
    FOR i IN 1..192 LOOP total := total + state[i]; END LOOP;
    IF total = 0 THEN RETURN NULL; END IF;
    target := q * total;
    FOR i IN 1..192 LOOP
        IF state[i] > 0 AND cum + state[i] >= target THEN
            RETURN bridle_hist_lower_ms(i - 1)
                 + (bridle_hist_upper_ms(i - 1) - bridle_hist_lower_ms(i - 1))
                   * greatest(target - cum, 0) / state[i];
        END IF;
        cum := cum + state[i];
    END LOOP;
    RETURN bridle_hist_upper_ms(191);
END $$;

CREATE AGGREGATE bridle_hist_quantile(float8, smallint, bigint) (
    SFUNC = bridle_hist_add, STYPE = bigint[], FINALFUNC = bridle_hist_final
);

-- ---------------------------------------------------------------- capture

CREATE FUNCTION bridle_rollup_capture() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_rollup_pending
    SELECT bridle_bucket_5m(ts), coalesce(key_id, ''), coalesce(team, ''), coalesce(model, ''),
           coalesce(provider, ''), coalesce(agent, ''), coalesce(task, ''),
           coalesce(feature, ''), coalesce(tier, ''), status, coalesce(error_class, ''),
           count(*),
           count(*) FILTER (WHERE coalesce(error_class, '') <> '' OR status >= 400),
           sum(greatest(attempts - 1, 0)),
           count(*) FILTER (WHERE cache_hit),
           count(*) FILTER (WHERE streamed),
           count(*) FILTER (WHERE NOT usage_exact),
           sum(input_tokens), sum(cache_read_tokens), sum(cache_write_tokens),
           sum(output_tokens), sum(reasoning_tokens), sum(cost_pusd), sum(baseline_cost_pusd),
           sum(latency_us),
           coalesce(sum(ttft_us) FILTER (WHERE streamed AND ttft_us >= 0), 0),
           count(*) FILTER (WHERE streamed AND ttft_us >= 0),
           sum(upstream_us)
    FROM new_rows
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11;

    INSERT INTO usage_rollup_hist_pending
    SELECT bridle_bucket_5m(ts), 'latency', coalesce(model, ''), coalesce(provider, ''),
           bridle_hist_idx(latency_us), count(*)
    FROM new_rows GROUP BY 1, 2, 3, 4, 5
    UNION ALL
    SELECT bridle_bucket_5m(ts), 'ttft', coalesce(model, ''), coalesce(provider, ''),
           bridle_hist_idx(ttft_us), count(*)
    FROM new_rows WHERE streamed AND ttft_us >= 0 GROUP BY 1, 2, 3, 4, 5;

    INSERT INTO usage_top
    SELECT hour, ts, event_id, key_id, team, model, provider, input_tokens, cache_read_tokens,
           cache_write_tokens, output_tokens, cost_pusd, baseline_cost_pusd, latency_us, status,
           attempts
    FROM (SELECT date_trunc('hour', n.ts, 'UTC') AS hour, n.*,
                 row_number() OVER (PARTITION BY date_trunc('hour', n.ts, 'UTC')
                                    ORDER BY n.cost_pusd DESC, n.ts DESC, n.event_id) AS rn
          FROM new_rows n) x
    WHERE rn <= 100
    ON CONFLICT DO NOTHING;

    INSERT INTO usage_top_dirty SELECT DISTINCT date_trunc('hour', ts, 'UTC') FROM new_rows;
    RETURN NULL;
END $$;

CREATE TRIGGER usage_events_rollup_capture AFTER INSERT ON usage_events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bridle_rollup_capture();

-- ---------------------------------------------------------------- rollup

-- Moves up to p_limit pending rows of each kind into the rollups and trims
-- usage_top. Idempotent and safe to run concurrently (see the top of this
-- file). Returns how many pending rows it moved.
CREATE FUNCTION bridle_rollup(p_limit integer DEFAULT 200000) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    moved bigint := 0;
    m bigint;
BEGIN
    WITH taken AS (
        DELETE FROM usage_rollup_pending
        WHERE ctid = ANY (ARRAY(SELECT ctid FROM usage_rollup_pending LIMIT p_limit
                                FOR UPDATE SKIP LOCKED))
        RETURNING *
    ), graded AS (
        SELECT g.grain,
               CASE g.grain WHEN '5m' THEN t.bucket
                            WHEN '1h' THEN date_trunc('hour', t.bucket, 'UTC')
                            ELSE date_trunc('day', t.bucket, 'UTC') END AS bucket,
               t.key_id, t.team, t.model, t.provider, t.agent, t.task, t.feature, t.tier,
               t.status, t.error_class,
               sum(t.requests) AS requests, sum(t.errors) AS errors, sum(t.retries) AS retries,
               sum(t.cache_hits) AS cache_hits, sum(t.streamed) AS streamed,
               sum(t.estimated) AS estimated, sum(t.input_tokens) AS input_tokens,
               sum(t.cache_read_tokens) AS cache_read_tokens,
               sum(t.cache_write_tokens) AS cache_write_tokens,
               sum(t.output_tokens) AS output_tokens, sum(t.reasoning_tokens) AS reasoning_tokens,
               sum(t.cost_pusd) AS cost_pusd, sum(t.baseline_cost_pusd) AS baseline_cost_pusd,
               sum(t.latency_us_sum) AS latency_us_sum, sum(t.ttft_us_sum) AS ttft_us_sum,
               sum(t.ttft_count) AS ttft_count, sum(t.upstream_us_sum) AS upstream_us_sum
        FROM taken t CROSS JOIN (VALUES ('5m'), ('1h'), ('1d')) g(grain)
        GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12
    ), merged AS (
        INSERT INTO usage_rollup AS r
        SELECT * FROM graded ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12
        ON CONFLICT (grain, bucket, key_id, team, model, provider, agent, task, feature, tier,
                     status, error_class) DO UPDATE SET
            requests = r.requests + excluded.requests,
            errors = r.errors + excluded.errors,
            retries = r.retries + excluded.retries,
            cache_hits = r.cache_hits + excluded.cache_hits,
            streamed = r.streamed + excluded.streamed,
            estimated = r.estimated + excluded.estimated,
            input_tokens = r.input_tokens + excluded.input_tokens,
            cache_read_tokens = r.cache_read_tokens + excluded.cache_read_tokens,
            cache_write_tokens = r.cache_write_tokens + excluded.cache_write_tokens,
            output_tokens = r.output_tokens + excluded.output_tokens,
            reasoning_tokens = r.reasoning_tokens + excluded.reasoning_tokens,
            cost_pusd = r.cost_pusd + excluded.cost_pusd,
            baseline_cost_pusd = r.baseline_cost_pusd + excluded.baseline_cost_pusd,
            latency_us_sum = r.latency_us_sum + excluded.latency_us_sum,
            ttft_us_sum = r.ttft_us_sum + excluded.ttft_us_sum,
            ttft_count = r.ttft_count + excluded.ttft_count,
            upstream_us_sum = r.upstream_us_sum + excluded.upstream_us_sum
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM taken) INTO m FROM (SELECT count(*) FROM merged) x;
    moved := moved + m;

    WITH taken AS (
        DELETE FROM usage_rollup_hist_pending
        WHERE ctid = ANY (ARRAY(SELECT ctid FROM usage_rollup_hist_pending LIMIT p_limit
                                FOR UPDATE SKIP LOCKED))
        RETURNING *
    ), graded AS (
        SELECT g.grain,
               CASE g.grain WHEN '5m' THEN t.bucket
                            WHEN '1h' THEN date_trunc('hour', t.bucket, 'UTC')
                            ELSE date_trunc('day', t.bucket, 'UTC') END AS bucket,
               t.metric, t.model, t.provider, t.idx, sum(t.n) AS n
        FROM taken t CROSS JOIN (VALUES ('5m'), ('1h'), ('1d')) g(grain)
        GROUP BY 1, 2, 3, 4, 5, 6
    ), merged AS (
        INSERT INTO usage_rollup_hist AS h
        SELECT * FROM graded ORDER BY 1, 2, 3, 4, 5, 6
        ON CONFLICT (grain, bucket, metric, model, provider, idx)
            DO UPDATE SET n = h.n + excluded.n
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM taken) INTO m FROM (SELECT count(*) FROM merged) x;
    moved := moved + m;

    -- Trim usage_top to 100 per hour in the hours new events touched. One
    -- trimmer at a time (two deleting the same rows in different orders
    -- could deadlock); a run that finds the lock taken leaves the hours to
    -- the next run (readers take the top n of what is kept: exact anyway).
    IF NOT pg_try_advisory_xact_lock(hashtext('bridle_rollup_top_trim')) THEN
        RETURN moved;
    END IF;
    WITH hours AS (
        DELETE FROM usage_top_dirty
        WHERE ctid = ANY (ARRAY(SELECT ctid FROM usage_top_dirty LIMIT 10000
                                FOR UPDATE SKIP LOCKED))
        RETURNING hour
    ), ranked AS (
        SELECT t.hour, t.cost_pusd, t.ts, t.event_id,
               row_number() OVER (PARTITION BY t.hour
                                  ORDER BY t.cost_pusd DESC, t.ts DESC, t.event_id) AS rn
        FROM usage_top t WHERE t.hour IN (SELECT DISTINCT hour FROM hours)
    )
    DELETE FROM usage_top t USING ranked r
    WHERE r.rn > 100 AND t.hour = r.hour AND t.cost_pusd = r.cost_pusd AND t.ts = r.ts
      AND t.event_id = r.event_id;
    RETURN moved;
END $$;

-- Deletes rollups older than the given days per grain (0 = keep).
CREATE FUNCTION bridle_rollup_retention(days_5m integer, days_1h integer, days_1d integer)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n bigint := 0;
    m bigint;
    g record;
BEGIN
    FOR g IN SELECT * FROM (VALUES ('5m', days_5m), ('1h', days_1h), ('1d', days_1d)) v(grain, days)
             WHERE v.days > 0 LOOP
        DELETE FROM usage_rollup WHERE grain = g.grain
          AND bucket < date_trunc('day', now(), 'UTC') - g.days * interval '1 day';
        GET DIAGNOSTICS m = ROW_COUNT;
        n := n + m;
        DELETE FROM usage_rollup_hist WHERE grain = g.grain
          AND bucket < date_trunc('day', now(), 'UTC') - g.days * interval '1 day';
        GET DIAGNOSTICS m = ROW_COUNT;
        n := n + m;
        IF g.grain = '1h' THEN
            DELETE FROM usage_top
            WHERE hour < date_trunc('day', now(), 'UTC') - g.days * interval '1 day';
            GET DIAGNOSTICS m = ROW_COUNT;
            n := n + m;
        END IF;
    END LOOP;
    RETURN n;
END $$;

-- ---------------------------------------------------------------- readers

-- The pieces covering [p_from, p_to): (grain or 'raw', lo, hi), coarsest
-- first. A grain is used only where whole periods fit and it is at most
-- p_max_grain; what is left at the edges goes to the next finer grain,
-- and below 5 minutes to the raw events.
CREATE FUNCTION bridle_cover(p_from timestamptz, p_to timestamptz, p_max_grain interval)
RETURNS TABLE (grain text, lo timestamptz, hi timestamptz)
LANGUAGE plpgsql STABLE ROWS 7 AS $$  -- at most 1d + 2 x 1h + 2 x 5m + 2 raw pieces
DECLARE
    grains text[] := ARRAY['1d', '1h', '5m'];
    steps interval[] := ARRAY[interval '1 day', interval '1 hour', interval '5 minutes'];
    todo_lo timestamptz[] := ARRAY[p_from];
    todo_hi timestamptz[] := ARRAY[p_to];
    next_lo timestamptz[];
    next_hi timestamptz[];
    a timestamptz;
    b timestamptz;
BEGIN
    IF p_from IS NULL OR p_to IS NULL OR p_to <= p_from THEN RETURN; END IF;
    FOR g IN 1..3 LOOP
        next_lo := '{}';
        next_hi := '{}';
        FOR j IN 1..coalesce(array_length(todo_lo, 1), 0) LOOP
            IF steps[g] > coalesce(p_max_grain, interval '1 day') THEN
                next_lo := next_lo || todo_lo[j];
                next_hi := next_hi || todo_hi[j];
                CONTINUE;
            END IF;
            -- whole periods of this grain inside [todo_lo, todo_hi)
            a := date_bin(steps[g], todo_lo[j], timestamptz '2000-01-03 00:00:00+00');
            IF a < todo_lo[j] THEN a := a + steps[g]; END IF;
            b := date_bin(steps[g], todo_hi[j], timestamptz '2000-01-03 00:00:00+00');
            IF a < b THEN
                grain := grains[g]; lo := a; hi := b;
                RETURN NEXT;
                IF todo_lo[j] < a THEN next_lo := next_lo || todo_lo[j]; next_hi := next_hi || a; END IF;
                IF b < todo_hi[j] THEN next_lo := next_lo || b; next_hi := next_hi || todo_hi[j]; END IF;
            ELSE
                next_lo := next_lo || todo_lo[j];
                next_hi := next_hi || todo_hi[j];
            END IF;
        END LOOP;
        todo_lo := next_lo;
        todo_hi := next_hi;
    END LOOP;
    FOR j IN 1..coalesce(array_length(todo_lo, 1), 0) LOOP
        grain := 'raw'; lo := todo_lo[j]; hi := todo_hi[j];
        RETURN NEXT;
    END LOOP;
END $$;

-- The readers below join the few pieces of bridle_cover to the rollups on
-- (grain, bucket) ranges the planner cannot see at plan time: it guesses a
-- third of the table per piece and picks a sequential scan of usage_rollup
-- (measured: 390 ms for 30 days over 720,000 rollup rows, against 16 ms by
-- the primary key), and the inflated cost turns JIT on (2 s more). Hence
-- SET enable_seqscan = off (the pending tables, without an index, are still
-- scanned) and jit = off on each reader.

-- Usage in [p_from, p_to), exactly: rollup rows of the covering grains
-- (plus what is still pending, re-bucketed to that grain) and raw events
-- at the edges, one row per (bucket, dimensions). bucket is the start of
-- the row's period (of its grain; for raw rows the 5-minute bucket).
CREATE FUNCTION bridle_usage(p_from timestamptz, p_to timestamptz,
                             p_max_grain interval DEFAULT interval '1 day')
RETURNS TABLE (bucket timestamptz, grain text, key_id text, team text, model text,
               provider text, agent text, task text, feature text, tier text, status integer,
               error_class text, requests bigint, errors bigint, retries bigint,
               cache_hits bigint, streamed bigint, estimated bigint, input_tokens bigint,
               cache_read_tokens bigint, cache_write_tokens bigint, output_tokens bigint,
               reasoning_tokens bigint, cost_pusd bigint, baseline_cost_pusd bigint,
               latency_us_sum bigint, ttft_us_sum bigint, ttft_count bigint,
               upstream_us_sum bigint)
LANGUAGE sql STABLE SET enable_seqscan = off SET jit = off AS $$
    WITH c AS (SELECT * FROM bridle_cover(p_from, p_to, p_max_grain)),
    parts AS (
        SELECT r.bucket, r.grain, r.key_id, r.team, r.model, r.provider, r.agent, r.task,
               r.feature, r.tier, r.status, r.error_class, r.requests, r.errors, r.retries,
               r.cache_hits, r.streamed, r.estimated, r.input_tokens, r.cache_read_tokens,
               r.cache_write_tokens, r.output_tokens, r.reasoning_tokens, r.cost_pusd,
               r.baseline_cost_pusd, r.latency_us_sum, r.ttft_us_sum, r.ttft_count,
               r.upstream_us_sum
        FROM c CROSS JOIN LATERAL (
            SELECT * FROM usage_rollup r0
            WHERE r0.grain = c.grain AND r0.bucket >= c.lo AND r0.bucket < c.hi OFFSET 0) r
        WHERE c.grain <> 'raw'
        UNION ALL
        SELECT CASE c.grain WHEN '5m' THEN p.bucket
                            WHEN '1h' THEN date_trunc('hour', p.bucket, 'UTC')
                            ELSE date_trunc('day', p.bucket, 'UTC') END,
               c.grain, p.key_id, p.team, p.model, p.provider, p.agent, p.task, p.feature,
               p.tier, p.status, p.error_class, p.requests, p.errors, p.retries, p.cache_hits,
               p.streamed, p.estimated, p.input_tokens, p.cache_read_tokens,
               p.cache_write_tokens, p.output_tokens, p.reasoning_tokens, p.cost_pusd,
               p.baseline_cost_pusd, p.latency_us_sum, p.ttft_us_sum, p.ttft_count,
               p.upstream_us_sum
        FROM c JOIN usage_rollup_pending p
          ON c.grain <> 'raw' AND p.bucket >= c.lo AND p.bucket < c.hi
        UNION ALL
        SELECT bridle_bucket_5m(e.ts), 'raw', coalesce(e.key_id, ''), coalesce(e.team, ''),
               coalesce(e.model, ''), coalesce(e.provider, ''), coalesce(e.agent, ''),
               coalesce(e.task, ''), coalesce(e.feature, ''), coalesce(e.tier, ''), e.status,
               coalesce(e.error_class, ''), 1,
               CASE WHEN coalesce(e.error_class, '') <> '' OR e.status >= 400 THEN 1 ELSE 0 END,
               greatest(e.attempts - 1, 0), e.cache_hit::int, e.streamed::int,
               (NOT e.usage_exact)::int, e.input_tokens, e.cache_read_tokens,
               e.cache_write_tokens, e.output_tokens, e.reasoning_tokens, e.cost_pusd,
               e.baseline_cost_pusd, e.latency_us,
               CASE WHEN e.streamed AND e.ttft_us >= 0 THEN e.ttft_us ELSE 0 END,
               CASE WHEN e.streamed AND e.ttft_us >= 0 THEN 1 ELSE 0 END, e.upstream_us
        FROM c CROSS JOIN LATERAL (
            SELECT * FROM usage_events e0 WHERE e0.ts >= c.lo AND e0.ts < c.hi OFFSET 0) e
        WHERE c.grain = 'raw'
    )
    SELECT bucket, grain, key_id, team, model, provider, agent, task, feature, tier, status,
           error_class, sum(requests)::bigint, sum(errors)::bigint, sum(retries)::bigint,
           sum(cache_hits)::bigint, sum(streamed)::bigint, sum(estimated)::bigint,
           sum(input_tokens)::bigint, sum(cache_read_tokens)::bigint,
           sum(cache_write_tokens)::bigint, sum(output_tokens)::bigint,
           sum(reasoning_tokens)::bigint, sum(cost_pusd)::bigint,
           sum(baseline_cost_pusd)::bigint, sum(latency_us_sum)::bigint,
           sum(ttft_us_sum)::bigint, sum(ttft_count)::bigint, sum(upstream_us_sum)::bigint
    FROM parts
    GROUP BY bucket, grain, key_id, team, model, provider, agent, task, feature, tier, status,
             error_class
$$;

-- Latency and time-to-first-token histograms in [p_from, p_to), the same way.
CREATE FUNCTION bridle_usage_hist(p_from timestamptz, p_to timestamptz,
                                  p_max_grain interval DEFAULT interval '1 day')
RETURNS TABLE (bucket timestamptz, grain text, metric text, model text, provider text,
               idx smallint, n bigint)
LANGUAGE sql STABLE SET enable_seqscan = off SET jit = off AS $$
    WITH c AS (SELECT * FROM bridle_cover(p_from, p_to, p_max_grain)),
    parts AS (
        SELECT h.bucket, h.grain, h.metric, h.model, h.provider, h.idx, h.n
        FROM c CROSS JOIN LATERAL (
            SELECT * FROM usage_rollup_hist h0
            WHERE h0.grain = c.grain AND h0.bucket >= c.lo AND h0.bucket < c.hi OFFSET 0) h
        WHERE c.grain <> 'raw'
        UNION ALL
        SELECT CASE c.grain WHEN '5m' THEN p.bucket
                            WHEN '1h' THEN date_trunc('hour', p.bucket, 'UTC')
                            ELSE date_trunc('day', p.bucket, 'UTC') END,
               c.grain, p.metric, p.model, p.provider, p.idx, p.n
        FROM c JOIN usage_rollup_hist_pending p
          ON c.grain <> 'raw' AND p.bucket >= c.lo AND p.bucket < c.hi
        UNION ALL
        SELECT bridle_bucket_5m(e.ts), 'raw', m.metric, coalesce(e.model, ''),
               coalesce(e.provider, ''), bridle_hist_idx(m.us), 1
        FROM c CROSS JOIN LATERAL (
            SELECT * FROM usage_events e0 WHERE e0.ts >= c.lo AND e0.ts < c.hi OFFSET 0) e
        CROSS JOIN LATERAL (VALUES ('latency', e.latency_us),
                                   ('ttft', CASE WHEN e.streamed AND e.ttft_us >= 0
                                                 THEN e.ttft_us END)) m(metric, us)
        WHERE c.grain = 'raw' AND m.us IS NOT NULL
    )
    SELECT bucket, grain, metric, model, provider, idx, sum(n)::bigint
    FROM parts GROUP BY bucket, grain, metric, model, provider, idx
$$;

-- The p_n most expensive events in [p_from, p_to) (p_n <= 100): the kept
-- top 100 of each whole hour, raw events for the partial hours at the
-- edges. Ties: later first, then event_id.
CREATE FUNCTION bridle_top(p_from timestamptz, p_to timestamptz, p_n integer)
RETURNS SETOF usage_top
LANGUAGE sql STABLE SET enable_seqscan = off SET jit = off AS $$
    WITH c AS (SELECT * FROM bridle_cover(p_from, p_to, interval '1 hour')),
    hours AS (
        SELECT min(lo) AS lo, max(hi) AS hi FROM c WHERE grain = '1h'
    ),
    cand AS (
        SELECT t.* FROM hours h JOIN usage_top t ON t.hour >= h.lo AND t.hour < h.hi
        UNION ALL
        SELECT date_trunc('hour', e.ts, 'UTC'), e.ts, e.event_id, e.key_id, e.team, e.model,
               e.provider, e.input_tokens, e.cache_read_tokens, e.cache_write_tokens,
               e.output_tokens, e.cost_pusd, e.baseline_cost_pusd, e.latency_us, e.status,
               e.attempts
        FROM c CROSS JOIN LATERAL (
            SELECT * FROM usage_events e0 WHERE e0.ts >= c.lo AND e0.ts < c.hi OFFSET 0) e
        WHERE c.grain IN ('5m', 'raw')
    )
    SELECT DISTINCT ON (cost_pusd, ts, event_id) * FROM cand
    ORDER BY cost_pusd DESC, ts DESC, event_id
    LIMIT p_n
$$;
