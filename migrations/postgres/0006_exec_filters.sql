-- Indexes behind `exec list`'s filters, so that a filter that matches few
-- rows in a large history reads those rows, not the history (`jobvisor
-- bench --scenario list`). Each gives its matches newest first. The job
-- filter has executions_job (job, id) already; pending and running rows
-- have their partial indexes. Statuses that few rows keep get a partial
-- index each: one on every status would cost every claim and completion
-- an index update (16 % of inproc throughput, measured).
CREATE INDEX executions_queue ON executions (queue, id);
CREATE INDEX executions_handler ON executions (handler, id);
CREATE INDEX executions_failed ON executions (id) WHERE status = 'failed';
CREATE INDEX executions_cancelled ON executions (id) WHERE status = 'cancelled';
CREATE INDEX executions_waiting ON executions (id) WHERE status = 'waiting';
CREATE INDEX executions_unique_key ON executions (unique_key, id) WHERE unique_key IS NOT NULL;
