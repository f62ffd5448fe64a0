-- 0008_narrow_rollups: rollups that grow with the dimensions' cardinality,
-- not with traffic, and a cheaper capture.
--
-- Why. 0006 kept one rollup keyed by all ten dimensions at once. Their
-- product (keys x tasks x models x statuses) is larger than the events of a
-- 5-minute bucket, so it barely compressed: 4.15M 5-minute rows for 5M
-- events, and a 30-day panel read more rows than the raw table holds
-- (bench/RESULTS.md, "Spend store"). No reader needs the full cube: every
-- panel and report groups by one dimension at a time, or by the model and
-- error dimensions together. So the cube is cut in two:
--
--   usage_rollup_ops   (grain, bucket, requested_model, model, provider,
--                       status, error_class): totals, the model, provider,
--                       error, retry, token, cache and savings panels, the
--                       summary. A few dozen rows per bucket.
--   usage_rollup_attr  (grain, dim, bucket, value): one row per value of
--                       one attribution dimension ('key', 'team', 'agent',
--                       'task', 'feature', 'tier'); '' is "none", so each
--                       dimension's rows add up to the total. Rows per
--                       bucket = the sum of the cardinalities, not their
--                       product.
--   usage_rollup_hist  (grain, bucket, metric, idx): latency and time to
--                       first token over all traffic (0006 split them by
--                       model and provider, which no panel reads and which
--                       multiplied the rows by the number of models).
--
-- Each has the same measures as 0006 and the grains 5m / 1h / 1d.
--
-- Capture (statement trigger on usage_events, in the inserting transaction,
-- as 0006: exactly once across the writer, the spool's dedup replay and bulk
-- imports). It now keeps the events grouped by all dimensions at the
-- 5-minute grain in usage_rollup_pending, and bridle_rollup() fans them out
-- to the narrow rollups outside the ledger's path. The capture got cheaper
-- (measured per event on 200,000 events in COPY batches of 5,000: base COPY
-- 4.1 us, 0006's capture +3.2 us, of which the top-100 +1.6 us):
--   - usage_top: an hour's kept top 100 has a floor (the 100th cost,
--     usage_top_floor); events below the floor of every hour in the
--     statement cannot enter and are not sorted;
--   - usage_top_dirty gets the statement's hours from its min/max ts;
--   - the budget charge (0004) groups by key, team and UTC day before it
--     expands to 3 scopes x 3 periods (+4.2 us an event before, +0.9 after).
--
-- Readers: bridle_usage(from, to, max_grain) over the ops dimensions,
-- bridle_usage_by(dim, from, to, max_grain) over one attribution dimension,
-- bridle_usage_hist(from, to, max_grain, metric); bridle_top as in 0006 but
-- for its partial edge hours (see its definition below). They cover
-- [from, to) as 0006 did (bridle_cover: rollups of whole periods, pending
-- rows, raw events only for pieces shorter than 5 minutes at the edges),
-- but return their pieces without merging them: several rows may share a
-- bucket and dimensions, and callers sum them (every panel and report
-- groups anyway; 0006's merge was 60 % of its readers' time).
--
-- Upgrading from 0006: pending rows are rolled up first, then the wide
-- rollup is re-aggregated exactly into the narrow tables (requested_model
-- is '' in rows from before this migration: 0006 did not keep it).

-- Roll up what 0006 left pending, so that nothing is lost below.
DO $$ BEGIN
    WHILE bridle_rollup(1000000) > 0 LOOP END LOOP;
END $$;

-- ---------------------------------------------------------------- tables

CREATE TABLE usage_rollup_ops (
    grain              text        NOT NULL CHECK (grain IN ('5m', '1h', '1d')),
    bucket             timestamptz NOT NULL,
    requested_model    text        NOT NULL DEFAULT '',
    model              text        NOT NULL DEFAULT '',
    provider           text        NOT NULL DEFAULT '',
    status             integer     NOT NULL,
    error_class        text        NOT NULL DEFAULT '',
    requests           bigint      NOT NULL DEFAULT 0,
    errors             bigint      NOT NULL DEFAULT 0,
    retries            bigint      NOT NULL DEFAULT 0,
    cache_hits         bigint      NOT NULL DEFAULT 0,
    streamed           bigint      NOT NULL DEFAULT 0,
    estimated          bigint      NOT NULL DEFAULT 0,
    input_tokens       bigint      NOT NULL DEFAULT 0,
    cache_read_tokens  bigint      NOT NULL DEFAULT 0,
    cache_write_tokens bigint      NOT NULL DEFAULT 0,
    output_tokens      bigint      NOT NULL DEFAULT 0,
    reasoning_tokens   bigint      NOT NULL DEFAULT 0,
    cost_pusd          bigint      NOT NULL DEFAULT 0,
    baseline_cost_pusd bigint      NOT NULL DEFAULT 0,
    latency_us_sum     bigint      NOT NULL DEFAULT 0,
    ttft_us_sum        bigint      NOT NULL DEFAULT 0,
    ttft_count         bigint      NOT NULL DEFAULT 0,
    upstream_us_sum    bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (grain, bucket, requested_model, model, provider, status, error_class)
);

CREATE TABLE usage_rollup_attr (
    grain              text        NOT NULL CHECK (grain IN ('5m', '1h', '1d')),
    dim                text        NOT NULL
                       CHECK (dim IN ('key', 'team', 'agent', 'task', 'feature', 'tier')),
    bucket             timestamptz NOT NULL,
    value              text        NOT NULL,  -- '' = none
    requests           bigint      NOT NULL DEFAULT 0,
    errors             bigint      NOT NULL DEFAULT 0,
    retries            bigint      NOT NULL DEFAULT 0,
    cache_hits         bigint      NOT NULL DEFAULT 0,
    streamed           bigint      NOT NULL DEFAULT 0,
    estimated          bigint      NOT NULL DEFAULT 0,
    input_tokens       bigint      NOT NULL DEFAULT 0,
    cache_read_tokens  bigint      NOT NULL DEFAULT 0,
    cache_write_tokens bigint      NOT NULL DEFAULT 0,
    output_tokens      bigint      NOT NULL DEFAULT 0,
    reasoning_tokens   bigint      NOT NULL DEFAULT 0,
    cost_pusd          bigint      NOT NULL DEFAULT 0,
    baseline_cost_pusd bigint      NOT NULL DEFAULT 0,
    latency_us_sum     bigint      NOT NULL DEFAULT 0,
    ttft_us_sum        bigint      NOT NULL DEFAULT 0,
    ttft_count         bigint      NOT NULL DEFAULT 0,
    upstream_us_sum    bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (grain, dim, bucket, value)
);
-- A few values over a long range (bridle_usage_by_values).
CREATE INDEX usage_rollup_attr_value ON usage_rollup_attr (grain, dim, value, bucket);

CREATE TABLE usage_rollup_hist2 (
    grain  text        NOT NULL CHECK (grain IN ('5m', '1h', '1d')),
    bucket timestamptz NOT NULL,
    metric text        NOT NULL CHECK (metric IN ('latency', 'ttft')),
    idx    smallint    NOT NULL CHECK (idx BETWEEN 0 AND 191),
    n      bigint      NOT NULL,
    PRIMARY KEY (grain, metric, bucket, idx)
);

CREATE TABLE usage_top_floor (
    hour       timestamptz PRIMARY KEY,
    floor_pusd bigint      NOT NULL  -- the 100th highest cost kept for the hour
);

-- ---------------------------------------------------------------- 0006's data

INSERT INTO usage_rollup_ops
SELECT grain, bucket, '', model, provider, status, error_class,
       sum(requests), sum(errors), sum(retries), sum(cache_hits), sum(streamed), sum(estimated),
       sum(input_tokens), sum(cache_read_tokens), sum(cache_write_tokens), sum(output_tokens),
       sum(reasoning_tokens), sum(cost_pusd), sum(baseline_cost_pusd), sum(latency_us_sum),
       sum(ttft_us_sum), sum(ttft_count), sum(upstream_us_sum)
FROM usage_rollup GROUP BY grain, bucket, model, provider, status, error_class;

INSERT INTO usage_rollup_attr
SELECT r.grain, d.dim, r.bucket, d.value,
       sum(requests), sum(errors), sum(retries), sum(cache_hits), sum(streamed), sum(estimated),
       sum(input_tokens), sum(cache_read_tokens), sum(cache_write_tokens), sum(output_tokens),
       sum(reasoning_tokens), sum(cost_pusd), sum(baseline_cost_pusd), sum(latency_us_sum),
       sum(ttft_us_sum), sum(ttft_count), sum(upstream_us_sum)
FROM usage_rollup r
CROSS JOIN LATERAL (VALUES ('key', r.key_id), ('team', r.team), ('agent', r.agent),
                           ('task', r.task), ('feature', r.feature), ('tier', r.tier)) d(dim, value)
GROUP BY r.grain, d.dim, r.bucket, d.value;

INSERT INTO usage_rollup_hist2
SELECT grain, bucket, metric, idx, sum(n) FROM usage_rollup_hist GROUP BY grain, bucket, metric, idx;

-- The floors of the hours 0006 already trimmed to 100.
INSERT INTO usage_top_floor
SELECT hour, min(cost_pusd) FROM usage_top GROUP BY hour HAVING count(*) >= 100;

DROP FUNCTION bridle_usage(timestamptz, timestamptz, interval);
DROP FUNCTION bridle_usage_hist(timestamptz, timestamptz, interval);
DROP TABLE usage_rollup, usage_rollup_hist, usage_rollup_hist_pending;
ALTER TABLE usage_rollup_hist2 RENAME TO usage_rollup_hist;
ALTER INDEX usage_rollup_hist2_pkey RENAME TO usage_rollup_hist_pkey;

-- Pending (empty after the loop above): the events of a statement grouped
-- by every dimension at the 5-minute grain, and their latency buckets.
DROP TABLE usage_rollup_pending;
CREATE TABLE usage_rollup_pending (
    bucket             timestamptz NOT NULL,
    key_id             text        NOT NULL,
    team               text        NOT NULL,
    agent              text        NOT NULL,
    task               text        NOT NULL,
    feature            text        NOT NULL,
    tier               text        NOT NULL,
    requested_model    text        NOT NULL,
    model              text        NOT NULL,
    provider           text        NOT NULL,
    status             integer     NOT NULL,
    error_class        text        NOT NULL,
    requests           bigint      NOT NULL,
    errors             bigint      NOT NULL,
    retries            bigint      NOT NULL,
    cache_hits         bigint      NOT NULL,
    streamed           bigint      NOT NULL,
    estimated          bigint      NOT NULL,
    input_tokens       bigint      NOT NULL,
    cache_read_tokens  bigint      NOT NULL,
    cache_write_tokens bigint      NOT NULL,
    output_tokens      bigint      NOT NULL,
    reasoning_tokens   bigint      NOT NULL,
    cost_pusd          bigint      NOT NULL,
    baseline_cost_pusd bigint      NOT NULL,
    latency_us_sum     bigint      NOT NULL,
    ttft_us_sum        bigint      NOT NULL,
    ttft_count         bigint      NOT NULL,
    upstream_us_sum    bigint      NOT NULL
);
CREATE TABLE usage_rollup_hist_pending (
    bucket timestamptz NOT NULL,
    metric text        NOT NULL,
    idx    smallint    NOT NULL,
    n      bigint      NOT NULL
);

-- ---------------------------------------------------------------- capture

CREATE OR REPLACE FUNCTION bridle_rollup_capture() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    lo timestamptz;
    hi timestamptz;
    hours integer;
    floor_pusd bigint;
BEGIN
    INSERT INTO usage_rollup_pending
    SELECT bridle_bucket_5m(ts), coalesce(key_id, ''), coalesce(team, ''), coalesce(agent, ''),
           coalesce(task, ''), coalesce(feature, ''), coalesce(tier, ''),
           coalesce(requested_model, ''), coalesce(model, ''), coalesce(provider, ''), status,
           coalesce(error_class, ''),
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
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12;

    INSERT INTO usage_rollup_hist_pending
    SELECT bridle_bucket_5m(ts), 'latency', bridle_hist_idx(latency_us), count(*)
    FROM new_rows GROUP BY 1, 2, 3
    UNION ALL
    SELECT bridle_bucket_5m(ts), 'ttft', bridle_hist_idx(ttft_us), count(*)
    FROM new_rows WHERE streamed AND ttft_us >= 0 GROUP BY 1, 2, 3;

    -- The top 100 per hour. An event below the floor of its hour can never
    -- be in that hour's top 100 (the floor only rises), so only events at
    -- or above the lowest floor of the statement's hours are ranked; an
    -- hour without a floor (fewer than 100 kept) has floor 0.
    SELECT min(ts), max(ts) INTO lo, hi FROM new_rows;
    IF lo IS NULL THEN RETURN NULL; END IF;
    lo := date_trunc('hour', lo, 'UTC');
    hi := date_trunc('hour', hi, 'UTC');
    hours := (extract(epoch FROM hi - lo) / 3600)::integer + 1;
    SELECT CASE WHEN count(*) = hours THEN min(f.floor_pusd) ELSE 0 END INTO floor_pusd
    FROM usage_top_floor f WHERE f.hour >= lo AND f.hour <= hi;

    INSERT INTO usage_top
    SELECT hour, ts, event_id, key_id, team, model, provider, input_tokens, cache_read_tokens,
           cache_write_tokens, output_tokens, cost_pusd, baseline_cost_pusd, latency_us, status,
           attempts
    FROM (SELECT date_trunc('hour', n.ts, 'UTC') AS hour, n.*,
                 row_number() OVER (PARTITION BY date_trunc('hour', n.ts, 'UTC')
                                    ORDER BY n.cost_pusd DESC, n.ts DESC, n.event_id) AS rn
          FROM new_rows n WHERE n.cost_pusd >= floor_pusd) x
    WHERE rn <= 100
    ON CONFLICT DO NOTHING;

    INSERT INTO usage_top_dirty
    SELECT generate_series(lo, hi, interval '1 hour');
    RETURN NULL;
END $$;

-- 0004's budget charge, grouped by key, team and UTC day before it expands
-- to every scope and period (the periods' starts follow from the day).
CREATE OR REPLACE FUNCTION bridle_charge_budgets() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    WITH per_day AS (
        SELECT n.key_id, n.team, date_trunc('day', n.ts, 'UTC') AS day,
               sum(n.cost_pusd)::bigint AS cost
        FROM new_rows n WHERE n.cost_pusd > 0 GROUP BY 1, 2, 3
    ), charge AS (
        SELECT s.scope, s.sid, p.period, bridle_period_start(p.period, d.day) AS start,
               sum(d.cost)::bigint AS cost
        FROM per_day d
        CROSS JOIN LATERAL (VALUES ('key', d.key_id), ('team', d.team), ('total', '')) s(scope, sid)
        CROSS JOIN (VALUES ('day'), ('week'), ('month')) p(period)
        WHERE s.sid IS NOT NULL
        GROUP BY 1, 2, 3, 4
    ), charged AS (
        INSERT INTO bridle_budget_spend AS b (scope, scope_id, period, period_start, spent_pusd)
        SELECT scope, sid, period, start, cost FROM charge ORDER BY 1, 2, 3, 4
        ON CONFLICT (scope, scope_id, period, period_start)
            DO UPDATE SET spent_pusd = b.spent_pusd + excluded.spent_pusd
        RETURNING b.scope, b.scope_id, b.period, b.period_start, b.spent_pusd
    )
    INSERT INTO bridle_budget_alerts (scope, scope_id, period, period_start, share_bp,
                                      limit_pusd, spent_pusd)
    SELECT c.scope, c.scope_id, c.period, c.period_start, t.share_bp, l.limit_pusd, c.spent_pusd
    FROM charged c
    JOIN bridle_budgets l USING (scope, scope_id, period)
    JOIN bridle_alert_thresholds t
      ON c.spent_pusd::numeric * 10000 >= l.limit_pusd::numeric * t.share_bp
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

-- 0006's bucket bounds computed power() in numeric (2.0 is a numeric
-- literal): float8 is several times cheaper per histogram row read.
CREATE OR REPLACE FUNCTION bridle_hist_lower_ms(idx integer) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN idx <= 0 THEN 0 ELSE 0.1::float8 * power(2.0::float8, (idx - 1) / 8.0::float8) END
$$;
CREATE OR REPLACE FUNCTION bridle_hist_upper_ms(idx integer) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 0.1::float8 * power(2.0::float8, idx / 8.0::float8)
$$;

-- The p-quantiles (p[i] ascending, in 0..1) in milliseconds of one
-- histogram given as its buckets (idx ascending) and their counts,
-- interpolated linearly inside the bucket: one call per time slot and one
-- pass for all p. bridle_hist_quantile (0006) passes its 193-cell state in
-- and out on every row: 4 to 8 times slower over a 30-day hourly chart.
CREATE FUNCTION bridle_hist_quantiles(idx smallint[], n bigint[], p float8[])
RETURNS float8[] LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    total float8 := 0;
    cum float8 := 0;
    out float8[] := array_fill(NULL::float8, ARRAY[array_length(p, 1)]);
    k integer := 1;
    lo float8;
    hi float8;
BEGIN
    IF idx IS NULL THEN RETURN out; END IF;
    FOR i IN 1..array_length(n, 1) LOOP total := total + n[i]; END LOOP;
    IF total = 0 THEN RETURN out; END IF;
    FOR i IN 1..array_length(idx, 1) LOOP
        CONTINUE WHEN n[i] <= 0;
        WHILE k <= array_length(p, 1) AND cum + n[i] >= p[k] * total LOOP
            lo := bridle_hist_lower_ms(idx[i]);
            hi := bridle_hist_upper_ms(idx[i]);
            out[k] := lo + (hi - lo) * greatest(p[k] * total - cum, 0) / n[i];
            k := k + 1;
        END LOOP;
        cum := cum + n[i];
    END LOOP;
    RETURN out;
END $$;

-- ---------------------------------------------------------------- rollup

-- The start of the grain's UTC period holding ts.
CREATE FUNCTION bridle_grain_bucket(grain text, ts timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT date_bin(CASE grain WHEN '5m' THEN interval '5 minutes'
                               WHEN '1h' THEN interval '1 hour' ELSE interval '1 day' END,
                    ts, timestamptz '2000-01-01 00:00:00+00')
$$;

-- Moves up to p_limit pending rows of each kind into the rollups of every
-- grain and trims usage_top. Idempotent and safe to run concurrently: the
-- pending rows it takes are deleted (FOR UPDATE SKIP LOCKED: concurrent
-- runs take disjoint rows) in the transaction that adds them up. Returns
-- how many pending rows it moved.
CREATE OR REPLACE FUNCTION bridle_rollup(p_limit integer DEFAULT 200000) RETURNS bigint
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
    ), ops5 AS (  -- the 5-minute rows first: coarser grains regroup these few
        SELECT bucket, requested_model, model, provider, status, error_class,
               sum(requests) AS requests, sum(errors) AS errors, sum(retries) AS retries,
               sum(cache_hits) AS cache_hits, sum(streamed) AS streamed,
               sum(estimated) AS estimated, sum(input_tokens) AS input_tokens,
               sum(cache_read_tokens) AS cache_read_tokens,
               sum(cache_write_tokens) AS cache_write_tokens, sum(output_tokens) AS output_tokens,
               sum(reasoning_tokens) AS reasoning_tokens, sum(cost_pusd) AS cost_pusd,
               sum(baseline_cost_pusd) AS baseline_cost_pusd,
               sum(latency_us_sum) AS latency_us_sum, sum(ttft_us_sum) AS ttft_us_sum,
               sum(ttft_count) AS ttft_count, sum(upstream_us_sum) AS upstream_us_sum
        FROM taken GROUP BY 1, 2, 3, 4, 5, 6
    ), attr5 AS (
        SELECT t.bucket, d.dim, d.value,
               sum(requests) AS requests, sum(errors) AS errors, sum(retries) AS retries,
               sum(cache_hits) AS cache_hits, sum(streamed) AS streamed,
               sum(estimated) AS estimated, sum(input_tokens) AS input_tokens,
               sum(cache_read_tokens) AS cache_read_tokens,
               sum(cache_write_tokens) AS cache_write_tokens, sum(output_tokens) AS output_tokens,
               sum(reasoning_tokens) AS reasoning_tokens, sum(cost_pusd) AS cost_pusd,
               sum(baseline_cost_pusd) AS baseline_cost_pusd,
               sum(latency_us_sum) AS latency_us_sum, sum(ttft_us_sum) AS ttft_us_sum,
               sum(ttft_count) AS ttft_count, sum(upstream_us_sum) AS upstream_us_sum
        FROM taken t
        CROSS JOIN LATERAL (VALUES ('key', t.key_id), ('team', t.team), ('agent', t.agent),
                                   ('task', t.task), ('feature', t.feature),
                                   ('tier', t.tier)) d(dim, value)
        GROUP BY 1, 2, 3
    ), ops_merged AS (
        INSERT INTO usage_rollup_ops AS r
        SELECT g.grain, bridle_grain_bucket(g.grain, o.bucket), o.requested_model, o.model,
               o.provider, o.status, o.error_class, sum(o.requests), sum(o.errors),
               sum(o.retries), sum(o.cache_hits), sum(o.streamed), sum(o.estimated),
               sum(o.input_tokens), sum(o.cache_read_tokens), sum(o.cache_write_tokens),
               sum(o.output_tokens), sum(o.reasoning_tokens), sum(o.cost_pusd),
               sum(o.baseline_cost_pusd), sum(o.latency_us_sum), sum(o.ttft_us_sum),
               sum(o.ttft_count), sum(o.upstream_us_sum)
        FROM ops5 o CROSS JOIN (VALUES ('5m'), ('1h'), ('1d')) g(grain)
        GROUP BY 1, 2, 3, 4, 5, 6, 7
        ORDER BY 1, 2, 3, 4, 5, 6, 7
        ON CONFLICT (grain, bucket, requested_model, model, provider, status, error_class)
        DO UPDATE SET
            requests = r.requests + excluded.requests, errors = r.errors + excluded.errors,
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
    ), attr_merged AS (
        INSERT INTO usage_rollup_attr AS r
        SELECT g.grain, a.dim, bridle_grain_bucket(g.grain, a.bucket), a.value,
               sum(a.requests), sum(a.errors), sum(a.retries), sum(a.cache_hits),
               sum(a.streamed), sum(a.estimated), sum(a.input_tokens),
               sum(a.cache_read_tokens), sum(a.cache_write_tokens), sum(a.output_tokens),
               sum(a.reasoning_tokens), sum(a.cost_pusd), sum(a.baseline_cost_pusd),
               sum(a.latency_us_sum), sum(a.ttft_us_sum), sum(a.ttft_count),
               sum(a.upstream_us_sum)
        FROM attr5 a CROSS JOIN (VALUES ('5m'), ('1h'), ('1d')) g(grain)
        GROUP BY 1, 2, 3, 4
        ORDER BY 1, 2, 3, 4
        ON CONFLICT (grain, dim, bucket, value) DO UPDATE SET
            requests = r.requests + excluded.requests, errors = r.errors + excluded.errors,
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
    SELECT (SELECT count(*) FROM taken) INTO m
    FROM (SELECT count(*) FROM ops_merged) a, (SELECT count(*) FROM attr_merged) b;
    moved := moved + m;

    WITH taken AS (
        DELETE FROM usage_rollup_hist_pending
        WHERE ctid = ANY (ARRAY(SELECT ctid FROM usage_rollup_hist_pending LIMIT p_limit
                                FOR UPDATE SKIP LOCKED))
        RETURNING *
    ), h5 AS (
        SELECT bucket, metric, idx, sum(n) AS n FROM taken GROUP BY 1, 2, 3
    ), merged AS (
        INSERT INTO usage_rollup_hist AS h
        SELECT g.grain, bridle_grain_bucket(g.grain, h5.bucket), h5.metric, h5.idx, sum(h5.n)
        FROM h5 CROSS JOIN (VALUES ('5m'), ('1h'), ('1d')) g(grain)
        GROUP BY 1, 2, 3, 4
        ORDER BY 1, 3, 2, 4
        ON CONFLICT (grain, metric, bucket, idx) DO UPDATE SET n = h.n + excluded.n
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM taken) INTO m FROM (SELECT count(*) FROM merged) x;
    moved := moved + m;

    -- Trim usage_top to 100 per hour in the hours new events touched, and
    -- raise those hours' floors. One trimmer at a time (two deleting the
    -- same rows in different orders could deadlock); a run that finds the
    -- lock taken leaves the hours to the next run (readers take the top n
    -- of what is kept: exact anyway). Rows a concurrent capture adds are
    -- not seen here; they are at or above the floor and marked dirty, so
    -- the floor computed here never passes an hour's true 100th cost.
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
    ), trimmed AS (
        DELETE FROM usage_top t USING ranked r
        WHERE r.rn > 100 AND t.hour = r.hour AND t.cost_pusd = r.cost_pusd AND t.ts = r.ts
          AND t.event_id = r.event_id
    )
    INSERT INTO usage_top_floor AS f
    SELECT hour, min(cost_pusd) FROM ranked WHERE rn <= 100 GROUP BY hour HAVING count(*) >= 100
    ON CONFLICT (hour) DO UPDATE SET floor_pusd = greatest(f.floor_pusd, excluded.floor_pusd);
    RETURN moved;
END $$;

-- Deletes rollups older than the given days per grain (0 = keep).
CREATE OR REPLACE FUNCTION bridle_rollup_retention(days_5m integer, days_1h integer,
                                                   days_1d integer)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n bigint := 0;
    m bigint;
    g record;
    cutoff timestamptz;
BEGIN
    FOR g IN SELECT * FROM (VALUES ('5m', days_5m), ('1h', days_1h), ('1d', days_1d)) v(grain, days)
             WHERE v.days > 0 LOOP
        cutoff := date_trunc('day', now(), 'UTC') - g.days * interval '1 day';
        DELETE FROM usage_rollup_ops WHERE grain = g.grain AND bucket < cutoff;
        GET DIAGNOSTICS m = ROW_COUNT;
        n := n + m;
        DELETE FROM usage_rollup_attr
        WHERE grain = g.grain AND dim IN ('key', 'team', 'agent', 'task', 'feature', 'tier')
          AND bucket < cutoff;
        GET DIAGNOSTICS m = ROW_COUNT;
        n := n + m;
        DELETE FROM usage_rollup_hist
        WHERE grain = g.grain AND metric IN ('latency', 'ttft') AND bucket < cutoff;
        GET DIAGNOSTICS m = ROW_COUNT;
        n := n + m;
        IF g.grain = '1h' THEN
            DELETE FROM usage_top WHERE hour < cutoff;
            GET DIAGNOSTICS m = ROW_COUNT;
            n := n + m;
            DELETE FROM usage_top_floor WHERE hour < cutoff;
        END IF;
    END LOOP;
    RETURN n;
END $$;

-- ---------------------------------------------------------------- readers

-- As in 0006, each reader reaches every table through a LATERAL subquery
-- per piece of bridle_cover (OFFSET 0 keeps it one: a range scan of the
-- primary key, and of the partitions' (ts, event_id) keys for the raw
-- edges), with enable_seqscan and jit off (see 0006 for the measurements).
-- Rows are pieces, not merged: sum them.

-- Raw events in [p_lo, p_hi) as rollup measures (one event each), with
-- every dimension ('' = none): the edges of a range that no 5-minute
-- bucket covers. ttft_us is NULL where the event has no first token.
CREATE FUNCTION bridle_raw_measures(p_lo timestamptz, p_hi timestamptz)
RETURNS TABLE (ts timestamptz, key_id text, team text, agent text, task text, feature text,
               tier text, requested_model text, model text, provider text, status integer,
               error_class text, latency_us bigint, ttft_us bigint, requests bigint,
               errors bigint, retries bigint, cache_hits bigint, streamed bigint,
               estimated bigint, input_tokens bigint, cache_read_tokens bigint,
               cache_write_tokens bigint, output_tokens bigint, reasoning_tokens bigint,
               cost_pusd bigint, baseline_cost_pusd bigint, latency_us_sum bigint,
               ttft_us_sum bigint, ttft_count bigint, upstream_us_sum bigint)
LANGUAGE sql STABLE AS $$
    SELECT e.ts, coalesce(e.key_id, ''), coalesce(e.team, ''), coalesce(e.agent, ''),
           coalesce(e.task, ''), coalesce(e.feature, ''), coalesce(e.tier, ''),
           coalesce(e.requested_model, ''), coalesce(e.model, ''), coalesce(e.provider, ''),
           e.status, coalesce(e.error_class, ''), e.latency_us,
           CASE WHEN e.streamed AND e.ttft_us >= 0 THEN e.ttft_us END,
           1::bigint,
           CASE WHEN coalesce(e.error_class, '') <> '' OR e.status >= 400 THEN 1 ELSE 0 END::bigint,
           greatest(e.attempts - 1, 0)::bigint, e.cache_hit::int::bigint,
           e.streamed::int::bigint, (NOT e.usage_exact)::int::bigint, e.input_tokens,
           e.cache_read_tokens, e.cache_write_tokens, e.output_tokens, e.reasoning_tokens,
           e.cost_pusd, e.baseline_cost_pusd, e.latency_us,
           CASE WHEN e.streamed AND e.ttft_us >= 0 THEN e.ttft_us ELSE 0 END,
           CASE WHEN e.streamed AND e.ttft_us >= 0 THEN 1 ELSE 0 END::bigint, e.upstream_us
    FROM usage_events e WHERE e.ts >= p_lo AND e.ts < p_hi OFFSET 0
$$;

-- Usage in [p_from, p_to) by the ops dimensions. bucket is the start of the
-- row's period (of its grain; for raw rows the 5-minute bucket).
CREATE FUNCTION bridle_usage(p_from timestamptz, p_to timestamptz,
                             p_max_grain interval DEFAULT interval '1 day')
RETURNS TABLE (bucket timestamptz, grain text, requested_model text, model text, provider text,
               status integer, error_class text, requests bigint, errors bigint,
               retries bigint, cache_hits bigint, streamed bigint, estimated bigint,
               input_tokens bigint, cache_read_tokens bigint, cache_write_tokens bigint,
               output_tokens bigint, reasoning_tokens bigint, cost_pusd bigint,
               baseline_cost_pusd bigint, latency_us_sum bigint, ttft_us_sum bigint,
               ttft_count bigint, upstream_us_sum bigint)
LANGUAGE sql STABLE SET enable_seqscan = off SET jit = off AS $$
    WITH c AS (SELECT * FROM bridle_cover(p_from, p_to, p_max_grain))
    SELECT r.bucket, r.grain, r.requested_model, r.model, r.provider, r.status, r.error_class,
           r.requests, r.errors, r.retries, r.cache_hits, r.streamed, r.estimated,
           r.input_tokens, r.cache_read_tokens, r.cache_write_tokens, r.output_tokens,
           r.reasoning_tokens, r.cost_pusd, r.baseline_cost_pusd, r.latency_us_sum,
           r.ttft_us_sum, r.ttft_count, r.upstream_us_sum
    FROM c CROSS JOIN LATERAL (
        SELECT * FROM usage_rollup_ops r0
        WHERE r0.grain = c.grain AND r0.bucket >= c.lo AND r0.bucket < c.hi OFFSET 0) r
    WHERE c.grain <> 'raw'
    UNION ALL
    SELECT bridle_grain_bucket(c.grain, p.bucket), c.grain, p.requested_model, p.model,
           p.provider, p.status, p.error_class, p.requests, p.errors, p.retries, p.cache_hits,
           p.streamed, p.estimated, p.input_tokens, p.cache_read_tokens, p.cache_write_tokens,
           p.output_tokens, p.reasoning_tokens, p.cost_pusd, p.baseline_cost_pusd,
           p.latency_us_sum, p.ttft_us_sum, p.ttft_count, p.upstream_us_sum
    FROM c JOIN usage_rollup_pending p
      ON c.grain <> 'raw' AND p.bucket >= c.lo AND p.bucket < c.hi
    UNION ALL
    SELECT bridle_bucket_5m(e.ts), 'raw', coalesce(e.requested_model, ''),
           coalesce(e.model, ''), coalesce(e.provider, ''), e.status,
           coalesce(e.error_class, ''), e.requests, e.errors, e.retries, e.cache_hits,
           e.streamed, e.estimated, e.input_tokens, e.cache_read_tokens, e.cache_write_tokens,
           e.output_tokens, e.reasoning_tokens, e.cost_pusd, e.baseline_cost_pusd,
           e.latency_us_sum, e.ttft_us_sum, e.ttft_count, e.upstream_us_sum
    FROM c CROSS JOIN LATERAL bridle_raw_measures(c.lo, c.hi) e
    WHERE c.grain = 'raw'
$$;

-- Usage in [p_from, p_to) by one attribution dimension p_dim ('key',
-- 'team', 'agent', 'task', 'feature' or 'tier'); value '' is "none". With
-- p_values, only those values (by the (grain, dim, value, bucket) index:
-- an hourly chart of the top 10 of 3,000 keys reads 10 keys' rows, not
-- 3,000). Dynamic SQL only to leave the filter out when p_values is NULL:
-- an "IS NULL OR" would keep the index from being used.
CREATE FUNCTION bridle_usage_by_values(p_dim text, p_values text[], p_from timestamptz,
                                       p_to timestamptz,
                                       p_max_grain interval DEFAULT interval '1 day')
RETURNS TABLE (bucket timestamptz, grain text, value text, requests bigint, errors bigint,
               retries bigint, cache_hits bigint, streamed bigint, estimated bigint,
               input_tokens bigint, cache_read_tokens bigint, cache_write_tokens bigint,
               output_tokens bigint, reasoning_tokens bigint, cost_pusd bigint,
               baseline_cost_pusd bigint, latency_us_sum bigint, ttft_us_sum bigint,
               ttft_count bigint, upstream_us_sum bigint)
LANGUAGE plpgsql STABLE SET enable_seqscan = off SET jit = off AS $f$
DECLARE
    col text := CASE p_dim WHEN 'key' THEN 'key_id' WHEN 'team' THEN 'team'
                           WHEN 'agent' THEN 'agent' WHEN 'task' THEN 'task'
                           WHEN 'feature' THEN 'feature' WHEN 'tier' THEN 'tier' END;
    value_filter text := CASE WHEN p_values IS NULL THEN '' ELSE ' AND %s = ANY ($2)' END;
BEGIN
    IF col IS NULL THEN
        RAISE EXCEPTION 'unknown dimension "%": one of key, team, agent, task, feature, tier',
            p_dim;
    END IF;
    RETURN QUERY EXECUTE format($q$
    WITH c AS (SELECT * FROM bridle_cover($3, $4, $5))
    SELECT r.bucket, r.grain, r.value, r.requests, r.errors, r.retries, r.cache_hits,
           r.streamed, r.estimated, r.input_tokens, r.cache_read_tokens, r.cache_write_tokens,
           r.output_tokens, r.reasoning_tokens, r.cost_pusd, r.baseline_cost_pusd,
           r.latency_us_sum, r.ttft_us_sum, r.ttft_count, r.upstream_us_sum
    FROM c CROSS JOIN LATERAL (
        SELECT * FROM usage_rollup_attr r0
        WHERE r0.grain = c.grain AND r0.dim = $1 AND r0.bucket >= c.lo AND r0.bucket < c.hi %1$s
        OFFSET 0) r
    WHERE c.grain <> 'raw'
    UNION ALL
    SELECT bridle_grain_bucket(c.grain, p.bucket), c.grain, p.%4$I,
           p.requests, p.errors, p.retries, p.cache_hits, p.streamed, p.estimated,
           p.input_tokens, p.cache_read_tokens, p.cache_write_tokens, p.output_tokens,
           p.reasoning_tokens, p.cost_pusd, p.baseline_cost_pusd, p.latency_us_sum,
           p.ttft_us_sum, p.ttft_count, p.upstream_us_sum
    FROM c JOIN usage_rollup_pending p
      ON c.grain <> 'raw' AND p.bucket >= c.lo AND p.bucket < c.hi %2$s
    UNION ALL
    SELECT bridle_bucket_5m(e.ts), 'raw', e.%4$I,
           e.requests, e.errors, e.retries, e.cache_hits, e.streamed, e.estimated,
           e.input_tokens, e.cache_read_tokens, e.cache_write_tokens, e.output_tokens,
           e.reasoning_tokens, e.cost_pusd, e.baseline_cost_pusd, e.latency_us_sum,
           e.ttft_us_sum, e.ttft_count, e.upstream_us_sum
    FROM c CROSS JOIN LATERAL bridle_raw_measures(c.lo, c.hi) e
    WHERE c.grain = 'raw' %3$s
    $q$, format(value_filter, 'r0.value'), format(value_filter, 'p.' || col),
              format(value_filter, 'e.' || col), col)
    USING p_dim, p_values, p_from, p_to, p_max_grain;
END $f$;

-- All values of p_dim (inlined into the caller).
CREATE FUNCTION bridle_usage_by(p_dim text, p_from timestamptz, p_to timestamptz,
                                p_max_grain interval DEFAULT interval '1 day')
RETURNS TABLE (bucket timestamptz, grain text, value text, requests bigint, errors bigint,
               retries bigint, cache_hits bigint, streamed bigint, estimated bigint,
               input_tokens bigint, cache_read_tokens bigint, cache_write_tokens bigint,
               output_tokens bigint, reasoning_tokens bigint, cost_pusd bigint,
               baseline_cost_pusd bigint, latency_us_sum bigint, ttft_us_sum bigint,
               ttft_count bigint, upstream_us_sum bigint)
LANGUAGE sql STABLE AS $$
    SELECT * FROM bridle_usage_by_values(p_dim, NULL::text[], p_from, p_to, p_max_grain)
$$;

-- The p_n values of p_dim that cost most in [p_from, p_to), dearest first
-- (ties by value): the series a "top n + (other)" chart shows.
CREATE FUNCTION bridle_top_values(p_dim text, p_from timestamptz, p_to timestamptz,
                                  p_n integer)
RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(value ORDER BY cost DESC, value), '{}')
    FROM (SELECT value, sum(cost_pusd) AS cost
          FROM bridle_usage_by_values(p_dim, NULL::text[], p_from, p_to, interval '1 day')
          GROUP BY value ORDER BY cost DESC, value LIMIT p_n) t
$$;

-- Latency and time-to-first-token histograms in [p_from, p_to), the same
-- way (feed them to bridle_hist_quantiles); p_metric 'latency' or 'ttft'
-- reads only that one, NULL both.
CREATE FUNCTION bridle_usage_hist(p_from timestamptz, p_to timestamptz,
                                  p_max_grain interval DEFAULT interval '1 day',
                                  p_metric text DEFAULT NULL)
RETURNS TABLE (bucket timestamptz, grain text, metric text, idx smallint, n bigint)
LANGUAGE sql STABLE SET enable_seqscan = off SET jit = off AS $$
    WITH c AS (SELECT * FROM bridle_cover(p_from, p_to, p_max_grain)),
    m AS (SELECT * FROM (VALUES ('latency'), ('ttft')) v(metric)
          WHERE p_metric IS NULL OR v.metric = p_metric)
    SELECT h.bucket, h.grain, h.metric, h.idx, h.n
    FROM c CROSS JOIN m
    CROSS JOIN LATERAL (
        SELECT * FROM usage_rollup_hist h0
        WHERE h0.grain = c.grain AND h0.metric = m.metric AND h0.bucket >= c.lo
          AND h0.bucket < c.hi OFFSET 0) h
    WHERE c.grain <> 'raw'
    UNION ALL
    SELECT bridle_grain_bucket(c.grain, p.bucket), c.grain, p.metric, p.idx, p.n
    FROM c JOIN usage_rollup_hist_pending p
      ON c.grain <> 'raw' AND p.bucket >= c.lo AND p.bucket < c.hi
    WHERE p.metric IN (SELECT metric FROM m)
    UNION ALL
    SELECT bridle_bucket_5m(e.ts), 'raw', x.metric, bridle_hist_idx(x.us), 1
    FROM c CROSS JOIN LATERAL bridle_raw_measures(c.lo, c.hi) e
    CROSS JOIN LATERAL (VALUES ('latency', e.latency_us), ('ttft', e.ttft_us)) x(metric, us)
    WHERE c.grain = 'raw' AND x.us IS NOT NULL AND x.metric IN (SELECT metric FROM m)
$$;

-- The p_n most expensive events in [p_from, p_to) (p_n <= 100): the kept
-- top 100 of each whole hour, and for a partial hour at an edge, the kept
-- top 100 of that hour that fall inside the range when there are at least
-- p_n of them (an hour's top 100 beat every other event of the hour, so
-- then the range's top p_n are among them); only otherwise the edge's raw
-- events (0006 always scanned them: up to two hours of events). Ties:
-- later first, then event_id.
CREATE OR REPLACE FUNCTION bridle_top(p_from timestamptz, p_to timestamptz, p_n integer)
RETURNS SETOF usage_top
LANGUAGE sql STABLE SET enable_seqscan = off SET jit = off AS $$
    WITH c AS (SELECT * FROM bridle_cover(p_from, p_to, interval '1 hour')),
    hours AS (SELECT min(lo) AS lo, max(hi) AS hi FROM c WHERE grain = '1h'),
    edges AS (  -- the partial hours, each as one range inside its hour
        SELECT h.hour, min(greatest(c.lo, h.hour)) AS lo,
               max(least(c.hi, h.hour + interval '1 hour')) AS hi
        FROM c CROSS JOIN LATERAL generate_series(date_trunc('hour', c.lo, 'UTC'),
                                                  c.hi - interval '1 microsecond',
                                                  interval '1 hour') h(hour)
        WHERE c.grain IN ('5m', 'raw')
        GROUP BY h.hour
    ),
    kept AS (
        SELECT e.hour AS edge, t.*
        FROM edges e CROSS JOIN LATERAL (
            SELECT * FROM usage_top t0 WHERE t0.hour = e.hour
            ORDER BY t0.cost_pusd DESC, t0.ts DESC, t0.event_id LIMIT 100) t
        WHERE t.ts >= e.lo AND t.ts < e.hi
    ),
    enough AS (SELECT edge FROM kept GROUP BY edge HAVING count(*) >= p_n),
    cand AS (
        SELECT t.* FROM hours h JOIN usage_top t ON t.hour >= h.lo AND t.hour < h.hi
        UNION ALL
        SELECT k.hour, k.ts, k.event_id, k.key_id, k.team, k.model, k.provider, k.input_tokens,
               k.cache_read_tokens, k.cache_write_tokens, k.output_tokens, k.cost_pusd,
               k.baseline_cost_pusd, k.latency_us, k.status, k.attempts
        FROM kept k WHERE k.edge IN (SELECT edge FROM enough)
        UNION ALL
        SELECT date_trunc('hour', ev.ts, 'UTC'), ev.ts, ev.event_id, ev.key_id, ev.team, ev.model,
               ev.provider, ev.input_tokens, ev.cache_read_tokens, ev.cache_write_tokens,
               ev.output_tokens, ev.cost_pusd, ev.baseline_cost_pusd, ev.latency_us, ev.status,
               ev.attempts
        FROM edges e CROSS JOIN LATERAL (
            SELECT * FROM usage_events e0 WHERE e0.ts >= e.lo AND e0.ts < e.hi OFFSET 0) ev
        WHERE e.hour NOT IN (SELECT edge FROM enough)
    )
    SELECT DISTINCT ON (cost_pusd, ts, event_id) * FROM cand
    ORDER BY cost_pusd DESC, ts DESC, event_id
    LIMIT p_n
$$;

-- Grafana reads these tables through the readers only; the planner needs
-- statistics for the new tables before the first autovacuum.
ANALYZE usage_rollup_ops;
ANALYZE usage_rollup_attr;
ANALYZE usage_rollup_hist;
