-- 0013_provider_batches: the provider batch path (router/pbatch.h,
-- db/pbatchstore.h, docs/design.md "Batches"). A line routed to a provider
-- that takes batches (providers.NAME.batch) is not called: its run hands
-- back the provider's request body and the usage event so far, and the
-- line becomes queued. Queued lines of one batch, provider and model go
-- up together as one provider batch; its results settle them at the batch
-- price, hours later, on whichever gateway polls it.
--
-- Line states added: queued (routed, not yet sent), submitted (in a
-- provider batch). A line is submitted in the same transaction as its
-- provider batch row is made, before the call that sends it; a provider
-- batch left "submitting" by a gateway that stopped is never sent again
-- (its lines fail as interrupted), one that reached "in_progress" is
-- polled by any gateway.
ALTER TABLE bridle_batch_lines
    ADD COLUMN provider  text,        -- where it goes (providers.NAME)
    ADD COLUMN model     text,        -- bridle's name for the model
    ADD COLUMN upstream  text,        -- the provider's request body for it
    ADD COLUMN event     json,        -- its usage event so far: who, what, how routed
    ADD COLUMN pbatch_id text,        -- the provider batch it went in
    ADD COLUMN queued_at timestamptz,
    ADD COLUMN live      boolean NOT NULL DEFAULT false; -- never deferred again: run it live
CREATE INDEX bridle_batch_lines_queued ON bridle_batch_lines (provider, queued_at)
    WHERE state = 'queued';
CREATE INDEX bridle_batch_lines_pbatch ON bridle_batch_lines (pbatch_id) WHERE pbatch_id IS NOT NULL;

CREATE TABLE bridle_provider_batches (
    id           text        PRIMARY KEY,   -- "pb_" + 24 hex digits (the provider's metadata has it)
    batch_id     text        NOT NULL REFERENCES bridle_batches (id),
    provider     text        NOT NULL,
    model        text        NOT NULL,
    status       text        NOT NULL,      -- submitting, in_progress, ended, failed
    instance     text        NOT NULL,      -- the gateway that submitted it
    remote_id    text,                      -- the provider's id for it
    lines        integer     NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    submitted_at timestamptz,
    next_poll_at timestamptz,
    poll_ms      integer     NOT NULL DEFAULT 0, -- the wait before the next poll (it doubles)
    polled_by    text,                      -- a gateway polling or settling it, until poll_until
    poll_until   timestamptz,
    cancel_sent  boolean     NOT NULL DEFAULT false,
    ended_at     timestamptz,
    error        text
);
CREATE INDEX bridle_provider_batches_poll ON bridle_provider_batches (next_poll_at)
    WHERE status = 'in_progress';

-- Takes the queued lines of one batch, provider and model that are ready to
-- go (p_max of them, their oldest queued p_after_ms ago, or nothing of
-- their batch left to route) into a new provider batch p_id, submitting
-- them. Returns them in line order; no row: nothing is ready.
CREATE FUNCTION bridle_pbatch_take(p_instance text, p_providers text[], p_after_ms integer,
                                   p_max integer, p_id text)
RETURNS TABLE (provider text, model text, batch_id text, line_no integer, upstream text)
LANGUAGE plpgsql AS $$
DECLARE
    g record;
    n integer;
BEGIN
    SELECT l.batch_id, l.provider, l.model INTO g FROM bridle_batch_lines l
    WHERE l.state = 'queued' AND l.provider = ANY (p_providers)
    GROUP BY l.batch_id, l.provider, l.model
    HAVING count(*) >= p_max OR min(l.queued_at) <= now() - p_after_ms * interval '1 millisecond'
        OR NOT EXISTS (SELECT 1 FROM bridle_batch_lines x WHERE x.batch_id = l.batch_id
                       AND x.state IN ('pending', 'running'))
    ORDER BY min(l.queued_at) LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    INSERT INTO bridle_provider_batches (id, batch_id, provider, model, status, instance)
    VALUES (p_id, g.batch_id, g.provider, g.model, 'submitting', p_instance);
    RETURN QUERY
    WITH s AS (
        UPDATE bridle_batch_lines l SET state = 'submitted', pbatch_id = p_id
        FROM (SELECT x.batch_id, x.line_no FROM bridle_batch_lines x
              WHERE x.batch_id = g.batch_id AND x.provider = g.provider AND x.model = g.model
                AND x.state = 'queued'
              ORDER BY x.line_no LIMIT p_max FOR UPDATE SKIP LOCKED) c
        WHERE l.batch_id = c.batch_id AND l.line_no = c.line_no
        RETURNING l.batch_id, l.line_no, l.upstream)
    SELECT g.provider, g.model, s.batch_id, s.line_no, s.upstream FROM s ORDER BY s.line_no;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 THEN
        DELETE FROM bridle_provider_batches WHERE id = p_id;
    ELSE
        UPDATE bridle_provider_batches SET lines = n WHERE id = p_id;
    END IF;
END $$;
