-- jobvisor schema, PostgreSQL dialect. The same tables and columns as the
-- SQLite migrations (integers BIGINT, flags 0/1, JSON as text), so that both
-- backends decode rows the same way.

CREATE TABLE handlers (
    name       TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    hostname     TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    stopped_at   BIGINT
);

CREATE TABLE executions (
    id                  UUID PRIMARY KEY,
    job                 TEXT NOT NULL,
    handler             TEXT NOT NULL,
    mode                TEXT NOT NULL,
    payload             TEXT NOT NULL DEFAULT 'null',
    status              TEXT NOT NULL,
    attempt             BIGINT NOT NULL DEFAULT 1,
    max_attempts        BIGINT NOT NULL DEFAULT 1,
    backoff_base_ms     BIGINT NOT NULL DEFAULT 1000,
    backoff_cap_ms      BIGINT NOT NULL DEFAULT 300000,
    previous_id         UUID,
    next_id             UUID,
    timeout_ms          BIGINT,
    priority            BIGINT NOT NULL DEFAULT 0,
    enqueued_at         BIGINT NOT NULL,
    run_at              BIGINT NOT NULL,
    started_at          BIGINT,
    finished_at         BIGINT,
    node                TEXT,
    pid                 BIGINT,
    exit_code           BIGINT,
    signal              TEXT,
    progress_percent    DOUBLE PRECISION,
    progress_message    TEXT,
    progress_done       BIGINT,
    progress_total      BIGINT,
    output              TEXT,
    error               TEXT,
    timed_out           BIGINT NOT NULL DEFAULT 0,
    interrupted         BIGINT NOT NULL DEFAULT 0,
    cancel_requested_at BIGINT,
    cancel_reason       TEXT,
    cancel_outcome      TEXT,
    queue               TEXT NOT NULL DEFAULT 'default',
    occurrence          BIGINT
);

CREATE INDEX executions_pending ON executions (priority DESC, run_at, id) WHERE status = 'pending';
CREATE INDEX executions_running ON executions (node) WHERE status = 'running';
CREATE INDEX executions_job ON executions (job, id);
CREATE UNIQUE INDEX executions_occurrence ON executions (job, occurrence) WHERE occurrence IS NOT NULL;
CREATE INDEX executions_running_queue ON executions (queue) WHERE status = 'running';
CREATE INDEX executions_running_job ON executions (job) WHERE status = 'running';
CREATE INDEX executions_active_job ON executions (job) WHERE status IN ('pending', 'running');

CREATE TABLE logs (
    execution_id UUID NOT NULL,
    seq          BIGINT NOT NULL,
    ts           BIGINT NOT NULL,
    level        TEXT NOT NULL,
    stream       TEXT NOT NULL,
    message      TEXT NOT NULL,
    fields       TEXT,
    PRIMARY KEY (execution_id, seq)
);

CREATE TABLE jobs (
    name            TEXT PRIMARY KEY,
    handler         TEXT NOT NULL,
    mode            TEXT,
    payload         TEXT NOT NULL DEFAULT 'null',
    kind            TEXT NOT NULL,
    schedule        TEXT NOT NULL,
    priority        BIGINT NOT NULL DEFAULT 0,
    queue           TEXT NOT NULL DEFAULT 'default',
    retries         BIGINT NOT NULL DEFAULT 0,
    backoff_ms      BIGINT NOT NULL DEFAULT 1000,
    timeout_ms      BIGINT,
    overlap         TEXT NOT NULL DEFAULT 'skip',
    misfire         TEXT NOT NULL DEFAULT 'run-once',
    max_parallel    BIGINT,
    max_runs        BIGINT,
    start_at        BIGINT,
    end_at          BIGINT,
    paused          BIGINT NOT NULL DEFAULT 0,
    runs            BIGINT NOT NULL DEFAULT 0,
    missed          BIGINT NOT NULL DEFAULT 0,
    next_run_at     BIGINT,
    completed_at    BIGINT,
    daemon_streak   BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX jobs_due ON jobs (next_run_at) WHERE paused = 0 AND next_run_at IS NOT NULL;
CREATE INDEX jobs_daemon ON jobs (name) WHERE kind = 'daemon';

CREATE TABLE queues (
    name        TEXT PRIMARY KEY,
    max_running BIGINT,
    paused      BIGINT NOT NULL DEFAULT 0
);
