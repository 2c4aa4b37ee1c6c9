-- Webhooks (issue 31): the same tables as PostgreSQL's 0012. A webhook's
-- deliveries are executions of the built-in handler `webhook`; what they
-- deliver is recorded in event_outbox, in the transaction that makes it
-- happen, so that no event is lost to a crash between a commit and its
-- announcement.
--
-- The triggers that record changes are not made here: adding or removing
-- a webhook (re)makes them, for the statuses some webhook hears (see
-- store/sql/webhooks.rs). With no webhook there is none, and a change of
-- an execution costs nothing more than it did before webhooks.
CREATE TABLE webhooks (
    name       TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Changes to deliver: execution `execution_id` reached `status`.
CREATE TABLE event_outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id BLOB NOT NULL,
    status       TEXT NOT NULL
);

-- Alerts (issue 31): when a job needs attention (`job add --alert-after,
-- --alert-late, --expect-every`, as JSON), and the incidents open now.
-- An alert fires when its incident opens (a row here) and says it
-- recovered when it closes (the row goes); both in the transaction that
-- inserts their deliveries.
ALTER TABLE jobs ADD COLUMN alerts TEXT;
CREATE INDEX jobs_alerting ON jobs (name) WHERE alerts IS NOT NULL;
CREATE TABLE alerts (
    kind      TEXT NOT NULL,
    subject   TEXT NOT NULL,
    opened_at INTEGER NOT NULL,
    message   TEXT NOT NULL,
    job       TEXT,
    queue     TEXT,
    PRIMARY KEY (kind, subject)
);
