-- Webhooks (issue 31): the same tables as PostgreSQL's 0012. A webhook's
-- deliveries are executions of the built-in handler `webhook`; what they
-- deliver is recorded here, in the transaction that makes it happen, so
-- that no event is lost to a crash between a commit and its announcement.
--
-- `statuses` holds the execution statuses whose changes the webhook may
-- hear, each between spaces (' failed cancelled '). With no webhook the
-- triggers below record nothing.
CREATE TABLE webhooks (
    name       TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    statuses   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Changes to deliver: execution `execution_id` reached `status`. A node
-- turns them into deliveries (and deletes them) in one transaction.
CREATE TABLE event_outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id BLOB NOT NULL,
    status       TEXT NOT NULL
);

-- An insert: a run enqueued (or inserted already ended).
CREATE TRIGGER executions_record_insert AFTER INSERT ON executions
    WHEN NEW.handler <> 'webhook' AND EXISTS (
        SELECT 1 FROM webhooks WHERE instr(statuses, ' ' || NEW.status || ' ') > 0)
BEGIN
    INSERT INTO event_outbox (execution_id, status) VALUES (NEW.id, NEW.status);
END;

-- A change of status: a claim, or an end. A release or a parent's end
-- (held or waiting to pending) is no event.
CREATE TRIGGER executions_record_update AFTER UPDATE OF status ON executions
    WHEN OLD.status IS NOT NEW.status AND NEW.status NOT IN ('pending', 'waiting', 'held')
        AND NEW.handler <> 'webhook' AND EXISTS (
        SELECT 1 FROM webhooks WHERE instr(statuses, ' ' || NEW.status || ' ') > 0)
BEGIN
    INSERT INTO event_outbox (execution_id, status) VALUES (NEW.id, NEW.status);
END;
