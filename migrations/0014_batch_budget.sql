-- 0014_batch_budget: a batch reserves its worst case against the budgets
-- at creation (issue 16; docs/design.md "Batches" and "Budgets").
--
-- A batch's worst case E is the sum over its lines of what the run would
-- reserve for each (router/run.h run_estimate_pusd): an OpenAI batch's
-- file has it from its upload (bridle_files.worst_pusd), an Anthropic
-- batch's requests are priced at creation. The creation statement calls
-- bridle_batch_reserve: E is held, in the periods holding the creation
-- time, on every budget with a limit the batch's key is charged to, as a
-- lease of instance 'batch:<id>' that every gateway's lease call counts in
-- held_pusd. When one of them cannot hold E the function raises SQLSTATE
-- BR429 and the whole creation rolls back: no batch, no lines, no lease.
--
-- Each line's usage event (it carries batch_id) moves its cost from the
-- batch's lease to spent in the statement that commits it
-- (bridle_charge_budgets below), whichever gateway or path wrote it, so
-- spent + held never under-counts. When the batch ends (completed,
-- cancelled, expired) a trigger ends its lease in the same statement and
-- what it still held goes back. A lease whose batch never ends is swept
-- after its window (24 h) plus an hour, as a dead gateway's is.
--
-- Lock order as 0004's: bridle_budget_spend rows before their lease rows,
-- in (scope, scope_id, period, period_start) order.

ALTER TABLE bridle_files ADD COLUMN worst_pusd bigint NOT NULL DEFAULT 0 CHECK (worst_pusd >= 0);
ALTER TABLE bridle_batches ADD COLUMN reserved_pusd bigint NOT NULL DEFAULT 0;

-- Holds p_amount for batch p_batch until p_until on each budget i (arrays
-- of one length; periods starting at bridle_period_start(period, now())).
-- Raises BR429 (DETAIL: scope, id, period, limit, spent, held, amount,
-- tab-separated) for the first budget that cannot hold it. Returns how
-- many leases it took.
CREATE FUNCTION bridle_batch_reserve(p_batch text, p_amount bigint, p_until timestamptz,
                                     p_scope text[], p_sid text[], p_period text[],
                                     p_limit bigint[])
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    s bigint;
    h bigint;
    n integer := 0;
BEGIN
    IF p_amount <= 0 THEN RETURN 0; END IF;
    FOR r IN SELECT u.scope, u.sid, u.period, bridle_period_start(u.period, now()) AS start, u.lim
             FROM unnest(p_scope, p_sid, p_period, p_limit) AS u(scope, sid, period, lim)
             ORDER BY 1, 2, 3, 4 LOOP
        INSERT INTO bridle_budget_spend (scope, scope_id, period, period_start)
        VALUES (r.scope, r.sid, r.period, r.start) ON CONFLICT DO NOTHING;
        SELECT b.spent_pusd, b.held_pusd INTO s, h FROM bridle_budget_spend b
        WHERE b.scope = r.scope AND b.scope_id = r.sid AND b.period = r.period
          AND b.period_start = r.start FOR UPDATE;
        IF s + h + p_amount > r.lim THEN
            RAISE EXCEPTION 'the % % % budget cannot hold batch %', r.scope, r.sid, r.period, p_batch
                USING ERRCODE = 'BR429',
                      DETAIL = concat_ws(E'\t', r.scope, r.sid, r.period, r.lim, s, h, p_amount);
        END IF;
        UPDATE bridle_budget_spend b SET held_pusd = h + p_amount
        WHERE b.scope = r.scope AND b.scope_id = r.sid AND b.period = r.period
          AND b.period_start = r.start;
        INSERT INTO bridle_budget_leases (instance, scope, scope_id, period, period_start,
                                          held_pusd, expires_at)
        VALUES ('batch:' || p_batch, r.scope, r.sid, r.period, r.start, p_amount, p_until);
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;

-- Ends batch p_batch's leases: what they still hold goes back. Returns it.
CREATE FUNCTION bridle_batch_release(p_batch text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    back bigint;
    total bigint := 0;
BEGIN
    FOR r IN SELECT l.scope, l.scope_id, l.period, l.period_start
             FROM bridle_budget_leases l WHERE l.instance = 'batch:' || p_batch
             ORDER BY 1, 2, 3, 4 LOOP
        PERFORM 1 FROM bridle_budget_spend b
        WHERE b.scope = r.scope AND b.scope_id = r.scope_id AND b.period = r.period
          AND b.period_start = r.period_start FOR UPDATE;
        WITH gone AS (
            DELETE FROM bridle_budget_leases l
            WHERE l.instance = 'batch:' || p_batch AND l.scope = r.scope
              AND l.scope_id = r.scope_id AND l.period = r.period
              AND l.period_start = r.period_start
            RETURNING l.held_pusd
        )
        SELECT coalesce(sum(held_pusd), 0) INTO back FROM gone;
        UPDATE bridle_budget_spend b SET held_pusd = greatest(b.held_pusd - back, 0)
        WHERE b.scope = r.scope AND b.scope_id = r.scope_id AND b.period = r.period
          AND b.period_start = r.period_start;
        total := total + back;
    END LOOP;
    RETURN total;
END $$;

CREATE FUNCTION bridle_batch_ended() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bridle_batch_release(NEW.id);
    RETURN NULL;
END $$;

-- Whatever statement ends a batch (the local queue's finalize, a provider
-- batch's), its reservation ends in the same transaction.
CREATE TRIGGER bridle_batches_release AFTER UPDATE OF status ON bridle_batches
    FOR EACH ROW
    WHEN (NEW.status IN ('completed', 'cancelled', 'expired', 'failed')
          AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION bridle_batch_ended();

-- 0008's charge, and first, for events of a batch, their cost moved out of
-- the batch's lease (held) as it becomes spent: at most what the lease
-- still holds (a line's cost can beat its bound, and an event can come
-- after its batch ended: the excess is spent without having been held). Every spend
-- row the statement touches is locked first, in key order, so that the
-- lease rows are read and written under their budgets' locks.
CREATE OR REPLACE FUNCTION bridle_charge_budgets() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    IF EXISTS (SELECT 1 FROM new_rows n WHERE n.batch_id IS NOT NULL AND n.cost_pusd > 0) THEN
        FOR r IN
            WITH per_day AS (
                SELECT n.key_id, n.team, date_trunc('day', n.ts, 'UTC') AS day
                FROM new_rows n WHERE n.cost_pusd > 0 GROUP BY 1, 2, 3
            )
            SELECT s.scope, s.sid, p.period, bridle_period_start(p.period, d.day) AS start
            FROM per_day d
            CROSS JOIN LATERAL (VALUES ('key', d.key_id), ('team', d.team), ('total', ''))
                s(scope, sid)
            CROSS JOIN (VALUES ('day'), ('week'), ('month')) p(period)
            WHERE s.sid IS NOT NULL
            UNION
            SELECT l.scope, l.scope_id, l.period, l.period_start FROM bridle_budget_leases l
            WHERE l.instance IN (SELECT 'batch:' || n.batch_id FROM new_rows n
                                 WHERE n.batch_id IS NOT NULL AND n.cost_pusd > 0)
            ORDER BY 1, 2, 3, 4
        LOOP
            INSERT INTO bridle_budget_spend (scope, scope_id, period, period_start)
            VALUES (r.scope, r.sid, r.period, r.start) ON CONFLICT DO NOTHING;
            PERFORM 1 FROM bridle_budget_spend b
            WHERE b.scope = r.scope AND b.scope_id = r.sid AND b.period = r.period
              AND b.period_start = r.start FOR UPDATE;
        END LOOP;
        FOR r IN
            SELECT l.instance, l.scope, l.scope_id, l.period, l.period_start,
                   least(l.held_pusd, c.cost) AS moved
            FROM bridle_budget_leases l
            JOIN (SELECT 'batch:' || n.batch_id AS instance, sum(n.cost_pusd)::bigint AS cost
                  FROM new_rows n WHERE n.batch_id IS NOT NULL AND n.cost_pusd > 0
                  GROUP BY 1) c USING (instance)
            WHERE l.held_pusd > 0
            ORDER BY 2, 3, 4, 5, 1
        LOOP
            UPDATE bridle_budget_leases l SET held_pusd = l.held_pusd - r.moved
            WHERE l.instance = r.instance AND l.scope = r.scope AND l.scope_id = r.scope_id
              AND l.period = r.period AND l.period_start = r.period_start;
            UPDATE bridle_budget_spend b SET held_pusd = greatest(b.held_pusd - r.moved, 0)
            WHERE b.scope = r.scope AND b.scope_id = r.scope_id AND b.period = r.period
              AND b.period_start = r.period_start;
        END LOOP;
    END IF;

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
