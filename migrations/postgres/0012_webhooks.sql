-- Webhooks (issue 31). A webhook's deliveries are executions of the
-- built-in handler `webhook`; what they deliver is recorded here, in the
-- transaction that makes it happen, so that no event is lost to a crash
-- between a commit and its announcement.
--
-- `statuses` holds the execution statuses whose changes the webhook may
-- hear, each between spaces (' failed cancelled '). With no webhook the
-- triggers below record nothing.
CREATE TABLE webhooks (
    name       TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    statuses   TEXT NOT NULL,
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

CREATE FUNCTION jobvisor_record_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.handler <> 'webhook' AND EXISTS (
        SELECT 1 FROM webhooks WHERE strpos(statuses, ' ' || NEW.status || ' ') > 0
    ) THEN
        INSERT INTO event_outbox (execution_id, status) VALUES (NEW.id, NEW.status);
    END IF;
    RETURN NULL;
END
$$;

-- An insert: a run enqueued, or (an end moving a row from executions_live
-- to executions_ended is an insert there) a run that ended.
CREATE TRIGGER executions_record_insert AFTER INSERT ON executions
    FOR EACH ROW EXECUTE FUNCTION jobvisor_record_event();
-- A change of status within a partition: a claim (pending to running). A
-- release or a parent's end (held or waiting to pending) is no event.
CREATE TRIGGER executions_record_update AFTER UPDATE OF status ON executions
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status NOT IN ('pending', 'waiting', 'held'))
    EXECUTE FUNCTION jobvisor_record_event();
