-- Core schema: handlers, jobs, executions (one row per attempt), logs, nodes.
-- Timestamps are microseconds since the Unix epoch; ids are UUIDv7 stored as
-- 16-byte blobs, so inserts append in time order.

CREATE TABLE handlers (
    name       TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,          -- JSON: kind, program, args, mode, limits
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE jobs (
    name       TEXT PRIMARY KEY,
    handler    TEXT NOT NULL,
    payload    TEXT NOT NULL DEFAULT 'null',
    created_at INTEGER NOT NULL
);

CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    hostname     TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    stopped_at   INTEGER
);

CREATE TABLE executions (
    id                  BLOB PRIMARY KEY,
    job                 TEXT NOT NULL,
    handler             TEXT NOT NULL,
    mode                TEXT NOT NULL,
    payload             TEXT NOT NULL DEFAULT 'null',
    status              TEXT NOT NULL,
    attempt             INTEGER NOT NULL DEFAULT 1,
    max_attempts        INTEGER NOT NULL DEFAULT 1,
    backoff_base_ms     INTEGER NOT NULL DEFAULT 1000,
    backoff_cap_ms      INTEGER NOT NULL DEFAULT 300000,
    previous_id         BLOB,
    next_id             BLOB,
    timeout_ms          INTEGER,
    priority            INTEGER NOT NULL DEFAULT 0,
    enqueued_at         INTEGER NOT NULL,
    run_at              INTEGER NOT NULL,
    started_at          INTEGER,
    finished_at         INTEGER,
    node                TEXT,
    pid                 INTEGER,
    exit_code           INTEGER,
    signal              TEXT,
    progress_percent    REAL,
    progress_message    TEXT,
    progress_done       INTEGER,
    progress_total      INTEGER,
    output              TEXT,
    error               TEXT,
    timed_out           INTEGER NOT NULL DEFAULT 0,
    interrupted         INTEGER NOT NULL DEFAULT 0,
    cancel_requested_at INTEGER,
    cancel_reason       TEXT,
    cancel_outcome      TEXT
);

-- Claims scan only pending rows, best first.
CREATE INDEX executions_pending ON executions (priority DESC, run_at, id) WHERE status = 'pending';
-- Recovery and cancel polling scan only running rows.
CREATE INDEX executions_running ON executions (node) WHERE status = 'running';
CREATE INDEX executions_job ON executions (job, id);

CREATE TABLE logs (
    execution_id BLOB NOT NULL,
    seq          INTEGER NOT NULL,
    ts           INTEGER NOT NULL,
    level        TEXT NOT NULL,
    stream       TEXT NOT NULL,
    message      TEXT NOT NULL,
    fields       TEXT,
    PRIMARY KEY (execution_id, seq)
) WITHOUT ROWID;
