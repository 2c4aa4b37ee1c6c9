-- Webhooks (issue 31). A webhook's deliveries are executions of the
-- built-in handler `webhook`; what they deliver is recorded in
-- event_outbox, in the transaction that makes it happen, so that no event
-- is lost to a crash between a commit and its announcement.
--
-- The triggers that record changes are not made here: adding or removing
-- a webhook (re)makes them, for the statuses some webhook hears (see
-- store/sql/webhooks.rs). With no webhook there is none, and a change of
-- an execution costs nothing more than it did before webhooks.
CREATE TABLE webhooks (
    name       TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Changes to deliver: execution `execution_id` reached `status`. A node
-- turns them into deliveries (and deletes them) in one transaction.
-- Changes of one execution are in commit order: each takes its row's lock.
CREATE TABLE event_outbox (
    seq          BIGSERIAL PRIMARY KEY,
    execution_id UUID NOT NULL,
    status       TEXT NOT NULL
);

-- What the triggers run. An end moves a row from executions_live to
-- executions_ended, which PostgreSQL runs as an insert there: the insert
-- trigger hears ends as well as enqueues.
CREATE FUNCTION jobvisor_record_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_outbox (execution_id, status) VALUES (NEW.id, NEW.status);
    RETURN NULL;
END
$$;

-- Alerts (issue 31): when a job needs attention (`job add --alert-after,
-- --alert-late, --expect-every`, as JSON), and the incidents open now.
-- An alert fires when its incident opens (a row here) and says it
-- recovered when it closes (the row goes); both in the transaction that
-- inserts their deliveries, one node at a time.
ALTER TABLE jobs ADD COLUMN alerts TEXT;
CREATE INDEX jobs_alerting ON jobs (name) WHERE alerts IS NOT NULL;
CREATE TABLE alerts (
    kind      TEXT NOT NULL,
    subject   TEXT NOT NULL,
    opened_at BIGINT NOT NULL,
    message   TEXT NOT NULL,
    job       TEXT,
    queue     TEXT,
    PRIMARY KEY (kind, subject)
);
