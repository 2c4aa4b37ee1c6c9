-- Scheduling: job definitions, queues, and the occurrence key that makes
-- every scheduled occurrence insert at most one execution, on any number of
-- supervisors.

ALTER TABLE executions ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
-- The due time (cron, interval, once) or generation (daemon) that created
-- the execution; NULL for ad-hoc runs and triggers.
ALTER TABLE executions ADD COLUMN occurrence INTEGER;

CREATE UNIQUE INDEX executions_occurrence ON executions (job, occurrence)
    WHERE occurrence IS NOT NULL;
CREATE INDEX executions_running_queue ON executions (queue) WHERE status = 'running';
CREATE INDEX executions_running_job ON executions (job) WHERE status = 'running';
CREATE INDEX executions_active_job ON executions (job) WHERE status IN ('pending', 'running');

-- The core schema's placeholder never held rows.
DROP TABLE jobs;
CREATE TABLE jobs (
    name            TEXT PRIMARY KEY,
    handler         TEXT NOT NULL,
    mode            TEXT,                       -- NULL: the handler's default
    payload         TEXT NOT NULL DEFAULT 'null',
    kind            TEXT NOT NULL,              -- once | cron | interval | daemon
    schedule        TEXT NOT NULL,              -- JSON ScheduleSpec
    priority        INTEGER NOT NULL DEFAULT 0,
    queue           TEXT NOT NULL DEFAULT 'default',
    retries         INTEGER NOT NULL DEFAULT 0,
    backoff_ms      INTEGER NOT NULL DEFAULT 1000,
    timeout_ms      INTEGER,
    overlap         TEXT NOT NULL DEFAULT 'skip',
    misfire         TEXT NOT NULL DEFAULT 'run-once',
    max_parallel    INTEGER,
    max_runs        INTEGER,
    start_at        INTEGER,
    end_at          INTEGER,
    paused          INTEGER NOT NULL DEFAULT 0,
    runs            INTEGER NOT NULL DEFAULT 0,
    missed          INTEGER NOT NULL DEFAULT 0,
    next_run_at     INTEGER,
    completed_at    INTEGER,
    daemon_streak   INTEGER NOT NULL DEFAULT 0, -- consecutive short daemon runs
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX jobs_due ON jobs (next_run_at) WHERE paused = 0 AND next_run_at IS NOT NULL;
CREATE INDEX jobs_daemon ON jobs (name) WHERE kind = 'daemon';

CREATE TABLE queues (
    name        TEXT PRIMARY KEY,
    max_running INTEGER,                        -- NULL: no limit of its own
    paused      INTEGER NOT NULL DEFAULT 0
);
