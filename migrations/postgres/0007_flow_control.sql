-- Flow control: keyed concurrency, rate limits, snoozes; ad-hoc runs
-- without a job.

-- At most `queues.key_limit` running executions per concurrency key in a
-- queue, across all nodes (counted by the claim from the running rows,
-- which executions_running_queue already finds: an index of its own cost
-- every claim and end).
ALTER TABLE executions ADD COLUMN concurrency_key TEXT;
ALTER TABLE jobs ADD COLUMN concurrency_key TEXT;
-- Jobs with a cap: the plain claim looks whether there are any, per claim.
CREATE INDEX jobs_capped ON jobs (name) WHERE max_parallel IS NOT NULL OR overlap = 'queue';
ALTER TABLE queues ADD COLUMN key_limit BIGINT;
CREATE INDEX executions_concurrency_key ON executions (concurrency_key, id)
    WHERE concurrency_key IS NOT NULL;

-- A rate limit: at most rate_n starts in any window of rate_ms. The claim
-- counts a queue's starts in the window from queue_starts (one row per
-- claim that started some of its executions, with how many), and writes
-- its own in the same transaction; rows older than the window are deleted
-- then. Only rate-limited queues have rows.
ALTER TABLE queues ADD COLUMN rate_n BIGINT;
ALTER TABLE queues ADD COLUMN rate_ms BIGINT;
CREATE TABLE queue_starts (
    queue TEXT NOT NULL,
    at    BIGINT NOT NULL,
    n     BIGINT NOT NULL
);
CREATE INDEX queue_starts_window ON queue_starts (queue, at);

-- Snoozes in the execution's chain so far (a snooze is not a retry: it
-- keeps the attempt number and max_attempts).
ALTER TABLE executions ADD COLUMN snoozes BIGINT NOT NULL DEFAULT 0;
CREATE INDEX executions_snoozed ON executions (id) WHERE status = 'snoozed';

-- Ad-hoc runs belong to no job: their job is ''. Before, they were
-- recorded with the handler's name as job; such rows whose name is no
-- job's lose it. (Ad-hoc rows of a name a job took later cannot be told
-- apart from that job's and stay with it.)
UPDATE executions SET job = '' WHERE occurrence IS NULL AND job = handler
    AND job NOT IN (SELECT name FROM jobs);
