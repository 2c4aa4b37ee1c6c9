-- Traces (issue 31): as PostgreSQL's 0013. What a run carries of its W3C
-- trace context, copied to each of its attempts (model/trace.rs:
-- TRACE:RUNSPAN:PARENT:FLAGS:SINCE). NULL for a run enqueued with no trace
-- while none was exported.
ALTER TABLE executions ADD COLUMN trace_context TEXT;
