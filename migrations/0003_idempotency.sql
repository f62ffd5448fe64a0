-- 0003_idempotency: Idempotency-Key claims and stored outcomes (db/idem.c),
-- shared by every gateway on this database (reliability.md §3.4).
--
-- One row per (key_id, idem_key): key_id is the client's API key id, so one
-- client cannot read or block another's keys (the IETF draft's "composite
-- key"). The INSERT ... ON CONFLICT that claims a key is the single point of
-- agreement between gateways: exactly one wins. The winner's row is
-- 'pending' until it stores the outcome ('done') or deletes the row (an
-- outcome worth retrying: 429, 5xx, timeouts, the client gone). A pending row
-- whose lease (locked_until) passed is taken over by the next request with
-- the same body: its gateway died. Rows live until expires_at (retention);
-- the gateway deletes expired rows hourly.
CREATE TABLE bridle_idempotency (
    key_id       text        NOT NULL,
    idem_key     text        NOT NULL CHECK (length(idem_key) BETWEEN 1 AND 255),
    fingerprint  text        NOT NULL,  -- SHA-256 of method, path and body, hex
    state        text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done')),
    owner        text        NOT NULL,  -- the claiming gateway and request
    status       integer,               -- the stored response, once done
    content_type text,
    body         text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    locked_until timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (key_id, idem_key)
);

CREATE INDEX bridle_idempotency_expires ON bridle_idempotency (expires_at);

COMMENT ON TABLE bridle_idempotency IS
    'bridle Idempotency-Key claims and stored responses (db/idem.c); see migrations/0003_idempotency.sql';
