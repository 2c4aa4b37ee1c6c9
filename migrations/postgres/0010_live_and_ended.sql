-- The hot queue apart from the history (issue 29). `executions` becomes a
-- table partitioned by status:
-- - executions_live holds what has yet to end (waiting, pending, running),
--   with only the indexes that claims, fencing and the scheduler look up;
-- - executions_ended holds the history, with the indexes that lists,
--   filters and the dashboard read.
-- A claim updates a row of executions_live and enters three index entries
-- (the primary key, the running rows', the job's) where the
-- single table entered eight. An end moves the row: PostgreSQL deletes it
-- from executions_live and inserts it into executions_ended, the one time
-- the history's indexes are written. Readers still read `executions`; a
-- status in the query prunes the partition that cannot hold it.
--
-- The primary key and the unique (job, occurrence) are per partition (a
-- partitioned table's unique index must hold the partition key). Ids are
-- UUIDv7 made by the inserter; an occurrence already in the history is
-- looked for before the insert (see insert_executions).

ALTER TABLE executions RENAME TO executions_unsplit;

CREATE TABLE executions (LIKE executions_unsplit INCLUDING DEFAULTS)
    PARTITION BY LIST (status);
CREATE TABLE executions_live PARTITION OF executions
    FOR VALUES IN ('waiting', 'pending', 'running');
CREATE TABLE executions_ended PARTITION OF executions
    FOR VALUES IN ('succeeded', 'failed', 'cancelled', 'snoozed');

INSERT INTO executions SELECT * FROM executions_unsplit;
DROP TABLE executions_unsplit;

-- What has yet to end.
ALTER TABLE executions_live ADD CONSTRAINT executions_live_pkey PRIMARY KEY (id);
-- The claim: the best due pending rows.
CREATE INDEX executions_pending ON executions_live (priority DESC, run_at, id)
    WHERE status = 'pending';
-- The dashboard's pending list, newest first, with its queue.
CREATE INDEX executions_pending_id ON executions_live (id, queue) WHERE status = 'pending';
-- Running rows: by node (fencing, rescue, cancel requests); the limited
-- claims count them by queue, job and key from these few rows.
CREATE INDEX executions_running ON executions_live (node) WHERE status = 'running';
-- A job's executions that have yet to end (overlap, daemons, the
-- scheduler, a job's list).
CREATE INDEX executions_live_job ON executions_live (job, id);
CREATE INDEX executions_waiting ON executions_live (id) WHERE status = 'waiting';
CREATE UNIQUE INDEX executions_live_occurrence ON executions_live (job, occurrence)
    WHERE occurrence IS NOT NULL;

-- The history.
ALTER TABLE executions_ended ADD CONSTRAINT executions_ended_pkey PRIMARY KEY (id);
CREATE INDEX executions_job ON executions_ended (job, id);
CREATE INDEX executions_queue ON executions_ended (queue, id);
CREATE INDEX executions_handler ON executions_ended (handler, id);
CREATE INDEX executions_failed ON executions_ended (id) WHERE status = 'failed';
CREATE INDEX executions_cancelled ON executions_ended (id) WHERE status = 'cancelled';
CREATE INDEX executions_snoozed ON executions_ended (id) WHERE status = 'snoozed';
CREATE UNIQUE INDEX executions_ended_occurrence ON executions_ended (job, occurrence)
    WHERE occurrence IS NOT NULL;

-- Both: only the rows that have one enter these (created on the parent,
-- PostgreSQL makes one on each partition).
CREATE INDEX executions_workflow ON executions (workflow_id) WHERE workflow_id IS NOT NULL;
CREATE INDEX executions_unique_key ON executions (unique_key, id) WHERE unique_key IS NOT NULL;
CREATE INDEX executions_concurrency_key ON executions (concurrency_key, id)
    WHERE concurrency_key IS NOT NULL;

ANALYZE executions;
