-- Dependencies, chains and workflows.
--
-- An execution with parents waits (status 'waiting') until the last one
-- ends: `waiting_on` counts the parents that have not, and the transaction
-- that records a parent's end decrements it under the child's row lock, so
-- exactly one completion, on whichever node, makes the child pending.
ALTER TABLE executions ADD COLUMN after_policy TEXT;              -- NULL: no parents
ALTER TABLE executions ADD COLUMN waiting_on BIGINT NOT NULL DEFAULT 0;
-- Whether executions run after it (set under its row lock by the enqueue that
-- adds the edge), so that recording its end looks for children only if so.
ALTER TABLE executions ADD COLUMN has_children BIGINT NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN workflow_id UUID;
ALTER TABLE executions ADD COLUMN step TEXT;                      -- its step's name in the workflow
CREATE INDEX executions_workflow ON executions (workflow_id) WHERE workflow_id IS NOT NULL;

-- child runs after parent. A parent that is retried hands its edges to the
-- retry, so an edge always names the attempt that counts.
CREATE TABLE dependencies (
    child_id  UUID NOT NULL,
    parent_id UUID NOT NULL,
    PRIMARY KEY (child_id, parent_id)
);
CREATE INDEX dependencies_parent ON dependencies (parent_id, child_id);

CREATE TABLE workflows (
    id           UUID PRIMARY KEY,
    name         TEXT NOT NULL,
    spec         TEXT NOT NULL,   -- JSON: the steps as submitted
    created_at   BIGINT NOT NULL,
    cancelled_at BIGINT
);

-- Jobs enqueued when an execution of this one ends: JSON [{"job", "on"}].
ALTER TABLE jobs ADD COLUMN chain TEXT;

-- Retention drops keys whose hold has run out.
CREATE INDEX unique_keys_held ON unique_keys (held_until) WHERE held_until IS NOT NULL;
