-- 0007_budget_orphans: a killed gateway's unshipped spend stays held until
-- its spool has replayed (router/budget.c, docs/design.md "Budgets").
--
-- A gateway's lease holds avail + reserved + unshipped, where unshipped is
-- settled spend whose usage events are in its spool but not yet committed.
-- With 0004's sweep, a gateway killed and back later than its lease TTL
-- replayed events whose cost was no longer held: the trigger charged
-- spent_pusd for them after other gateways had leased that budget, and the
-- settled spend could pass the limit by them.
--
-- Now the lease row also records its unshipped part (unshipped_pusd <=
-- held_pusd), sent by bridle_budget_lease_held2 / bridle_budget_sync2. The
-- sweep returns only held - unshipped of an expired lease and keeps the
-- row as an orphan (orphaned_at set) holding unshipped for an orphan TTL
-- (default 24 h): the cost of events that will still arrive stays held.
-- An orphan whose own TTL passes is released whole (its gateway never came
-- back). A restarted gateway reads its predecessor's instance id from its
-- spool directory and, once the events that were in its spool at start
-- are committed, ends that instance's rows (bridle_budget_release_instance).
-- Until then the replayed events are counted twice (spent by the trigger,
-- held by the orphan): the safe side.
--
-- Lock order as in 0004: a bridle_budget_spend row before its
-- bridle_budget_leases rows, rows in (scope, scope_id, period,
-- period_start) order. The 0004/0005 functions keep working (they leave
-- unshipped_pusd as it was; the sweep never keeps more than held_pusd).

ALTER TABLE bridle_budget_leases
    ADD COLUMN unshipped_pusd bigint NOT NULL DEFAULT 0 CHECK (unshipped_pusd >= 0),
    ADD COLUMN orphaned_at timestamptz;  -- set by the sweep: its gateway stopped renewing it

-- bridle_budget_lease_held (0005) with, per budget, the part of held that
-- is unshipped (clamped to 0..held).
CREATE FUNCTION bridle_budget_lease_held2(p_instance text, p_scope text[], p_sid text[],
                                          p_period text[], p_start timestamptz[],
                                          p_limit bigint[], p_held bigint[],
                                          p_unshipped bigint[], p_need bigint[],
                                          p_want bigint[], p_ttl_ms integer)
RETURNS TABLE (i integer, granted bigint, spent_pusd bigint, held_pusd bigint)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    s bigint;
    h bigint;
    old bigint;
    holders integer;
    g bigint;
    held bigint;
BEGIN
    FOR r IN SELECT u.* FROM unnest(p_scope, p_sid, p_period, p_start, p_limit, p_held,
                                    p_unshipped, p_need, p_want)
                 WITH ORDINALITY AS u(scope, sid, period, start, lim, held, unshipped, need,
                                      want, ord)
             ORDER BY 1, 2, 3, 4 LOOP
        held := greatest(r.held, 0);
        INSERT INTO bridle_budget_spend (scope, scope_id, period, period_start)
        VALUES (r.scope, r.sid, r.period, r.start) ON CONFLICT DO NOTHING;
        SELECT b.spent_pusd, b.held_pusd INTO s, h FROM bridle_budget_spend b
        WHERE b.scope = r.scope AND b.scope_id = r.sid AND b.period = r.period
          AND b.period_start = r.start FOR UPDATE;
        SELECT l.held_pusd INTO old FROM bridle_budget_leases l
        WHERE l.instance = p_instance AND l.scope = r.scope AND l.scope_id = r.sid
          AND l.period = r.period AND l.period_start = r.start;
        h := greatest(h - coalesce(old, 0) + held, 0);
        IF s + h + r.need > r.lim THEN
            g := 0;
        ELSE
            SELECT count(DISTINCT l.instance) INTO holders FROM bridle_budget_leases l
            WHERE l.scope = r.scope AND l.scope_id = r.sid AND l.period = r.period
              AND l.period_start = r.start AND l.instance <> p_instance AND l.held_pusd > 0
              AND l.orphaned_at IS NULL;
            g := greatest(r.need, least(r.want, (r.lim - s - h) / (4 * (holders + 1))));
        END IF;
        IF held + g > 0 THEN
            INSERT INTO bridle_budget_leases AS l
                (instance, scope, scope_id, period, period_start, held_pusd, expires_at,
                 unshipped_pusd, orphaned_at)
            VALUES (p_instance, r.scope, r.sid, r.period, r.start, held + g,
                    now() + p_ttl_ms * interval '1 millisecond',
                    least(greatest(r.unshipped, 0), held), NULL)
            ON CONFLICT (instance, scope, scope_id, period, period_start) DO UPDATE
                SET held_pusd = excluded.held_pusd, expires_at = excluded.expires_at,
                    unshipped_pusd = excluded.unshipped_pusd, orphaned_at = NULL;
        ELSE
            DELETE FROM bridle_budget_leases l
            WHERE l.instance = p_instance AND l.scope = r.scope AND l.scope_id = r.sid
              AND l.period = r.period AND l.period_start = r.start;
        END IF;
        h := h + g;
        UPDATE bridle_budget_spend b SET held_pusd = h
        WHERE b.scope = r.scope AND b.scope_id = r.sid AND b.period = r.period
          AND b.period_start = r.start;
        i := r.ord; granted := g; spent_pusd := s; held_pusd := h;
        RETURN NEXT;
    END LOOP;
END $$;

-- bridle_budget_sync (0004) with, per budget, the unshipped part of held.
CREATE FUNCTION bridle_budget_sync2(p_instance text, p_scope text[], p_sid text[],
                                    p_period text[], p_start timestamptz[], p_held bigint[],
                                    p_unshipped bigint[], p_ttl_ms integer)
RETURNS TABLE (i integer, spent_pusd bigint, held_pusd bigint)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    old bigint;
    s bigint;
    h bigint;
    held bigint;
BEGIN
    FOR r IN SELECT u.* FROM unnest(p_scope, p_sid, p_period, p_start, p_held, p_unshipped)
                 WITH ORDINALITY AS u(scope, sid, period, start, held, unshipped, ord)
             ORDER BY 1, 2, 3, 4 LOOP
        held := greatest(r.held, 0);
        INSERT INTO bridle_budget_spend (scope, scope_id, period, period_start)
        VALUES (r.scope, r.sid, r.period, r.start) ON CONFLICT DO NOTHING;
        SELECT b.spent_pusd, b.held_pusd INTO s, h FROM bridle_budget_spend b
        WHERE b.scope = r.scope AND b.scope_id = r.sid AND b.period = r.period
          AND b.period_start = r.start FOR UPDATE;
        SELECT l.held_pusd INTO old FROM bridle_budget_leases l
        WHERE l.instance = p_instance AND l.scope = r.scope AND l.scope_id = r.sid
          AND l.period = r.period AND l.period_start = r.start;
        old := coalesce(old, 0);
        IF held > 0 THEN
            INSERT INTO bridle_budget_leases AS l
                (instance, scope, scope_id, period, period_start, held_pusd, expires_at,
                 unshipped_pusd, orphaned_at)
            VALUES (p_instance, r.scope, r.sid, r.period, r.start, held,
                    now() + p_ttl_ms * interval '1 millisecond',
                    least(greatest(r.unshipped, 0), held), NULL)
            ON CONFLICT (instance, scope, scope_id, period, period_start) DO UPDATE
                SET held_pusd = excluded.held_pusd, expires_at = excluded.expires_at,
                    unshipped_pusd = excluded.unshipped_pusd, orphaned_at = NULL;
        ELSE
            DELETE FROM bridle_budget_leases l
            WHERE l.instance = p_instance AND l.scope = r.scope AND l.scope_id = r.sid
              AND l.period = r.period AND l.period_start = r.start;
        END IF;
        h := greatest(h + held - old, 0);
        UPDATE bridle_budget_spend b SET held_pusd = h
        WHERE b.scope = r.scope AND b.scope_id = r.sid AND b.period = r.period
          AND b.period_start = r.start;
        i := r.ord; spent_pusd := s; held_pusd := h;
        RETURN NEXT;
    END LOOP;
END $$;

-- Expired leases: a live lease gives back held - unshipped and stays as an
-- orphan holding its unshipped part for p_orphan_ttl_ms; an orphan past
-- its own TTL, or a lease with nothing unshipped, is ended whole. Returns
-- how many budgets it touched.
CREATE FUNCTION bridle_budget_sweep_orphans(p_orphan_ttl_ms bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    n integer := 0;
    back bigint;
    gone_back bigint;
BEGIN
    FOR r IN SELECT DISTINCT l.scope, l.scope_id, l.period, l.period_start
             FROM bridle_budget_leases l WHERE l.expires_at < now()
             ORDER BY 1, 2, 3, 4 LOOP
        PERFORM 1 FROM bridle_budget_spend b
        WHERE b.scope = r.scope AND b.scope_id = r.scope_id AND b.period = r.period
          AND b.period_start = r.period_start FOR UPDATE;
        -- live leases with unshipped spend: the rest goes back, they stay as orphans
        SELECT coalesce(sum(l.held_pusd - least(l.unshipped_pusd, l.held_pusd)), 0) INTO back
        FROM bridle_budget_leases l
        WHERE l.scope = r.scope AND l.scope_id = r.scope_id AND l.period = r.period
          AND l.period_start = r.period_start AND l.expires_at < now()
          AND l.orphaned_at IS NULL AND least(l.unshipped_pusd, l.held_pusd) > 0;
        UPDATE bridle_budget_leases l
        SET held_pusd = least(l.unshipped_pusd, l.held_pusd),
            unshipped_pusd = least(l.unshipped_pusd, l.held_pusd),
            orphaned_at = now(),
            expires_at = now() + greatest(p_orphan_ttl_ms, 1) * interval '1 millisecond'
        WHERE l.scope = r.scope AND l.scope_id = r.scope_id AND l.period = r.period
          AND l.period_start = r.period_start AND l.expires_at < now()
          AND l.orphaned_at IS NULL AND least(l.unshipped_pusd, l.held_pusd) > 0;
        -- the rest (nothing unshipped, or orphans past their own TTL) ends whole
        WITH gone AS (
            DELETE FROM bridle_budget_leases l
            WHERE l.scope = r.scope AND l.scope_id = r.scope_id AND l.period = r.period
              AND l.period_start = r.period_start AND l.expires_at < now()
            RETURNING l.held_pusd
        )
        SELECT coalesce(sum(held_pusd), 0) INTO gone_back FROM gone;
        UPDATE bridle_budget_spend b
        SET held_pusd = greatest(b.held_pusd - back - gone_back, 0)
        WHERE b.scope = r.scope AND b.scope_id = r.scope_id AND b.period = r.period
          AND b.period_start = r.period_start;
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;

-- 0004's sweep, now keeping orphans for 24 h.
CREATE OR REPLACE FUNCTION bridle_budget_sweep() RETURNS integer
LANGUAGE sql AS $$ SELECT bridle_budget_sweep_orphans(86400000) $$;

-- Ends every lease (orphan or not) of p_instance: a restarted gateway
-- calls it for its predecessor once the events its spool held at start are
-- committed (their cost is in spent_pusd now). Returns how many it ended.
CREATE FUNCTION bridle_budget_release_instance(p_instance text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    n integer := 0;
    back bigint;
BEGIN
    FOR r IN SELECT l.scope, l.scope_id, l.period, l.period_start
             FROM bridle_budget_leases l WHERE l.instance = p_instance
             ORDER BY 1, 2, 3, 4 LOOP
        PERFORM 1 FROM bridle_budget_spend b
        WHERE b.scope = r.scope AND b.scope_id = r.scope_id AND b.period = r.period
          AND b.period_start = r.period_start FOR UPDATE;
        WITH gone AS (
            DELETE FROM bridle_budget_leases l
            WHERE l.instance = p_instance AND l.scope = r.scope AND l.scope_id = r.scope_id
              AND l.period = r.period AND l.period_start = r.period_start
            RETURNING l.held_pusd
        )
        SELECT coalesce(sum(held_pusd), 0) INTO back FROM gone;
        UPDATE bridle_budget_spend b SET held_pusd = greatest(b.held_pusd - back, 0)
        WHERE b.scope = r.scope AND b.scope_id = r.scope_id AND b.period = r.period
          AND b.period_start = r.period_start;
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
