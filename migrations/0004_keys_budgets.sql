-- 0004_keys_budgets: client and admin keys, teams, budgets with leases,
-- budget alerts and the live gateway instances (issue "budgets, keys and
-- rate limits"; reliability.md §4).
--
-- Keys: only the SHA-256 of a key is stored, with a display prefix and its
-- last 4 characters. Every change to keys, teams or budgets bumps
-- bridle_keys_version (and NOTIFYs bridle_keys): gateways poll that one row
-- and reload, so a revocation reaches them within database.keys_refresh_ms.
--
-- Budgets: spend per (scope, scope_id, period, period_start) lives in
-- bridle_budget_spend. spent_pusd is charged by a statement trigger on
-- usage_events from the rows actually inserted, so a replayed event (the
-- ledger's dedup path) is never charged twice. held_pusd is the sum of the
-- gateways' leases: budget carved out before the calls it will pay for.
-- A lease is granted only while spent + held + need <= limit, under the
-- row's lock, so the gateways together never commit more than the limit
-- (the guarded UPDATE of reliability.md §4.2, taken a slice at a time so
-- that a request costs no round trip). A lease that is not renewed within
-- its TTL (a killed gateway) is swept and its budget returned.
--
-- Lock order, to rule out deadlocks: a bridle_budget_spend row before its
-- bridle_budget_leases rows, and rows in (scope, scope_id, period,
-- period_start) order. Money is integer pico-dollars.

CREATE TABLE bridle_teams (
    name              text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64),
    rpm               bigint NOT NULL DEFAULT 0 CHECK (rpm >= 0),
    tokens_per_hour   bigint NOT NULL DEFAULT 0 CHECK (tokens_per_hour >= 0),
    usd_per_hour_pusd bigint NOT NULL DEFAULT 0 CHECK (usd_per_hour_pusd >= 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE bridle_keys (
    id                text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 64),
    key_hash          text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'), -- SHA-256 hex
    prefix            text NOT NULL,  -- the first characters, for display ("bk-3f9a")
    last4             text NOT NULL,
    kind              text NOT NULL DEFAULT 'client' CHECK (kind IN ('client', 'admin')),
    team              text CHECK (length(team) BETWEEN 1 AND 64),
    models            text[],         -- models or routes it may ask for; NULL = any
    agent             text,
    feature           text,
    rpm               bigint NOT NULL DEFAULT 0 CHECK (rpm >= 0),
    tokens_per_hour   bigint NOT NULL DEFAULT 0 CHECK (tokens_per_hour >= 0),
    usd_per_hour_pusd bigint NOT NULL DEFAULT 0 CHECK (usd_per_hour_pusd >= 0),
    expires_at        timestamptz,
    revoked_at        timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Budget limits. scope_id is a key id, a team name, or '' for the total.
-- source 'config' rows are written by gateways from their config file
-- (keys and teams of the file, $.budgets.total); 'db' rows by the CLI and
-- the admin API.
CREATE TABLE bridle_budgets (
    scope      text   NOT NULL CHECK (scope IN ('key', 'team', 'total')),
    scope_id   text   NOT NULL,
    period     text   NOT NULL CHECK (period IN ('day', 'week', 'month')),
    limit_pusd bigint NOT NULL CHECK (limit_pusd > 0),
    source     text   NOT NULL DEFAULT 'db' CHECK (source IN ('db', 'config')),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, scope_id, period)
);

CREATE TABLE bridle_keys_version (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    version bigint  NOT NULL
);
INSERT INTO bridle_keys_version VALUES (true, 1);

CREATE FUNCTION bridle_keys_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE bridle_keys_version SET version = version + 1;
    PERFORM pg_notify('bridle_keys', '');
    RETURN NULL;
END $$;

CREATE TRIGGER bridle_keys_changed AFTER INSERT OR UPDATE OR DELETE ON bridle_keys
    FOR EACH STATEMENT EXECUTE FUNCTION bridle_keys_changed();
CREATE TRIGGER bridle_teams_changed AFTER INSERT OR UPDATE OR DELETE ON bridle_teams
    FOR EACH STATEMENT EXECUTE FUNCTION bridle_keys_changed();
CREATE TRIGGER bridle_budgets_changed AFTER INSERT OR UPDATE OR DELETE ON bridle_budgets
    FOR EACH STATEMENT EXECUTE FUNCTION bridle_keys_changed();

-- ---------------------------------------------------------------- spend

-- The start of the UTC period holding ts: a day, a week from Monday, a month.
CREATE FUNCTION bridle_period_start(period text, ts timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT date_trunc(period, ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
$$;

-- When the period that starts at period_start ends.
CREATE FUNCTION bridle_period_end(period text, period_start timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT ((period_start AT TIME ZONE 'UTC') + ('1 ' || period)::interval) AT TIME ZONE 'UTC'
$$;

CREATE TABLE bridle_budget_spend (
    scope        text        NOT NULL,
    scope_id     text        NOT NULL,
    period       text        NOT NULL,
    period_start timestamptz NOT NULL,
    spent_pusd   bigint      NOT NULL DEFAULT 0,  -- settled: the ledger's cost_pusd
    held_pusd    bigint      NOT NULL DEFAULT 0 CHECK (held_pusd >= 0), -- sum of live leases
    PRIMARY KEY (scope, scope_id, period, period_start)
);

CREATE TABLE bridle_budget_leases (
    instance     text        NOT NULL,  -- the gateway process (bridle_instances)
    scope        text        NOT NULL,
    scope_id     text        NOT NULL,
    period       text        NOT NULL,
    period_start timestamptz NOT NULL,
    held_pusd    bigint      NOT NULL CHECK (held_pusd >= 0),
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (instance, scope, scope_id, period, period_start)
);
CREATE INDEX bridle_budget_leases_expires ON bridle_budget_leases (expires_at);
CREATE INDEX bridle_budget_leases_budget ON bridle_budget_leases (scope, scope_id, period, period_start);

-- Alert thresholds as shares in basis points (7500 = 75 %); gateways write
-- theirs ($.alerts.thresholds) at start.
CREATE TABLE bridle_alert_thresholds (
    share_bp integer PRIMARY KEY CHECK (share_bp > 0 AND share_bp <= 10000)
);
INSERT INTO bridle_alert_thresholds VALUES (7500), (9500);

-- One row per threshold crossed, scope and period: the primary key makes
-- it fire exactly once. A gateway claims an undelivered row (claimed_at),
-- logs it and POSTs it to alerts.webhook_url, then sets delivered_at; a
-- claim older than a minute without delivery is taken over.
CREATE TABLE bridle_budget_alerts (
    scope        text        NOT NULL,
    scope_id     text        NOT NULL,
    period       text        NOT NULL,
    period_start timestamptz NOT NULL,
    share_bp     integer     NOT NULL,
    limit_pusd   bigint      NOT NULL,
    spent_pusd   bigint      NOT NULL,  -- when it fired
    fired_at     timestamptz NOT NULL DEFAULT now(),
    claimed_by   text,
    claimed_at   timestamptz,
    delivered_at timestamptz,
    attempts     integer     NOT NULL DEFAULT 0,
    last_error   text,
    PRIMARY KEY (scope, scope_id, period, period_start, share_bp)
);
CREATE INDEX bridle_budget_alerts_undelivered ON bridle_budget_alerts (fired_at)
    WHERE delivered_at IS NULL;

-- Charges the rows a statement inserted into usage_events (COPY and the
-- dedup INSERT ... ON CONFLICT DO NOTHING alike: only rows really inserted
-- are in new_rows) to every scope and period, and records the alert
-- thresholds that the new spend reaches.
CREATE FUNCTION bridle_charge_budgets() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    WITH charge AS (
        SELECT s.scope, s.sid, p.period, bridle_period_start(p.period, n.ts) AS start,
               sum(n.cost_pusd)::bigint AS cost
        FROM new_rows n
        CROSS JOIN LATERAL (VALUES ('key', n.key_id), ('team', n.team), ('total', '')) s(scope, sid)
        CROSS JOIN (VALUES ('day'), ('week'), ('month')) p(period)
        WHERE s.sid IS NOT NULL AND n.cost_pusd > 0
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

CREATE TRIGGER usage_events_charge_budgets AFTER INSERT ON usage_events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bridle_charge_budgets();

-- Leases budget to a gateway: for each budget i (arrays of one length),
-- grants nothing when spent + held + need[i] > limit[i]; otherwise at least
-- need[i] and at most want[i], shrinking as the budget runs out (a quarter
-- of what is left, split over the instances holding it) so that little is
-- stranded in other gateways' leases. Returns, per i, what was granted and
-- the budget's spent and held after it. One transaction; rows in order.
CREATE FUNCTION bridle_budget_lease(p_instance text, p_scope text[], p_sid text[],
                                    p_period text[], p_start timestamptz[], p_limit bigint[],
                                    p_need bigint[], p_want bigint[], p_ttl_ms integer)
RETURNS TABLE (i integer, granted bigint, spent_pusd bigint, held_pusd bigint)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    s bigint;
    h bigint;
    holders integer;
    g bigint;
BEGIN
    FOR r IN SELECT u.* FROM unnest(p_scope, p_sid, p_period, p_start, p_limit, p_need, p_want)
                 WITH ORDINALITY AS u(scope, sid, period, start, lim, need, want, ord)
             ORDER BY 1, 2, 3, 4 LOOP
        INSERT INTO bridle_budget_spend (scope, scope_id, period, period_start)
        VALUES (r.scope, r.sid, r.period, r.start) ON CONFLICT DO NOTHING;
        SELECT b.spent_pusd, b.held_pusd INTO s, h FROM bridle_budget_spend b
        WHERE b.scope = r.scope AND b.scope_id = r.sid AND b.period = r.period
          AND b.period_start = r.start FOR UPDATE;
        IF s + h + r.need > r.lim THEN
            i := r.ord; granted := 0; spent_pusd := s; held_pusd := h;
            RETURN NEXT;
            CONTINUE;
        END IF;
        SELECT count(DISTINCT l.instance) INTO holders FROM bridle_budget_leases l
        WHERE l.scope = r.scope AND l.scope_id = r.sid AND l.period = r.period
          AND l.period_start = r.start AND l.instance <> p_instance AND l.held_pusd > 0;
        g := greatest(r.need, least(r.want, (r.lim - s - h) / (4 * (holders + 1))));
        UPDATE bridle_budget_spend b SET held_pusd = h + g
        WHERE b.scope = r.scope AND b.scope_id = r.sid AND b.period = r.period
          AND b.period_start = r.start;
        INSERT INTO bridle_budget_leases AS l VALUES
            (p_instance, r.scope, r.sid, r.period, r.start, g,
             now() + p_ttl_ms * interval '1 millisecond')
        ON CONFLICT (instance, scope, scope_id, period, period_start) DO UPDATE
            SET held_pusd = l.held_pusd + excluded.held_pusd, expires_at = excluded.expires_at;
        i := r.ord; granted := g; spent_pusd := s; held_pusd := h + g;
        RETURN NEXT;
    END LOOP;
END $$;

-- Sets this gateway's lease on each budget i to held[i] (0 ends it),
-- renews it for ttl, and returns every budget's spent and held. A gateway
-- calls it periodically with held = its reservations in flight + its
-- settled spend the ledger has not shipped yet + the slack it keeps, so
-- returning unused budget and reading spend are the same call.
CREATE FUNCTION bridle_budget_sync(p_instance text, p_scope text[], p_sid text[],
                                   p_period text[], p_start timestamptz[], p_held bigint[],
                                   p_ttl_ms integer)
RETURNS TABLE (i integer, spent_pusd bigint, held_pusd bigint)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    old bigint;
    s bigint;
    h bigint;
BEGIN
    FOR r IN SELECT u.* FROM unnest(p_scope, p_sid, p_period, p_start, p_held)
                 WITH ORDINALITY AS u(scope, sid, period, start, held, ord)
             ORDER BY 1, 2, 3, 4 LOOP
        INSERT INTO bridle_budget_spend (scope, scope_id, period, period_start)
        VALUES (r.scope, r.sid, r.period, r.start) ON CONFLICT DO NOTHING;
        SELECT b.spent_pusd, b.held_pusd INTO s, h FROM bridle_budget_spend b
        WHERE b.scope = r.scope AND b.scope_id = r.sid AND b.period = r.period
          AND b.period_start = r.start FOR UPDATE;
        SELECT l.held_pusd INTO old FROM bridle_budget_leases l
        WHERE l.instance = p_instance AND l.scope = r.scope AND l.scope_id = r.sid
          AND l.period = r.period AND l.period_start = r.start;
        old := coalesce(old, 0);
        IF r.held > 0 THEN
            INSERT INTO bridle_budget_leases AS l VALUES
                (p_instance, r.scope, r.sid, r.period, r.start, r.held,
                 now() + p_ttl_ms * interval '1 millisecond')
            ON CONFLICT (instance, scope, scope_id, period, period_start) DO UPDATE
                SET held_pusd = excluded.held_pusd, expires_at = excluded.expires_at;
        ELSE
            DELETE FROM bridle_budget_leases l
            WHERE l.instance = p_instance AND l.scope = r.scope AND l.scope_id = r.sid
              AND l.period = r.period AND l.period_start = r.start;
        END IF;
        h := greatest(h + r.held - old, 0);
        UPDATE bridle_budget_spend b SET held_pusd = h
        WHERE b.scope = r.scope AND b.scope_id = r.sid AND b.period = r.period
          AND b.period_start = r.start;
        i := r.ord; spent_pusd := s; held_pusd := h;
        RETURN NEXT;
    END LOOP;
END $$;

-- Returns the budget held by leases that were not renewed in time (their
-- gateway died or hung). Returns how many leases it ended.
CREATE FUNCTION bridle_budget_sweep() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    n integer := 0;
BEGIN
    FOR r IN SELECT DISTINCT l.scope, l.scope_id, l.period, l.period_start
             FROM bridle_budget_leases l WHERE l.expires_at < now()
             ORDER BY 1, 2, 3, 4 LOOP
        PERFORM 1 FROM bridle_budget_spend b
        WHERE b.scope = r.scope AND b.scope_id = r.scope_id AND b.period = r.period
          AND b.period_start = r.period_start FOR UPDATE;
        WITH gone AS (
            DELETE FROM bridle_budget_leases l
            WHERE l.scope = r.scope AND l.scope_id = r.scope_id AND l.period = r.period
              AND l.period_start = r.period_start AND l.expires_at < now()
            RETURNING l.held_pusd
        )
        UPDATE bridle_budget_spend b
        SET held_pusd = greatest(b.held_pusd - (SELECT coalesce(sum(held_pusd), 0) FROM gone), 0)
        WHERE b.scope = r.scope AND b.scope_id = r.scope_id AND b.period = r.period
          AND b.period_start = r.period_start;
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;

-- Live gateway processes: each upserts its row every database.heartbeat_ms.
-- Rate limits give each of the N live instances 1/N of a limit.
CREATE TABLE bridle_instances (
    instance   text        PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_at    timestamptz NOT NULL DEFAULT now()
);

-- Budgets with their current period's spend, for `bridle cost alert` and
-- the Grafana budget panel. Dollars as exact numeric.
CREATE VIEW bridle_budget_status AS
SELECT l.scope, l.scope_id, l.period,
       bridle_period_start(l.period, now()) AS period_start,
       bridle_period_end(l.period, bridle_period_start(l.period, now())) AS period_end,
       l.limit_pusd * 1e-12 AS limit_usd,
       coalesce(s.spent_pusd, 0) * 1e-12 AS spent_usd,
       coalesce(s.held_pusd, 0) * 1e-12 AS held_usd,
       coalesce(s.spent_pusd, 0)::numeric / l.limit_pusd AS share
FROM bridle_budgets l
LEFT JOIN bridle_budget_spend s
       ON s.scope = l.scope AND s.scope_id = l.scope_id AND s.period = l.period
      AND s.period_start = bridle_period_start(l.period, now());
