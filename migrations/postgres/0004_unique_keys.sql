-- Unique keys: at most one active execution per key, and with a hold
-- (--unique-for) none within that time of the last one's end either.
-- The key's row is the lock: its primary key makes a second holder
-- impossible, on one node or many, without a read-then-insert.
ALTER TABLE executions ADD COLUMN unique_key TEXT;
ALTER TABLE executions ADD COLUMN unique_for_ms BIGINT;

CREATE TABLE unique_keys (
    key          TEXT PRIMARY KEY,
    execution_id UUID NOT NULL,   -- the execution that holds it
    held_until   BIGINT,          -- NULL while it is active; then until when it still counts
    next_id      UUID             -- the execution waiting to follow it (--replace)
);
