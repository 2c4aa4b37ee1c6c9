-- What the dashboard asks of history: executions by when they ended (the
-- last hour's throughput and durations, read from this index alone; recent
-- failures).
CREATE INDEX executions_finished ON executions (finished_at, handler, status, started_at)
    WHERE finished_at IS NOT NULL;
