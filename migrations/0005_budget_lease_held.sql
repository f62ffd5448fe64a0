-- 0005_budget_lease_held: a lease call that also says what the gateway holds
-- now (router/budget.c).
--
-- With 0004's bridle_budget_lease, a gateway's lease row keeps the cost of
-- its settled requests (held as "unshipped") until its next sync, while the
-- ledger's commit already charged the same cost to spent_pusd: between the
-- commit and the sync that cost counts twice, and near the limit a request
-- that fits is refused (a $0.10 budget with $0.03 spent refused a $0.049
-- request). bridle_budget_lease_held first sets the caller's lease to what
-- it holds (as bridle_budget_sync does), then grants as bridle_budget_lease
-- does, in the same transaction and with the same row order, so one round
-- trip both corrects and extends the lease. A refused call still renews the
-- lease for p_ttl_ms (it carries reservations in flight).
CREATE FUNCTION bridle_budget_lease_held(p_instance text, p_scope text[], p_sid text[],
                                         p_period text[], p_start timestamptz[],
                                         p_limit bigint[], p_held bigint[], p_need bigint[],
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
BEGIN
    FOR r IN SELECT u.* FROM unnest(p_scope, p_sid, p_period, p_start, p_limit, p_held, p_need,
                                    p_want)
                 WITH ORDINALITY AS u(scope, sid, period, start, lim, held, need, want, ord)
             ORDER BY 1, 2, 3, 4 LOOP
        INSERT INTO bridle_budget_spend (scope, scope_id, period, period_start)
        VALUES (r.scope, r.sid, r.period, r.start) ON CONFLICT DO NOTHING;
        SELECT b.spent_pusd, b.held_pusd INTO s, h FROM bridle_budget_spend b
        WHERE b.scope = r.scope AND b.scope_id = r.sid AND b.period = r.period
          AND b.period_start = r.start FOR UPDATE;
        SELECT l.held_pusd INTO old FROM bridle_budget_leases l
        WHERE l.instance = p_instance AND l.scope = r.scope AND l.scope_id = r.sid
          AND l.period = r.period AND l.period_start = r.start;
        h := greatest(h - coalesce(old, 0) + greatest(r.held, 0), 0);
        IF s + h + r.need > r.lim THEN
            g := 0;
        ELSE
            SELECT count(DISTINCT l.instance) INTO holders FROM bridle_budget_leases l
            WHERE l.scope = r.scope AND l.scope_id = r.sid AND l.period = r.period
              AND l.period_start = r.start AND l.instance <> p_instance AND l.held_pusd > 0;
            g := greatest(r.need, least(r.want, (r.lim - s - h) / (4 * (holders + 1))));
        END IF;
        IF greatest(r.held, 0) + g > 0 THEN
            INSERT INTO bridle_budget_leases AS l VALUES
                (p_instance, r.scope, r.sid, r.period, r.start, greatest(r.held, 0) + g,
                 now() + p_ttl_ms * interval '1 millisecond')
            ON CONFLICT (instance, scope, scope_id, period, period_start) DO UPDATE
                SET held_pusd = excluded.held_pusd, expires_at = excluded.expires_at;
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
