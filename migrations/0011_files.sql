-- 0011_files: the Files API (POST /v1/files and the rest, server/files.c,
-- db/filestore.h): the JSONL input of batches, and later their output and
-- error files, in PostgreSQL so that every gateway on the database serves
-- every file (docs/design.md "Files").
--
-- content is text: a batch file is JSONL, which bridle checked line by line
-- (UTF-8 JSON, no NUL) before storing it. A file belongs to the key that
-- uploaded it (key_id) and its team; only they see it. DELETE marks it
-- deleted (a batch that already read it keeps running).
CREATE TABLE bridle_files (
    id          text        PRIMARY KEY,          -- "file-" + 24 hex digits
    key_id      text        NOT NULL,
    team        text,
    purpose     text        NOT NULL,              -- batch, batch_output
    filename    text        NOT NULL,
    bytes       bigint      NOT NULL,
    lines       integer     NOT NULL,
    endpoint    text,                              -- the url every line names (purpose batch)
    content     text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);

CREATE INDEX bridle_files_key ON bridle_files (key_id, created_at DESC) WHERE deleted_at IS NULL;
