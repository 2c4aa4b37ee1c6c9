-- What a run carries, and where it can stand (issue 30). The same columns
-- and tables as PostgreSQL's 0011 (SQLite has no partitions to extend).
--
-- A held run (`exec hold`) is never claimed; the claim's index holds only
-- pending rows. An occurrence a job's condition turned down ends as
-- `skipped`.
CREATE INDEX executions_held ON executions (id) WHERE status = 'held';
CREATE INDEX executions_skipped ON executions (id) WHERE status = 'skipped';

-- How each run came to be: manual, scheduled, triggered, chained,
-- workflow, retry, snooze or daemon. Rows from before are told apart as
-- well as their columns allow.
ALTER TABLE executions ADD COLUMN origin TEXT NOT NULL DEFAULT 'manual';
UPDATE executions SET origin = CASE
        WHEN previous_id IS NOT NULL THEN 'retry'
        WHEN workflow_id IS NOT NULL THEN 'workflow'
        ELSE 'scheduled' END
    WHERE previous_id IS NOT NULL OR workflow_id IS NOT NULL OR occurrence IS NOT NULL;

-- Meta (a JSON object of strings) and tags (a JSON array), as given; each
-- pair and each tag is also a row below, which the filters look up by
-- value. Only runs that have some write them. `progress_data` is the JSON
-- object a progress message may carry.
ALTER TABLE executions ADD COLUMN meta TEXT;
ALTER TABLE executions ADD COLUMN tags TEXT;
ALTER TABLE executions ADD COLUMN progress_data TEXT;

CREATE TABLE execution_tags (
    tag          TEXT NOT NULL,
    execution_id BLOB NOT NULL,
    PRIMARY KEY (tag, execution_id)
) WITHOUT ROWID;
CREATE INDEX execution_tags_execution ON execution_tags (execution_id);

CREATE TABLE execution_meta (
    key          TEXT NOT NULL,
    value        TEXT NOT NULL,
    execution_id BLOB NOT NULL,
    PRIMARY KEY (key, value, execution_id)
) WITHOUT ROWID;
CREATE INDEX execution_meta_execution ON execution_meta (execution_id);

-- A job's description, the meta and tags each of its runs is given, the
-- handler that decides whether an occurrence runs, and how many of its
-- ended runs retention keeps whatever their age. A condition's mode is
-- resolved when the job is added, as the job's own is.
ALTER TABLE jobs ADD COLUMN description TEXT;
ALTER TABLE jobs ADD COLUMN meta TEXT;
ALTER TABLE jobs ADD COLUMN tags TEXT;
ALTER TABLE jobs ADD COLUMN condition TEXT;
ALTER TABLE jobs ADD COLUMN condition_mode TEXT;
ALTER TABLE jobs ADD COLUMN keep_last INTEGER;

-- How many executions a node runs at once, as it last said (it may change
-- while it runs: a reload, `PUT /v1/node`).
ALTER TABLE nodes ADD COLUMN concurrency INTEGER;
