-- 0009_cache_savings: what answers served without an upstream call saved,
-- apart from what routing saved (issue 14, docs/design.md "The response
-- cache").
--
-- A usage event with cache_hit (a response-cache hit, a coalesced copy, an
-- idempotent replay) costs 0, and its baseline_cost_pusd is what the
-- answer would have cost had it been called for (the served model's price
-- of its tokens). So:
--   cache savings   = sum(baseline_cost_pusd) over cache_hit events
--                   = the rollups' new measure cache_saved_pusd;
--   routing savings = sum(baseline_cost_pusd - cost_pusd) - cache savings.
-- usage_events itself is unchanged (and so are the ledger's COPY and the
-- spool); the rollups gain cache_saved_pusd, filled by the capture trigger,
-- and the readers return it as their last column. Rollups made before this
-- migration count their hits' savings as routing savings (0: nothing to
-- split them by); their raw events are split when read raw.
--
-- The function bodies below are 0008's with that one column added.

ALTER TABLE usage_rollup_ops ADD COLUMN cache_saved_pusd bigint NOT NULL DEFAULT 0;
ALTER TABLE usage_rollup_attr ADD COLUMN cache_saved_pusd bigint NOT NULL DEFAULT 0;
ALTER TABLE usage_rollup_pending ADD COLUMN cache_saved_pusd bigint NOT NULL DEFAULT 0;

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
           sum(upstream_us),
           coalesce(sum(baseline_cost_pusd) FILTER (WHERE cache_hit), 0)
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

-- ---------------------------------------------------------------- rollup

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
               sum(ttft_count) AS ttft_count, sum(upstream_us_sum) AS upstream_us_sum,
               sum(cache_saved_pusd) AS cache_saved_pusd
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
               sum(ttft_count) AS ttft_count, sum(upstream_us_sum) AS upstream_us_sum,
               sum(cache_saved_pusd) AS cache_saved_pusd
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
               sum(o.ttft_count), sum(o.upstream_us_sum), sum(o.cache_saved_pusd)
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
            upstream_us_sum = r.upstream_us_sum + excluded.upstream_us_sum,
            cache_saved_pusd = r.cache_saved_pusd + excluded.cache_saved_pusd
        RETURNING 1
    ), attr_merged AS (
        INSERT INTO usage_rollup_attr AS r
        SELECT g.grain, a.dim, bridle_grain_bucket(g.grain, a.bucket), a.value,
               sum(a.requests), sum(a.errors), sum(a.retries), sum(a.cache_hits),
               sum(a.streamed), sum(a.estimated), sum(a.input_tokens),
               sum(a.cache_read_tokens), sum(a.cache_write_tokens), sum(a.output_tokens),
               sum(a.reasoning_tokens), sum(a.cost_pusd), sum(a.baseline_cost_pusd),
               sum(a.latency_us_sum), sum(a.ttft_us_sum), sum(a.ttft_count),
               sum(a.upstream_us_sum), sum(a.cache_saved_pusd)
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
            upstream_us_sum = r.upstream_us_sum + excluded.upstream_us_sum,
            cache_saved_pusd = r.cache_saved_pusd + excluded.cache_saved_pusd
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

-- ---------------------------------------------------------------- readers

-- Their result types change: dropped and created again.
DROP FUNCTION bridle_usage_by(text, timestamptz, timestamptz, interval);
DROP FUNCTION bridle_usage_by_values(text, text[], timestamptz, timestamptz, interval);
DROP FUNCTION bridle_usage(timestamptz, timestamptz, interval);
DROP FUNCTION bridle_raw_measures(timestamptz, timestamptz);

CREATE FUNCTION bridle_raw_measures(p_lo timestamptz, p_hi timestamptz)
RETURNS TABLE (ts timestamptz, key_id text, team text, agent text, task text, feature text,
               tier text, requested_model text, model text, provider text, status integer,
               error_class text, latency_us bigint, ttft_us bigint, requests bigint,
               errors bigint, retries bigint, cache_hits bigint, streamed bigint,
               estimated bigint, input_tokens bigint, cache_read_tokens bigint,
               cache_write_tokens bigint, output_tokens bigint, reasoning_tokens bigint,
               cost_pusd bigint, baseline_cost_pusd bigint, latency_us_sum bigint,
               ttft_us_sum bigint, ttft_count bigint, upstream_us_sum bigint,
               cache_saved_pusd bigint)
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
           CASE WHEN e.streamed AND e.ttft_us >= 0 THEN 1 ELSE 0 END::bigint, e.upstream_us,
           CASE WHEN e.cache_hit THEN e.baseline_cost_pusd ELSE 0 END
    FROM usage_events e WHERE e.ts >= p_lo AND e.ts < p_hi OFFSET 0
$$;

CREATE FUNCTION bridle_usage(p_from timestamptz, p_to timestamptz,
                             p_max_grain interval DEFAULT interval '1 day')
RETURNS TABLE (bucket timestamptz, grain text, requested_model text, model text, provider text,
               status integer, error_class text, requests bigint, errors bigint,
               retries bigint, cache_hits bigint, streamed bigint, estimated bigint,
               input_tokens bigint, cache_read_tokens bigint, cache_write_tokens bigint,
               output_tokens bigint, reasoning_tokens bigint, cost_pusd bigint,
               baseline_cost_pusd bigint, latency_us_sum bigint, ttft_us_sum bigint,
               ttft_count bigint, upstream_us_sum bigint, cache_saved_pusd bigint)
LANGUAGE sql STABLE SET enable_seqscan = off SET jit = off AS $$
    WITH c AS (SELECT * FROM bridle_cover(p_from, p_to, p_max_grain))
    SELECT r.bucket, r.grain, r.requested_model, r.model, r.provider, r.status, r.error_class,
           r.requests, r.errors, r.retries, r.cache_hits, r.streamed, r.estimated,
           r.input_tokens, r.cache_read_tokens, r.cache_write_tokens, r.output_tokens,
           r.reasoning_tokens, r.cost_pusd, r.baseline_cost_pusd, r.latency_us_sum,
           r.ttft_us_sum, r.ttft_count, r.upstream_us_sum, r.cache_saved_pusd
    FROM c CROSS JOIN LATERAL (
        SELECT * FROM usage_rollup_ops r0
        WHERE r0.grain = c.grain AND r0.bucket >= c.lo AND r0.bucket < c.hi OFFSET 0) r
    WHERE c.grain <> 'raw'
    UNION ALL
    SELECT bridle_grain_bucket(c.grain, p.bucket), c.grain, p.requested_model, p.model,
           p.provider, p.status, p.error_class, p.requests, p.errors, p.retries, p.cache_hits,
           p.streamed, p.estimated, p.input_tokens, p.cache_read_tokens, p.cache_write_tokens,
           p.output_tokens, p.reasoning_tokens, p.cost_pusd, p.baseline_cost_pusd,
           p.latency_us_sum, p.ttft_us_sum, p.ttft_count, p.upstream_us_sum, p.cache_saved_pusd
    FROM c JOIN usage_rollup_pending p
      ON c.grain <> 'raw' AND p.bucket >= c.lo AND p.bucket < c.hi
    UNION ALL
    SELECT bridle_bucket_5m(e.ts), 'raw', coalesce(e.requested_model, ''),
           coalesce(e.model, ''), coalesce(e.provider, ''), e.status,
           coalesce(e.error_class, ''), e.requests, e.errors, e.retries, e.cache_hits,
           e.streamed, e.estimated, e.input_tokens, e.cache_read_tokens, e.cache_write_tokens,
           e.output_tokens, e.reasoning_tokens, e.cost_pusd, e.baseline_cost_pusd,
           e.latency_us_sum, e.ttft_us_sum, e.ttft_count, e.upstream_us_sum, e.cache_saved_pusd
    FROM c CROSS JOIN LATERAL bridle_raw_measures(c.lo, c.hi) e
    WHERE c.grain = 'raw'
$$;

CREATE FUNCTION bridle_usage_by_values(p_dim text, p_values text[], p_from timestamptz,
                                       p_to timestamptz,
                                       p_max_grain interval DEFAULT interval '1 day')
RETURNS TABLE (bucket timestamptz, grain text, value text, requests bigint, errors bigint,
               retries bigint, cache_hits bigint, streamed bigint, estimated bigint,
               input_tokens bigint, cache_read_tokens bigint, cache_write_tokens bigint,
               output_tokens bigint, reasoning_tokens bigint, cost_pusd bigint,
               baseline_cost_pusd bigint, latency_us_sum bigint, ttft_us_sum bigint,
               ttft_count bigint, upstream_us_sum bigint, cache_saved_pusd bigint)
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
           r.latency_us_sum, r.ttft_us_sum, r.ttft_count, r.upstream_us_sum, r.cache_saved_pusd
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
           p.ttft_us_sum, p.ttft_count, p.upstream_us_sum, p.cache_saved_pusd
    FROM c JOIN usage_rollup_pending p
      ON c.grain <> 'raw' AND p.bucket >= c.lo AND p.bucket < c.hi %2$s
    UNION ALL
    SELECT bridle_bucket_5m(e.ts), 'raw', e.%4$I,
           e.requests, e.errors, e.retries, e.cache_hits, e.streamed, e.estimated,
           e.input_tokens, e.cache_read_tokens, e.cache_write_tokens, e.output_tokens,
           e.reasoning_tokens, e.cost_pusd, e.baseline_cost_pusd, e.latency_us_sum,
           e.ttft_us_sum, e.ttft_count, e.upstream_us_sum, e.cache_saved_pusd
    FROM c CROSS JOIN LATERAL bridle_raw_measures(c.lo, c.hi) e
    WHERE c.grain = 'raw' %3$s
    $q$, format(value_filter, 'r0.value'), format(value_filter, 'p.' || col),
              format(value_filter, 'e.' || col), col)
    USING p_dim, p_values, p_from, p_to, p_max_grain;
END $f$;

CREATE FUNCTION bridle_usage_by(p_dim text, p_from timestamptz, p_to timestamptz,
                                p_max_grain interval DEFAULT interval '1 day')
RETURNS TABLE (bucket timestamptz, grain text, value text, requests bigint, errors bigint,
               retries bigint, cache_hits bigint, streamed bigint, estimated bigint,
               input_tokens bigint, cache_read_tokens bigint, cache_write_tokens bigint,
               output_tokens bigint, reasoning_tokens bigint, cost_pusd bigint,
               baseline_cost_pusd bigint, latency_us_sum bigint, ttft_us_sum bigint,
               ttft_count bigint, upstream_us_sum bigint, cache_saved_pusd bigint)
LANGUAGE sql STABLE AS $$
    SELECT * FROM bridle_usage_by_values(p_dim, NULL::text[], p_from, p_to, p_max_grain)
$$;
