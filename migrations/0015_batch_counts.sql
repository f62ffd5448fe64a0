-- 0015_batch_counts: an ended batch keeps its lines' counts on its row.
--
-- A batch's request_counts were counted over its lines on every read, so a
-- GET of a 50,000-line batch, or a page of batches, read every line of each
-- every time (SDKs poll GET while they wait). A batch ends in one statement
-- (db/batchstore.c SQL_FINALIZE) that reads its lines anyway; it writes the
-- counts here, and its lines do not change after that. A batch still
-- running is counted from its lines as before. NULL until the batch ends.
ALTER TABLE bridle_batches
    ADD COLUMN n_done      integer,
    ADD COLUMN n_failed    integer,
    ADD COLUMN n_cancelled integer,
    ADD COLUMN n_expired   integer;

-- Batches that ended before this migration.
UPDATE bridle_batches b
SET n_done = c.done, n_failed = c.failed, n_cancelled = c.cancelled, n_expired = c.expired
FROM (SELECT l.batch_id,
             count(*) FILTER (WHERE l.state = 'done')::integer AS done,
             count(*) FILTER (WHERE l.state = 'failed')::integer AS failed,
             count(*) FILTER (WHERE l.state = 'cancelled')::integer AS cancelled,
             count(*) FILTER (WHERE l.state = 'expired')::integer AS expired
      FROM bridle_batch_lines l GROUP BY l.batch_id) c
WHERE c.batch_id = b.id AND b.status IN ('completed', 'cancelled', 'expired');
