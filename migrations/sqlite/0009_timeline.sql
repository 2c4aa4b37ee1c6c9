-- The dashboard's throughput and duration charts, kept as executions end:
-- per minute, handler and status, what ended, how many of those had
-- started, and their summed and longest durations (µs). The last hour
-- reads a few hundred rows however many executions ended in it. Each
-- store adds to rows of its own shard, so that nodes do not queue for one
-- row's lock; readers sum the shards.
CREATE TABLE timeline (
    minute BIGINT NOT NULL,
    handler TEXT NOT NULL,
    status TEXT NOT NULL,
    shard BIGINT NOT NULL,
    n BIGINT NOT NULL,
    timed BIGINT NOT NULL,
    sum_us BIGINT NOT NULL,
    max_us BIGINT NOT NULL,
    PRIMARY KEY (minute, handler, status, shard)
) WITHOUT ROWID;

INSERT INTO timeline (minute, handler, status, shard, n, timed, sum_us, max_us)
SELECT finished_at / 60000000, handler, status, 0, COUNT(*), COUNT(started_at),
       COALESCE(SUM(finished_at - started_at), 0), COALESCE(MAX(finished_at - started_at), 0)
FROM executions WHERE finished_at IS NOT NULL
GROUP BY finished_at / 60000000, handler, status;

-- The index the charts read until now: every completion paid for it.
DROP INDEX executions_finished;

-- Pending executions newest first, with their queue: the dashboard's
-- "pending" list (of one queue or all) walks this index backwards and
-- checks the queue without reading a row, whatever the backlog.
CREATE INDEX executions_pending_id ON executions (id, queue) WHERE status = 'pending';
