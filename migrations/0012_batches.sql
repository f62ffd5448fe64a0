-- 0012_batches: the Batch API (server/batches.c, db/batchstore.h,
-- docs/design.md "Batches"). A batch is its input file's lines, one row
-- each, so that every state change of a line is one transaction and any
-- gateway on the database can run any line (FOR UPDATE SKIP LOCKED).
--
-- A line is pending, then running (claimed_by: the instance that sends
-- it, claimed before it is sent), then done or failed; or cancelled. A
-- running line whose instance stopped (no heartbeat in bridle_instances)
-- is failed, never sent again: nothing is sent upstream twice.
CREATE TABLE bridle_batches (
    id                text        PRIMARY KEY,    -- "batch_" + 24 hex digits
    key_id            text        NOT NULL,
    key_sha256        text        NOT NULL,       -- the key it runs under (its hash, as in bridle_keys)
    team              text,
    input_file_id     text        NOT NULL REFERENCES bridle_files (id), -- Anthropic's: a file of its own
    api               text        NOT NULL DEFAULT 'openai', -- the API it came in by: openai, anthropic
    endpoint          text        NOT NULL,
    completion_window text        NOT NULL,
    status            text        NOT NULL,       -- in_progress, finalizing, completed, cancelling, cancelled, failed
    metadata          json,
    total             integer     NOT NULL,
    output_file_id    text,
    error_file_id     text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    in_progress_at    timestamptz,
    finalizing_at     timestamptz,
    completed_at      timestamptz,
    cancelling_at     timestamptz,
    cancelled_at      timestamptz,
    expires_at        timestamptz NOT NULL
);
CREATE INDEX bridle_batches_key ON bridle_batches (key_id, created_at DESC);

CREATE TABLE bridle_batch_lines (
    batch_id   text        NOT NULL REFERENCES bridle_batches (id),
    line_no    integer     NOT NULL,
    custom_id  text        NOT NULL,
    body       text        NOT NULL,             -- the request body as the line had it
    state      text        NOT NULL DEFAULT 'pending',
    claimed_by text,
    claimed_at timestamptz,
    request_id text,
    status     integer,
    response   text,                             -- the answer's body (JSON)
    PRIMARY KEY (batch_id, line_no)
);
CREATE INDEX bridle_batch_lines_pending ON bridle_batch_lines (batch_id, line_no) WHERE state = 'pending';
CREATE INDEX bridle_batch_lines_running ON bridle_batch_lines (claimed_by) WHERE state = 'running';
