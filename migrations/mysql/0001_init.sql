-- The whole schema as of migration 0013 on SQLite and PostgreSQL, for
-- MySQL 8.0+ and MariaDB 10.6+; 0002 to 0013 are numbering only, so that a
-- number means the same change on every backend.
--
-- What differs from the other backends (ARCHITECTURE.md lists it all):
-- - ids are BINARY(16) (sqlx's UUID on MySQL);
-- - text that is a key or indexed is VARCHAR in utf8mb4_bin (exact,
--   case-sensitive comparison, as on the other backends): names up to 255
--   characters, unique keys and meta values up to 700;
-- - there are no partial indexes: each is a whole index led by what its
--   predicate tested (the status, mostly);
-- - `notices` carries the wake-ups that PostgreSQL sends with NOTIFY, and
--   `locks` holds the rows that serialize limited claims, deliveries and
--   webhook changes (PostgreSQL's advisory locks);
-- - `key`, `signal` and `condition` are reserved words: the store quotes
--   them ("key", with ANSI_QUOTES, which every connection sets).

CREATE TABLE executions (
    id                  BINARY(16) NOT NULL PRIMARY KEY,
    job                 VARCHAR(255) NOT NULL,
    handler             VARCHAR(255) NOT NULL,
    mode                VARCHAR(16) NOT NULL,
    payload             LONGTEXT NOT NULL,
    status              VARCHAR(16) NOT NULL,
    attempt             BIGINT NOT NULL DEFAULT 1,
    max_attempts        BIGINT NOT NULL DEFAULT 1,
    backoff_base_ms     BIGINT NOT NULL DEFAULT 1000,
    backoff_cap_ms      BIGINT NOT NULL DEFAULT 300000,
    previous_id         BINARY(16),
    next_id             BINARY(16),
    timeout_ms          BIGINT,
    priority            BIGINT NOT NULL DEFAULT 0,
    enqueued_at         BIGINT NOT NULL,
    run_at              BIGINT NOT NULL,
    started_at          BIGINT,
    finished_at         BIGINT,
    node                VARCHAR(255),
    pid                 BIGINT,
    exit_code           BIGINT,
    `signal`            TEXT,
    progress_percent    DOUBLE,
    progress_message    TEXT,
    progress_done       BIGINT,
    progress_total      BIGINT,
    output              LONGTEXT,
    error               LONGTEXT,
    timed_out           BIGINT NOT NULL DEFAULT 0,
    interrupted         BIGINT NOT NULL DEFAULT 0,
    cancel_requested_at BIGINT,
    cancel_reason       TEXT,
    cancel_outcome      VARCHAR(32),
    queue               VARCHAR(255) NOT NULL DEFAULT 'default',
    occurrence          BIGINT,
    unique_key          VARCHAR(700),
    unique_for_ms       BIGINT,
    after_policy        VARCHAR(32),
    waiting_on          BIGINT NOT NULL DEFAULT 0,
    has_children        BIGINT NOT NULL DEFAULT 0,
    workflow_id         BINARY(16),
    step                VARCHAR(255),
    concurrency_key     VARCHAR(255),
    snoozes             BIGINT NOT NULL DEFAULT 0,
    origin              VARCHAR(32) NOT NULL DEFAULT 'manual',
    meta                TEXT,
    tags                TEXT,
    progress_data       MEDIUMTEXT,
    trace_context       TEXT,
    -- The claim: the best due pending rows.
    INDEX executions_pending (status, priority DESC, run_at, id),
    -- A status's rows newest first (lists, the dashboard), with the queue.
    INDEX executions_status (status, id, queue),
    -- Running rows by node (fencing, rescue, cancel requests); by queue and
    -- job (limits, overlap).
    INDEX executions_node (node, status),
    INDEX executions_running_queue (status, queue),
    INDEX executions_job (job, id),
    INDEX executions_job_status (job, status),
    INDEX executions_queue (queue, id),
    INDEX executions_handler (handler, id),
    INDEX executions_concurrency_key (concurrency_key, id),
    INDEX executions_unique_key (unique_key, id),
    INDEX executions_workflow (workflow_id),
    -- Each scheduled occurrence once (NULLs are distinct in a unique index).
    UNIQUE INDEX executions_occurrence (job, occurrence)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE logs (
    execution_id BINARY(16) NOT NULL,
    seq          BIGINT NOT NULL,
    ts           BIGINT NOT NULL,
    level        VARCHAR(16) NOT NULL,
    stream       VARCHAR(16) NOT NULL,
    message      LONGTEXT NOT NULL,
    fields       LONGTEXT,
    PRIMARY KEY (execution_id, seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE handlers (
    name       VARCHAR(255) NOT NULL PRIMARY KEY,
    spec       LONGTEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE jobs (
    name            VARCHAR(255) NOT NULL PRIMARY KEY,
    handler         VARCHAR(255) NOT NULL,
    mode            VARCHAR(16),
    payload         LONGTEXT NOT NULL,
    kind            VARCHAR(16) NOT NULL,
    schedule        TEXT NOT NULL,
    priority        BIGINT NOT NULL DEFAULT 0,
    queue           VARCHAR(255) NOT NULL DEFAULT 'default',
    retries         BIGINT NOT NULL DEFAULT 0,
    backoff_ms      BIGINT NOT NULL DEFAULT 1000,
    timeout_ms      BIGINT,
    overlap         VARCHAR(16) NOT NULL DEFAULT 'skip',
    misfire         VARCHAR(16) NOT NULL DEFAULT 'run-once',
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
    updated_at      BIGINT NOT NULL,
    chain           TEXT,
    concurrency_key VARCHAR(255),
    description     TEXT,
    meta            TEXT,
    tags            TEXT,
    `condition`     VARCHAR(255),
    condition_mode  VARCHAR(16),
    keep_last       BIGINT,
    alerts          TEXT,
    INDEX jobs_due (paused, next_run_at),
    INDEX jobs_kind (kind),
    INDEX jobs_capped (max_parallel, overlap)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE nodes (
    id           VARCHAR(255) NOT NULL PRIMARY KEY,
    hostname     VARCHAR(255) NOT NULL,
    pid          BIGINT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    stopped_at   BIGINT,
    concurrency  BIGINT
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE queues (
    name        VARCHAR(255) NOT NULL PRIMARY KEY,
    max_running BIGINT,
    paused      BIGINT NOT NULL DEFAULT 0,
    key_limit   BIGINT,
    rate_n      BIGINT,
    rate_ms     BIGINT
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE queue_starts (
    queue VARCHAR(255) NOT NULL,
    at    BIGINT NOT NULL,
    n     BIGINT NOT NULL,
    INDEX queue_starts_window (queue, at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE declared (
    kind VARCHAR(16) NOT NULL,
    name VARCHAR(255) NOT NULL,
    PRIMARY KEY (kind, name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE unique_keys (
    `key`        VARCHAR(700) NOT NULL PRIMARY KEY,
    execution_id BINARY(16) NOT NULL,
    held_until   BIGINT,
    next_id      BINARY(16),
    INDEX unique_keys_held (held_until)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE dependencies (
    child_id  BINARY(16) NOT NULL,
    parent_id BINARY(16) NOT NULL,
    PRIMARY KEY (child_id, parent_id),
    INDEX dependencies_parent (parent_id, child_id)
) ENGINE = InnoDB;

CREATE TABLE workflows (
    id           BINARY(16) NOT NULL PRIMARY KEY,
    name         VARCHAR(255) NOT NULL,
    spec         LONGTEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    cancelled_at BIGINT
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- A value may be as long as a run's meta (4 KiB): it is TEXT, found by
-- an index on its first 690 characters (the rest is compared on the row).
CREATE TABLE execution_meta (
    `key`        VARCHAR(64) NOT NULL,
    value        TEXT NOT NULL,
    execution_id BINARY(16) NOT NULL,
    PRIMARY KEY (execution_id, `key`),
    INDEX execution_meta_value (`key`, value(690))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE execution_tags (
    tag          VARCHAR(255) NOT NULL,
    execution_id BINARY(16) NOT NULL,
    PRIMARY KEY (tag, execution_id),
    INDEX execution_tags_execution (execution_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE timeline (
    minute  BIGINT NOT NULL,
    handler VARCHAR(255) NOT NULL,
    status  VARCHAR(16) NOT NULL,
    shard   BIGINT NOT NULL,
    n       BIGINT NOT NULL,
    timed   BIGINT NOT NULL,
    sum_us  BIGINT NOT NULL,
    max_us  BIGINT NOT NULL,
    PRIMARY KEY (minute, handler, status, shard)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE webhooks (
    name       VARCHAR(255) NOT NULL PRIMARY KEY,
    spec       LONGTEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE event_outbox (
    seq          BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    execution_id BINARY(16) NOT NULL,
    status       VARCHAR(16) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE alerts (
    kind      VARCHAR(64) NOT NULL,
    subject   VARCHAR(255) NOT NULL,
    opened_at BIGINT NOT NULL,
    message   TEXT NOT NULL,
    job       VARCHAR(255),
    queue     VARCHAR(255),
    PRIMARY KEY (kind, subject)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Wake-ups between nodes (PostgreSQL's NOTIFY): a row per notice, written
-- in the transaction that caused it and read by every node's short poll.
-- Rows older than a minute are deleted by the nodes' polls.
-- `what` = 'events' carries a batch of lifecycle events (JSON) in `payload`.
CREATE TABLE notices (
    seq     BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    what    VARCHAR(16) NOT NULL,
    at      BIGINT NOT NULL,
    payload LONGTEXT,
    INDEX notices_at (at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The nodes that hear lifecycle events, each until its lease runs out
-- (renewed while it listens): with none, nobody publishes them.
CREATE TABLE hearers (
    id    BINARY(16) NOT NULL PRIMARY KEY,
    until BIGINT NOT NULL
) ENGINE = InnoDB;

-- The rows that stand for PostgreSQL's transaction-scoped advisory locks:
-- `SELECT ... FOR UPDATE` on one holds it until the transaction ends.
CREATE TABLE locks (
    name VARCHAR(32) NOT NULL PRIMARY KEY
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
INSERT INTO locks (name) VALUES ('claim'), ('deliver'), ('webhooks');
